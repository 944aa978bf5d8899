"""SLURM hostlists (`n[1-2],gpu[01,03-04]`): expand and compress, without running SLURM.

`scontrol show hostnames` does the expansion too, but needs a cluster; this is pure and tested
by a round trip (tests/unit/test_slurm_parse.py).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence

#: What SLURM prints for "no nodes".
_EMPTY = frozenset({"", "None assigned", "(null)", "None", "N/A"})


class HostlistError(ValueError):
    """A hostlist that is not well formed (unbalanced brackets, bad or descending range)."""


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise HostlistError(f"unbalanced ']' in hostlist {text!r}")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise HostlistError(f"unbalanced '[' in hostlist {text!r}")
    parts.append("".join(current))
    return parts


def _expand_range_list(body: str, hostlist: str) -> list[str]:
    values: list[str] = []
    for item in body.split(","):
        low, dash, high = item.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise HostlistError(f"bad range {item!r} in hostlist {hostlist!r}")
        if not dash:
            values.append(low)
            continue
        width = len(low) if low.startswith("0") else 0
        if int(high) < int(low):
            raise HostlistError(f"descending range {item!r} in hostlist {hostlist!r}")
        values.extend(f"{n:0{width}d}" for n in range(int(low), int(high) + 1))
    return values


def expand_hostlist(text: str) -> tuple[str, ...]:
    """Expand a SLURM hostlist: `n[1-2],gpu[01,03-04]` -> (n1, n2, gpu01, gpu03, gpu04).

    Several bracket groups in one name (`r[1-2]n[1-2]`) expand to their product, like SLURM.
    `None assigned`, `(null)` and empty give an empty tuple.
    """
    text = text.strip()
    if text in _EMPTY:
        return ()
    hosts: list[str] = []
    for part in _split_top_level(text):
        if not part:
            raise HostlistError(f"empty name in hostlist {text!r}")
        pieces = re.split(r"\[([^\]]*)\]", part)
        choices = [
            [piece] if i % 2 == 0 else _expand_range_list(piece, text)
            for i, piece in enumerate(pieces)
        ]
        hosts.extend("".join(combo) for combo in itertools.product(*choices))
    return tuple(hosts)


_HOST_RE = re.compile(r"^(?P<prefix>.*?)(?P<num>\d+)$")


def compress_hostlist(hosts: Iterable[str]) -> str:
    """The inverse of `expand_hostlist` for one numeric suffix per name, order kept:
    (n1, n2, n3, gpu01) -> `n[1-3],gpu01`. Zero padding is kept (`gpu[01-02]`)."""
    groups: list[tuple[str, list[str]]] = []  # (prefix, suffixes); "" prefix group for non-numeric
    for host in hosts:
        match = _HOST_RE.match(host)
        if match is None:
            groups.append((host, []))
            continue
        prefix, num = match["prefix"], match["num"]
        if groups and groups[-1][0] == prefix and groups[-1][1]:
            groups[-1][1].append(num)
        else:
            groups.append((prefix, [num]))
    out: list[str] = []
    for prefix, nums in groups:
        if not nums:
            out.append(prefix)
        elif len(nums) == 1:
            out.append(prefix + nums[0])
        else:
            out.append(f"{prefix}[{_compress_numbers(nums)}]")
    return ",".join(out)


def _compress_numbers(nums: Sequence[str]) -> str:
    ranges: list[list[str]] = []
    for num in nums:
        if ranges:
            last = ranges[-1][-1]
            if int(num) == int(last) + 1 and len(num) == len(last):
                ranges[-1].append(num)
                continue
        ranges.append([num])
    return ",".join(r[0] if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in ranges)


__all__ = [
    "HostlistError",
    "compress_hostlist",
    "expand_hostlist",
]
