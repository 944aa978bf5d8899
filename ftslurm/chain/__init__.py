"""The chain of attempts: ledger (run-dir state), policy (classify, decide), loop."""
