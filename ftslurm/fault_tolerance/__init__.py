"""Fault tolerance inside an allocation: the rank monitor client, the monitor and the launcher."""
