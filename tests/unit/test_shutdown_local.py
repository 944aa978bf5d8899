"""GracefulShutdown in one process (no torch.distributed): flag, chaining, restore, check_every."""

from __future__ import annotations

import os
import signal

import pytest

from ftslurm import GracefulShutdown


def test_no_signal_means_no_stop() -> None:
    with GracefulShutdown() as stopper:
        assert [stopper.should_stop() for _ in range(5)] == [False] * 5


def test_signal_stops_and_stays_stopped() -> None:
    with GracefulShutdown() as stopper:
        assert not stopper.should_stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stopper.should_stop()
        assert stopper.should_stop()
        assert stopper.received_signal is signal.SIGTERM


def test_chains_to_the_users_handler_and_restores_it() -> None:
    seen: list[int] = []

    def users_handler(signum: int, frame: object) -> None:
        seen.append(signum)

    original = signal.signal(signal.SIGUSR1, users_handler)
    try:
        stopper = GracefulShutdown([signal.SIGUSR1])
        os.kill(os.getpid(), signal.SIGUSR1)
        assert seen == [signal.SIGUSR1]
        assert stopper.should_stop()
        stopper.close()
        assert signal.getsignal(signal.SIGUSR1) is users_handler
    finally:
        signal.signal(signal.SIGUSR1, original)


def test_default_handlers_are_not_chained_but_restored() -> None:
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    stopper = GracefulShutdown([signal.SIGTERM])
    os.kill(os.getpid(), signal.SIGTERM)  # would kill the test if SIG_DFL were chained
    assert stopper.should_stop()
    stopper.close()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_check_every_votes_only_on_every_kth_call() -> None:
    with GracefulShutdown(check_every=3) as stopper:
        stopper.request()
        assert [stopper.should_stop() for _ in range(3)] == [False, False, True]


@pytest.mark.parametrize("kwargs", [{"check_every": 0}, {"peer_timeout": 0}])
def test_rejects_impossible_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        GracefulShutdown(install=False, **kwargs)


def test_a_closed_handler_put_back_by_someone_else_is_transparent() -> None:
    """Lightning re-installs the handlers it saw after a failed fit, ours included, after our
    last hook ran: that closed handler must act as the one it replaced, and be seen through."""
    seen: list[int] = []

    def users_handler(signum: int, frame: object) -> None:
        seen.append(signum)

    original = signal.signal(signal.SIGUSR1, users_handler)
    try:
        first = GracefulShutdown([signal.SIGUSR1])
        stale = signal.getsignal(signal.SIGUSR1)
        first.close()
        signal.signal(signal.SIGUSR1, stale)  # what Lightning's teardown does
        second = GracefulShutdown([signal.SIGUSR1])
        os.kill(os.getpid(), signal.SIGUSR1)
        assert second.should_stop() and seen == [signal.SIGUSR1]
        second.close()
        assert signal.getsignal(signal.SIGUSR1) is users_handler  # the stale one is gone
        signal.signal(signal.SIGUSR1, stale)
        os.kill(os.getpid(), signal.SIGUSR1)  # the stale handler hands over and steps aside
        assert seen == [signal.SIGUSR1, signal.SIGUSR1]
        assert signal.getsignal(signal.SIGUSR1) is users_handler
    finally:
        signal.signal(signal.SIGUSR1, original)
