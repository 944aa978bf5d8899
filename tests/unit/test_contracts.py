"""Each shared contract has one owner: run-dir names (RunDir), cross-process environment variable
names (env_vars), limits (validate == submit), chain counts (one derivation), and the layout
(no import cycle between subpackages, `__all__` true to its module)."""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from ftslurm import cli, env_vars
from ftslurm.chain.ledger import Ledger
from ftslurm.chain.outcome import Outcome
from ftslurm.chain.policy import decide
from ftslurm.chain.run import prepare_run, write_run
from ftslurm.chain.view import status_data
from ftslurm.rundir import RunDir
from tests.helpers import REPO_ROOT, spec_file

PACKAGE = REPO_ROOT / "ftslurm"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _docstring_nodes(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (prose may name anything)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _strings(path: Path) -> Iterator[tuple[int, str, ast.AST]]:
    """(line, text, parent) of every string constant of a module that is not a docstring."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = _docstring_nodes(tree)
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            if (isinstance(child, ast.Constant) and isinstance(child.value, str)
                    and id(child) not in docstrings):
                yield child.lineno, child.value, parent


# -- one owner per contract --------------------------------------------------------------------

ENV_NAMES = {value for name, value in vars(env_vars).items()
             if name.isupper() and isinstance(value, str) and not value.endswith("_")}
OUR_PREFIXES = ("FTSLURM_", "FAULT_TOL_")


def test_every_cross_process_environment_variable_is_spelled_once() -> None:
    spelled = []
    for path in SOURCES:
        if path.name == "env_vars.py":
            continue
        for line, text, _ in _strings(path):
            if text in ENV_NAMES or any(prefix in text for prefix in OUR_PREFIXES):
                spelled.append(f"{path.relative_to(REPO_ROOT)}:{line}: {text!r}")
    for path in sorted((REPO_ROOT / "sbatch_templates").iterdir()):
        if path.suffix in (".sh", ".sbatch"):  # templates: ftslurm's names come as placeholders
            spelled += [f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
                        for number, line in enumerate(path.read_text().splitlines(), start=1)
                        if any(prefix in line for prefix in OUR_PREFIXES)]
    assert spelled == [], "use ftslurm.env_vars instead of spelling these names"


#: Reserved names that are ordinary words elsewhere (a ledger record type, a CLI command): they
#: count as spelled only where they build a path (`x / "logs"`).
_COMMON_WORDS = {"progress", "logs"}


def test_every_run_dir_name_is_spelled_once() -> None:
    names = set(RunDir.RESERVED_NAMES) | {RunDir(".").default_flag.name}
    distinctive = names - _COMMON_WORDS
    spelled = []
    for path in SOURCES:
        if path.name == "rundir.py":
            continue
        for line, text, parent in _strings(path):
            if " " in text.strip():
                continue  # prose: a help text or message may name a file
            as_path = isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div)
            in_name = isinstance(parent, ast.JoinedStr)  # f"attempt-{n}.out"
            if (any(name in text for name in distinctive) or (as_path and text in names)
                    or (in_name and (text.startswith("attempt-") or text == ".out"))):
                spelled.append(f"{path.relative_to(REPO_ROOT)}:{line}: {text!r}")
    assert spelled == [], "ask ftslurm.rundir.RunDir for these paths"


def test_the_run_dir_paths_are_its_reserved_names(tmp_path: Path) -> None:
    paths = RunDir(tmp_path)
    every_path = [
        paths.spec_copy, paths.script("slurm"), paths.script("local"), paths.chain_settings,
        paths.ledger, paths.ledger_lock, paths.progress, paths.ft_config, paths.learned_timeouts,
        paths.learned_timeouts_lock, paths.logs, paths.job_log("12"), paths.attempt_log(3),
        paths.launcher_status_dir, paths.rank_log(3, 1, 0, "err"), paths.incident(3),
        paths.launcher_status(3, "n1"), paths.local_jobs, paths.step_log(3),
        paths.last_step_slot(3, 1), paths.function_dir, paths.summary,
    ]
    tops = {path.relative_to(tmp_path).parts[0] for path in every_path}
    assert tops == set(RunDir.RESERVED_NAMES)
    assert paths.default_flag.name not in RunDir.RESERVED_NAMES
    assert paths.job_log("12").name == RunDir.JOB_LOG_PATTERN.replace("%j", "12")


# -- one set of limits ---------------------------------------------------------------------------

HEAD = 'name: lim\ntime: "1:00:00"\ncommand: [train.py]\n'
#: Values on both sides of every numeric limit a spec has.
BOUNDARY_SPECS = [
    *(f"autoresume: {{max_failures: {v}}}\n" for v in (-1, 0, 1, 2)),
    *(f"autoresume: {{max_attempts: {v}}}\n" for v in (0, 1, 100)),
    *(f"autoresume: {{do_not_retry_exit_code: {v}}}\n" for v in (0, 1, 93, 255, 256)),
    *(f"autoresume: {{max_node_failures: {v}}}\n" for v in (-1, 0, 1, 2, "null")),
    *(f"autoresume: {{stop_on_repeated_failure: {v}}}\n" for v in ("true", "false", "null", 1)),
    *(f"nodes: {v}\n" for v in (0, 1, 2)),
    *(f"nproc_per_node: {v}\n" for v in (0, 1, 8)),
    *(f"signals: {{warning_time: {v}}}\n" for v in (0, 1, 90, 3599, 3600, 65535, 65536)),
    *(f"signals: {{stop_grace: {v}}}\n" for v in (-1, 0, 30)),
    *(f"max_restarts: {v}\n" for v in (-1, 0, 3)),
    *(f"fault_tolerance: {{rank_heartbeat_timeout: {v}}}\n" for v in (-1, 0, 0.5, "null")),
    *(f"fault_tolerance: {{safety_factor: {v}}}\n" for v in (0, 1, 5.0)),
]


@pytest.mark.parametrize("extra", BOUNDARY_SPECS)
def test_validate_and_submit_accept_the_same_values(tmp_path: Path, extra: str, capsys) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(HEAD + extra)
    validated = cli.main(["validate", str(spec)])
    validate_err = capsys.readouterr().err
    submitted = cli.main(["submit", "--backend", "slurm", "--dry-run", str(spec)])
    submit_err = capsys.readouterr().err
    assert (validated == 0) == (submitted == 0), (validate_err, submit_err)
    if validated != 0:
        assert validated == submitted == 2
        # the same spec error, with its file:line, from both
        assert f"{spec}:" in validate_err and f"{spec}:" in submit_err


@pytest.mark.parametrize("value", [-1, 0, 1, 3])
def test_max_failures_flag_takes_the_spec_limit(tmp_path: Path, value: int, capsys) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(HEAD + f"autoresume: {{max_failures: {value}}}\n")
    in_spec = cli.main(["submit", "--backend", "slurm", "--dry-run", str(spec)])
    spec.write_text(HEAD)
    on_cli = cli.main(["submit", "--backend", "slurm", "--dry-run", "--max-failures", str(value),
                       str(spec)])
    assert in_spec == on_cli
    assert "max_failures" in capsys.readouterr().err or in_spec == 0


# -- one derivation of chain state ---------------------------------------------------------------

def _fail(ledger: Ledger, number: int) -> None:
    ledger.reserve(number)
    ledger.record_start(number, str(100 + number), nodes=["n1"], progress=0)
    ledger.record_end(number, outcome=Outcome.FAILED, reason="crash", progress=0)


@pytest.mark.parametrize("failed_before_resume", [1, 2])
def test_resume_view_and_policy_agree_on_failures_left(tmp_path: Path,
                                                       failed_before_resume: int) -> None:
    prepared = prepare_run(spec_file(tmp_path), backend="local", max_failures=3)
    ledger = write_run(prepared, resume=False)
    for number in range(1, failed_before_resume + 1):
        _fail(ledger, number)
    ledger.record_resume("ftslurm submit --resume", prepared.spec_fingerprint)
    settings, config = prepared.settings, prepared.settings.config

    number = failed_before_resume
    while True:
        state = ledger.state()
        data = status_data(state, settings)
        rows = data["attempts"]
        # header, last row and the policy see the same budget
        assert rows[-1]["failures_left"] == data["failures_left"]
        assert data["failures_left"] == state.failures_left(config.max_failures)
        decision = decide(state, config)
        if data["failures_left"] > 0:
            assert decision.action == "submit", (data, decision)
        else:
            assert (decision.action, decision.run_status) == ("stop", "failed")
            break
        number += 1
        _fail(ledger, number)
    # the resume forgave the earlier failures: the resumed run had its whole budget
    assert number - failed_before_resume == config.max_failures
    assert data["attempts_used"] == config.max_failures


# -- the layout -----------------------------------------------------------------------------------

SUBPACKAGES = ("spec", "slurm", "backends", "render", "chain", "fault_tolerance", "lightning",
               "commands")


def _runtime_imports(path: Path) -> set[str]:
    """ftslurm modules `path` imports when it runs (not those under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ftslurm"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ftslurm"))
    return found


