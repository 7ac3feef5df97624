"""Routing decisions, without a server: least loaded, limits, exclusions, queue hand-off."""

from remotellm_broker.registry import Connector, Registry
from remotellm_broker.router import Router, Waiter
from remotellm_protocol import ModelInfo


def setup(
    *specs: tuple[str, int, tuple[str, ...]], queue_max: int = 10
) -> tuple[Router[Connector], list[Connector]]:
    reg: Registry[Connector] = Registry()
    conns = [
        Connector(name, "s", [ModelInfo(id=m) for m in models], cap) for name, cap, models in specs
    ]
    for c in conns:
        reg.add(c)
    return Router(reg, queue_max), conns


class Granted:
    def __init__(self, accept: bool = True) -> None:
        self.got: list[Connector] = []
        self.accept = accept

    def __call__(self, conn: Connector) -> bool:
        if self.accept:
            self.got.append(conn)
        return self.accept


def test_pick_goes_to_the_least_loaded_connector() -> None:
    router, (a, b) = setup(("a", 4, ("m",)), ("b", 4, ("m",)))
    a.active = 2
    assert router.pick("m") is b
    assert b.active == 1


def test_load_is_relative_to_each_connectors_capacity() -> None:
    router, (small, big) = setup(("small", 1, ("m",)), ("big", 10, ("m",)))
    big.active = 3
    assert router.pick("m") is small  # 0/1 beats 3/10
    assert router.pick("m") is big  # small is full now


def test_pick_never_exceeds_max_streams() -> None:
    router, (a,) = setup(("a", 2, ("m",)))
    assert router.pick("m") is a
    assert router.pick("m") is a
    assert router.pick("m") is None
    assert a.active == 2


def test_pick_skips_excluded_and_goaway_connectors() -> None:
    router, (a, b) = setup(("a", 4, ("m",)), ("b", 4, ("m",)))
    assert router.pick("m", exclude=(a,)) is b
    b.accepting = False
    assert router.pick("m", exclude=(a,)) is None
    assert not router.has_candidate("m", exclude=(a,))
    assert router.has_candidate("m")


def test_unknown_model_has_no_candidate() -> None:
    router, _ = setup(("a", 4, ("m",)))
    assert router.pick("other") is None
    assert not router.has_candidate("other")


def test_release_hands_the_slot_to_a_queued_waiter() -> None:
    router, (a,) = setup(("a", 1, ("m",)))
    assert router.pick("m") is a
    grant = Granted()
    assert router.enqueue(Waiter("m", "k1", grant))
    router.release(a)
    assert grant.got == [a]
    assert a.active == 1
    assert len(router.queue) == 0


def test_release_skips_waiters_that_gave_up() -> None:
    router, (a,) = setup(("a", 1, ("m",)))
    router.pick("m")
    gone, alive = Granted(accept=False), Granted()
    router.enqueue(Waiter("m", "k1", gone))
    router.enqueue(Waiter("m", "k2", alive))
    router.release(a)
    assert alive.got == [a]
    assert a.active == 1


def test_release_only_serves_waiters_for_models_the_connector_has() -> None:
    router, (a, _) = setup(("a", 1, ("m1",)), ("b", 1, ("m2",)))
    router.pick("m1")
    router.pick("m2")
    want_m2, want_m1 = Granted(), Granted()
    router.enqueue(Waiter("m2", "k1", want_m2))
    router.enqueue(Waiter("m1", "k2", want_m1))
    router.release(a)
    assert want_m1.got == [a]
    assert want_m2.got == []
    assert len(router.queue) == 1


def test_release_respects_a_waiters_exclusions() -> None:
    router, (a,) = setup(("a", 1, ("m",)))
    router.pick("m")
    grant = Granted()
    router.enqueue(Waiter("m", "k", grant, exclude=(a,)))
    router.release(a)
    assert grant.got == []
    assert a.active == 0


def test_freed_slots_go_round_robin_across_keys() -> None:
    router, (a,) = setup(("a", 1, ("m",)))
    router.pick("m")
    served: list[str] = []

    def waiter(key: str, tag: str) -> Waiter[Connector]:
        def grant(conn: Connector) -> bool:
            served.append(tag)
            return True

        return Waiter("m", key, grant)

    for i in range(3):
        router.enqueue(waiter("greedy", f"g{i}"))
    router.enqueue(waiter("polite", "p0"))
    for _ in range(4):
        router.release(a)
    assert served == ["g0", "p0", "g1", "g2"]


def test_offer_fills_a_new_connector_from_the_queue() -> None:
    router, (a,) = setup(("a", 2, ("m",)))
    grants = [Granted() for _ in range(3)]
    for i, g in enumerate(grants):
        router.enqueue(Waiter("m", f"k{i}", g))
    router.offer(a)
    assert [len(g.got) for g in grants] == [1, 1, 0]
    assert a.active == 2


def test_offer_to_a_removed_connector_grants_nothing() -> None:
    router, (a,) = setup(("a", 2, ("m",)))
    router.registry.remove(a)
    grant = Granted()
    router.enqueue(Waiter("m", "k", grant))
    router.offer(a)
    assert grant.got == []


def test_withdraw_takes_a_waiter_out() -> None:
    router, (a,) = setup(("a", 1, ("m",)))
    router.pick("m")
    grant = Granted()
    waiter = Waiter("m", "k", grant)
    router.enqueue(waiter)
    router.withdraw(waiter)
    router.release(a)
    assert grant.got == []


def test_enqueue_refuses_when_the_queue_is_full() -> None:
    router, _ = setup(("a", 1, ("m",)), queue_max=1)
    assert router.enqueue(Waiter("m", "k", Granted()))
    assert not router.enqueue(Waiter("m", "k", Granted()))
