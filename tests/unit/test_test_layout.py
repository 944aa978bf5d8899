"""The test folders keep their promises, read from the files' syntax trees (nothing is run).

- tests/unit starts no process: no file there imports subprocess or multiprocessing (torch's
  included) or calls os.fork and its kin. A test that starts processes belongs in
  tests/integration; a unit file that mixes both is split, its process tests going to
  tests/integration/test_<name>_processes.py.
- Tests import helpers from helper modules (tests/helpers.py, tests/waiting.py, ...), never from
  a conftest.py, and a conftest.py holds only fixtures and hooks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent
TESTS = UNIT.parent
PROCESS_MODULES = {"subprocess", "multiprocessing"}
#: os functions that start a process (os.exec* and os.spawn* too).
PROCESS_CALLS = {"fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "popen"}
#: Unit files known to start processes, and why they are still here: each is to move (or split)
#: into tests/integration, and then to leave this list.
KNOWN_EXCEPTIONS: dict[str, str] = {}


def _python_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*.py") if "__pycache__" not in path.parts)


def _id(path: Path) -> str:
    return str(path.relative_to(TESTS))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imported(node: ast.AST) -> list[str]:
    """The dotted names an import statement brings in (`from a import b` gives a and a.b)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        module = "." * node.level + (node.module or "")
        return [module, *(f"{module}.{alias.name}" for alias in node.names)]
    return []


def process_starters(path: Path) -> list[str]:
    """`line: what` for each place in `path` that can start a process."""
    found = []
    for node in ast.walk(_tree(path)):
        for name in _imported(node):
            if PROCESS_MODULES & set(name.split(".")):
                found.append(f"{node.lineno}: imports {name}")
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == "os"
                and (node.attr in PROCESS_CALLS or node.attr.startswith(("exec", "spawn")))):
            found.append(f"{node.lineno}: uses os.{node.attr}")
    return found


UNIT_FILES = _python_files(UNIT)


@pytest.mark.parametrize("path", UNIT_FILES, ids=_id)
def test_unit_tests_start_no_process(path: Path) -> None:
    found = process_starters(path)
    reason = KNOWN_EXCEPTIONS.get(str(path.relative_to(UNIT)))
    if reason is not None:
        assert found, f"{path.name} starts no process any more: remove it from KNOWN_EXCEPTIONS"
        pytest.xfail(f"known to start processes: {reason}")
    assert not found, (
        f"{path.relative_to(TESTS.parent)} starts processes ({'; '.join(found)}): move those "
        "tests to tests/integration (a file that mixes both is split: "
        f"tests/integration/{path.stem}_processes.py)"
    )


def test_known_exceptions_are_still_unit_files() -> None:
    gone = sorted(set(KNOWN_EXCEPTIONS) - {str(path.relative_to(UNIT)) for path in UNIT_FILES})
    assert not gone, f"no longer under tests/unit, remove from KNOWN_EXCEPTIONS: {gone}"


def test_the_check_sees_what_starts_a_process(tmp_path: Path) -> None:
    cases = {
        "import subprocess\n": ["1: imports subprocess"],
        "from multiprocessing import Process\n": ["1: imports multiprocessing",
                                                   "1: imports multiprocessing.Process"],
        "import torch.multiprocessing as mp\n": ["1: imports torch.multiprocessing"],
        "from torch import multiprocessing\n": ["1: imports torch.multiprocessing"],
        "import os\nos.fork()\n": ["2: uses os.fork"],
        "import os\nos.execv('/bin/true', ['true'])\n": ["2: uses os.execv"],
        "import os\nos.kill(os.getpid(), 0)\nx = 'subprocess'\n": [],
    }
    for source, expected in cases.items():
        path = tmp_path / "case.py"
        path.write_text(source)
        assert process_starters(path) == expected, source


@pytest.mark.parametrize("path", _python_files(TESTS), ids=_id)
def test_nothing_is_imported_from_a_conftest(path: Path) -> None:
    found = [f"{node.lineno}: {ast.unparse(node)}" for node in ast.walk(_tree(path))
             if any(name.rsplit(".", 1)[-1] == "conftest" for name in _imported(node))]
    assert not found, (
        f"{path.relative_to(TESTS.parent)} imports from a conftest ({'; '.join(found)}): move the "
        "helper to a helper module (tests/helpers.py, tests/slurm/chain_util.py, ...)"
    )


@pytest.mark.parametrize("path", sorted(TESTS.rglob("conftest.py")), ids=_id)
def test_conftest_holds_only_fixtures_and_hooks(path: Path) -> None:
    def is_fixture(node: ast.FunctionDef) -> bool:
        return any("fixture" in ast.unparse(decorator) for decorator in node.decorator_list)

    helpers = [node.name for node in _tree(path).body
               if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
               and not (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                        and (node.name.startswith("pytest_") or is_fixture(node)))]
    assert not helpers, (
        f"{path.relative_to(TESTS.parent)} defines helpers {helpers}: move them to a helper "
        "module, keep only fixtures and hooks in conftest.py"
    )


@pytest.mark.parametrize(
    "path", [p for p in _python_files(TESTS) if "workloads" not in p.parts
             and p.name != "waiting.py"], ids=_id)
def test_waits_go_through_the_waiting_helper(path: Path) -> None:
    # Workloads run as child processes without the tests package; waiting.py is the helper.
    def sleeps(node: ast.AST) -> bool:
        return any(isinstance(call, ast.Call) and ast.unparse(call.func) in ("time.sleep", "sleep")
                   for call in ast.walk(node))

    loops = [f"{node.lineno}" for node in ast.walk(_tree(path))
             if isinstance(node, ast.While | ast.For) and sleeps(node)]
    assert not loops, (
        f"{path.relative_to(TESTS.parent)} sleeps in a loop at line(s) {', '.join(loops)}: wait "
        "with tests.waiting.wait_for (or poll) instead"
    )
