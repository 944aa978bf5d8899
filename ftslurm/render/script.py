"""JobSpec -> sbatch script text, from the templates in `sbatch_templates/`.

Templates are `string.Template`s whose placeholders are written `{{ name }}` (so bash's own `$x`
and `${x}` stay untouched). Every value is made shell-safe here, by `render.quoting`, before it is
substituted; a template only places values. A line that holds nothing but placeholders whose
values are empty (an optional `\\` continuation included) is left out, so optional parts leave no
blank lines. `PLACEHOLDERS` lists what a custom template (`template:` in the spec) may use.

Rendering is deterministic (no time stamps, no host names), so its output can be compared with
golden files.
"""

from __future__ import annotations

import importlib.resources
import re
import string
from typing import TYPE_CHECKING, ClassVar, Literal

import yaml

from ftslurm import env_vars
from ftslurm.atomic import write_atomic
from ftslurm.errors import UsageError, suggestion
from ftslurm.render import quoting
from ftslurm.render.hooks import end_hook, start_hook
from ftslurm.rundir import RunDir

if TYPE_CHECKING:  # render reads a JobSpec; importing spec here would make spec <-> render a cycle
    from ftslurm.spec.model import Command, JobSpec

#: Built-in template of each launcher (files of the package `ftslurm.sbatch_templates`).
BUILTIN_TEMPLATES: dict[str, str] = {
    "ft": "ft.sbatch",
    "torchrun": "torchrun.sbatch",
    "none": "srun.sbatch",
}


#: The comment above the spec's setup lines (left out with them when there are none).
SETUP_HEADER = "# Setup lines of the job spec, run once on the first node."

#: Placeholders a template may use, and what each one becomes.
PLACEHOLDERS: dict[str, str] = {
    "header": "a comment saying which command wrote the script (`ftslurm render` or "
              "`ftslurm submit`) and how to change it",
    "sbatch_directives": "the #SBATCH lines (resources, output, --open-mode, --signal, sbatch:)",
    "environment": "export lines: ftslurm's variables, then the spec's env:",
    "setup": "the spec's setup: lines, verbatim, under a comment (empty without setup:)",
    "chain_start": "the chain hook that must run first (`ftslurm chain-start`; the script exits "
                   "without launching when the run is over or the job is not confirmed)",
    "chain_end": "the EXIT trap that runs the end hook (`ftslurm chain-end` with the script's "
                 "exit status) however the script ends; place it right after chain_start",
    "warning_signal": "the warning signal's name for `trap`, e.g. USR1",
    "srun_options": "srun's options: nodes, tasks per node, CPUs, container, srun_args:",
    "python": "the spec's python: interpreter",
    "nnodes": "nodes:",
    "nproc_per_node": "nproc_per_node:",
    "max_restarts": "max_restarts:",
    "stop_grace": "signals.stop_grace: (seconds)",
    "ft_config": "path of <run_dir>/ft_config.yaml (the fault_tolerance: section)",
    "launcher_args": "the spec's launcher_args:",
    "launcher_command": "the command in torchrun's form: [--module|--no-python] -- TARGET ARGS",
    "command": "the command as one rank runs it: python script.py ARGS, python -m mod ARGS, ...",
    "job_name": "name:",
    "run_dir": "run_dir:",
}


class TemplateError(UsageError):
    """A template that cannot be rendered: unreadable, or with unknown placeholders."""


_TEMPLATE_PATTERN = r"""
        \{\{[ \t]*(?:
            (?P<named>[a-z_][a-z0-9_]*)[ \t]*\}\}  |
            (?P<braced>(?!x)x)                     |
            (?P<escaped>(?!x)x)                    |
            (?P<invalid>)
        )
    """


class ScriptTemplate(string.Template):
    """`string.Template` with `{{ name }}` placeholders; `$` is left to bash."""

    delimiter = "{{"
    # A string is the documented way: string.Template compiles it (with `flags`) when the class
    # is made, so `ScriptTemplate.pattern` is the compiled regex typeshed declares.
    pattern: ClassVar[re.Pattern[str]] = _TEMPLATE_PATTERN  # type: ignore[assignment]


_PLACEHOLDER_ONLY_LINE = re.compile(
    r"[ \t]*(?:\{\{[ \t]*[a-z_][a-z0-9_]*[ \t]*\}\}[ \t]*)+\\?[ \t]*"
)


