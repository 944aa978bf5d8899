"""The script an attempt runs with the local backend: the job spec's launch on this machine.

The sbatch templates need `srun` and `scontrol`; locally there is one node and no SLURM, so the
launch runs directly (`ftslurm launch --standalone`, `torch.distributed.run --standalone`, or one
process per rank for `launcher: none`). Everything else is the same as under SLURM: the
environment, the setup lines, the chain hooks, and the warning signal (sent by the local
supervisor to this script only, like `--signal=B:...`) turned into SIGTERM for the launch. Values
come from `ftslurm.render.script.substitutions`, so they are quoted the same way.
"""

from __future__ import annotations

import importlib.resources
from typing import TYPE_CHECKING

from ftslurm import env_vars
from ftslurm.errors import UsageError
from ftslurm.render.script import ScriptTemplate, substitutions

if TYPE_CHECKING:
    from ftslurm.spec.model import JobSpec

#: The script (sbatch_templates/local.sh) and the launch it runs, per launcher.
_TEMPLATE = "local.sh"
_LAUNCH = {"ft": "local-ft.sh", "torchrun": "local-torchrun.sh", "none": "local-none.sh"}


def _template(name: str) -> str:
    return importlib.resources.files("ftslurm.sbatch_templates").joinpath(name).read_text(
        encoding="utf-8")


def check_local(spec: JobSpec) -> None:
    """Refuse what the local backend cannot run (UsageError, exit 2)."""
    problems = []
    if spec.resources.nodes != 1:
        problems.append(f"nodes: {spec.resources.nodes}; the local backend runs on one machine "
                        "(set nodes: 1, or submit to SLURM with --backend slurm)")
    if spec.template is not None:
        problems.append("template: a custom sbatch template needs SLURM (--backend slurm)")
    if spec.launch.container_image:
        problems.append("container_image: containers need SLURM's pyxis (--backend slurm)")
    if problems:
        raise UsageError(f"{spec.source}: cannot run with the local backend:\n  "
                         + "\n  ".join(problems))


def render_local(spec: JobSpec) -> str:
    """The local backend's script for `spec`."""
    check_local(spec)
    values = substitutions(spec)
    values["rdzv_port"] = f'"${{{env_vars.RDZV_PORT}:?set by the local supervisor}}"'
    launch = _template(_LAUNCH[spec.launch.launcher]).rstrip("\n")
    text = _template(_TEMPLATE).replace("$launcher", spec.launch.launcher)
    text = text.replace("$launch\n", launch + "\n")
    kept: list[str] = []
    for line in text.splitlines():
        names = [m.group("named") for m in ScriptTemplate.pattern.finditer(line)]
        rest = ScriptTemplate.pattern.sub("", line).replace("\\", "").strip()
        if names and not rest and all(values.get(name, "x") == "" for name in names):
            continue  # only empty placeholders (and a continuation): leave the line out
        if line.strip() == "" and kept and kept[-1].strip() == "":
            continue
        kept.append(line)
    return ScriptTemplate("\n".join(kept) + "\n").substitute(values)


__all__ = ["check_local", "render_local"]
