"""Rate limiter and stream slots, driven by a hand-held clock."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from remotellm_broker.ratelimit import RateDecision, RateLimiter, StreamSlots


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_fresh_key_gets_its_full_burst_then_is_refused() -> None:
    limiter = RateLimiter()
    decisions = [limiter.check("k", rpm=60, burst=5, now=0.0) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]


def test_tokens_refill_at_rpm_per_minute() -> None:
    limiter = RateLimiter()
    for _ in range(5):
        limiter.check("k", rpm=60, burst=5, now=0.0)
    assert not limiter.check("k", rpm=60, burst=5, now=0.5).allowed
    assert limiter.check("k", rpm=60, burst=5, now=1.0).allowed  # 1 per second
    assert not limiter.check("k", rpm=60, burst=5, now=1.0).allowed


def test_refused_decision_says_when_to_retry() -> None:
    limiter = RateLimiter()
    limiter.check("k", rpm=30, burst=1, now=0.0)
    refused = limiter.check("k", rpm=30, burst=1, now=0.5)
    assert not refused.allowed
    assert math.isclose(refused.retry_after_s, 1.5)
    assert refused.retry_after_header == 2
    assert limiter.check("k", rpm=30, burst=1, now=0.5 + refused.retry_after_s).allowed


def test_reset_is_the_time_until_the_bucket_is_full() -> None:
    limiter = RateLimiter()
    decision = limiter.check("k", rpm=120, burst=10, now=0.0)
    assert math.isclose(decision.reset_s, 0.5)  # one token at 2 per second
    assert decision.limit == 10


def test_keys_have_separate_buckets() -> None:
    limiter = RateLimiter()
    assert limiter.check("a", rpm=60, burst=1, now=0.0).allowed
    assert not limiter.check("a", rpm=60, burst=1, now=0.0).allowed
    assert limiter.check("b", rpm=60, burst=1, now=0.0).allowed


def test_zero_means_unlimited() -> None:
    limiter = RateLimiter()
    for rpm, burst in ((0, 10), (10, 0), (0, 0)):
        decisions = [limiter.check("k", rpm=rpm, burst=burst, now=0.0) for _ in range(100)]
        assert all(d.allowed for d in decisions)
        assert decisions[0].unlimited
        assert decisions[0].headers() == {}
    assert len(limiter) == 0


def test_the_injected_clock_is_used_when_now_is_not_given() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    assert limiter.check("k", rpm=60, burst=1).allowed
    assert not limiter.check("k", rpm=60, burst=1).allowed
    clock.now += 1.0
    assert limiter.check("k", rpm=60, burst=1).allowed


def test_a_clock_stepping_back_refills_nothing() -> None:
    limiter = RateLimiter()
    limiter.check("k", rpm=60, burst=1, now=100.0)
    assert not limiter.check("k", rpm=60, burst=1, now=50.0).allowed
    assert not limiter.check("k", rpm=60, burst=1, now=100.5).allowed
    assert limiter.check("k", rpm=60, burst=1, now=101.0).allowed


def test_a_lowered_burst_applies_at_once() -> None:
    limiter = RateLimiter()
    limiter.check("k", rpm=60, burst=100, now=0.0)
    decisions = [limiter.check("k", rpm=60, burst=2, now=0.0) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]


def test_headers_follow_openai_names() -> None:
    limiter = RateLimiter()
    allowed = limiter.check("k", rpm=60, burst=2, now=0.0)
    assert allowed.headers() == {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "1s",
    }
    limiter.check("k", rpm=60, burst=2, now=0.0)
    refused = limiter.check("k", rpm=60, burst=2, now=0.0)
    headers = refused.headers()
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["Retry-After"] == "1"
    assert headers["x-ratelimit-reset-requests"] == "2s"


def test_reset_durations_are_written_like_openai() -> None:
    def reset(seconds: float) -> str:
        decision = RateDecision(True, 10, 1, seconds, 0.0)
        return decision.headers()["x-ratelimit-reset-requests"]

    assert reset(0.0061) == "7ms"
    assert reset(1.25) == "1.25s"
    assert reset(150.0) == "2m30s"


def test_prune_forgets_only_buckets_that_are_full_again() -> None:
    limiter = RateLimiter()
    limiter.check("slow", rpm=1, burst=1, now=0.0)
    limiter.check("fast", rpm=600, burst=1, now=0.0)
    assert limiter.prune(now=1.0) == 1  # "fast" refilled after 0.1 s; "slow" needs 60 s
    assert not limiter.check("slow", rpm=1, burst=1, now=1.0).allowed


def test_buckets_are_pruned_as_checks_go_by() -> None:
    limiter = RateLimiter()
    for i in range(5000):
        limiter.check(f"k{i}", rpm=6000, burst=1, now=float(i))
    assert len(limiter) < 5000


def test_reset_forgets_a_key() -> None:
    limiter = RateLimiter()
    limiter.check("k", rpm=60, burst=1, now=0.0)
    limiter.reset("k")
    assert limiter.check("k", rpm=60, burst=1, now=0.0).allowed


@settings(max_examples=300, deadline=None)
@given(
    rpm=st.integers(min_value=1, max_value=6000),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=200),
)
def test_no_window_accepts_more_than_burst_plus_rate_times_its_length(
    rpm: int, burst: int, gaps: list[float]
) -> None:
    limiter = RateLimiter()
    rate = rpm / 60.0
    now = 0.0
    accepted: list[float] = []
    for gap in gaps:
        now += gap
        decision = limiter.check("k", rpm=rpm, burst=burst, now=now)
        if decision.allowed:
            accepted.append(now)
        assert 0 <= decision.remaining <= burst
    for i in range(len(accepted)):
        for j in range(i, len(accepted)):
            count = j - i + 1
            assert count <= burst + rate * (accepted[j] - accepted[i]) + 1e-6


@settings(max_examples=200, deadline=None)
@given(
    rpm=st.integers(min_value=1, max_value=6000),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=100),
)
def test_a_refused_request_is_accepted_once_retry_after_has_passed(
    rpm: int, burst: int, gaps: list[float]
) -> None:
    limiter = RateLimiter()
    now = 0.0
    for gap in gaps:
        now += gap
        decision = limiter.check("k", rpm=rpm, burst=burst, now=now)
        if not decision.allowed:
            assert decision.retry_after_s > 0
            # Small slack for float rounding in the refill arithmetic.
            now += decision.retry_after_s + 1e-9
            assert limiter.check("k", rpm=rpm, burst=burst, now=now).allowed


def test_stream_slots_cap_concurrency_per_key() -> None:
    slots = StreamSlots()
    assert slots.try_acquire("a", 2)
    assert slots.try_acquire("a", 2)
    assert not slots.try_acquire("a", 2)
    assert slots.try_acquire("b", 2)
    assert slots.active("a") == 2
    assert slots.total() == 3
    slots.release("a")
    assert slots.active("a") == 1
    assert slots.try_acquire("a", 2)


def test_stream_slots_zero_limit_is_unlimited_but_still_counted() -> None:
    slots = StreamSlots()
    for _ in range(1000):
        assert slots.try_acquire("a", 0)
    assert slots.active("a") == 1000


def test_releasing_more_than_acquired_never_goes_negative() -> None:
    slots = StreamSlots()
    slots.try_acquire("a", 1)
    slots.release("a")
    slots.release("a")
    assert slots.active("a") == 0
    assert slots.try_acquire("a", 1)
    assert not slots.try_acquire("a", 1)
