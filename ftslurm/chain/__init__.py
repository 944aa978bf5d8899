"""The chain of attempts: outcomes, the ledger (run-dir state), policy, hooks, the watch loop."""
