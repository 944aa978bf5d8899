"""Load YAML into a small tree of nodes that remember their line, for error messages.

`load_yaml` parses with PyYAML's safe loader and keeps, for every value, the line it came from
and, for plain (unquoted) scalars, the exact text written. The text matters because YAML 1.1
reads some strings as something else: `time: 1:30:00` is the integer 5400 (base 60),
`qos: no` is False and `FOO: 010` is 8; a string field uses what the user wrote instead.

Duplicate keys and non-string keys are errors (PyYAML silently keeps the last duplicate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from ftslurm.errors import UsageError


class YamlSyntaxError(UsageError):
    """The file is not valid YAML, or not the kind of YAML a job spec can be."""


@dataclass(frozen=True)
class YScalar:
    """A scalar: its value as YAML typed it, the text as written, and where."""

    value: Any
    text: str
    line: int
    plain: bool

    @property
    def is_null(self) -> bool:
        """True for `~`, `null` or an empty value."""
        return self.value is None


@dataclass(frozen=True)
class YEntry:
    """One `key: value` of a mapping: the key's line and the value node."""

    key: str
    line: int
    node: YNode


@dataclass(frozen=True)
class YMapping:
    """A mapping whose entries keep the order of the file."""

    entries: dict[str, YEntry] = field(default_factory=dict)
    line: int = 1


@dataclass(frozen=True)
class YSequence:
    """A list of nodes."""

    items: tuple[YNode, ...] = ()
    line: int = 1


YNode = YScalar | YMapping | YSequence


def kind_of(node: YNode) -> str:
    """A short name of what a node holds, for "expected X, got Y" messages."""
    if isinstance(node, YMapping):
        return "a mapping"
    if isinstance(node, YSequence):
        return "a list"
    value = node.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {node.text!r}"
    if isinstance(value, (int, float)):
        return f"the number {node.text}"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{type(value).__name__} {node.text!r}"


def to_python(node: YNode) -> Any:
    """Plain Python values (dicts, lists, scalars) for a node tree."""
    if isinstance(node, YMapping):
        return {key: to_python(entry.node) for key, entry in node.entries.items()}
    if isinstance(node, YSequence):
        return [to_python(item) for item in node.items]
    return node.value


class _Builder:
    """Turns PyYAML's composed node graph into Y* nodes, collecting errors."""

    def __init__(self, loader: yaml.SafeLoader, filename: str) -> None:
        self.loader = loader
        self.filename = filename

    def _fail(self, line: int, message: str) -> YamlSyntaxError:
        return YamlSyntaxError(f"{self.filename}:{line}: {message}")

    def build(self, node: yaml.Node) -> YNode:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            self.loader.flatten_mapping(node)  # resolves `<<: *anchor` merges
            entries: dict[str, YEntry] = {}
            for key_node, value_node in node.value:
                key_line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    raise self._fail(key_line, "a key must be a plain name, not a list or mapping")
                key = self.loader.construct_object(key_node)
                if not isinstance(key, str):
                    raise self._fail(
                        key_line, f"the key {key_node.value!r} must be a name; quote it if needed"
                    )
                if key in entries:
                    raise self._fail(
                        key_line,
                        f"duplicate key {key!r} (first on line {entries[key].line}); keep one",
                    )
                entries[key] = YEntry(key, key_line, self.build(value_node))
            return YMapping(entries, line)
        if isinstance(node, yaml.SequenceNode):
            return YSequence(tuple(self.build(item) for item in node.value), line)
        value = self.loader.construct_object(node)
        return YScalar(value, str(node.value), line, plain=node.style is None)


def load_yaml(text: str, filename: str) -> YNode | None:
    """Parse one YAML document; None when it is empty. Errors name the file and line."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        return None if root is None else _Builder(loader, filename).build(root)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{filename}:{mark.line + 1}" if mark else filename
        problem = error.problem or str(error)
        raise YamlSyntaxError(
            f"{where}: not valid YAML: {problem}",
            hint="check the indentation and quote values that contain ': ' or start with '{'",
        ) from None
    except yaml.YAMLError as error:
        raise YamlSyntaxError(f"{filename}: not valid YAML: {error}") from None
    finally:
        loader.dispose()


__all__ = [
    "YEntry",
    "YMapping",
    "YNode",
    "YScalar",
    "YSequence",
    "YamlSyntaxError",
    "kind_of",
    "load_yaml",
    "to_python",
]
