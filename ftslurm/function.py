"""Functions as jobs: `submit_function(fn, *args, spec=...)` runs a picklable Python function as
the training of an auto-resuming chain, and `FunctionRun.result()` returns its value as
submitit's `Job.result()` does (docs/python-api.md).

    import ftslurm

    run = ftslurm.submit_function(train, cfg, spec={"name": "f", "nodes": 1,
                                                    "nproc_per_node": 2, "time": "1:00:00"})
    value = run.result()          # drives the chain until it ends; FailedJobError if it failed

The call is pickled with submitit (`DelayedSubmission`, cloudpickle) into the run directory and
the spec's command is `python -m ftslurm.function_runner`, which every rank runs under the
launcher (function_runner.py). The function is called again from the start in every attempt and
in-job restart: it resumes from its own checkpoints, as a training script does.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from submitit.core.utils import DelayedSubmission, FailedJobError

from ftslurm import function_runner
from ftslurm.api import Run, submit_prepared
from ftslurm.chain.outcome import AttemptStatus, RunStatus
from ftslurm.chain.run import check_reuse, prepare_spec
from ftslurm.errors import UsageError
from ftslurm.rundir import RunDir
from ftslurm.spec.model import JobSpec, parse_spec, read_spec_text
from ftslurm.spec.yaml_loader import YMapping, load_yaml

__all__ = ["FunctionRun", "function_spec", "submit_function"]

#: The training command of every function run.
COMMAND = ["-m", function_runner.__name__]
_SETS_COMMAND = "submit_function sets the command (python -m ftslurm.function_runner)"


def _plain(value: Any) -> Any:
    """`value` with paths as strings, so that YAML can write it."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _dump(values: Mapping[str, Any], what: str) -> str:
    try:
        return yaml.safe_dump(_plain(values), sort_keys=False, default_flow_style=None)
    except yaml.YAMLError as error:
        raise UsageError(f"{what}: cannot be written as YAML: {error}",
                         hint="give strings, numbers, booleans, lists and mappings") from None