def _subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in SUBPACKAGES else None


def test_subpackages_import_each_other_in_one_direction() -> None:
    edges: dict[str, set[str]] = {name: set() for name in SUBPACKAGES}
    for path in SOURCES:
        source = _subpackage(_module_name(path))
        for target in map(_subpackage, _runtime_imports(path)):
            if source and target and target != source:
                edges[source].add(target)

    def cycle_from(start: str, node: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in sorted(edges[node]):
            if nxt == start:
                return (*seen, nxt)
            if nxt not in seen:
                found = cycle_from(start, nxt, (*seen, nxt))
                if found:
                    return found
        return None

    cycles = [" -> ".join(c) for s in SUBPACKAGES if (c := cycle_from(s, s, (s,)))]
    assert cycles == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: _module_name(p))
def test_all_lists_exactly_the_public_names_a_module_defines(path: Path) -> None:
    name = _module_name(path)
    if name.endswith("__main__") or name.startswith("ftslurm.lightning"):
        pytest.importorskip("lightning")
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    defines = any(isinstance(node, ast.FunctionDef | ast.ClassDef)
                  for node in ast.parse(path.read_text()).body)
    if exported is None:
        assert not defines or path.name == "__init__.py", "a module with code needs __all__"
        return
    assert len(exported) == len(set(exported)), "listed twice"
    missing = [n for n in exported if not hasattr(module, n)]
    assert missing == [], "__all__ names what the module does not have"
    if path.name == "__init__.py":
        return  # a package's __all__ re-exports its modules' names
    defined = {n for n, obj in vars(module).items()
               if not n.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
               and getattr(obj, "__module__", None) == name}
    assert sorted(defined - set(exported)) == [], "public but not in __all__"
