"""The chain hook lines placed in every attempt's script (sbatch templates and the local
script): `ftslurm chain-start` first, then an EXIT trap that runs `ftslurm chain-end --status N`
however the script ends. Plain text builders with no heavy imports, so rendering stays cheap; the
hooks themselves are `ftslurm.chain.hooks`."""

from __future__ import annotations

from ftslurm import env_vars
from ftslurm.exit_codes import SKIP_LAUNCH

#: Signals that end the batch shell (scancel, preemption, the time limit, a hangup): turned into
#: an exit with 128+N, so the EXIT trap sees the signal (bash would otherwise report the status
#: of the last command, often 0) and chain-end records a provisional end.
ENDING_SIGNALS = {"TERM": 15, "INT": 2, "HUP": 1}


def start_hook(python: str) -> str:
    """The script lines of the start hook; `python` is an already quoted shell word. A job the
    chain did not submit (`sbatch` by hand: no attempt number in its environment) first asks
    `chain-adopt` to make it the run's next attempt."""
    attempt = env_vars.ATTEMPT
    return "\n".join((
        "# Chain hook, before anything that can fail: confirm this job is the run's current",
        "# attempt, record its start and keep its successors queued. 10: the run is over (or this",
        "# job may not train), exit without launching; any other failure: the ledger could not",
        "# confirm this job, so it must not train. A job submitted by hand (`sbatch` on this",
        "# script) first joins the run as its next attempt, or is refused.",
        "chain_rc=0",
        f'if [ -z "${{{attempt}:-}}" ]; then',
        f"  {attempt}=$({python} -m ftslurm.cli chain-adopt) || chain_rc=$?",
        f"  export {attempt}",
        "fi",
        f'if [ "$chain_rc" -eq 0 ]; then {python} -m ftslurm.cli chain-start || chain_rc=$?; fi',
        f'if [ "$chain_rc" -eq {SKIP_LAUNCH} ]; then exit 0; fi',
        'if [ "$chain_rc" -ne 0 ]; then',
        '  echo "ftslurm: chain-start failed ($chain_rc): not launching" >&2',
        '  exit "$chain_rc"',
        "fi",
    ))


def end_hook(python: str, warning_signal: str = "USR1") -> str:
    """The script lines that make every end of the script reach the end hook: an EXIT trap
    running `chain-end` with the script's exit status (`$warned`, set by the template's warning
    trap, says whether the time-limit warning came, so a launch stopped for the time limit is not
    taken for a failure), and traps that turn the ending signals into an exit with 128+N.
    `warning_signal` (unquoted name) is left to the template's own trap."""
    traps = [f"trap 'exit {128 + number}' {name}" for name, number in ENDING_SIGNALS.items()
             if name != warning_signal]
    return "\n".join((
        "# Chain hook: however the script ends from here on (a setup line, the launch, a signal),",
        "# record how, and stop the run or keep it going. The job then exits with chain-end's",
        "# status: 0 for a clean stop (time-limit warning, preemption stop), so SLURM accounts it",
        "# COMPLETED; a failure keeps its own status.",
        "# shellcheck disable=SC2317  # (runs from the EXIT trap)",
        "chain_end() {",
        "  local rc=$? end_rc=0",
        "  trap - EXIT",
        f'  {python} -m ftslurm.cli chain-end --status "$rc" --warned "${{warned:-0}}" ||',
        "    end_rc=$?",
        '  if [ "$end_rc" -ne 0 ] && [ "$end_rc" -ne "$rc" ]; then  # 0 or $rc, else it failed',
        '    echo "ftslurm: chain-end failed" >&2',
        '    end_rc=$rc',
        "  fi",
        '  exit "$end_rc"',
        "}",
        "trap chain_end EXIT",
        *traps,
    ))


__all__ = ["ENDING_SIGNALS", "end_hook", "start_hook"]