def template_text(spec: JobSpec) -> tuple[str, str]:
    """The template of `spec` and where it came from (a path, or the built-in's name)."""
    if spec.template is not None:
        try:
            return spec.template.read_text(encoding="utf-8"), str(spec.template)
        except (OSError, UnicodeDecodeError) as error:
            raise TemplateError(f"{spec.template}: cannot read the template: {error}") from None
    name = BUILTIN_TEMPLATES[spec.launch.launcher]
    resource = importlib.resources.files("ftslurm.sbatch_templates").joinpath(name)
    return resource.read_text(encoding="utf-8"), f"built-in template {name}"


def check_template(text: str, origin: str) -> None:
    """Raise TemplateError listing every unknown or malformed placeholder with its line."""
    problems = []
    for match in ScriptTemplate.pattern.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        name = match.group("named")
        if name is None:
            problems.append(f"{origin}:{line}: `{{{{` must start a placeholder `{{{{ name }}}}`")
        elif name not in PLACEHOLDERS:
            problems.append(f"{origin}:{line}: unknown placeholder {{{{ {name} }}}}"
                            f"{suggestion(name, PLACEHOLDERS)}")
    if problems:
        raise TemplateError("the sbatch template cannot be rendered:\n  " + "\n  ".join(problems),
                            hint="placeholders are listed in docs/job-spec.md (Custom templates)")


#: Who writes a script: `ftslurm render` prints one to keep, `ftslurm submit` writes the script
#: every attempt of a run runs.
RenderedBy = Literal["render", "submit"]


def header(spec: JobSpec, rendered_by: RenderedBy) -> str:
    """The script's first comment: which command wrote it, and how to change it."""
    if rendered_by == "submit":
        return (f"# Rendered by `ftslurm submit` (launcher: {spec.launch.launcher}): every attempt "
                "of the run runs this script.\n# Change the job spec and `ftslurm submit "
                "--resume` it; edits here are lost.")
    return (f"# Rendered by `ftslurm render` (launcher: {spec.launch.launcher}) for the run in "
            f"{spec.run_dir}.\n# `sbatch` on this script is supported: each job joins the run as "
            "its next attempt (or is\n# refused when an attempt is already running or queued), "
            "and the run resumes itself\n# until it finishes. Change the job spec and render "
            "again; edits here are lost.")


def render(spec: JobSpec, *, rendered_by: RenderedBy = "render") -> str:
    """The sbatch script for `spec`."""
    text, origin = template_text(spec)
    check_template(text, origin)
    values = substitutions(spec, rendered_by=rendered_by)
    kept: list[str] = []
    for line in text.splitlines(keepends=True):
        if _empty_line(line, values):
            continue
        if line.strip() == "" and kept and kept[-1].strip() == "":
            continue  # the dropped line left two blank lines in a row
        kept.append(line)
    return ScriptTemplate("".join(kept)).substitute(values)


def _empty_line(line: str, values: dict[str, str]) -> bool:
    """True for a line of only placeholders (and an optional `\\`) that all render empty."""
    if not _PLACEHOLDER_ONLY_LINE.fullmatch(line.rstrip("\n")):
        return False
    names = [match.group("named") for match in ScriptTemplate.pattern.finditer(line)]
    return all(values[name] == "" for name in names)


def substitutions(spec: JobSpec, *, rendered_by: RenderedBy = "render") -> dict[str, str]:
    """The value of every placeholder for `spec`, each already safe for bash."""
    resources, launch = spec.resources, spec.launch
    return {
        "header": header(spec, rendered_by),
        "sbatch_directives": "\n".join(sbatch_directives(spec)),
        "environment": "\n".join(environment_lines(spec)),
        "setup": "\n".join((SETUP_HEADER, *spec.setup)) if spec.setup else "",
        "chain_start": start_hook(quoting.quote(launch.python)),
        "chain_end": end_hook(quoting.quote(launch.python),
                              spec.signals.warning_signal.removeprefix("SIG")),
        "warning_signal": quoting.quote(spec.signals.warning_signal.removeprefix("SIG")),
        "srun_options": quoting.quote_args(srun_options(spec)),
        "python": quoting.quote(launch.python),
        "nnodes": quoting.quote(resources.nodes),
        "nproc_per_node": quoting.quote(resources.nproc_per_node),
        "max_restarts": quoting.quote(launch.max_restarts),
        "stop_grace": quoting.quote(spec.signals.stop_grace),
        "ft_config": quoting.quote(str(spec.ft_config_path)),
        "launcher_args": quoting.quote_args(launch.launcher_args),
        "launcher_command": quoting.quote_args(launcher_command(spec.command)),
        "command": quoting.quote_args(spec.command.argv(launch.python)),
        "job_name": quoting.quote(spec.name),
        "run_dir": quoting.quote(str(spec.run_dir)),
    }


