"""Sweeps: one job spec, a grid of values, one ordinary run per point (docs/sweeps.md).

A grid comes from `--sweep KEY=v1,v2` options and from the spec's `sweep:` section:

    sweep:
      grid:
        env.LR: ["1e-3", "3e-4"]      # KEY: a dotted spec key; env.X sets an env: value
        nodes: [1, 2]
      max_parallel: 2                  # at most 2 chains queued or running at once

Every point is the spec with the point's values set at their keys, `{{KEY}}` replaced by the
point's value in every string of the spec (command arguments above all), `run_dir:` set to
`<the spec's run_dir>/<point name>` and `name:` to `<name>-<point number>`. Each point is then
validated like any spec; one bad point refuses the whole sweep before anything is written.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ftslurm.errors import UsageError
from ftslurm.spec.limits import MAX_SWEEP_POINTS
from ftslurm.spec.model import JobSpec, load_spec, parse_spec, read_spec_text
from ftslurm.spec.yaml_loader import YMapping, YNode, YSequence, load_yaml, to_python

SWEEP_SECTION = "sweep"
#: `{{KEY}}` in a string of the spec: the point's value of the swept key KEY.
PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]*)\s*\}\}")
#: Keys a sweep sets itself: a point's run dir and job name come from the sweep.
_SET_BY_SWEEP = ("run_dir", "name", SWEEP_SECTION)
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


@dataclass(frozen=True)
class Axis:
    """One swept key and its values, as text (what names the points and fills `{{KEY}}`) and
    as the YAML value set at the key."""

    key: str
    texts: tuple[str, ...]
    values: tuple[Any, ...]


@dataclass(frozen=True)
class SweepPoint:
    """One point of the grid: its number (1-based), name, values and spec text."""

    number: int
    name: str
    values: tuple[tuple[str, str], ...]
    text: str

    @property
    def label(self) -> str:
        """`KEY=value KEY2=value2`, for people."""
        return " ".join(f"{key}={value}" for key, value in self.values)


@dataclass(frozen=True)
class SweepPlan:
    """A sweep, validated: its directory, axes, points and parallelism."""

    source: Path
    sweep_dir: Path
    name: str
    axes: tuple[Axis, ...]
    points: tuple[SweepPoint, ...]
    max_parallel: int | None

    def spec(self, point: SweepPoint) -> JobSpec:
        """The point's job spec (already validated by `plan_sweep`)."""
        return point_spec(self.source, point)


def parse_sweep_option(option: str) -> tuple[str, tuple[str, ...]]:
    """`KEY=v1,v2` (or `KEY=[v1, "v,2"]`, a YAML list) -> (KEY, value texts)."""
    key, equals, rest = option.partition("=")
    key = key.strip()
    if not equals or not key:
        raise UsageError(f"--sweep {option!r}: expected KEY=v1,v2,...",
                         hint="e.g. --sweep env.LR=1e-3,3e-4 --sweep nodes=1,2")
    rest = rest.strip()
    if rest.startswith("["):
        try:
            items = yaml.safe_load(rest)
        except yaml.YAMLError as error:
            raise UsageError(f"--sweep {option!r}: not a YAML list: {error}") from None
        if not isinstance(items, list):
            raise UsageError(f"--sweep {option!r}: not a YAML list")
        texts = tuple(_scalar_text(item, f"--sweep {key}") for item in items)
    else:
        texts = tuple(part.strip() for part in rest.split(","))
    if not texts or any(text == "" for text in texts):
        raise UsageError(f"--sweep {option!r}: every value must be non-empty",
                         hint="e.g. --sweep seed=1,2,3")
    return key, texts


class _Plain(str):
    """A plain (unquoted) scalar's text as written: written back plain, so the point's spec
    reads it as the original did (`time: 1:30:00` stays that string, `nodes: 2` the number)."""


def _tree(node: YNode) -> Any:
    """The spec's YAML as dicts and lists whose scalars keep their text: a plain scalar as
    `_Plain`, a quoted one as its string, a null as None."""
    if isinstance(node, YMapping):
        return {key: _tree(entry.node) for key, entry in node.entries.items()}
    if isinstance(node, YSequence):
        return [_tree(item) for item in node.items]
    if node.is_null and node.plain:
        return None
    return _Plain(node.text) if node.plain else str(node.value)


class _PointDumper(yaml.SafeDumper):
    """Writes `_Plain` texts plain, with the tag a reader resolves them to."""


def _represent_plain(dumper: yaml.SafeDumper, data: _Plain) -> yaml.ScalarNode:
    tag = dumper.resolve(yaml.ScalarNode, str(data), (True, False))  # type: ignore[no-untyped-call]
    return dumper.represent_scalar(tag, str(data))


_PointDumper.add_representer(_Plain, _represent_plain)


