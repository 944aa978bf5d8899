"""Python tracebacks in a rank's output: the exception each one ended with, and whether that
exception looks like a consequence of a peer's death (a connection or collective error).

Reads text only (no process, no file): `chain/incident.py` hands it the end of an output file.

- Lines may carry a rank prefix: ftslurm's launcher tees each rank's lines to the job log as
  `[3]:`, torch writes `[rank3]: ` / `[default3]: `, srun's `--label` writes `3: `. Lines are
  grouped by that prefix before parsing, so tracebacks of ranks interleaved in one job log are
  read apart.
- A traceback is `Traceback (most recent call last):`, indented frame lines, then the exception
  line `Type: message` (or just `Type`). A message of several lines keeps its first line (its
  first non-blank one when the exception line ends at the colon).
- Chained exceptions ("The above exception was the direct cause of the following exception:",
  "During handling of the above exception, another exception occurred:") count as one traceback:
  the exception raised last, the one that ended the program.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_HEADER = "Traceback (most recent call last):"
_CHAIN_LINES = (
    "The above exception was the direct cause of the following exception:",
    "During handling of the above exception, another exception occurred:",
)
#: `[3]:` (ftslurm's launcher), `[rank3]: `, `[default3]: ` (torch), `3: ` / ` 3: ` (srun --label).
_PREFIX = re.compile(r"^(?:\[(?:rank|default)?(\d+)\]: ?|\s*(\d+): )")
#: `ValueError: boom`, `torch.distributed.DistBackendError: ...`, `KeyboardInterrupt`.
_EXCEPTION = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::(?: ?(?P<message>.*))?)?$")
#: How many lines that are neither frames nor an exception line (another thread's output) may
#: come between a traceback's frames and its exception line.
_NOISE_LINES = 3

#: Exception types (the last dotted part) that are always about a lost peer or connection.
CONNECTION_TYPES = frozenset({
    "ConnectionError", "ConnectionResetError", "ConnectionRefusedError", "ConnectionAbortedError",
    "BrokenPipeError", "DistNetworkError", "DistStoreError", "PeerLostError",
})
#: Messages of collective and transport errors that a rank gets when a peer died (gloo, NCCL,
#: the c10d store, ftslurm's own stop vote).
_CONNECTION_MESSAGES = re.compile(
    r"connection (?:closed|reset|refused|aborted)|by peer|broken pipe|remote process exited"
    r"|network error|ncclRemoteError|ncclSystemError|unhandled system error"
    r"|communicator was aborted|watchdog caught collective operation timeout"
    r"|timed out waiting|socket timeout|failed to recv|peer (?:lost|is gone|did not)"
    r"|gloo/transport",
    re.IGNORECASE,
)
#: Launchers' own exceptions that wrap a rank's failure (torchrun's report, a forwarded signal).
WRAPPER_TYPES = frozenset({"ChildFailedError", "SignalException"})


@dataclass(frozen=True)
class ErrorLine:
    """The exception a traceback ended with: `type` as printed (maybe dotted), `message` (its
    first line), `line` the two as one line."""

    type: str
    message: str
    line: str

    @property
    def short_type(self) -> str:
        """The class name without its module (`torch.distributed.DistBackendError` ->
        `DistBackendError`)."""
        return self.type.rsplit(".", 1)[-1]

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message, "line": self.line}


@dataclass(frozen=True)
class Traceback:
    """One traceback (a chain counts once): its final exception, the rank its lines were prefixed
    with (None: no prefix), and the index of its exception line in the text."""

    error: ErrorLine
    rank: int | None
    index: int


def split_prefix(line: str) -> tuple[int | None, str]:
    """(rank, rest) of one output line: the rank of a `[rank3]: `-style or srun `3: ` prefix."""
    match = _PREFIX.match(line)
    if match is None:
        return None, line
    rank = match.group(1) or match.group(2)
    return int(rank), line[match.end():]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _exception_at(lines: list[tuple[int, str]], start: int, depth: int
                  ) -> tuple[ErrorLine, int] | None:
    """The exception line of a traceback whose header (indented `depth`) ends before `start`:
    (its error, its position in `lines`), or None when the traceback is cut short."""
    noise = 0
    position = start
    while position < len(lines):
        text = lines[position][1].rstrip()
        if text.strip() and _indent(text) <= depth:
            stripped = text.strip()
            match = _EXCEPTION.match(stripped)
            if match is not None and stripped != _HEADER:
                return _error(match, lines, position), position
            noise += 1
            if noise > _NOISE_LINES or stripped == _HEADER or stripped in _CHAIN_LINES:
                return None
        position += 1
    return None


def _error(match: re.Match[str], lines: list[tuple[int, str]], position: int) -> ErrorLine:
    kind, message = match.group("type"), (match.group("message") or "").strip()
    if not message and match.group(0).endswith(":"):
        # `Error:` then the message on the next lines: keep its first non-blank line.
        for _, following in lines[position + 1:position + 6]:
            if following.strip():
                message = following.strip()
                break
    return ErrorLine(type=kind, message=message, line=f"{kind}: {message}" if message else kind)


def _parse_stream(rank: int | None, lines: list[tuple[int, str]]) -> list[Traceback]:
    """The tracebacks of one rank's lines ((index in the whole text, text) pairs), a chain of
    exceptions counted once, as its last exception."""
    found: list[Traceback] = []
    chained = False
    position = 0
    while position < len(lines):
        text = lines[position][1]
        stripped = text.strip()
        if stripped in _CHAIN_LINES and found:
            chained = True
        elif stripped == _HEADER:
            parsed = _exception_at(lines, position + 1, _indent(text))
            if parsed is not None:
                error, at = parsed
                traceback = Traceback(error=error, rank=rank, index=lines[at][0])
                if chained:
                    found[-1] = traceback  # the exception raised last stands for the chain
                else:
                    found.append(traceback)
                position = at
            chained = False
        position += 1
    return found


def find_tracebacks(text: str) -> list[Traceback]:
    """Every traceback of `text` (a chain once), in the order their exception lines appear."""
    streams: dict[int | None, list[tuple[int, str]]] = {}
    for index, raw in enumerate(text.splitlines()):
        rank, line = split_prefix(raw)
        streams.setdefault(rank, []).append((index, line))
    found = [tb for rank, lines in streams.items() for tb in _parse_stream(rank, lines)]
    return sorted(found, key=lambda tb: tb.index)


def last_error(text: str) -> ErrorLine | None:
    """The final exception of the last traceback of `text` (one rank's output), or None."""
    found = find_tracebacks(text)
    return found[-1].error if found else None


def is_connection_error(error: ErrorLine | dict[str, Any] | None) -> bool:
    """True for an error a rank typically gets because another rank died: a lost connection, a
    collective that was aborted or timed out, a peer that left the stop vote. A heuristic, read
    from the type and the message (docs/explain.md)."""
    if error is None:
        return False
    if isinstance(error, dict):
        kind, message = str(error.get("type") or ""), str(error.get("message") or "")
    else:
        kind, message = error.type, error.message
    if kind.rsplit(".", 1)[-1] in CONNECTION_TYPES:
        return True
    return _CONNECTION_MESSAGES.search(message) is not None


def first_cause(tracebacks: Iterable[Traceback]) -> Traceback | None:
    """The traceback most likely to be the cause, among many ranks' (a job log): each rank's last
    traceback, a launcher's wrapper (torchrun's ChildFailedError) only when nothing else is
    there; the first that is not a connection error, else the first of all."""
    last_per_rank: dict[int | None, Traceback] = {}
    for traceback in tracebacks:
        last_per_rank[traceback.rank] = traceback
    candidates = sorted(last_per_rank.values(), key=lambda tb: tb.index)
    if not candidates:
        return None
    ranked = [tb for tb in candidates if tb.error.short_type not in WRAPPER_TYPES] or candidates
    return next((tb for tb in ranked if not is_connection_error(tb.error)), ranked[0])


def waits_in_collective(stack: str) -> bool:
    """Whether a faulthandler stack dump shows its current thread blocked inside
    torch.distributed (a collective, a barrier, a store wait): the rank waits for a peer. A hung
    rank that is anywhere else (data loading, a deadlock in user code) is the one others wait on.
    """
    lines = stack.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Current thread")), -1)
    for line in lines[start + 1:]:
        if line.strip().startswith('File "'):
            return "torch/distributed/" in line
    return False


def tail(text: str, lines: int = 20) -> list[str]:
    """The last `lines` lines of `text` that hold something, trailing blank lines dropped."""
    kept = text.rstrip().splitlines()
    return kept[-lines:] if kept else []


__all__ = [
    "CONNECTION_TYPES",
    "WRAPPER_TYPES",
    "ErrorLine",
    "Traceback",
    "find_tracebacks",
    "first_cause",
    "is_connection_error",
    "last_error",
    "split_prefix",
    "tail",
    "waits_in_collective",
]
