"""The script an attempt runs with the local backend: the job spec's launch on this machine.

The sbatch templates need `srun` and `scontrol`; locally there is one node and no SLURM, so the
launch runs directly (`ftslurm launch --standalone`, `torch.distributed.run --standalone`, or one
process per rank for `launcher: none`). Everything else is the same as under SLURM: the
environment, the setup lines, the chain hooks, and the warning signal (sent by the local
supervisor to this script only, like `--signal=B:...`) turned into SIGTERM for the launch. Values
come from `ftslurm.render.script.substitutions`, so they are quoted the same way.
"""

from __future__ import annotations

from ftslurm.errors import UsageError
from ftslurm.render.script import ScriptTemplate, substitutions
from ftslurm.spec.model import JobSpec

TEMPLATE = """\
#!/bin/bash
# Rendered by `ftslurm submit --backend local` (launcher: $launcher): the launch on this machine.
set -euo pipefail

# Environment of the job: ftslurm's variables, then the spec's `env:`.
{{ environment }}

# The local backend sends the warning signal to this script before the time limit: stop the launch.
launch_pids=()
# shellcheck disable=SC2317  # (runs from the trap below)
forward_stop() {
  echo "ftslurm: warning signal received; asking the launch to stop" >&2
  if ((${#launch_pids[@]})); then kill -TERM "${launch_pids[@]}" 2>/dev/null || true; fi
}
warned=0  # the end hook tells a stop for the time limit from a failure
trap 'warned=1; forward_stop' {{ warning_signal }}

{{ chain_start }}

{{ chain_end }}

{{ setup }}

$launch

# Wait for the launch; a trapped signal interrupts `wait`, so wait again until it exits.
status=0
for pid in "${launch_pids[@]}"; do
  while :; do
    wait "$pid" && rc=0 || rc=$?
    kill -0 "$pid" 2>/dev/null || break
  done
  if [ "$status" -eq 0 ]; then status=$rc; fi
done

exit "$status"
"""

_FT = """\
# One fault-tolerant launcher; it starts {{ nproc_per_node }} rank(s) and restarts them in place.
# --standalone: the rendezvous store listens on a port the kernel picks (localhost:0), so
# concurrent local runs never share one (FTSLURM_RDZV_PORT is for `launcher: none`).
{{ python }} -m ftslurm.cli launch --standalone \\
  --nnodes=1 --nproc-per-node={{ nproc_per_node }} \\
  --max-restarts={{ max_restarts }} --shutdown-timeout={{ stop_grace }} \\
  --ft-cfg-path={{ ft_config }} \\
  {{ launcher_args }} \\
  {{ launcher_command }} &
launch_pids+=("$!")"""

_TORCHRUN = """\
# torchrun on this machine; it starts {{ nproc_per_node }} rank(s).
# --standalone: the rendezvous store listens on a port the kernel picks (localhost:0), so
# concurrent local runs never share one (FTSLURM_RDZV_PORT is for `launcher: none`).
{{ python }} -m torch.distributed.run --standalone \\
  --nnodes=1 --nproc-per-node={{ nproc_per_node }} --max-restarts={{ max_restarts }} \\
  {{ launcher_args }} \\
  {{ launcher_command }} &
launch_pids+=("$!")"""

_NONE = """\
# One process per rank, with torch.distributed's variables.
# FTSLURM_RDZV_PORT: a port the local supervisor found free when this job started.
export MASTER_ADDR=127.0.0.1 MASTER_PORT="${FTSLURM_RDZV_PORT:?set by the local supervisor}"
export WORLD_SIZE={{ nproc_per_node }} LOCAL_WORLD_SIZE={{ nproc_per_node }} GROUP_RANK=0
for ((rank = 0; rank < {{ nproc_per_node }}; rank++)); do
  RANK=$rank LOCAL_RANK=$rank {{ command }} &
  launch_pids+=("$!")
done"""

_LAUNCH = {"ft": _FT, "torchrun": _TORCHRUN, "none": _NONE}


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
    launch = _LAUNCH[spec.launch.launcher]
    text = TEMPLATE.replace("$launcher", spec.launch.launcher).replace("$launch\n", launch + "\n")
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
