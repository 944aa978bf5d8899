"""`submit_function` and its runner, in-process: the spec it builds (from a mapping, from a file,
refusing a `command:`), the pickled call, what the runner leaves on each rank, and how
`FunctionRun` reads the result or the error back (the chain's `wait` stubbed)."""

from __future__ import annotations

import pickle
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from submitit.core.utils import DelayedSubmission, FailedJobError

from ftslurm import env_vars, function_runner
from ftslurm.chain.run import write_run
from ftslurm.errors import UsageError
from ftslurm.function import COMMAND, FunctionRun, function_spec, submit_function
from ftslurm.rundir import RunDir

SPEC = {"name": "f", "nodes": 1, "nproc_per_node": 2, "time": "10:00",
        "signals": {"warning_time": 60, "stop_grace": 20}}


def answer(x: int, *, plus: int = 0) -> int:
    return x + plus


def bad_input() -> None:
    raise ValueError("bad input")


class Unpicklable(Exception):
    """An exception that holds a lock: it cannot be pickled."""

    def __init__(self) -> None:
        super().__init__("cannot travel")
        self.lock = threading.Lock()


def unpicklable_error() -> None:
    raise Unpicklable()


# -- the spec --------------------------------------------------------------------------------

def test_spec_from_a_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec, text = function_spec({**SPEC, "run_dir": "runs/f", "env": {"OMP_NUM_THREADS": "1"}})
    assert (spec.command.kind, spec.command.target) == ("module", "ftslurm.function_runner")
    assert spec.command.argv("py") == ("py", *COMMAND)
    assert spec.workdir == tmp_path  # the function's module is importable from here
    assert spec.run_dir == tmp_path / "runs" / "f"
    assert spec.launch.python == sys.executable
    assert spec.resources.time_seconds == 600 and spec.env == (("OMP_NUM_THREADS", "1"),)
    assert "command: [-m, ftslurm.function_runner]" in text


def test_a_mapping_keeps_its_workdir_and_python(tmp_path: Path) -> None:
    spec, _ = function_spec({**SPEC, "run_dir": tmp_path / "run", "workdir": tmp_path / "w",
                             "python": "/opt/py/bin/python"})
    assert (spec.workdir, spec.run_dir) == (tmp_path / "w", tmp_path / "run")
    assert spec.launch.python == "/opt/py/bin/python"


def test_spec_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "project"
    folder.mkdir()
    path = folder / "job.yaml"
    path.write_text('name: f\nnodes: 1\ntime: "10:00"\nrun_dir: runs/f\n'
                    "signals: {warning_time: 60, stop_grace: 20}")  # no final newline
    spec, text = function_spec(path)
    assert spec.source == path and spec.command.target == "ftslurm.function_runner"
    assert spec.run_dir == folder / "runs" / "f" and spec.workdir == folder  # as usual
    assert spec.launch.python == sys.executable
    assert text.startswith(path.read_text() + "\n")  # the user's lines keep their numbers


def test_a_file_keeps_its_python(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text('name: f\ntime: "10:00"\npython: python3.11\n'
                    "signals: {warning_time: 60, stop_grace: 20}\n")
    assert function_spec(path)[0].launch.python == "python3.11"


def test_a_spec_with_a_command_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="submit_function sets the command"):
        function_spec({**SPEC, "command": ["train.py"]})
    path = tmp_path / "job.yaml"
    path.write_text('name: f\ntime: "10:00"\ncommand: [train.py]\n')
    with pytest.raises(UsageError, match=rf"{path}:3: command: submit_function sets"):
        function_spec(path)


