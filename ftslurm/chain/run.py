"""Create (or reopen with `--resume`) a run directory for `ftslurm submit`.

`prepare_run` reads and validates everything and writes nothing; `check_reuse` refuses a run dir
that holds another job spec's run, a run still going, or a run that ended, unless `--resume`;
`write_run` then writes the run dir: a copy of job.yaml, ft_config.yaml, the rendered script,
chain.json (how attempts are submitted) and the ledger. Bad input raises UsageError (exit 2)
before anything is written.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from ftslurm.atomic import write_atomic
from ftslurm.chain.ledger import Ledger, fingerprint
from ftslurm.chain.outcome import RunStatus
from ftslurm.chain.policy import ChainConfig
from ftslurm.chain.runstate import RunState
from ftslurm.chain.settings import Backend, ChainSettings, Mode
from ftslurm.errors import UsageError
from ftslurm.render.local_script import render_local
from ftslurm.render.script import prepare_run_dir, render
from ftslurm.rundir import RunDir
from ftslurm.signals import parse_signal
from ftslurm.spec.model import JobSpec, load_spec

#: SLURM's default KillWait, used for the local backend's SIGTERM -> SIGKILL grace.
KILL_WAIT_S = 30.0


@dataclass(frozen=True)
class PreparedRun:
    """A validated run, ready to be written."""

    spec: JobSpec
    settings: ChainSettings
    script_text: str
    spec_text: str
    spec_fingerprint: str
    #: The run already in the run dir, if any.
    existing: RunState | None


def resolve_backend(choice: str | None) -> Backend:
    """`slurm`, `local`, or (None / `auto`) slurm when `sbatch` is on PATH, else local."""
    if choice in (None, "auto"):
        return "slurm" if shutil.which("sbatch") else "local"
    if choice not in ("slurm", "local"):
        raise UsageError(f"--backend {choice}: expected slurm or local")
    return choice  # type: ignore[return-value]


def _script_text(spec: JobSpec, backend: Backend) -> str:
    if backend == "local":
        return render_local(spec)
    return render(spec, rendered_by="submit")


def prepare_run(
    spec_path: str | os.PathLike[str],
    *,
    max_failures: int | None = None,
    backend: str | None = None,
    watch: bool = False,
) -> PreparedRun:
    """Load and check everything `ftslurm submit` needs; write nothing."""
    spec = load_spec(spec_path)
    return prepare_spec(spec, spec.source.read_text(encoding="utf-8"),
                        max_failures=max_failures, backend=backend, watch=watch)


def prepare_spec(
    spec: JobSpec,
    spec_text: str,
    *,
    max_failures: int | None = None,
    backend: str | None = None,
    watch: bool = False,
) -> PreparedRun:
    """`prepare_run` for a spec already validated from `spec_text` (a sweep point's)."""
    if max_failures is not None:
        spec = spec.with_max_failures(max_failures)
    config = ChainConfig.from_autoresume(spec.autoresume)
    chosen = resolve_backend(backend)
    warning = spec.signals.warning_signal.removeprefix("SIG")
    mode: Mode = "self" if chosen == "slurm" and not watch else "loop"
    script_text = _script_text(spec, chosen)
    run_dir = spec.run_dir.resolve()
    settings = ChainSettings(
        run_dir=str(run_dir), backend=chosen, mode=mode,
        script=str(RunDir(run_dir).script(chosen)), workdir=str(spec.workdir),
        job_name=spec.name, flag_file=str(spec.autoresume.flag_file), config=config,
        owner_uid=os.getuid(), bin_dir=os.path.dirname(sys.executable),
        time_limit_s=float(spec.resources.time_seconds) if spec.resources.time_seconds else None,
        warning_signal=int(parse_signal(warning)),
        warning_lead_s=float(spec.signals.warning_time), kill_wait_s=KILL_WAIT_S,
    )
    # Without a ledger nothing was ever submitted (a submit killed half-way): start afresh.
    existing = Ledger.open(run_dir).state() if RunDir(run_dir).ledger.exists() else None
    return PreparedRun(spec, settings, script_text, spec_text, fingerprint(spec_text), existing)


def check_reuse(prepared: PreparedRun, *, resume: bool) -> None:
    """Refuse to reuse a run dir unless it is safe: UsageError (exit 2) saying what to do."""
    state, run_dir = prepared.existing, prepared.settings.run_dir
    if state is None or resume:
        return
    if state.spec_fingerprint != prepared.spec_fingerprint:
        raise UsageError(
            f"{run_dir} holds a run of a different job spec ({prepared.spec.source} changed "
            "since that run was submitted)",
            hint="pass --resume to continue that run with this spec, or set run_dir: (or name:) "
                 "to start a new run")
    if state.run_status is RunStatus.RUNNING:
        raise UsageError(f"{run_dir} holds a run that is still going",
                         hint=f"see `ftslurm status {run_dir}`; `ftslurm watch {run_dir}` "
                              "attaches to it; --resume submits again if it is stuck")
    raise UsageError(f"{run_dir} holds a run that has {state.run_status}"
                     + (f" ({state.end_reason})" if state.end_reason else ""),
                     hint="pass --resume to continue it, or set run_dir: to start a new run")


def write_run(prepared: PreparedRun, *, resume: bool) -> Ledger:
    """Write the run dir and create (or resume) its ledger, all under the ledger lock and after
    checking the run dir again under it: of two `ftslurm submit`s racing for one run dir, the
    second finds the first's ledger and is refused (UsageError, exit 2, naming the run dir)
    before it writes anything. The ledger is written last, so a submit killed half-way leaves no
    ledger and the next submit starts afresh."""
    run_dir = Path(prepared.settings.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(run_dir)
    with ledger.locked():
        existing = ledger.state() if ledger.path.exists() else None
        check_reuse(replace(prepared, existing=existing), resume=resume)
        _write_files(prepared, run_dir)
        if existing is None:
            ledger.initialize(spec_fingerprint=prepared.spec_fingerprint,
                              settings=prepared.settings.config.to_dict(),
                              run_id=f"{prepared.spec.name}-{os.urandom(3).hex()}")
        elif resume:
            ledger.record_resume(f"ftslurm submit --resume {prepared.spec.source}",
                                 prepared.spec_fingerprint)
    return ledger


def prepare_for_sbatch(spec_path: str | os.PathLike[str]) -> tuple[PreparedRun, RunState, bool]:
    """What `ftslurm render -o FILE` does besides writing FILE: make the run directory ready
    for a job submitted by hand with `sbatch FILE` (its log folder, settings, script and an
    empty ledger, as `submit` writes them, minus the submission), so SLURM can open the job's
    output file and the job's start hook can adopt it. A run dir that already holds a run of the
    same spec is left as it is; one of another spec is refused (UsageError, nothing written).
    Returns the prepared run, the run's state, and whether anything was written."""
    prepared = prepare_run(spec_path, backend="slurm")
    existing = prepared.existing
    if existing is not None:
        if existing.spec_fingerprint != prepared.spec_fingerprint:
            raise UsageError(
                f"{prepared.settings.run_dir} holds a run of a different job spec "
                f"({prepared.spec.source} changed since that run was prepared)",
                hint="`ftslurm submit --resume` continues that run with this spec; or set "
                     "run_dir: (or name:) for a new run; `ftslurm render` without -o only "
                     "prints the script")
        return prepared, existing, False
    ledger = write_run(prepared, resume=False)
    return prepared, ledger.state(), True


def _write_files(prepared: PreparedRun, root: Path) -> None:
    """The run dir's files other than the ledger."""
    paths = RunDir(root)
    prepare_run_dir(prepared.spec)
    write_atomic(paths.spec_copy, prepared.spec_text)
    write_atomic(paths.script(prepared.settings.backend), prepared.script_text, mode=0o755)
    prepared.settings.save()


__all__ = ["PreparedRun", "check_reuse", "prepare_for_sbatch", "prepare_run", "prepare_spec",
           "resolve_backend", "write_run"]