def sbatch_directives(spec: JobSpec) -> list[str]:
    """The `#SBATCH` lines, in a fixed order, then the spec's `sbatch:` options in file order."""
    res = spec.resources
    directive = quoting.sbatch_directive
    if spec.launch.launcher == "none":  # one task per rank
        tasks, cpus = res.nproc_per_node, res.cpus_per_task
    else:  # one launcher task per node, with the CPUs of all its ranks (as srun starts it)
        tasks, cpus = 1, res.nproc_per_node * (res.cpus_per_task or 1)
    lines = [
        directive("job-name", spec.name),
        directive("nodes", res.nodes),
        directive("ntasks-per-node", tasks),
    ]
    optional = [
        ("cpus-per-task", cpus), ("gpus-per-node", res.gpus_per_node or None),
        ("mem", res.mem), ("time", res.time), ("partition", res.partition),
        ("account", res.account), ("qos", res.qos), ("constraint", res.constraint),
        ("exclude", res.exclude), ("nodelist", res.nodelist),
    ]
    lines += [directive(name, value) for name, value in optional if value is not None]
    if res.exclusive:
        lines.append(directive("exclusive"))
    lines += [
        directive("chdir", str(spec.workdir)),
        directive("output", quoting.slurm_filename(f"{spec.logs_dir}/") + RunDir.JOB_LOG_PATTERN),
        directive("open-mode", "append"),
        directive("signal", spec.signals.sbatch_signal),
    ]
    lines += [directive(name, value) for name, value in res.sbatch]
    return lines


def environment_lines(spec: JobSpec) -> list[str]:
    """`export` lines: the run dir, the flag file, the FT config (ft launcher), then `env:`."""
    exports = [
        (env_vars.RUN_DIR, str(spec.run_dir)),
        (env_vars.FINISHED_FLAG_FILE, str(spec.autoresume.flag_file)),
    ]
    if spec.launch.launcher == "ft":
        exports.append((env_vars.FT_CONFIG_FILE, str(spec.ft_config_path)))
    return [quoting.export_line(name, value) for name, value in (*exports, *spec.env)]


def srun_options(spec: JobSpec) -> list[str]:
    """srun's arguments: one launcher per node (ft, torchrun) or one task per rank (none)."""
    res, launch = spec.resources, spec.launch
    # --ntasks too: srun would otherwise take the job's task count from $SLURM_NTASKS.
    if launch.launcher == "none":
        options = [f"--nodes={res.nodes}", f"--ntasks={res.world_size}",
                   f"--ntasks-per-node={res.nproc_per_node}"]
        if res.cpus_per_task:
            options.append(f"--cpus-per-task={res.cpus_per_task}")
    else:  # one launcher per node, with the CPUs of all its ranks
        options = [f"--nodes={res.nodes}", f"--ntasks={res.nodes}", "--ntasks-per-node=1",
                   f"--cpus-per-task={res.nproc_per_node * (res.cpus_per_task or 1)}"]
    options.append("--kill-on-bad-exit=1")
    if launch.container_image:
        options.append(f"--container-image={launch.container_image}")
    if launch.container_mounts:
        options.append(f"--container-mounts={','.join(launch.container_mounts)}")
    return [*options, *launch.srun_args]


def launcher_command(command: Command) -> list[str]:
    """The command for torchrun-style launchers: `[--module|--no-python] -- TARGET ARGS`."""
    flag = {"script": [], "module": ["--module"], "executable": ["--no-python"]}[command.kind]
    return [*flag, "--", command.target, *command.args]


def ft_config_text(spec: JobSpec) -> str:
    """The YAML the launcher reads with `--ft-cfg-path`: `fault_tolerance: {...}`."""
    return yaml.safe_dump({"fault_tolerance": dict(spec.fault_tolerance)}, sort_keys=False)


def prepare_run_dir(spec: JobSpec) -> None:
    """Create what the script needs before sbatch runs it: `<run_dir>/logs` (SLURM does not
    create the output directory) and `<run_dir>/ft_config.yaml`."""
    spec.logs_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(spec.ft_config_path, ft_config_text(spec))


__all__ = [
    "BUILTIN_TEMPLATES",
    "PLACEHOLDERS",
    "RenderedBy",
    "ScriptTemplate",
    "TemplateError",
    "check_template",
    "environment_lines",
    "ft_config_text",
    "header",
    "launcher_command",
    "prepare_run_dir",
    "render",
    "sbatch_directives",
    "srun_options",
    "substitutions",
    "template_text",
]