def test_a_bad_spec_names_its_key(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nodes"):
        function_spec({**SPEC, "nodes": 0, "run_dir": str(tmp_path / "run")})


# -- submitting -------------------------------------------------------------------------------

def _write_only(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Make `submit_function` write the run dir but submit nothing."""
    calls: list[Any] = []

    def fake(prepared: Any, *, resume: bool = False) -> tuple[None, str]:
        calls.append(prepared)
        write_run(prepared, resume=resume)
        return None, "nothing submitted"

    monkeypatch.setattr("ftslurm.function.submit_prepared", fake)
    return calls


def test_submit_function_pickles_the_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    calls = _write_only(monkeypatch)
    run = submit_function(answer, 40, plus=2, spec={**SPEC, "run_dir": str(tmp_path / "run")},
                          backend="local", max_failures=2)
    assert isinstance(run, FunctionRun) and run.run_dir == tmp_path / "run"
    assert calls[0].settings.config.max_failures == 2
    delayed = DelayedSubmission.load(RunDir(run.run_dir).function_call)
    assert (delayed.args, delayed.kwargs) == ((40,), {"plus": 2})
    assert delayed.result() == 42
    assert "ftslurm.function_runner" in RunDir(run.run_dir).spec_copy.read_text()


def test_an_unpicklable_call_is_refused_before_anything_is_submitted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _write_only(monkeypatch)
    with pytest.raises(UsageError, match="cannot pickle the call of 'answer'"):
        submit_function(answer, threading.Lock(), spec={**SPEC, "run_dir": str(tmp_path / "r")},
                        backend="local")
    assert calls == [] and not RunDir(tmp_path / "r").function_call.exists()


# -- the runner -------------------------------------------------------------------------------

def _run_dir(tmp_path: Path, fn: Any, *args: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run dir (nothing submitted) whose pickled call is `fn(*args)`."""
    _write_only(monkeypatch)
    run = submit_function(fn, *args, spec={**SPEC, "run_dir": str(tmp_path / "run")},
                          backend="local")
    return run.run_dir


def _as_rank(monkeypatch: pytest.MonkeyPatch, run_dir: Path, rank: int) -> Path:
    flag = run_dir / "done" / "flag"
    monkeypatch.setenv(env_vars.RUN_DIR, str(run_dir))
    monkeypatch.setenv(env_vars.FINISHED_FLAG_FILE, str(flag))
    monkeypatch.setenv(env_vars.RANK, str(rank))
    return flag


def test_rank_0_writes_the_result_then_the_flag(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = _run_dir(tmp_path, answer, 42, monkeypatch=monkeypatch)
    paths = RunDir(run_dir)
    flag = _as_rank(monkeypatch, run_dir, 1)
    function_runner.main()
    assert not paths.function_result.exists() and not flag.exists()  # other ranks: nothing
    _as_rank(monkeypatch, run_dir, 0)
    function_runner.main()
    assert flag.exists()
    with open(paths.function_result, "rb") as stream:
        assert pickle.load(stream) == ("success", 42)
    assert paths.function_errors() == {}


def test_a_raising_function_leaves_its_error_and_exits_with_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = _run_dir(tmp_path, bad_input, monkeypatch=monkeypatch)
    paths = RunDir(run_dir)
    flag = _as_rank(monkeypatch, run_dir, 1)
    with pytest.raises(ValueError, match="bad input"):
        function_runner.main()
    assert list(paths.function_errors()) == [1] and not flag.exists()
    with open(paths.function_error(1), "rb") as stream:
        kind, trace, error = pickle.load(stream)
    assert kind == "error" and trace.rstrip().endswith("ValueError: bad input")
    assert isinstance(error, ValueError) and error.args == ("bad input",)


# -- reading the outcome back -----------------------------------------------------------------

def _ended(monkeypatch: pytest.MonkeyPatch, state: str, reason: str | None) -> None:
    """Make `wait` (and `poll`) say the run ended so."""
    data = {"state": state, "reason": reason, "attempts": [
        {"status": "ended", "provisional": False}]}
    monkeypatch.setattr(FunctionRun, "wait", lambda self, timeout=None, interval=10.0: data)
    monkeypatch.setattr(FunctionRun, "poll", lambda self: data)


def test_result_of_a_finished_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = _run_dir(tmp_path, answer, 42, monkeypatch=monkeypatch)
    _as_rank(monkeypatch, run_dir, 0)
    function_runner.main()
    _ended(monkeypatch, "finished", "finished flag found")
    run = FunctionRun(run_dir)
    assert run.done() and run.exception() is None
    assert run.result(timeout=5) == 42


def test_result_of_a_run_that_gave_up_raises_the_functions_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = _run_dir(tmp_path, bad_input, monkeypatch=monkeypatch)
    for rank in (1, 0):
        _as_rank(monkeypatch, run_dir, rank)
        with pytest.raises(ValueError):
            function_runner.main()
    reason = "attempts 1 and 2 both failed with 'ValueError: bad input'"
    _ended(monkeypatch, "failed", reason)
    run = FunctionRun(run_dir)
    with pytest.raises(FailedJobError) as caught:
        run.result()
    message = str(caught.value)
    assert str(run_dir) in message and f"the run ended as failed ({reason})" in message
    assert "ValueError: bad input" in message and "rank 0" in message  # the latest error
    assert isinstance(caught.value.__cause__, ValueError)
    error = run.exception()
    assert isinstance(error, FailedJobError) and str(error) == message


def test_an_exception_that_cannot_be_pickled_still_gives_its_trace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = _run_dir(tmp_path, unpicklable_error, monkeypatch=monkeypatch)
    _as_rank(monkeypatch, run_dir, 0)
    with pytest.raises(Unpicklable):
        function_runner.main()
    _ended(monkeypatch, "failed", "3 consecutive failed attempts")
    with pytest.raises(FailedJobError, match="Unpicklable: cannot travel") as caught:
        FunctionRun(run_dir).result()
    assert caught.value.__cause__ is None


def test_a_run_that_ended_without_a_result_or_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = _run_dir(tmp_path, answer, 1, monkeypatch=monkeypatch)
    _ended(monkeypatch, "cancelled", "cancelled by `ftslurm cancel`")
    error = FunctionRun(run_dir).exception()
    assert isinstance(error, FailedJobError)
    assert "the run ended as cancelled (cancelled by `ftslurm cancel`)" in str(error)
    assert "left no error" in str(error)


def test_done_is_false_while_an_attempt_is_in_flight(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = _run_dir(tmp_path, answer, 1, monkeypatch=monkeypatch)
    data = {"state": "running", "reason": None,
            "attempts": [{"status": "running", "provisional": False}]}
    monkeypatch.setattr(FunctionRun, "poll", lambda self: data)
    assert not FunctionRun(run_dir).done()
