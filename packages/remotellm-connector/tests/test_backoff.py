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


def test_a_connection_up_for_the_serving_time_resets_the_delay() -> None:
    backoff, clock = policy()
    for _ in range(5):
        backoff.failed()
    backoff.connected()
    clock.now += 10
    assert backoff.disconnected(planned=False) == 1.0
    assert backoff.attempts == 0


def test_a_connection_that_carried_a_stream_resets_the_delay_however_short() -> None:
    backoff, clock = policy()
    for _ in range(5):
        backoff.failed()
    backoff.connected()
    clock.now += 0.5
    assert backoff.disconnected(planned=False, served=True) == 1.0


def test_planned_close_resets_the_delay_even_after_a_short_connection() -> None:
    backoff, clock = policy()
    for _ in range(5):
        backoff.failed()
    backoff.connected()
    clock.now += 2
    assert backoff.disconnected(planned=True) == 1.0


def test_repeated_broker_outages_after_serving_never_wait_more_than_the_fast_cap() -> None:
    """Five kill -9 / 5 s down / restart cycles: the delays stay small every time."""
    backoff, clock = policy()
    for _ in range(5):
        backoff.connected()
        clock.now += 3
        delays = [backoff.disconnected(planned=False, served=True)]
        delays += [backoff.failed() for _ in range(6)]  # the broker is still down
        assert max(delays) <= 2.0, delays
        clock.now += sum(delays)


def test_the_fast_phase_ends_and_growth_resumes_up_to_the_cap() -> None:
    backoff, clock = policy()
    backoff.connected()
    backoff.disconnected(planned=False, served=True)
    clock.now += 31
    assert [backoff.failed() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]


def test_a_flapping_broker_grows_the_delay_like_failures() -> None:
    backoff, clock = policy()
    delays = []
    for _ in range(5):
        backoff.connected()
        clock.now += 0.2  # accepted, then dropped at once, nothing served
        delays.append(backoff.disconnected(planned=False))
    assert delays == [1, 2, 4, 8, 16]


def test_being_replaced_by_a_namesake_counts_as_a_failure() -> None:
    backoff, _ = policy()
    backoff.connected()
    assert backoff.disconnected(planned=False, grow=True) == 1.0
    assert backoff.disconnected(planned=False, grow=True, served=True) == 2.0


def test_base_must_not_exceed_the_cap() -> None:
    with pytest.raises(ValueError, match="base"):
        Backoff(base=40.0, cap=30.0)


def test_defaults_match_the_contract() -> None:
    backoff = Backoff()
    assert backoff.base <= 1.0
    assert backoff.cap == 30.0
    assert backoff.serving_s == 10.0
    assert backoff.fast_cap <= 2.0
    assert backoff.alert_after == 5