def _plain_text_ok(text: str) -> bool:
    """Whether a command-line value can be written plain (a scalar, one line)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return not isinstance(value, (dict, list)) and "\n" not in text and text.strip() == text


def _scalar_text(value: Any, where: str) -> str:
    if isinstance(value, (dict, list)) or value is None:
        raise UsageError(f"{where}: {value!r} is not a single value; give numbers or strings")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _typed(key: str, text: str) -> Any:
    """How a command-line value is written into the point's spec: env values as strings,
    others as written (plain: `2` is read as a number, `1:30:00` as that string)."""
    if key.startswith("env.") or not _plain_text_ok(text):
        return text
    return _Plain(text)


def has_sweep(path: str | os.PathLike[str]) -> bool:
    """Whether the spec at `path` has a `sweep:` section (errors are left to the loader)."""
    try:
        root = load_yaml(read_spec_text(path), str(path))
    except UsageError:
        return False
    return isinstance(root, YMapping) and SWEEP_SECTION in root.entries


def _section_axes(raw: Mapping[str, Any], where: str) -> tuple[list[Axis], int | None]:
    section = raw.get(SWEEP_SECTION)
    if section is None:
        return [], None
    if not isinstance(section, dict):
        raise UsageError(f"{where}: sweep: expected a mapping with grid: and max_parallel:",
                         hint="sweep: {grid: {env.LR: ['1e-3', '3e-4']}, max_parallel: 2}")
    unknown = sorted(set(section) - {"grid", "max_parallel"})
    if unknown:
        raise UsageError(f"{where}: sweep: unknown key(s) {', '.join(unknown)}",
                         hint="sweep: has grid: (KEY: [values]) and max_parallel: (N)")
    grid = section.get("grid") or {}
    if not isinstance(grid, dict):
        raise UsageError(f"{where}: sweep.grid: expected a mapping of KEY: [values]")
    axes = []
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UsageError(f"{where}: sweep.grid.{key}: expected a non-empty list of values",
                             hint=f"e.g. {key}: [1, 2]")
        texts = tuple(_scalar_text(value, f"{where}: sweep.grid.{key}") for value in values)
        typed = tuple(str(v) if str(key).startswith("env.") else v for v in values)
        if str(key).startswith("env."):
            typed = texts  # an env value is the text as written: `true`, not `True`
        axes.append(Axis(str(key), texts, typed))
    limit = section.get("max_parallel")
    if limit is None:
        return axes, None
    if not (isinstance(limit, _Plain) and re.fullmatch(r"[0-9]{1,9}", limit)):
        raise UsageError(f"{where}: sweep.max_parallel: expected a whole number, "
                         f"got {str(limit)!r}")
    return axes, int(limit)


def check_max_parallel(value: int | None, where: str) -> int | None:
    """None (no limit) or a number >= 1."""
    if value is not None and value < 1:
        raise UsageError(f"{where}: max_parallel must be at least 1, got {value}",
                         hint="leave it out to run every point at once")
    return value


def _set_key(tree: dict[str, Any], key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    node = tree
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UsageError(f"{where}: {'.'.join(parts[:depth + 1])} is not a mapping, so "
                             f"{key} cannot be swept")
        node = child
    node[parts[-1]] = value


def _fill(value: Any, texts: Mapping[str, str], where: str, path: str = "") -> Any:
    """`value` with every `{{KEY}}` replaced by the point's text of KEY."""
    if isinstance(value, dict):
        return {key: _fill(item, texts, where, f"{path}.{key}" if path else str(key))
                for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, texts, where, f"{path}[{index}]")
                for index, item in enumerate(value)]
    if not isinstance(value, str):
        return value
    if "{{" not in value:
        return value

    def one(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in texts:
            swept = ", ".join(texts) or "none"
            raise UsageError(f"{where}: {path}: {{{{{key}}}}} names no swept key (swept: "
                             f"{swept})", hint="sweep that key (--sweep KEY=v1,v2 or sweep.grid)"
                             " or write the value itself")
        return texts[key]

    return PLACEHOLDER.sub(one, value)


def placeholders(path: str | os.PathLike[str]) -> list[str]:
    """The `{{KEY}}` placeholders a spec holds (outside a sweep they are an error)."""
    root = load_yaml(read_spec_text(path), str(path))
    raw = to_python(root) if root is not None else {}
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            found.extend(PLACEHOLDER.findall(value))

    walk(raw)
    return found


def _short_names(keys: Sequence[str]) -> list[str]:
    """The last part of each key, or the whole key where two last parts are the same."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return [short if last.count(short) == 1 else key for key, short in zip(keys, last, strict=True)]


def point_name(shorts: Sequence[str], texts: Sequence[str]) -> str:
    """`LR=1e-3,nodes=2`: a folder name (characters outside `A-Za-z0-9._+-` become `_`)."""
    pairs = zip(shorts, texts, strict=True)
    return ",".join(f"{short}={_UNSAFE.sub('_', text)}" for short, text in pairs)


def point_spec(source: Path, point: SweepPoint) -> JobSpec:
    """Validate one point's spec text; errors name the point."""
    try:
        return parse_spec(point.text, source)
    except UsageError as error:
        # the line numbers are the point's spec's (written by the sweep), not the file's
        message = re.sub(rf"{re.escape(str(source))}:\d+: ", f"{source}: ", error.message)
        raise UsageError(f"sweep point {point.number} ({point.label}): {message}",
                         hint=error.hint) from None


def plan_sweep(path: str | os.PathLike[str], options: Sequence[str] = (),
               max_parallel: int | None = None) -> SweepPlan | None:
    """The sweep of the spec at `path` with the `--sweep` options, every point validated;
    None when there is no grid at all. UsageError (exit 2) on any bad point, nothing written."""
    source = Path(os.path.abspath(path))
    where = str(source)
    root = load_yaml(read_spec_text(source), where)
    if not isinstance(root, YMapping):
        load_spec(source, show_warnings=False)  # the loader's own error for a non-mapping
        return None
    raw: dict[str, Any] = _tree(root)
    axes, section_limit = _section_axes(raw, where)
    for option in options:
        key, texts = parse_sweep_option(option)
        axes = [axis for axis in axes if axis.key != key]  # the command line wins
        axes.append(Axis(key, texts, tuple(_typed(key, text) for text in texts)))
    if not axes:
        return None
    for axis in axes:
        if not _KEY.match(axis.key):
            raise UsageError(f"sweep key {axis.key!r}: expected a dotted spec key",
                             hint="e.g. nodes, autoresume.max_failures, env.LR")
        if axis.key.split(".")[0] in _SET_BY_SWEEP:
            raise UsageError(f"sweep key {axis.key!r}: set by the sweep itself (each point's "
                             "run dir is <run_dir>/<point name>)", hint="sweep another key")
        if len(set(axis.texts)) != len(axis.texts):
            raise UsageError(f"sweep key {axis.key}: a value is given twice: "
                             f"{', '.join(axis.texts)}")
    limit = check_max_parallel(max_parallel if max_parallel is not None else section_limit,
                               "--max-parallel" if max_parallel is not None
                               else f"{where}: sweep")
    count = 1
    for axis in axes:
        count *= len(axis.texts)
    if count > MAX_SWEEP_POINTS:
        raise UsageError(f"the sweep has {count} points, more than {MAX_SWEEP_POINTS}",
                         hint="split it into several sweeps")
    base = {key: value for key, value in raw.items() if key != SWEEP_SECTION}
    name = str(base.get("name") or "")
    if not name:
        parse_spec(read_spec_text(source), source)  # the loader's error for the missing name
    run_dir = base.get("run_dir")
    sweep_dir = Path(os.path.abspath(source.parent / os.path.expanduser(str(run_dir)))) \
        if run_dir else source.parent / "runs" / name
    shorts = _short_names([axis.key for axis in axes])
    points: list[SweepPoint] = []
    seen: dict[str, int] = {}
    for number, combo in enumerate(itertools.product(*(range(len(a.texts)) for a in axes)),
                                   start=1):
        point_texts = {axis.key: axis.texts[i] for axis, i in zip(axes, combo, strict=True)}
        pname = point_name(shorts, [axis.texts[i] for axis, i in zip(axes, combo, strict=True)])
        if pname in seen:
            raise UsageError(f"sweep points {seen[pname]} and {number} get the same folder "
                             f"name {pname!r}", hint="give values that differ in letters or "
                             "digits, not only in punctuation")
        seen[pname] = number
        # `{{KEY}}` takes a swept key, or its short name when no other key shares it
        fills = {**{short: point_texts[axis.key] for short, axis in zip(shorts, axes, strict=True)},
                 **point_texts}
        tree = _fill(base, fills, where)
        for axis, i in zip(axes, combo, strict=True):
            _set_key(tree, axis.key, _fill(axis.values[i], fills, where), where)
        tree["name"] = f"{name}-{number}"
        tree["run_dir"] = str(sweep_dir / pname)
        header = (f"# point {number} of the sweep of {source}: "
                  + " ".join(f"{k}={v}" for k, v in point_texts.items()) + "\n")
        text = header + yaml.dump(tree, Dumper=_PointDumper, sort_keys=False,
                                  default_flow_style=False, allow_unicode=True)
        point = SweepPoint(number, pname, tuple(point_texts.items()), text)
        point_spec(source, point)
        points.append(point)
    _check_distinct_flags(source, points)
    return SweepPlan(source, sweep_dir, name, tuple(axes), tuple(points), limit)


def _check_distinct_flags(source: Path, points: Sequence[SweepPoint]) -> None:
    owner: dict[Path, SweepPoint] = {}
    for point in points:
        flag = point_spec(source, point).autoresume.flag_file
        if flag in owner:
            raise UsageError(f"sweep points {owner[flag].number} and {point.number} share the "
                             f"finished flag {flag}: one point's end would end the other",
                             hint="leave autoresume.flag_file out (each run dir gets its own) "
                                  "or put {{KEY}} of a swept key in it")
        owner[flag] = point


__all__ = [
    "PLACEHOLDER",
    "SWEEP_SECTION",
    "Axis",
    "SweepPlan",
    "SweepPoint",
    "check_max_parallel",
    "has_sweep",
    "parse_sweep_option",
    "placeholders",
    "plan_sweep",
    "point_name",
    "point_spec",
]
