"""The nested sections of the job spec: `fault_tolerance:`, `autoresume:` and `signals:`.

`fault_tolerance:` is validated by the launcher's own `FaultToleranceConfig` (one set of rules)
and kept as a mapping with every default filled in, because the launcher reads it back from
`<run_dir>/ft_config.yaml`; its key names are nvidia-resiliency-ext's, so users migrate by copying
the section.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftslurm import exit_codes
from ftslurm.errors import UsageError
from ftslurm.fault_tolerance.config import FaultToleranceConfig, parse_value
from ftslurm.rundir import RunDir
from ftslurm.spec.fields import Section, canonical_signal_name, check_writable_place
from ftslurm.spec.yaml_loader import YScalar, to_python

DEFAULT_MAX_FAILURES = 3
DEFAULT_MAX_ATTEMPTS = 100
#: Inclusive bounds (None: unbounded) of the `autoresume:` integers. The one set of limits:
#: the spec reader, `--max-failures` and the chain's `ChainConfig` all check these.
AUTORESUME_BOUNDS: dict[str, tuple[int, int | None]] = {
    "max_failures": (1, None),
    "max_attempts": (1, None),
    "do_not_retry_exit_code": (1, 255),
    "max_node_failures": (1, None),
}
#: The `autoresume:` integers that may be null, meaning no limit (their default).
AUTORESUME_NULLABLE = frozenset({"max_node_failures"})
#: The `autoresume:` switches (true or false), checked by the same readers as the bounds.
AUTORESUME_SWITCHES = ("stop_on_repeated_failure",)
DEFAULT_WARNING_SIGNAL = "SIGUSR1"
DEFAULT_WARNING_TIME = 300
DEFAULT_STOP_GRACE = 60
#: SLURM's limit for the time in `--signal=SIG@TIME`.
MAX_WARNING_TIME = 65535


def autoresume_problem(name: str, value: object) -> str | None:
    """Why `value` cannot be `autoresume.<name>` (a bounded integer, a nullable one, or a
    switch), or None when it is a valid value."""
    if name in AUTORESUME_SWITCHES:
        if isinstance(value, bool):
            return None
        return f"autoresume.{name} must be true or false, got {value!r}"
    if value is None and name in AUTORESUME_NULLABLE:
        return None
    low, high = AUTORESUME_BOUNDS[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (
            high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        nullable = " or null (no limit)" if name in AUTORESUME_NULLABLE else ""
        return f"autoresume.{name} must be an integer {bounds}{nullable}, got {value!r}"
    return None


@dataclass(frozen=True)
class AutoResume:
    """When the chain of attempts stops."""

    #: The finished flag (default: `RunDir.default_flag`).
    flag_file: Path
    max_failures: int = DEFAULT_MAX_FAILURES
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    do_not_retry_exit_code: int = exit_codes.DO_NOT_RETRY
    #: Stop after this many attempts (since the last resume) ended in node_fail; None: no limit.
    max_node_failures: int | None = None
    #: Stop when two failed attempts in a row fail the same way without progress (a crash loop).
    stop_on_repeated_failure: bool = True


@dataclass(frozen=True)
class Signals:
    """The warning SLURM sends before the time limit, and the stop that follows."""

    warning_signal: str = DEFAULT_WARNING_SIGNAL
    warning_time: int = DEFAULT_WARNING_TIME
    #: Seconds the launcher gives ranks to exit after asking them to stop (`--shutdown-timeout`).
    stop_grace: int = DEFAULT_STOP_GRACE

    @property
    def sbatch_signal(self) -> str:
        """The value of `#SBATCH --signal`: sent to the batch shell only (`B:`)."""
        return f"B:{self.warning_signal.removeprefix('SIG')}@{self.warning_time}"


def read_fault_tolerance(top: Section) -> dict[str, Any]:
    """The `fault_tolerance:` section, checked key by key by FaultToleranceConfig, as a plain
    mapping with every default filled in (what `<run_dir>/ft_config.yaml` holds)."""
    section = top.section("fault_tolerance")
    known = [field.name for field in dataclasses.fields(FaultToleranceConfig)]
    section.check_keys(known)
    values: dict[str, Any] = {}
    for key, entry in section.node.entries.items():
        if key not in known:
            continue
        if not isinstance(entry.node, YScalar):
            section.error(key, "expected a single value, not a list or mapping")
            continue
        raw = to_python(entry.node)
        if (key == "rank_termination_signal" and isinstance(raw, str)
                and not canonical_signal_name(raw)):
            section.error(key, f"expected a signal name such as SIGTERM or SIGKILL, got {raw!r}")
            continue
        try:
            value = parse_value(key, raw, origin="job spec")
            FaultToleranceConfig(**{key: value})  # the config's own range checks, for this key
        except UsageError as error:
            section.error(key, error.message.removeprefix("job spec: "))
        else:
            values[key] = value
    try:
        return FaultToleranceConfig(**values).to_dict()
    except UsageError as error:  # a rule that relates several keys
        section.issues.add(section.line, "fault_tolerance", error.message)
        return FaultToleranceConfig().to_dict()


def read_autoresume(top: Section, base: Path, run_dir: Path, *,
                    forbidden: Callable[[Path], str | None] = lambda flag: None) -> AutoResume:
    """The `autoresume:` section. The flag file must not be a path `forbidden` refuses (it says
    why: one of ftslurm's own files), and must be in a place this user can write."""
    section = top.section("autoresume")
    section.check_keys(("max_failures", "flag_file", "max_attempts", "do_not_retry_exit_code",
                        "max_node_failures", *AUTORESUME_SWITCHES))
    flag_text = section.string("flag_file", None)
    if flag_text is None:
        flag_file = RunDir(run_dir).default_flag
    else:
        flag_file = Path(os.path.abspath(base / os.path.expanduser(flag_text)))
        problem = forbidden(flag_file)
        if problem:
            section.error("flag_file", problem)
        else:
            check_writable_place(section, "flag_file", flag_file, directory=False)
    return AutoResume(
        max_failures=_bounded(section, "max_failures", DEFAULT_MAX_FAILURES),
        flag_file=flag_file,
        max_attempts=_bounded(section, "max_attempts", DEFAULT_MAX_ATTEMPTS),
        do_not_retry_exit_code=_bounded(section, "do_not_retry_exit_code", exit_codes.DO_NOT_RETRY),
        max_node_failures=_bounded_or_null(section, "max_node_failures"),
        stop_on_repeated_failure=section.boolean("stop_on_repeated_failure", True),
    )


def _bounded(section: Section, name: str, default: int) -> int:
    low, high = AUTORESUME_BOUNDS[name]
    value: int = section.integer(name, default, minimum=low, maximum=high)
    return value


def _bounded_or_null(section: Section, name: str) -> int | None:
    """A nullable `autoresume:` integer: absent or null is None (no limit)."""
    low, high = AUTORESUME_BOUNDS[name]
    value: int | None = section.integer(name, None, minimum=low, maximum=high)
    return value


def read_signals(top: Section, time_limit: int | None, launcher: str) -> Signals:
    """The `signals:` section, checked against the time limit."""
    section = top.section("signals")
    section.check_keys(("warning_signal", "warning_time", "stop_grace"))
    warning_signal = section.signal("warning_signal", DEFAULT_WARNING_SIGNAL, catchable=True)
    warning_time = section.integer(
        "warning_time", DEFAULT_WARNING_TIME, minimum=1, maximum=MAX_WARNING_TIME
    )
    grace = section.integer("stop_grace", DEFAULT_STOP_GRACE, minimum=0)
    if launcher == "none" and section.has("stop_grace"):
        section.error("stop_grace", "launcher none has no launcher to enforce it (srun passes "
                                    "SIGTERM to the ranks directly); remove it or use launcher ft")
    elif grace >= warning_time:
        section.error("stop_grace" if section.has("stop_grace") else "warning_time",
                      f"the ranks get {grace} s to stop but the warning comes only "
                      f"{warning_time} s before the time limit; make warning_time larger "
                      "than stop_grace")
    if time_limit is not None and warning_time >= time_limit:
        section.error("warning_time", f"{warning_time} s is not shorter than the job's time "
                                      f"limit ({time_limit} s); the warning would come before "
                                      "the job starts")
    return Signals(warning_signal, warning_time, grace)


__all__ = [
    "AUTORESUME_BOUNDS",
    "AUTORESUME_NULLABLE",
    "AUTORESUME_SWITCHES",
    "AutoResume",
    "Signals",
    "autoresume_problem",
    "read_autoresume",
    "read_fault_tolerance",
    "read_signals",
]
