"""Typed readers for job-spec sections that collect every error instead of stopping at the first.

A `Section` wraps one YAML mapping; each reader (`integer`, `string`, `string_list`, ...) returns
the value or, when it is wrong, records an `Issue` (file, line, dotted key, what is expected) and
returns the default so validation goes on. `Issues.raise_if_any` then raises one `SpecError`
listing them all. Unknown keys get a "did you mean" suggestion.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftslurm.errors import UsageError, suggestion
from ftslurm.render.quoting import directive_value_problem, value_problem
from ftslurm.signals import parse_signal
from ftslurm.spec.yaml_loader import YMapping, YNode, YScalar, YSequence, kind_of

_MISSING: Any = object()


@dataclass(frozen=True)
class Issue:
    """One problem in a spec: where it is and what is expected instead."""

    line: int
    key: str
    message: str

    def format(self, filename: str) -> str:
        """`file:line: key: message`."""
        return f"{filename}:{self.line}: {self.key}: {self.message}"


class SpecError(UsageError):
    """A job spec with one or more problems; all of them are in the message."""

    def __init__(self, filename: str, issues: list[Issue]) -> None:
        self.filename = filename
        self.issues = list(issues)
        count = len(self.issues)
        head = f"{filename}: {count} error{'s' if count != 1 else ''} in the job spec"
        body = "\n".join(f"  {issue.format(filename)}" for issue in self.issues)
        super().__init__(f"{head}:\n{body}", hint="fix these and run `ftslurm validate` again")


class Issues:
    """Collects the problems (and the warnings) found while reading one spec file."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.items: list[Issue] = []
        #: Doubts that do not stop the spec (e.g. more nodes than most clusters have).
        self.warnings: list[Issue] = []

    def add(self, line: int, key: str, message: str) -> None:
        """Record one problem."""
        self.items.append(Issue(line, key, message))

    def warn(self, line: int, key: str, message: str) -> None:
        """Record one warning: shown, but the spec stays valid."""
        self.warnings.append(Issue(line, key, message))

    def formatted_warnings(self) -> tuple[str, ...]:
        """Every warning as `file:line: key: message`, by line."""
        ordered = sorted(self.warnings, key=lambda issue: issue.line)
        return tuple(issue.format(self.filename) for issue in ordered)

    def raise_if_any(self) -> None:
        """Raise a SpecError listing every recorded problem, sorted by line."""
        if self.items:
            raise SpecError(self.filename, sorted(self.items, key=lambda issue: issue.line))


def canonical_signal_name(text: str) -> str | None:
    """Canonical name ("SIGUSR1") of a signal written by name ("SIGUSR1", "USR1", "usr1");
    None for anything else (numbers included: a spec names its signals)."""
    if text.strip().isdigit():
        return None
    try:
        return parse_signal(text).name
    except ValueError:
        return None


