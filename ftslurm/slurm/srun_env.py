"""`python -m ftslurm.slurm.srun_env -- CMD`: run CMD as one rank of an srun step (launcher none).

srun starts one task per rank but sets only SLURM's variables; torch.distributed's `env://`
initialization wants torchrun's. This maps them and then replaces itself with CMD (exec):

    RANK = SLURM_PROCID, WORLD_SIZE = SLURM_NTASKS, LOCAL_RANK = SLURM_LOCALID,
    GROUP_RANK = NODE_RANK = SLURM_NODEID,
    LOCAL_WORLD_SIZE = this node's count in SLURM_STEP_TASKS_PER_NODE ("2(x3),1" style),
    MASTER_ADDR / MASTER_PORT: kept from the environment (the sbatch script exports them).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence

from ftslurm import env_vars, exit_codes

_TASKS_PER_NODE = re.compile(r"(\d+)(?:\(x(\d+)\))?\Z")


class SrunEnvError(ValueError):
    """The SLURM environment is missing or malformed; the message names the variable."""


def tasks_per_node(text: str) -> list[int]:
    """Expand SLURM's compressed tasks-per-node list: "2(x3),1" -> [2, 2, 2, 1]."""
    counts: list[int] = []
    for part in text.split(","):
        match = _TASKS_PER_NODE.match(part.strip())
        if not match:
            raise SrunEnvError(f"cannot read tasks per node from {text!r}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


def _require(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name)
    if value is None or value == "":
        raise SrunEnvError(f"${name} is not set: run this inside an srun step")
    return value


def _integer(environ: Mapping[str, str], name: str) -> int:
    value = _require(environ, name)
    if not value.isdigit():
        raise SrunEnvError(f"${name} is {value!r}, not a number")
    return int(value)


def rank_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """torchrun's variables for the srun task described by `environ` (SLURM_* variables)."""
    rank = _integer(environ, env_vars.SLURM_PROCID)
    world_size = _integer(environ, env_vars.SLURM_NTASKS)
    node = _integer(environ, env_vars.SLURM_NODEID)
    counts_text = environ.get(env_vars.SLURM_STEP_TASKS_PER_NODE) or _require(
        environ, env_vars.SLURM_TASKS_PER_NODE
    )
    counts = tasks_per_node(counts_text)
    if node >= len(counts):
        raise SrunEnvError(
            f"{env_vars.SLURM_NODEID} {node} is beyond the tasks-per-node list {counts_text!r}"
        )
    return {
        env_vars.RANK: str(rank),
        env_vars.WORLD_SIZE: str(world_size),
        env_vars.LOCAL_RANK: str(_integer(environ, env_vars.SLURM_LOCALID)),
        env_vars.LOCAL_WORLD_SIZE: str(counts[node]),
        env_vars.GROUP_RANK: str(node),
        env_vars.NODE_RANK: str(node),
        env_vars.MASTER_ADDR: _require(environ, env_vars.MASTER_ADDR),
        env_vars.MASTER_PORT: _require(environ, env_vars.MASTER_PORT),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Set the rank's variables and exec the command after `--`; returns only on an error."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python -m ftslurm.slurm.srun_env -- COMMAND [ARGS...]", file=sys.stderr)
        return exit_codes.USAGE
    try:
        os.environ.update(rank_environment(os.environ))
    except SrunEnvError as error:
        print(f"ftslurm.slurm.srun_env: error: {error}", file=sys.stderr)
        return exit_codes.USAGE
    try:
        os.execvp(args[0], args)
    except OSError as error:
        print(f"ftslurm.slurm.srun_env: error: cannot run {args[0]!r}: {error}", file=sys.stderr)
        return 127
    return exit_codes.FAILED  # pragma: no cover (execvp does not return)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = [
    "SrunEnvError",
    "main",
    "rank_environment",
    "tasks_per_node",
]