def function_spec(spec: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[JobSpec, str]:
    """The validated spec of a function run and its YAML text: `spec` (a job.yaml path or a
    mapping of its keys) with the runner as its command and, unless given (or the spec runs in a
    container), this interpreter as `python`: the call is unpickled with the same packages. A
    mapping's relative paths, and its default `workdir`, are the current directory's (so the
    function's module is importable there); a file's are its folder's. UsageError when the spec
    has a `command:`."""
    added: dict[str, Any] = {"command": COMMAND}
    if isinstance(spec, Mapping):
        if "command" in spec:
            raise UsageError(f"spec: command: {_SETS_COMMAND}", hint="remove command")
        values = {**spec}
        values.setdefault("workdir", os.getcwd())
        if "container_image" not in values:
            values.setdefault("python", sys.executable)
        values.update(added)
        name = values.get("name")
        stem = name if isinstance(name, str) and name and "/" not in name else "function"
        source = Path.cwd() / f"{stem}.function.yaml"
        text = _dump(values, "spec")
        return parse_spec(text, source), text
    source = Path(os.path.abspath(spec))
    text = read_spec_text(spec)
    root = load_yaml(text, str(source))
    if isinstance(root, YMapping):
        entry = root.entries.get("command")
        if entry is not None:
            raise UsageError(f"{source}:{entry.line}: command: {_SETS_COMMAND}",
                             hint="remove command: from the spec (or use `ftslurm submit`)")
        if "python" not in root.entries and "container_image" not in root.entries:
            added = {"python": sys.executable, **added}
    text = text if text.endswith("\n") or not text else text + "\n"
    text += _dump(added, str(source))
    return parse_spec(text, source), text


def submit_function(
    fn: Callable[..., Any],
    /,
    *args: Any,
    spec: str | os.PathLike[str] | Mapping[str, Any],
    max_failures: int | None = None,
    backend: str | None = None,
    resume: bool = False,
    **kwargs: Any,
) -> FunctionRun:
    """Run `fn(*args, **kwargs)` as the training of a new run (`ftslurm submit`): on every rank,
    under the launcher, in every attempt until rank 0's call returns. `spec` is a job.yaml
    without `command:` or a mapping of its keys ({"name": "f", "nodes": 1, "time": "10:00",
    "run_dir": "runs/f"}). Raises UsageError (nothing submitted) on a bad spec, a run dir that
    may not be reused (`resume=True` continues it) or a call that cannot be pickled."""
    job_spec, text = function_spec(spec)
    prepared = prepare_spec(job_spec, text, max_failures=max_failures, backend=backend)
    check_reuse(prepared, resume=resume)
    paths = RunDir(prepared.settings.run_dir)
    try:  # pickled before the run is written: an unpicklable call leaves no file behind
        function_runner.write_pickle_atomic(paths.function_call,
                                            DelayedSubmission(fn, *args, **kwargs))
    except Exception as error:  # an object of any type may refuse to be pickled, in any way
        raise UsageError(f"cannot pickle the call of {getattr(fn, '__qualname__', fn)!r}: "
                         f"{error}", hint="the function and its arguments must be picklable "
                                          "(cloudpickle), as with submitit") from error
    for stale in (paths.function_result, *paths.function_errors().values()):
        stale.unlink(missing_ok=True)  # a resumed run's earlier answer is not this call's
    submit_prepared(prepared, resume=resume)
    return FunctionRun(paths.root)


class FunctionRun(Run):
    """A run whose training is a function (`submit_function`): a `Run` with submitit's
    `done()`, `result()` and `exception()`."""

    def __repr__(self) -> str:
        return f"FunctionRun({str(self.run_dir)!r})"

    def done(self) -> bool:
        """Whether the run has ended with no attempt in flight (one poll, as `wait`'s)."""
        return _ended(self.poll())

    def result(self, timeout: float | None = None, *, interval: float = 10.0) -> Any:
        """Wait for the run to end (`wait`) and return the function's value; FailedJobError when
        the run ended without one, chained to the function's exception when it could be
        unpickled. TimeoutError after `timeout` seconds (the run goes on)."""
        error = self.exception(timeout, interval=interval)
        if error is None:
            return _load(RunDir(self.run_dir).function_result)[1]
        raise error from error.__cause__

    def exception(self, timeout: float | None = None, *, interval: float = 10.0
                  ) -> FailedJobError | None:
        """Wait for the run to end (`wait`); None when the function returned, else the
        FailedJobError `result()` raises (its `__cause__`: the function's exception, if any)."""
        data = self.wait(timeout, interval=interval)
        paths = RunDir(self.run_dir)
        if data["state"] == RunStatus.FINISHED and paths.function_result.is_file():
            return None
        lines = [f"{self.run_dir}: the run ended as {data['state']}"
                 + (f" ({data['reason']})" if data["reason"] else "")
                 + " without the function's result"]
        cause = None
        errors = paths.function_errors()
        if errors:
            rank, path = max(errors.items(), key=lambda item: (item[1].stat().st_mtime, -item[0]))
            try:
                _, trace, cause = _load(path)
            except Exception as failure:  # the exception's class may not unpickle here
                trace = f"(the error file {path} could not be read: {failure!r})"
            lines += [f"The function failed (rank {rank}) with trace:", "-" * 22,
                      str(trace).rstrip(), "-" * 22]
        else:
            lines.append("The function left no error (the job may have died around it).")
        lines.append(f"See `ftslurm status {self.run_dir}` and `ftslurm logs {self.run_dir}`.")
        error = FailedJobError("\n".join(lines))
        error.__cause__ = cause if isinstance(cause, BaseException) else None
        return error


def _ended(data: Mapping[str, Any]) -> bool:
    return data["state"] != RunStatus.RUNNING and not any(
        row["status"] in (AttemptStatus.SUBMITTED, AttemptStatus.RUNNING) or row["provisional"]
        for row in data["attempts"])


def _load(path: Path) -> tuple[Any, ...]:
    with open(path, "rb") as stream:
        loaded = pickle.load(stream)
    if not isinstance(loaded, tuple):
        raise TypeError(f"{path}: expected a tuple, got {type(loaded).__name__}")
    return loaded