class Section:
    """Reads the keys of one mapping of the spec (the top level or a nested section)."""

    def __init__(self, node: YMapping, prefix: str, issues: Issues, line: int = 1) -> None:
        self.node = node
        self.prefix = prefix
        self.issues = issues
        self.line = line

    def key(self, name: str) -> str:
        """The dotted name of a key of this section, as messages show it."""
        return f"{self.prefix}{name}"

    def line_of(self, name: str) -> int:
        """The line of `name`, or of the section itself when the key is absent."""
        entry = self.node.entries.get(name)
        return entry.line if entry else self.line

    def has(self, name: str) -> bool:
        """True when the key is present and not null."""
        entry = self.node.entries.get(name)
        return entry is not None and not (isinstance(entry.node, YScalar) and entry.node.is_null)

    def error(self, name: str, message: str) -> None:
        """Record a problem with key `name` of this section."""
        self.issues.add(self.line_of(name), self.key(name), message)

    def warn(self, name: str, message: str) -> None:
        """Record a warning about key `name` of this section (the spec stays valid)."""
        self.issues.warn(self.line_of(name), self.key(name), message)

    def check_keys(self, known: Iterable[str]) -> None:
        """Report every key that is not in `known`, with the closest known one."""
        known = list(known)
        for name, entry in self.node.entries.items():
            if name not in known:
                self.issues.add(
                    entry.line, self.key(name), f"unknown key{suggestion(name, known)}"
                )

    def _get(self, name: str) -> YNode | None:
        entry = self.node.entries.get(name)
        if entry is None or (isinstance(entry.node, YScalar) and entry.node.is_null):
            return None
        return entry.node

    def _wrong(self, name: str, node: YNode, expected: str) -> Any:
        self.error(name, f"expected {expected}, got {kind_of(node)}")
        return _MISSING

    def integer(self, name: str, default: Any, *, minimum: int | None = None,
                maximum: int | None = None) -> Any:
        """An integer within [minimum, maximum]; `default` when absent or wrong."""
        node = self._get(name)
        if node is None:
            return default
        low = "" if minimum is None else f" >= {minimum}"
        high = "" if maximum is None else f" <= {maximum}"
        expected = f"an integer{low}{' and' if low and high else ''}{high}"
        if not (isinstance(node, YScalar) and type(node.value) is int):
            self._wrong(name, node, expected)
            return default
        value = node.value
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.error(name, f"expected {expected}, got {value}")
            return default
        return value

    def number(self, name: str, default: Any, *, minimum: float = 0.0, allow_zero: bool = False,
               allow_null: bool = False) -> Any:
        """A finite number > minimum (>= with allow_zero); null means None if allow_null."""
        entry = self.node.entries.get(name)
        if entry is None:
            return default
        node = entry.node
        if isinstance(node, YScalar) and node.is_null:
            if allow_null:
                return None
            self.error(name, "expected a number, got null")
            return default
        relation = ">=" if allow_zero else ">"
        expected = f"a number {relation} {minimum:g}" + (" or null" if allow_null else "")
        if not (isinstance(node, YScalar) and type(node.value) in (int, float)):
            self._wrong(name, node, expected)
            return default
        value = float(node.value)
        if not math.isfinite(value) or value < minimum or (value == minimum and not allow_zero):
            self.error(name, f"expected {expected}, got {node.text}")
            return default
        return int(value) if type(node.value) is int else value

    def boolean(self, name: str, default: bool) -> bool:
        """true or false."""
        node = self._get(name)
        if node is None:
            return default
        if isinstance(node, YScalar) and isinstance(node.value, bool):
            return node.value
        self._wrong(name, node, "true or false")
        return default

    def _scalar_text(self, name: str, node: YNode, expected: str) -> Any:
        if not isinstance(node, YScalar) or isinstance(node.value, (dict, list)):
            return self._wrong(name, node, expected)
        text = node.text if node.plain or isinstance(node.value, str) else str(node.value)
        problem = value_problem(text)
        if problem:
            self.error(name, problem)
            return _MISSING
        return text

    def string(self, name: str, default: Any = None, *, directive: bool = False,
               nonempty: bool = True) -> Any:
        """A string (a plain number or word is taken as written); `directive`: it goes on an
        #SBATCH line, so it must be a single line."""
        node = self._get(name)
        if node is None:
            return default
        text = self._scalar_text(name, node, "a string")
        if text is _MISSING:
            return default
        if nonempty and not text.strip():
            self.error(name, "must not be empty")
            return default
        if directive:
            problem = directive_value_problem(text)
            if problem:
                self.error(name, problem)
                return default
        return text

    def string_list(self, name: str, *, split: bool = True) -> tuple[str, ...]:
        """A list of strings; a single string is split like a shell would (`split`)."""
        node = self._get(name)
        if node is None:
            return ()
        expected = "a list of strings" + (" or one string" if split else "")
        if isinstance(node, YScalar):
            text = self._scalar_text(name, node, expected)
            if text is _MISSING:
                return ()
            if not split:
                return (text,)
            try:
                return tuple(shlex.split(text))
            except ValueError as error:
                self.error(name, f"cannot split {text!r} into words ({error}); use a YAML list")
                return ()
        if not isinstance(node, YSequence):
            self._wrong(name, node, expected)
            return ()
        values: list[str] = []
        for index, item in enumerate(node.items):
            text = self._scalar_text(f"{name}[{index}]", item, "a string")
            if text is not _MISSING:
                values.append(text)
        return tuple(values)

    def mapping(self, name: str) -> YMapping | None:
        """A nested mapping, or None when absent/null (an error when it is something else)."""
        node = self._get(name)
        if node is None:
            return None
        if not isinstance(node, YMapping):
            self._wrong(name, node, "a mapping of keys to values")
            return None
        return node

    def section(self, name: str) -> Section:
        """The nested section `name` (empty when absent), with keys reported as `name.key`."""
        node = self.mapping(name) or YMapping({}, self.line_of(name))
        return Section(node, f"{self.key(name)}.", self.issues, line=self.line_of(name))

    def signal(self, name: str, default: str, *, catchable: bool = False) -> str:
        """A signal name ("SIGUSR1" or "USR1"), returned as "SIGUSR1"."""
        text = self.string(name, None)
        if text is None:
            return default
        canonical = canonical_signal_name(text)
        if canonical is None:
            self.error(name, f"expected a signal name such as SIGUSR1 or SIGTERM, got {text!r}")
            return default
        if catchable and canonical in ("SIGKILL", "SIGSTOP"):
            self.error(name, f"{canonical} cannot be caught; use SIGUSR1, SIGUSR2 or SIGTERM")
            return default
        return canonical


#: Pseudo filesystems where a job's files cannot live.
_PSEUDO_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))


def writable_place_problem(path: Path, *, directory: bool) -> str | None:
    """Why `path` (a file, or a directory when `directory`) cannot be created or written by this
    user, or None when it can: the nearest existing ancestor must be a writable directory on a
    read-write filesystem, outside /proc, /sys and /dev."""
    if any(path == root or root in path.parents for root in _PSEUDO_FILESYSTEMS):
        return f"{path} is on a pseudo filesystem"
    if path.exists():
        if directory != path.is_dir():
            return f"{path} exists and is not a {'directory' if directory else 'file'}"
        target = path if directory else path.parent
    else:
        target = path.parent
        while not target.exists() and target != target.parent:
            target = target.parent
    if not target.is_dir():
        return f"{target} is not a directory"
    if not os.access(target, os.W_OK | os.X_OK):
        return f"{target} is not writable"
    if os.statvfs(target).f_flag & os.ST_RDONLY:
        return f"{target} is on a read-only filesystem"
    return None


def check_writable_place(section: Section, key: str, path: Path, *, directory: bool) -> None:
    """Record an error on `key` unless `path` is in a place this user can write."""
    problem = writable_place_problem(path, directory=directory)
    if problem:
        section.error(key, f"{path} is not in a writable place: {problem}; choose a directory "
                           "you can write, e.g. under the run directory")


__all__ = [
    "Issue",
    "Issues",
    "Section",
    "SpecError",
    "canonical_signal_name",
    "check_writable_place",
    "suggestion",
    "writable_place_problem",
]
