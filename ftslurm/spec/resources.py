"""The resource part of the job spec: what the job asks SLURM for (`Resources`).

Covers nodes, ranks per node, GPUs, CPUs, memory, the time limit, placement (partition, account,
qos, constraint, exclude, nodelist, exclusive) and the free-form `sbatch:` map of further
`#SBATCH` options (minus those that break the chain: ftslurm.spec.limits).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ftslurm.spec.duration import TimeFormatError, parse_duration
from ftslurm.spec.fields import Section
from ftslurm.spec.limits import NODES_WARNING_ABOVE, sbatch_option_problem
from ftslurm.spec.yaml_loader import YScalar

#: sbatch options that ftslurm writes itself, and the spec key to use instead.
MANAGED_SBATCH_OPTIONS: dict[str, str] = {
    "job-name": "name", "nodes": "nodes", "ntasks": "ntasks", "ntasks-per-node": "nproc_per_node",
    "cpus-per-task": "cpus_per_task", "gpus-per-node": "gpus_per_node", "mem": "mem",
    "time": "time", "partition": "partition", "account": "account", "qos": "qos",
    "constraint": "constraint", "exclude": "exclude", "nodelist": "nodelist",
    "exclusive": "exclusive", "chdir": "workdir", "output": "run_dir", "error": "run_dir",
    "open-mode": "run_dir", "signal": "signals",
}

_SBATCH_OPTION = re.compile(r"[a-z][a-z0-9-]*\Z")
_MEM = re.compile(r"\d+[KMGT]?\Z", re.IGNORECASE)


@dataclass(frozen=True)
class Resources:
    """What the job asks SLURM for."""

    nodes: int = 1
    nproc_per_node: int = 1
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    time: str | None = None
    #: `time` in seconds; None when unlimited or not given (the partition's default).
    time_seconds: int | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    nodelist: str | None = None
    exclusive: bool = False
    #: Further `#SBATCH` options in file order: (option, value); value None is a flag.
    sbatch: tuple[tuple[str, str | None], ...] = ()

    @property
    def world_size(self) -> int:
        """Ranks in the whole job."""
        return self.nodes * self.nproc_per_node


def read_resources(top: Section) -> Resources:
    """The resource keys of the top level, checked against each other."""
    nodes = top.integer("nodes", 1, minimum=1)
    if nodes > NODES_WARNING_ABOVE:
        top.warn("nodes", f"{nodes} nodes is more than {NODES_WARNING_ABOVE}; few clusters have "
                          "that many, and a job larger than its partition waits in the queue "
                          "forever (check the partition's size with `sinfo -s`)")
    gpus = top.integer("gpus_per_node", None, minimum=0)
    nproc = top.integer("nproc_per_node", None, minimum=1)
    ntasks = top.integer("ntasks", None, minimum=1)
    if ntasks is not None:
        if ntasks % nodes:
            top.error("ntasks", f"{ntasks} tasks cannot be spread evenly over {nodes} nodes; "
                                "make ntasks a multiple of nodes")
        elif nproc is not None and nproc * nodes != ntasks:
            top.error("nproc_per_node", f"nproc_per_node {nproc} x nodes {nodes} is not "
                                        f"ntasks {ntasks}; give only one of the two")
        else:
            nproc = ntasks // nodes
    if nproc is None:
        nproc = gpus or 1
    if gpus and gpus % nproc:
        top.error("nproc_per_node", f"{nproc} ranks per node cannot share {gpus} GPUs evenly; "
                                    "make nproc_per_node divide gpus_per_node")
    mem = top.string("mem", None, directive=True)
    if mem is not None and not _MEM.match(mem):
        top.error("mem", f"expected a size such as 64G, 500M or 0 (all of the node), got {mem!r}")
    time = top.string("time", None, directive=True)
    time_seconds = None
    if time is not None:
        try:
            time_seconds = parse_duration(time)
        except TimeFormatError as error:
            top.error("time", str(error))
    return Resources(
        nodes=nodes, nproc_per_node=nproc, gpus_per_node=gpus,
        cpus_per_task=top.integer("cpus_per_task", None, minimum=1), mem=mem, time=time,
        time_seconds=time_seconds,
        partition=top.string("partition", None, directive=True),
        account=top.string("account", None, directive=True),
        qos=top.string("qos", None, directive=True),
        constraint=top.string("constraint", None, directive=True),
        exclude=_node_list(top, "exclude"), nodelist=_node_list(top, "nodelist"),
        exclusive=top.boolean("exclusive", False), sbatch=_read_sbatch(top),
    )


def _node_list(top: Section, key: str) -> str | None:
    names = top.string_list(key, split=False)
    text = ",".join(name.strip() for name in names)
    problem = text and not all(name.strip() for name in names) and "an empty node name"
    problem = problem or (text and any(c.isspace() for c in text) and "spaces in node names")
    if problem:
        top.error(key, f"{problem}; expected a node list such as n[1-4],n7 or a list of names")
        return None
    return text or None


def _read_sbatch(top: Section) -> tuple[tuple[str, str | None], ...]:
    section = top.section("sbatch")
    options: list[tuple[str, str | None]] = []
    for key, entry in section.node.entries.items():
        option = key.removeprefix("--") if key.startswith("--") else key.removeprefix("-")
        problem = sbatch_option_problem(option, MANAGED_SBATCH_OPTIONS)
        if problem:
            section.error(key, problem)
        elif not _SBATCH_OPTION.match(option):
            fixed = option.lower().replace("_", "-")
            section.error(key, f"not an sbatch long option name; write it as in `man sbatch`, "
                               f"e.g. {fixed!r}")
        elif isinstance(entry.node, YScalar) and isinstance(entry.node.value, bool):
            if entry.node.value:
                options.append((option, None))
            else:
                section.error(key, "use true for a flag without a value; remove the key to omit it")
        elif not section.has(key):
            section.error(key, "needs a value (or true for a flag without a value)")
        else:
            value = section.string(key, None, directive=True)
            if value is not None:
                options.append((option, value))
    return tuple(options)


__all__ = ["MANAGED_SBATCH_OPTIONS", "Resources", "read_resources"]
