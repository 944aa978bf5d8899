"""The chain of attempts: ledger (run-dir state), policy (classify, decide), loop (login-node loop)."""
