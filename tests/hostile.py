"""Hostile strings for the quoting tests, and sbatch's own reading of an #SBATCH line.

`hostile_text` mixes shell metacharacters, newlines, unicode and SLURM filename patterns;
`sbatch_tokens` is a port of sbatch's tokenizer (slurm src/sbatch/opt.c).
"""

from __future__ import annotations

from hypothesis import strategies as st

from ftslurm.render import quoting as shell

FRAGMENTS = ["$(touch pwned)", "`touch pwned`", "'", '"', ";", "\n", " ", "\\", "*", "$HOME",
             "#", "!", "&&", "|", ">", "ünïcødé ✓", "-", "--x=y", "%j", "${IFS}"]
hostile_text = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS),
              st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                      max_size=6)),
    min_size=1, max_size=6,
).map("".join).filter(lambda text: text.strip() != "")
single_line = hostile_text.filter(lambda text: shell.directive_value_problem(text) is None)
path_component = single_line.filter(lambda text: "/" not in text and text not in (".", ".."))


def sbatch_tokens(line: str) -> list[str]:
    """Words of an #SBATCH line as sbatch reads them (`_get_argument` in src/sbatch/opt.c)."""
    words, pos = [], 0
    while True:
        while pos < len(line) and line[pos] in " \t\n\v\f\r":
            pos += 1
        if pos >= len(line):
            return words
        word, quote, escaped = [], "", False
        while pos < len(line) and (quote or line[pos] not in " \t\n\v\f\r"):
            char = line[pos]
            pos += 1
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
                continue
            elif quote:
                if char == quote:
                    quote = ""
                    continue
            elif char in "\"'":
                quote = char
                continue
            elif char == "#":
                return [*words, "".join(word)] if word else words
            word.append(char)
        assert not quote, f"unmatched quote in {line!r}"
        words.append("".join(word))
