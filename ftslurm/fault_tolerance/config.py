"""`FaultToleranceConfig`: the launcher's fault-tolerance settings and where they come from.

Sources, highest precedence first: the `--ft-*` command-line options, the `fault_tolerance:` section
of a YAML file (`--ft-cfg-path`, or the file named by `$FTSLURM_FT_CONFIG`), the defaults below.
In YAML and on the command line, `null` (or `none`) as a timeout means "no timeout".
Learned timeouts (see `ftslurm.fault_tolerance.timeouts`) are applied on top by the launcher.
"""

from __future__ import annotations

import dataclasses
import math
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from ftslurm.errors import UsageError
from ftslurm.signals import parse_signal

#: Name of the YAML section that holds the settings.
SECTION = "fault_tolerance"


@dataclass
class FaultToleranceConfig:
    """Fault-tolerance settings of the launcher; field names match nvidia-resiliency-ext's.

    Timeouts are in seconds; `None` means no timeout (that check is off).
    """

    #: Time from a rank's start to its first heartbeat (covers start-up and checkpoint loading).
    initial_rank_heartbeat_timeout: float | None = 60.0 * 60.0
    #: Longest allowed time between two heartbeats once the first one arrived.
    rank_heartbeat_timeout: float | None = 45.0 * 60.0
    #: How often the launcher checks the heartbeats (seconds).
    workload_check_interval: float = 0.25
    #: `calculate_and_set_hb_timeouts()` multiplies the longest observed interval by this.
    safety_factor: float = 5.0
    #: Signal sent to a hung rank (after its stack dump); SIGKILL follows after the grace.
    rank_termination_signal: signal.Signals = signal.SIGTERM
    #: Seconds a hung rank gets to exit after the termination signal before SIGKILL.
    rank_termination_grace: float = 5.0
    #: The least a learned timeout may be (seconds; `None`: no floor). Applies to timeouts the
    #: ranks request and to those loaded from the run directory, never to configured ones.
    #: Learned timeouts are observed intervals times the safety factor, so a fast step learns a
    #: timeout of a few seconds, which one slow step (an unheartbeated checkpoint save, an
    #: evaluation, a slow filesystem or data loader, a collective waiting for a straggler) would
    #: turn into a false hang and a restart of the whole job. 5 minutes is far below the
    #: configured defaults (45 and 60 minutes), so a real hang is still caught much sooner.
    min_learned_timeout: float | None = 300.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `UsageError` naming the setting whose value is out of range."""
        for name in ("initial_rank_heartbeat_timeout", "rank_heartbeat_timeout"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise UsageError(
                    f"fault_tolerance.{name} must be a positive number of seconds or null, "
                    f"got {value!r}"
                )
        if not (self.workload_check_interval > 0):
            raise UsageError(
                f"fault_tolerance.workload_check_interval must be > 0, "
                f"got {self.workload_check_interval!r}"
            )
        if not (self.safety_factor >= 1.0):
            raise UsageError(
                f"fault_tolerance.safety_factor must be >= 1, got {self.safety_factor!r}"
            )
        floor = self.min_learned_timeout
        if floor is not None and (
            isinstance(floor, bool) or not isinstance(floor, int | float)
            or not (floor >= 0 and math.isfinite(floor))
        ):
            raise UsageError(
                f"fault_tolerance.min_learned_timeout must be a number of seconds >= 0 or null "
                f"(no floor), got {floor!r}"
            )
        if not (self.rank_termination_grace >= 0):
            raise UsageError(
                f"fault_tolerance.rank_termination_grace must be >= 0, "
                f"got {self.rank_termination_grace!r}"
            )

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any], *, origin: str = "config"
    ) -> FaultToleranceConfig:
        """Build from a mapping of field names to raw values (YAML scalars or CLI strings)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(
                f"{origin}: unknown fault_tolerance key(s): {', '.join(unknown)}",
                hint=f"supported keys: {', '.join(sorted(known))}",
            )
        parsed = {name: parse_value(name, raw, origin=origin) for name, raw in values.items()}
        return cls(**parsed)

    @classmethod
    def from_yaml_file(cls, path: str | Path) -> FaultToleranceConfig:
        """Read the `fault_tolerance:` section of a YAML file (defaults for keys it leaves out)."""
        return cls.from_mapping(read_yaml_section(path), origin=str(path))

    def merged(
        self, overrides: Mapping[str, Any], *, origin: str = "command line"
    ) -> FaultToleranceConfig:
        """A copy with `overrides` (raw values keyed by field name) applied on top."""
        parsed = {name: parse_value(name, raw, origin=origin) for name, raw in overrides.items()}
        return dataclasses.replace(self, **parsed)

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-friendly view (signal by name)."""
        data = dataclasses.asdict(self)
        data["rank_termination_signal"] = self.rank_termination_signal.name
        return data


def read_yaml_section(path: str | Path) -> dict[str, Any]:
    """The `fault_tolerance:` mapping of a YAML file (or the whole file if it has no section)."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as error:
        raise UsageError(f"cannot read the FT config file {file}: {error.strerror}") from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UsageError(f"{file}: invalid YAML: {error}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{file}: expected a mapping with a `{SECTION}:` section")
    section = data.get(SECTION, data)
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise UsageError(f"{file}: `{SECTION}:` must be a mapping, got {type(section).__name__}")
    return dict(section)


def parse_timeout(raw: Any) -> float | None:
    """A timeout in seconds: a positive number, or null/none/"null" for no timeout."""
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in {"null", "none", "inf"}):
        return None
    if isinstance(raw, bool):
        raise ValueError("a boolean is not a timeout")
    value = float(raw)
    if math.isinf(value):
        return None
    return value


def parse_floor(raw: Any) -> float | None:
    """A floor in seconds: a number, or null/none/"null" for no floor."""
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in {"null", "none"}):
        return None
    if isinstance(raw, bool):
        raise ValueError("a boolean is not a number of seconds")
    return float(raw)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "initial_rank_heartbeat_timeout": parse_timeout,
    "rank_heartbeat_timeout": parse_timeout,
    "workload_check_interval": float,
    "safety_factor": float,
    "rank_termination_signal": parse_signal,
    "rank_termination_grace": float,
    "min_learned_timeout": parse_floor,
}


def parse_value(name: str, raw: Any, *, origin: str) -> Any:
    """Parse one raw value for field `name`; a bad value raises `UsageError` naming it."""
    try:
        return _PARSERS[name](raw)
    except (ValueError, TypeError, KeyError) as error:
        raise UsageError(
            f"{origin}: bad value {raw!r} for fault_tolerance.{name}: {error}"
        ) from None


__all__ = [
    "SECTION",
    "FaultToleranceConfig",
    "parse_floor",
    "parse_timeout",
    "parse_value",
    "read_yaml_section",
]
