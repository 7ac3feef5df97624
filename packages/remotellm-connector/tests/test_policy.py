"""The owner's policy: who may use this GPU, how often, how many at once."""

from remotellm_connector.policy import Policy
from remotellm_protocol import ErrorCode, Principal

ALICE = Principal(user_id="gitlab:1", key_id="k1", name="alice")
BOB = Principal(user_id="local:bob", key_id="k2", name="bob")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_everyone_is_allowed_when_the_list_is_empty() -> None:
    policy = Policy()
    assert policy.admit(ALICE) is None
    assert policy.admit(BOB) is None
    assert policy.active == 2


def test_allowed_users_match_by_qualified_user_id() -> None:
    policy = Policy(allowed_users=["gitlab:1", "local:bob"])
    assert policy.admit(ALICE) is None
    assert policy.admit(BOB) is None
    refusal = policy.admit(Principal(user_id="gitlab:2", key_id="k3", name="eve"))
    assert refusal is not None
    assert refusal.code == ErrorCode.POLICY_DENIED
    assert policy.active == 2


def test_allowlist_never_admits_an_account_by_its_name() -> None:
    """Attacker: registers a GitLab account called ``bob`` and hopes the owner's list, meant
    for the broker's local user bob, admits it by name."""
    impostor = Principal(user_id="gitlab:666", key_id="k9", name="bob")
    for allowed in (["local:bob"], ["bob"]):
        refusal = Policy(allowed_users=allowed).admit(impostor)
        assert refusal is not None, allowed
        assert refusal.code == ErrorCode.POLICY_DENIED
    assert Policy(allowed_users=["local:bob"]).admit(BOB) is None


def test_global_stream_cap_answers_overloaded_with_a_retry_hint() -> None:
    policy = Policy(max_streams=1)
    assert policy.admit(ALICE) is None
    refusal = policy.admit(BOB)
    assert refusal is not None
    assert refusal.code == ErrorCode.OVERLOADED
    assert refusal.retry_after == 1.0
    policy.release(ALICE)
    assert policy.admit(BOB) is None


def test_per_user_stream_cap_limits_one_user_only() -> None:
    policy = Policy(user_max_streams=2)
    assert policy.admit(ALICE) is None
    assert policy.admit(ALICE) is None
    refusal = policy.admit(ALICE)
    assert refusal is not None
    assert refusal.code == ErrorCode.RATE_LIMITED
    assert policy.admit(BOB) is None
    policy.release(ALICE)
    assert policy.admit(ALICE) is None


def test_token_bucket_allows_a_burst_then_says_when_to_retry() -> None:
    clock = Clock()
    policy = Policy(rpm=60, burst=2, clock=clock)
    assert policy.admit(ALICE) is None
    assert policy.admit(ALICE) is None
    refusal = policy.admit(ALICE)
    assert refusal is not None
    assert refusal.code == ErrorCode.RATE_LIMITED
    assert refusal.retry_after == 1.0  # one request per second refills
    assert policy.admit(BOB) is None  # buckets are per user
    clock.now += 1.0
    assert policy.admit(ALICE) is None


def test_refused_for_concurrency_does_not_spend_a_request() -> None:
    clock = Clock()
    policy = Policy(rpm=60, burst=1, user_max_streams=1, clock=clock)
    assert policy.admit(ALICE) is None
    assert policy.admit(ALICE) is not None  # concurrency, not rate
    policy.release(ALICE)
    clock.now += 1.0
    assert policy.admit(ALICE) is None


def test_burst_defaults_to_the_rpm() -> None:
    policy = Policy(rpm=3, clock=Clock())
    assert [policy.admit(ALICE) is None for _ in range(4)] == [True, True, True, False]


def test_idle_buckets_are_forgotten_when_many_users_came_by() -> None:
    clock = Clock()
    policy = Policy(rpm=60, clock=clock)
    for i in range(5000):
        who = Principal(user_id=f"u{i}", key_id="k")
        assert policy.admit(who) is None
        policy.release(who)
    clock.now += 120
    policy.admit(Principal(user_id="late", key_id="k"))
    assert len(policy._buckets) < 1000
