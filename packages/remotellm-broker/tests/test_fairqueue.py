"""The fair queue: FIFO per key, round robin across keys, bounded."""

import pytest

from remotellm_broker.fairqueue import FairQueue


def test_one_key_is_first_in_first_out() -> None:
    q: FairQueue[int] = FairQueue(10)
    for i in range(3):
        assert q.push("a", i)
    assert [q.pop(), q.pop(), q.pop(), q.pop()] == [0, 1, 2, None]


def test_keys_take_turns_so_a_burst_cannot_starve_others() -> None:
    q: FairQueue[str] = FairQueue(100)
    for i in range(5):
        q.push("greedy", f"g{i}")
    q.push("polite", "p0")
    q.push("other", "o0")
    order = [q.pop() for _ in range(7)]
    assert order[:3] == ["g0", "p0", "o0"]
    assert order[3:] == ["g1", "g2", "g3", "g4"]


def test_served_key_goes_to_the_back_of_the_rotation() -> None:
    q: FairQueue[str] = FairQueue(100)
    q.push("a", "a0")
    q.push("a", "a1")
    q.push("b", "b0")
    q.push("b", "b1")
    assert [q.pop() for _ in range(4)] == ["a0", "b0", "a1", "b1"]


def test_the_queue_is_bounded() -> None:
    q: FairQueue[int] = FairQueue(2)
    assert q.push("a", 1)
    assert q.push("b", 2)
    assert q.full
    assert not q.push("c", 3)
    assert len(q) == 2


def test_zero_size_queue_refuses_everything() -> None:
    q: FairQueue[int] = FairQueue(0)
    assert not q.push("a", 1)


def test_negative_size_is_refused() -> None:
    with pytest.raises(ValueError):
        FairQueue(-1)


def test_remove_takes_out_one_item_and_frees_room() -> None:
    q: FairQueue[str] = FairQueue(2)
    q.push("a", "x")
    q.push("a", "y")
    assert q.remove("a", "x")
    assert not q.remove("a", "x")
    assert not q.remove("nobody", "x")
    assert q.waiting("a") == 1
    assert q.push("b", "z")
    assert q.remove("a", "y")
    assert q.waiting("a") == 0


def test_pop_with_a_match_skips_items_it_cannot_serve_but_keeps_them() -> None:
    q: FairQueue[str] = FairQueue(10)
    q.push("a", "m1-a")
    q.push("a", "m2-a")
    q.push("b", "m1-b")
    assert q.pop(lambda item: item.startswith("m2")) == "m2-a"
    assert q.pop(lambda item: item.startswith("m3")) is None
    assert len(q) == 2
    assert [q.pop(), q.pop()] == ["m1-b", "m1-a"]  # "a" was served last, "b" goes first
