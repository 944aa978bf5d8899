"""The one place where values are quoted for the sbatch script.

Two readers see a rendered script, and each gets its own quoting:

- bash reads the body: every value becomes one bash word with `quote` (single quotes, via
  `shlex.quote`), so `$(...)`, backticks, `;`, globs, newlines and unicode arrive unchanged;
- sbatch reads the `#SBATCH` lines with its own small tokenizer (slurm `src/sbatch/opt.c`,
  `_get_argument`): whitespace splits words, `'` and `"` quote, a backslash escapes the next
  character even inside quotes, and an unquoted `#` starts a comment. `sbatch_directive` writes
  values that this tokenizer reads back unchanged. A directive cannot hold a line break, and sbatch
  blanks out the words `packjob`/`hetjob` anywhere on the line, so such values are refused
  (`directive_value_problem` says why, for the spec validator to report with the key and line).

Render code never builds shell text by hand: it calls these functions.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

#: Characters that need quotes on an #SBATCH line: C isspace(), quotes, backslash, `#`.
_DIRECTIVE_NEEDS_QUOTES = re.compile(r"""[ \t\n\v\f\r"'\\#]""")
_DIRECTIVE_BLANKED_WORDS = ("packjob", "hetjob")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_OPTION_NAME = re.compile(r"[a-z][a-z0-9-]*\Z")


def value_problem(value: str) -> str | None:
    """Why `value` cannot reach bash at all (a NUL byte), or None when any quoting works."""
    if "\x00" in value:
        return "contains a NUL byte, which no shell argument can hold"
    return None


#: Bash's reserved words: shlex leaves them bare, and bare in a command's place bash would read
#: them as syntax, so they are always quoted.
_SPECIAL_BARE_WORDS = frozenset({
    "!", "[[", "]]", "{", "}", "case", "coproc", "do", "done", "elif", "else", "esac", "fi",
    "for", "function", "if", "in", "select", "then", "time", "until", "while",
})


def quote(value: str | int) -> str:
    """`value` as exactly one bash word that expands to itself, nothing else, wherever it stands
    (a command name included)."""
    text = str(value)
    problem = value_problem(text)
    if problem:
        raise ValueError(f"cannot quote {text!r}: {problem}")
    if text in _SPECIAL_BARE_WORDS:
        return f"'{text}'"
    return shlex.quote(text)


def quote_args(args: Iterable[str | int]) -> str:
    """Several values as bash words separated by single spaces (empty string for none)."""
    return " ".join(quote(arg) for arg in args)


def option(name: str, value: str | int) -> str:
    """A `--name=value` command-line option as one bash word (only the value is quoted)."""
    if not _OPTION_NAME.match(name):
        raise ValueError(f"not an option name: {name!r}")
    return f"--{name}={quote(value)}"


def export_line(name: str, value: str) -> str:
    """`export NAME=value` with the value quoted; `name` must be a valid variable name."""
    if not _ENV_NAME.match(name):
        raise ValueError(f"not an environment variable name: {name!r}")
    return f"export {name}={quote(value)}"


def directive_value_problem(value: str) -> str | None:
    """Why `value` cannot be written on an `#SBATCH` line, or None when it can."""
    if any(char in value for char in "\n\r\x00"):
        return "must be a single line (no line break or NUL byte)"
    lowered = value.lower()
    for word in _DIRECTIVE_BLANKED_WORDS:
        if word in lowered:
            return f"must not contain the word {word!r}, which sbatch erases from #SBATCH lines"
    return None


def sbatch_value(value: str | int) -> str:
    """`value` written for sbatch's #SBATCH tokenizer, which reads it back unchanged."""
    text = str(value)
    problem = directive_value_problem(text)
    if problem:
        raise ValueError(f"cannot write {text!r} on an #SBATCH line: {problem}")
    if text and not _DIRECTIVE_NEEDS_QUOTES.search(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def sbatch_directive(name: str, value: str | int | None = None) -> str:
    """One `#SBATCH --name[=value]` line; a None value writes a flag without a value."""
    if not _OPTION_NAME.match(name):
        raise ValueError(f"not an sbatch option name: {name!r}")
    if value is None:
        return f"#SBATCH --{name}"
    return f"#SBATCH --{name}={sbatch_value(value)}"


def slurm_filename(path: str) -> str:
    """A literal path for sbatch's --output/--error, where `%` starts a pattern (`%j`)."""
    return path.replace("%", "%%")


__all__ = [
    "directive_value_problem",
    "export_line",
    "option",
    "quote",
    "quote_args",
    "sbatch_directive",
    "sbatch_value",
    "slurm_filename",
    "value_problem",
]
