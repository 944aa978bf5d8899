"""Quoting of hostile values, in process: #SBATCH values read back by sbatch's tokenizer
(tests/hostile.py) unchanged, and values that cannot be directives or words refused.

The rendered script run with bash, and words read back by bash, run processes:
tests/integration/test_render_quoting_processes.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given

from ftslurm.render import quoting as shell
from tests.hostile import sbatch_tokens, single_line


@given(value=single_line)
def test_sbatch_values_read_back_unchanged(value: str) -> None:
    assert sbatch_tokens(shell.sbatch_directive("comment", value)[len("#SBATCH"):]) == [
        f"--comment={value}"
    ]


def test_values_that_cannot_be_directives_are_refused() -> None:
    for value in ("two\nlines", "carriage\rreturn", "my packjob", "HETJOB"):
        with pytest.raises(ValueError):
            shell.sbatch_value(value)
    with pytest.raises(ValueError):
        shell.quote("nul\x00byte")
