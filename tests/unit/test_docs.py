"""The docs stay true to the code: docs/cli.md lists every subcommand and option, and the
quickstart's job spec validates."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from ftslurm.cli import build_parser
from ftslurm.spec import load_spec
from tests.helpers import REPO_ROOT

CLI_DOC = (REPO_ROOT / "docs" / "cli.md").read_text()


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    listed = {choice.dest for choice in action._choices_actions}  # those with a help line
    return {name: sub for name, sub in action.choices.items() if name in listed}


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_subcommand_and_option_is_documented(name: str) -> None:
    assert f"ftslurm {name}" in CLI_DOC
    for action in _subcommands()[name]._actions:
        for option in action.option_strings:
            if option not in ("-h", "--help"):
                assert f"`{option}" in CLI_DOC or f"{option}`" in CLI_DOC, (name, option)


def test_quickstart_job_spec_validates(tmp_path: Path) -> None:
    quickstart = (REPO_ROOT / "docs" / "quickstart.md").read_text()
    [yaml_text] = re.findall(r"```yaml\n(.*?)```", quickstart, re.S)
    (tmp_path / "job.yaml").write_text(yaml_text)
    (tmp_path / "train.py").touch()
    spec = load_spec(tmp_path / "job.yaml")
    assert spec.resources.nodes == 2
