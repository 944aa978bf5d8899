"""The job spec: `job.yaml` -> a validated, frozen `JobSpec`.

`model` (the JobSpec and `load_spec`), `yaml_loader` (bounded YAML with line numbers), `fields`
(typed readers that collect issues), `resources` / `sections` (the spec's parts), `limits` (values
refused everywhere), `duration` (SLURM's time format).
"""

from ftslurm.spec.model import (
    LAUNCHERS,
    RUN_DIR_RESERVED_NAMES,
    TOP_LEVEL_KEYS,
    Command,
    JobSpec,
    Launch,
    Resources,
    load_spec,
    parse_spec,
)

__all__ = [
    "LAUNCHERS",
    "RUN_DIR_RESERVED_NAMES",
    "TOP_LEVEL_KEYS",
    "Command",
    "JobSpec",
    "Launch",
    "Resources",
    "load_spec",
    "parse_spec",
]
