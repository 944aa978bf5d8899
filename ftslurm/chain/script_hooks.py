"""The chain hook lines placed in every attempt's script (sbatch templates and the local
script): `ftslurm chain-start` before the launch, `ftslurm chain-end --status $status` after it.
Plain text builders with no heavy imports, so rendering stays cheap; the hooks themselves are
`ftslurm.chain.hooks`."""

from __future__ import annotations

from ftslurm.exit_codes import SKIP_LAUNCH


def start_hook(python: str) -> str:
    """The script lines of the start hook; `python` is an already quoted shell word."""
    return "\n".join((
        "# Chain hook: record the start and pre-schedule the next attempt; skip the launch when",
        "# the run is already over (finished, failed or cancelled).",
        "chain_rc=0",
        f"{python} -m ftslurm.cli chain-start || chain_rc=$?",
        f'if [ "$chain_rc" -eq {SKIP_LAUNCH} ]; then exit 0; fi',
        'if [ "$chain_rc" -ne 0 ]; then echo "ftslurm: chain-start failed ($chain_rc)" >&2; fi',
    ))


def end_hook(python: str) -> str:
    """The script lines of the end hook: `$status` holds the launch's exit status and `$warned`
    (set by the template's trap; 0 when a custom template has none) whether the time-limit warning
    came, so a launch stopped for the time limit is not taken for a failure."""
    return "\n".join((
        "# Chain hook: record how the launch ended; stop the run or let it go on.",
        f'{python} -m ftslurm.cli chain-end --status "$status" --warned "${{warned:-0}}" || '
        'echo "ftslurm: chain-end failed" >&2',
    ))


__all__ = ["end_hook", "start_hook"]
