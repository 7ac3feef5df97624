"""The reconnect policy, driven step by step with a fake clock and a fixed random source."""

import pytest

from remotellm_connector.backoff import Backoff


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def policy(rng: float = 1.0) -> tuple[Backoff, Clock]:
    clock = Clock()
    return Backoff(base=1.0, cap=30.0, rng=lambda: rng, clock=clock), clock


def test_failed_attempts_grow_exponentially_up_to_the_cap() -> None:
    backoff, _ = policy()
    assert [backoff.failed() for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_full_jitter_scales_the_whole_interval() -> None:
    backoff, _ = policy(rng=0.25)
    assert [backoff.failed() for _ in range(3)] == [0.25, 0.5, 1.0]
    zero, _ = policy(rng=0.0)
    assert zero.failed() == 0.0


def test_alert_after_five_failures_in_a_row_and_cleared_by_a_handshake() -> None:
    backoff, _ = policy()
    for _ in range(4):
        backoff.failed()
    assert not backoff.alerting
    backoff.failed()
    assert backoff.alerting
    backoff.connected()
    assert not backoff.alerting
    assert backoff.failures == 0


def test_connection_up_for_a_minute_resets_the_delay() -> None:
    backoff, clock = policy()
    for _ in range(5):
        backoff.failed()
    backoff.connected()
    clock.now += 60
    assert backoff.disconnected(planned=False) == 1.0
    assert backoff.attempts == 0


def test_planned_close_resets_the_delay_even_after_a_short_connection() -> None:
    backoff, clock = policy()
    for _ in range(5):
        backoff.failed()
    backoff.connected()
    clock.now += 2
    assert backoff.disconnected(planned=True) == 1.0


def test_short_unplanned_connection_neither_resets_nor_grows_the_delay() -> None:
    backoff, clock = policy()
    for _ in range(3):
        backoff.failed()  # next ceiling: 8
    backoff.connected()
    clock.now += 5
    assert backoff.disconnected(planned=False) == 8.0
    assert backoff.disconnected(planned=False) == 8.0
    assert backoff.failed() == 8.0  # the next failure continues from there
    assert backoff.failed() == 16.0


def test_being_replaced_by_a_namesake_counts_as_a_failure() -> None:
    backoff, _ = policy()
    backoff.connected()
    assert backoff.disconnected(planned=False, grow=True) == 1.0
    assert backoff.disconnected(planned=False, grow=True) == 2.0


def test_base_must_not_exceed_the_cap() -> None:
    with pytest.raises(ValueError, match="base"):
        Backoff(base=40.0, cap=30.0)


def test_defaults_match_the_contract() -> None:
    backoff = Backoff()
    assert backoff.base <= 1.0
    assert backoff.cap == 30.0
    assert backoff.stable_s == 60.0
    assert backoff.alert_after == 5
