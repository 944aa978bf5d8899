"""Load YAML into a small tree of nodes that remember their line, for error messages.

`load_yaml` parses with PyYAML's safe loader and keeps, for every value, the line it came from
and, for plain (unquoted) scalars, the exact text written. The text matters because YAML 1.1
reads some strings as something else: `time: 1:30:00` is the integer 5400 (base 60),
`qos: no` is False and `FOO: 010` is 8; a string field uses what the user wrote instead.

Duplicate keys and non-string keys are errors (PyYAML silently keeps the last duplicate). A merge
`<<: *defaults` fills in the keys the mapping does not write itself.

The loader is bounded, because a job spec holds a few hundred values and anything far beyond is a
mistake or an attack: a file over `MAX_SPEC_BYTES` is refused before parsing; nesting deeper than
`MAX_YAML_DEPTH`, and a document that expands (through aliases `*name` and merges `<<:`) to more
than `MAX_YAML_NODES` values, are refused as soon as the bound is passed (a "billion laughs" file
stops after that many steps); every YAML tag other than the plain types of `ALLOWED_TAGS`
(`!!python/object`, `!custom`, `!!binary`, ...) is refused with its line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from ftslurm.errors import UsageError

#: Largest job spec file (bytes) that is parsed at all; a real one is a few KiB.
MAX_SPEC_BYTES = 1024 * 1024
#: Most values (scalars, lists, mappings, merged keys) a spec may expand to, counting every
#: repetition an alias `*name` or a merge `<<:` makes; a real spec has a few hundred.
MAX_YAML_NODES = 10_000
#: Deepest nesting of lists and mappings; a real spec nests three or four levels.
MAX_YAML_DEPTH = 32
_CORE = "tag:yaml.org,2002:"
#: The only YAML tags a spec may hold (written as `!!str` etc., or implied by a plain value).
ALLOWED_TAGS: frozenset[str] = frozenset(
    _CORE + name for name in ("str", "int", "float", "bool", "null", "timestamp", "map", "seq")
)
_MERGE_TAG = _CORE + "merge"
_TOP = "(top level)"


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


class YamlLimitError(YamlSyntaxError):
    """The file is larger, deeper, or expands to more values than a job spec can."""


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_CORE) if tag.startswith(_CORE) else tag


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses, while composing, more than MAX_YAML_NODES nodes (so a
    large file stops early) and nesting deeper than MAX_YAML_DEPTH (so a deep file never reaches
    Python's recursion limit)."""

    def __init__(self, text: str, filename: str) -> None:
        super().__init__(text)
        self.filename = filename
        self.depth = 0
        self.composed = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        """PyYAML's compose_node, with the depth bound."""
        self.depth += 1
        self.composed += 1
        try:
            # The ignores below: types-PyYAML leaves `peek_event` unannotated.
            if self.composed > MAX_YAML_NODES:
                line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
                raise YamlLimitError(
                    f"{self.filename}:{line}: the YAML holds more than {MAX_YAML_NODES} values; "
                    "a job spec needs far fewer: is it the right file?"
                )
            if self.depth > MAX_YAML_DEPTH:
                line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
                raise YamlLimitError(
                    f"{self.filename}:{line}: lists and mappings are nested more than "
                    f"{MAX_YAML_DEPTH} levels deep; a job spec needs a few levels only"
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Builder:
    """Turns PyYAML's composed node graph into Y* nodes.

    Every value built is counted; an alias is built again each time it is used, so the count
    bounds the expansion. Problems that do not stop the build (tags, duplicate keys, values that
    cannot be read) are collected and raised together by `raise_if_any`.
    """

    def __init__(self, loader: yaml.SafeLoader, filename: str) -> None:
        self.loader = loader
        self.filename = filename
        self.count = 0
        self.problems: list[tuple[int, str]] = []
        #: The line and name of the top-level key being built: where an expansion is reported.
        self.top: tuple[int, str] = (1, _TOP)

    def _fail(self, line: int, message: str) -> YamlSyntaxError:
        return YamlSyntaxError(f"{self.filename}:{line}: {message}")

    def _tick(self, amount: int = 1) -> None:
        self.count += amount
        if self.count > MAX_YAML_NODES:
            line, key = self.top
            raise YamlLimitError(
                f"{self.filename}:{line}: {key}: the YAML expands to more than "
                f"{MAX_YAML_NODES} values (each alias `*name` or merge `<<:` repeats what it "
                "points to); a job spec needs far fewer: write the values out or use fewer aliases"
            )

    def _tag_allowed(self, node: yaml.Node, key: str) -> bool:
        if node.tag in ALLOWED_TAGS:
            return True
        self.problems.append((
            node.start_mark.line + 1,
            f"{key}: the YAML tag {_short_tag(node.tag)!r} is not allowed in a job spec; remove "
            "it (a job spec holds plain strings, numbers, booleans, lists and mappings)",
        ))
        return False

    def build(self, node: yaml.Node, key: str = _TOP) -> YNode:
        """The Y* tree of `node`, whose dotted key (for messages) is `key`."""
        self._tick()
        line = node.start_mark.line + 1
        if not self._tag_allowed(node, key):
            return YScalar(None, "", line, plain=True)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, key)
        if isinstance(node, yaml.SequenceNode):
            items = (self.build(item, f"{key}[{index}]") for index, item in enumerate(node.value))
            return YSequence(tuple(items), line)
        assert isinstance(node, yaml.ScalarNode)  # the composer makes no other kind of node
        try:
            value = self.loader.construct_object(node)
        except (ValueError, OverflowError) as error:  # e.g. an integer of 5000 digits
            self.problems.append((line, f"{key}: cannot read {node.value[:40]!r} as "
                                        f"{_short_tag(node.tag)} ({str(error)[:80]}); quote it "
                                        "if it is a string"))
            value = None
        return YScalar(value, str(node.value), line, plain=node.style is None)

    def _mapping(self, node: yaml.MappingNode, key: str) -> YMapping:
        merged: dict[str, YEntry] = {}
        entries: dict[str, YEntry] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                for name, entry in self._merge_sources(value_node, key).items():
                    merged.setdefault(name, entry)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise self._fail(key_line, "a key must be a plain name, not a list or mapping")
            if not self._tag_allowed(key_node, key):
                continue
            name = self.loader.construct_object(key_node)
            if not isinstance(name, str):
                raise self._fail(
                    key_line, f"the key {key_node.value!r} must be a name; quote it if needed"
                )
            if name in entries:
                self.problems.append((key_line, f"duplicate key {name!r} (first on line "
                                                f"{entries[name].line}); keep one"))
                continue
            if key == _TOP:
                self.top = (key_line, name)
            child = name if key == _TOP else f"{key}.{name}"
            entries[name] = YEntry(name, key_line, self.build(value_node, child))
        if merged:  # keys written in the mapping itself win over merged ones
            self._tick(len(merged))
            entries = {**{k: e for k, e in merged.items() if k not in entries}, **entries}
        return YMapping(entries, node.start_mark.line + 1)

    def _merge_sources(self, value: yaml.Node, key: str) -> dict[str, YEntry]:
        """The entries `<<: value` merges in; of several mappings, the first listed wins."""
        sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
        merged: dict[str, YEntry] = {}
        for source in sources:
            built = self.build(source, key) if isinstance(source, yaml.MappingNode) else None
            if not isinstance(built, YMapping):
                self.problems.append((source.start_mark.line + 1,
                                      f"{key}: `<<:` merges a mapping or a list of mappings, "
                                      "e.g. `<<: *defaults`"))
                continue
            for name, entry in built.entries.items():
                merged.setdefault(name, entry)
        return merged

    def raise_if_any(self) -> None:
        """Raise one YamlSyntaxError listing every collected problem, by line."""
        if not self.problems:
            return
        lines = [f"{self.filename}:{line}: {message}" for line, message in sorted(self.problems)]
        if len(lines) == 1:
            raise YamlSyntaxError(lines[0])
        raise YamlSyntaxError(f"{self.filename}: {len(lines)} errors in the YAML:\n  "
                              + "\n  ".join(lines))


def size_problem(size: int, filename: str) -> str | None:
    """The message that refuses a spec file of `size` bytes, or None when it is small enough."""
    if size <= MAX_SPEC_BYTES:
        return None
    return (f"{filename}: the file is larger than {MAX_SPEC_BYTES // 1024} KiB "
            f"({MAX_SPEC_BYTES} bytes), the most a job spec may be; is it the right file?")


def load_yaml(text: str, filename: str) -> YNode | None:
    """Parse one YAML document; None when it is empty. Errors name the file and line.

    Bounded: MAX_SPEC_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES; only ALLOWED_TAGS.
    """
    problem = size_problem(len(text.encode("utf-8", "surrogatepass")), filename)
    if problem:
        raise YamlLimitError(problem)
    loader = _BoundedLoader(text, filename)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        builder = _Builder(loader, filename)
        tree = builder.build(root)
        builder.raise_if_any()
        return tree
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
    "ALLOWED_TAGS",
    "MAX_SPEC_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "YEntry",
    "YMapping",
    "YNode",
    "YScalar",
    "YSequence",
    "YamlLimitError",
    "YamlSyntaxError",
    "kind_of",
    "load_yaml",
    "size_problem",
    "to_python",
]
