"""The training command of a `submit_function` run: `python -m ftslurm.function_runner`, started
on every rank by the launcher.

Each rank loads the pickled call (`RunDir.function_call`, a submitit `DelayedSubmission`) and runs
it. On success rank 0 writes `("success", value)` (`RunDir.function_result`) and then creates the
finished flag, which ends the chain; the other ranks just exit 0. A call that raises leaves
`("error", traceback, exception or None)` in the rank's error file (`RunDir.function_error`) and
re-raises, so the rank exits non-zero with the traceback on stderr: the launcher sees a crash and
the chain counts a failure (and resumes, or gives up). The files are pickled with cloudpickle, as
submitit's are, and written atomically.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from submitit.core.utils import DelayedSubmission, cloudpickle_dump

from ftslurm import env_vars
from ftslurm.rundir import RunDir

__all__ = ["call_function", "main", "write_error", "write_pickle_atomic"]


def write_pickle_atomic(path: Path, obj: Any) -> None:
    """Pickle `obj` with cloudpickle (submitit's `cloudpickle_dump`) to `path` in one step: temp
    file, fsync, rename (mode 0644). A pickling error leaves `path` as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.close(fd)
        cloudpickle_dump(obj, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # as `atomic.write_atomic`'s files: the team reads the run dir
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _picklable(error: BaseException) -> BaseException | None:
    """`error` when it survives a pickle round trip, else None (its traceback text remains)."""
    try:
        pickle.loads(pickle.dumps(error, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # any object may fail to pickle, in any way
        return None
    return error


def write_error(paths: RunDir, rank: int, error: BaseException, trace: str) -> None:
    """Leave `("error", trace, error or None)` in `rank`'s error file."""
    write_pickle_atomic(paths.function_error(rank), ("error", trace, _picklable(error)))


def call_function(paths: RunDir, *, rank: int, flag_file: Path) -> Any:
    """Run the pickled call of the run in `paths` as `rank`; returns its value. Rank 0 writes
    the result and then creates `flag_file`. An exception is recorded and re-raised."""
    try:
        delayed = DelayedSubmission.load(paths.function_call)
        value = delayed.result()
        if rank == 0:
            write_pickle_atomic(paths.function_result, ("success", value))
            flag_file.parent.mkdir(parents=True, exist_ok=True)
            flag_file.touch()
    except Exception as error:  # SystemExit (a graceful stop) and KeyboardInterrupt pass
        write_error(paths, rank, error, traceback.format_exc())
        raise
    return value


def main(environ: Mapping[str, str] | None = None) -> None:
    """Run the call as the rank the launcher's environment names."""
    env = os.environ if environ is None else environ
    paths = RunDir(env[env_vars.RUN_DIR])
    flag = env.get(env_vars.FINISHED_FLAG_FILE)
    call_function(paths, rank=int(env.get(env_vars.RANK, "0")),
                  flag_file=Path(flag) if flag else paths.default_flag)


if __name__ == "__main__":
    main()
