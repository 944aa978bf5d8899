"""The job spec: `job.yaml` validated into a `JobSpec` (frozen dataclasses).

`load_spec(path)` reads the file, checks every key and raises one `SpecError` (a UsageError, exit
code 2) that lists every problem with its file, line, key and what is expected; warnings (a spec
that is valid but doubtful) go to stderr and stay in `JobSpec.warnings`. Relative paths in the
spec are relative to the YAML file's directory and are stored absolute. docs/job-spec.md is the
reference of every key; keep the two in step.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from ftslurm.errors import UsageError
from ftslurm.render.quoting import directive_value_problem
from ftslurm.rundir import RunDir
from ftslurm.spec.fields import Issues, Section, check_writable_place
from ftslurm.spec.limits import env_name_problem
from ftslurm.spec.resources import Resources, read_resources
from ftslurm.spec.sections import (
    AutoResume,
    Signals,
    autoresume_problem,
    read_autoresume,
    read_fault_tolerance,
    read_signals,
)
from ftslurm.spec.yaml_loader import (
    MAX_SPEC_BYTES,
    YamlLimitError,
    YMapping,
    load_yaml,
    size_problem,
)

Launcher = Literal["ft", "torchrun", "none"]
LAUNCHERS: tuple[str, ...] = ("ft", "torchrun", "none")
#: In-job restarts when `max_restarts` is not given (ft and torchrun launchers).
DEFAULT_MAX_RESTARTS = 3

TOP_LEVEL_KEYS: tuple[str, ...] = (
    "name", "run_dir", "workdir", "template", "python",
    "nodes", "nproc_per_node", "ntasks", "gpus_per_node", "cpus_per_task", "mem", "time",
    "partition", "account", "qos", "constraint", "exclude", "nodelist", "exclusive", "sbatch",
    "command", "env", "setup", "srun_args", "container_image", "container_mounts",
    "launcher", "max_restarts", "launcher_args",
    "fault_tolerance", "autoresume", "signals", "sweep",
)

#: The names ftslurm keeps directly under the run directory (see `RunDir`).
RUN_DIR_RESERVED_NAMES: tuple[str, ...] = RunDir.RESERVED_NAMES

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class Command:
    """The training program: a Python script, `-m module`, or another executable."""

    kind: Literal["script", "module", "executable"]
    target: str
    args: tuple[str, ...] = ()

    def argv(self, python: str) -> tuple[str, ...]:
        """The full command line that runs it directly (what one rank runs)."""
        if self.kind == "script":
            return (python, self.target, *self.args)
        if self.kind == "module":
            return (python, "-m", self.target, *self.args)
        return (self.target, *self.args)


@dataclass(frozen=True)
class Launch:
    """How ranks are started on the nodes."""

    launcher: Launcher = "ft"
    max_restarts: int = DEFAULT_MAX_RESTARTS
    launcher_args: tuple[str, ...] = ()
    srun_args: tuple[str, ...] = ()
    container_image: str | None = None
    container_mounts: tuple[str, ...] = ()
    python: str = "python3"


@dataclass(frozen=True)
class JobSpec:
    """A validated job spec; build it with `load_spec`."""

    source: Path
    name: str
    run_dir: Path
    workdir: Path
    template: Path | None
    resources: Resources
    command: Command
    env: tuple[tuple[str, str], ...]
    setup: tuple[str, ...]
    launch: Launch
    fault_tolerance: MappingProxyType[str, Any]
    autoresume: AutoResume
    signals: Signals
    #: `file:line: key: message` of each doubt that does not make the spec invalid.
    warnings: tuple[str, ...] = ()

    @property
    def ft_config_path(self) -> Path:
        """Where the `fault_tolerance:` section is written for the launcher."""
        return RunDir(self.run_dir).ft_config

    @property
    def logs_dir(self) -> Path:
        """Where SLURM writes the job's output."""
        return RunDir(self.run_dir).logs

    def with_max_failures(self, max_failures: int) -> JobSpec:
        """A copy with `autoresume.max_failures` replaced (the CLI `--max-failures`)."""
        problem = autoresume_problem("max_failures", max_failures)
        if problem:
            raise UsageError(f"--max-failures: {problem}")
        return replace(self, autoresume=replace(self.autoresume, max_failures=max_failures))


