"""The chain of attempts: outcomes, the ledger (run-dir state), policy, hooks, the watch loop.

`outcome` (the vocabulary and the failure rules), `runstate` (ledger records -> RunState),
`ledger` (atomic, locked writes), `policy` (classify, decide), `settings` (chain.json),
`actions` (what hooks and loop share), `hooks` (the script's chain-start / chain-end),
`loop` (ftslurm watch), `view` (status table, live view, JSON), `run` (create a run dir).
"""

from ftslurm.chain.ledger import Ledger, LedgerLockError
from ftslurm.chain.outcome import Action, AttemptStatus, Outcome, RunStatus
from ftslurm.chain.policy import ChainConfig, Decision, classify, decide
from ftslurm.chain.runstate import AttemptView, LedgerError, RunState
from ftslurm.chain.settings import ChainSettings, load_settings

__all__ = [
    "Action",
    "AttemptStatus",
    "AttemptView",
    "ChainConfig",
    "ChainSettings",
    "Decision",
    "Ledger",
    "LedgerError",
    "LedgerLockError",
    "Outcome",
    "RunState",
    "RunStatus",
    "classify",
    "decide",
    "load_settings",
]
