"""`<run_dir>/chain.json`: how the run's attempts are submitted (backend, script, limits).

Written by `ftslurm submit` (atomically) and read by every other chain command and hook, so that
nothing needs the original job.yaml again (its relative paths only make sense next to it). A
missing, corrupted or foreign file is an error naming the file and what to do.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ftslurm import env_vars
from ftslurm.atomic import write_json_atomic
from ftslurm.chain.policy import ChainConfig
from ftslurm.errors import FtslurmError
from ftslurm.rundir import RunDir

FORMAT = "ftslurm.chain"
VERSION = 1

Backend = Literal["slurm", "local"]
#: self: each SLURM job pre-schedules its successor; loop: `ftslurm watch` submits attempts.
Mode = Literal["self", "loop"]


class ChainSettingsError(FtslurmError):
    """chain.json is missing, corrupted or not ftslurm's."""


@dataclass(frozen=True)
class ChainSettings:
    """Everything needed to submit one more attempt of the run."""

    run_dir: str
    backend: Backend
    mode: Mode
    #: The rendered script every attempt runs.
    script: str
    workdir: str
    job_name: str
    flag_file: str
    config: ChainConfig
    owner_uid: int
    #: Directory put first on PATH for the attempts: the Python environment of `ftslurm`.
    bin_dir: str
    time_limit_s: float | None = None
    warning_signal: int | None = None
    warning_lead_s: float = 0.0
    kill_wait_s: float = 30.0
    extra_env: dict[str, str] = field(default_factory=dict)
    #: The sweep directory this run is a point of (its `sweep.json` decides when it starts).
    sweep_dir: str | None = None

    @property
    def path(self) -> Path:
        """Where these settings live."""
        return RunDir(self.run_dir).chain_settings

    def attempt_env(self, attempt: int) -> dict[str, str]:
        """The environment an attempt is submitted with."""
        path = os.environ.get("PATH", os.defpath)
        if not path.startswith(self.bin_dir + os.pathsep):
            path = self.bin_dir + os.pathsep + path
        return {
            **self.extra_env,
            "PATH": path,
            env_vars.RUN_DIR: self.run_dir,
            env_vars.ATTEMPT: str(attempt),
            env_vars.FINISHED_FLAG_FILE: self.flag_file,
        }

    def flag_exists(self) -> bool:
        """Whether the finished flag file exists."""
        return Path(self.flag_file).exists()

    def to_json(self) -> dict[str, Any]:
        """The document written to chain.json."""
        data = asdict(self)
        data["config"] = self.config.to_dict()
        return {"format": FORMAT, "version": VERSION, **data}

    def save(self) -> None:
        """Write chain.json atomically."""
        Path(self.run_dir).mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self.to_json(), sync_dir=True)


def load_settings(run_dir: str | os.PathLike[str]) -> ChainSettings:
    """Read `<run_dir>/chain.json`; `ChainSettingsError` naming the file when it is unusable."""
    path = RunDir(run_dir).chain_settings
    hint = "is this a run directory made by `ftslurm submit`? (move a broken one aside)"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ChainSettingsError(f"no {path.name} in {run_dir}", hint=hint) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ChainSettingsError(f"{path} is corrupted: {error}", hint=hint) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ChainSettingsError(f"{path} is not an ftslurm chain file", hint=hint)
    if not isinstance(doc.get("version"), int) or doc["version"] > VERSION:
        raise ChainSettingsError(
            f"{path} has format version {doc.get('version')!r}; this ftslurm reads up to "
            f"{VERSION}", hint="use the ftslurm version that created the run")
    values = {k: v for k, v in doc.items() if k not in ("format", "version")}
    try:
        values["config"] = ChainConfig.from_mapping(values["config"])
        values["run_dir"] = str(Path(run_dir).resolve())
        return ChainSettings(**values)
    except (KeyError, TypeError, FtslurmError) as error:
        raise ChainSettingsError(f"{path} is corrupted: {error}", hint=hint) from None


__all__ = ["ChainSettings", "ChainSettingsError", "load_settings"]