def read_spec_text(path: str | os.PathLike[str]) -> str:
    """The text of the spec file at `path`; UsageError (exit 2) when it is missing, unreadable,
    not UTF-8 or larger than MAX_SPEC_BYTES (refused without being parsed)."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_SPEC_BYTES + 1)
        problem = size_problem(len(data), str(os.path.abspath(path)))
        if problem:
            raise YamlLimitError(problem)
        return data.decode("utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file", hint="give the path of your job.yaml") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: cannot read the job spec: {error}") from None


def load_spec(path: str | os.PathLike[str], *, show_warnings: bool = True) -> JobSpec:
    """Read and validate a job spec file; raises UsageError (exit 2) listing every problem.

    A file larger than MAX_SPEC_BYTES is refused without being parsed. Warnings are printed to
    stderr as `ftslurm: warning: file:line: key: message` unless `show_warnings` is False.
    """
    source = Path(os.path.abspath(path))
    spec = parse_spec(read_spec_text(path), source)
    if show_warnings:
        for warning in spec.warnings:
            print(f"ftslurm: warning: {warning}", file=sys.stderr)
    return spec


def parse_spec(text: str, source: Path) -> JobSpec:
    """Validate the YAML `text` of a spec whose file is `source` (used for messages and paths)."""
    filename = str(source)
    root = load_yaml(text, filename)
    issues = Issues(filename)
    if not isinstance(root, YMapping):
        issues.add(getattr(root, "line", 1), "(top level)",
                   "expected a mapping of keys such as name:, nodes:, command:")
        issues.raise_if_any()
    assert isinstance(root, YMapping)
    top = Section(root, "", issues)
    top.check_keys(TOP_LEVEL_KEYS)
    if top.has("sweep"):
        top.error("sweep", "this spec is a sweep: `ftslurm submit` runs one run per point and "
                           "`ftslurm validate` checks every point (docs/sweeps.md)")
    base = source.parent
    name = _read_name(top)
    resources = read_resources(top)
    launch = _read_launch(top)
    fault_tolerance = read_fault_tolerance(top)
    signals = read_signals(top, resources.time_seconds, launch.launcher)
    run_dir = _path(base, top.string("run_dir", None)) or base / "runs" / (name or "job")
    check_writable_place(top, "run_dir", run_dir, directory=True)
    problem = directive_value_problem(str(run_dir))
    if problem:
        top.error("run_dir", f"{run_dir} {problem}")
    spec = JobSpec(
        source=source,
        name=name,
        run_dir=run_dir,
        workdir=_path(base, top.string("workdir", None, directive=True)) or base,
        template=_read_template(top, base),
        resources=resources,
        command=_read_command(top),
        env=_read_env(top),
        setup=_read_setup(top),
        launch=launch,
        fault_tolerance=MappingProxyType(fault_tolerance),
        autoresume=read_autoresume(
            top, base, run_dir, forbidden=lambda flag: flag_file_problem(flag, run_dir, source)
        ),
        signals=signals,
        warnings=issues.formatted_warnings(),
    )
    issues.raise_if_any()
    return spec


def flag_file_problem(flag_file: Path, run_dir: Path, source: Path) -> str | None:
    """Why `flag_file` cannot be the finished flag of a run in `run_dir` whose spec is `source`,
    or None: it may not be the run directory, a folder above it, the job spec itself, or one of
    ftslurm's own files and folders of the run directory (RUN_DIR_RESERVED_NAMES) or inside one.
    Symbolic links are followed."""
    flag = Path(os.path.realpath(flag_file))
    real_run_dir = Path(os.path.realpath(run_dir))
    example = f"e.g. the default {RunDir(run_dir).default_flag}"
    if flag == real_run_dir or flag in real_run_dir.parents:
        return f"{flag_file} is the run directory or a folder above it; give the path of a " \
               f"file, {example}"
    if flag == Path(os.path.realpath(source)):
        return f"{flag_file} is the job spec itself, which exists already, so the run would " \
               f"count as finished at once; {example}"
    for name in RUN_DIR_RESERVED_NAMES:
        owned = real_run_dir / name
        if flag == owned or owned in flag.parents:
            return (f"{flag_file} is ftslurm's own {name!r} of the run directory (the chain "
                    "would read it as 'training finished', or the training would overwrite it); "
                    f"{example}")
    return None


def _path(base: Path, text: str | None) -> Path | None:
    if text is None:
        return None
    return Path(os.path.abspath(base / os.path.expanduser(text)))


def _read_name(top: Section) -> str:
    name: str | None = top.string("name", None, directive=True)
    if name is None:
        if not top.has("name"):
            top.error("name", "missing; give the run a name, e.g. `name: llama-8b`")
        return ""
    if "/" in name or name in (".", ".."):
        top.error("name", f"{name!r} cannot be a directory name; use no '/' and not '.' or '..'")
        return ""
    return name


def _read_template(top: Section, base: Path) -> Path | None:
    path = _path(base, top.string("template", None))
    if path is not None and not path.is_file():
        top.error("template", f"{path} is not a file; give the path of your sbatch template "
                              "(relative to the job spec) or remove the key")
    return path


def _read_command(top: Section) -> Command:
    words = top.string_list("command")
    if not words:
        if not top.has("command"):
            top.error("command", "missing; e.g. `command: [train.py, --lr, '3e-4']` or "
                                 "`command: -m mypkg.train --epochs 10`")
        else:
            top.error("command", "is empty; give a script, `-m module` or executable")
        return Command("executable", "true")
    if words[0] == "-m":
        if len(words) < 2 or words[1].startswith("-") or not words[1].strip():
            top.error("command", "`-m` must be followed by a module name, e.g. -m mypkg.train")
            return Command("executable", "true")
        return Command("module", words[1], words[2:])
    if not words[0].strip():
        top.error("command", "the program (the first word) is empty; give a script, "
                             "`-m module` or executable, e.g. `command: [train.py, --lr, '3e-4']`")
        return Command("executable", "true")
    if words[0].startswith("-"):
        top.error("command", f"starts with the option {words[0]!r}; put launcher options in "
                             "launcher_args and start the command with a script or -m module")
    kind: Literal["script", "executable"] = "script" if words[0].endswith(".py") else "executable"
    return Command(kind, words[0], words[1:])


def _read_env(top: Section) -> tuple[tuple[str, str], ...]:
    section = top.section("env")
    env: list[tuple[str, str]] = []
    for key in section.node.entries:
        problem = env_name_problem(key)
        if not _ENV_NAME.match(key):
            section.error(key, "not a valid environment variable name (letters, digits, _)")
        elif problem:
            section.error(key, problem)
        elif not section.has(key):
            section.error(key, "has no value; write '' for an empty string")
        else:
            value = section.string(key, None, nonempty=False)
            if value is not None:
                env.append((key, value))
    return tuple(env)


def _read_setup(top: Section) -> tuple[str, ...]:
    lines = top.string_list("setup", split=False)
    return tuple(line for block in lines for line in block.splitlines())


def _read_launch(top: Section) -> Launch:
    launcher = top.string("launcher", "ft")
    if launcher not in LAUNCHERS:
        top.error("launcher", f"expected one of {', '.join(LAUNCHERS)}, got {launcher!r}")
        launcher = "ft"
    max_restarts = top.integer("max_restarts", DEFAULT_MAX_RESTARTS, minimum=0)
    if launcher == "none":
        for key in ("max_restarts", "launcher_args"):
            if top.has(key):
                top.error(key, "launcher none runs the command with srun only; remove "
                               f"{key} or use launcher ft or torchrun")
        max_restarts = 0
    mounts = top.string_list("container_mounts", split=False)
    if len(mounts) == 1 and "," in mounts[0]:
        mounts = tuple(mount.strip() for mount in mounts[0].split(","))
    elif any("," in mount for mount in mounts):
        top.error("container_mounts", "an entry holds ','; give one SRC:DST[:FLAGS] per item")
    if mounts and not top.has("container_image"):
        top.error("container_mounts", "needs container_image (pyxis mounts into a container)")
    python = top.string("python", "python3")
    if python in BASH_BUILTINS:
        top.error("python", f"{python!r} is a bash builtin: the script would run the builtin, "
                            "not a program of that name; give its path (e.g. /usr/bin/"
                            f"{python})")
    return Launch(
        launcher=launcher,
        max_restarts=max_restarts,
        launcher_args=top.string_list("launcher_args"),
        srun_args=top.string_list("srun_args"),
        container_image=top.string("container_image", None),
        container_mounts=mounts,
        python=python,
    )


#: bash's builtins (`compgen -b`): a command word of one of these names runs the builtin,
#: however it is quoted, so `python:` may not be one.
BASH_BUILTINS = frozenset({
    ".", ":", "[", "alias", "bg", "bind", "break", "builtin", "caller", "cd", "command",
    "compgen", "complete", "compopt", "continue", "declare", "dirs", "disown", "echo", "enable",
    "eval", "exec", "exit", "export", "false", "fc", "fg", "getopts", "hash", "help", "history",
    "jobs", "kill", "let", "local", "logout", "mapfile", "popd", "printf", "pushd", "pwd", "read",
    "readarray", "readonly", "return", "set", "shift", "shopt", "source", "suspend", "test",
    "times", "trap", "true", "type", "typeset", "ulimit", "umask", "unalias", "unset", "wait",
})

__all__ = [
    "BASH_BUILTINS",
    "LAUNCHERS",
    "RUN_DIR_RESERVED_NAMES",
    "Command",
    "JobSpec",
    "Launch",
    "Resources",
    "flag_file_problem",
    "load_spec",
    "parse_spec",
    "read_spec_text",
]
