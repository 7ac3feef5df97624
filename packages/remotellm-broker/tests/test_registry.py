"""The registry of connected connectors, without a server."""

from remotellm_broker.registry import Connector, Registry
from remotellm_protocol import ModelInfo


def conn(name: str, *models: str, max_streams: int = 4, ctx: int | None = None) -> Connector:
    return Connector(
        name, f"s-{name}", [ModelInfo(id=m, context_length=ctx) for m in models], max_streams
    )


def test_added_connector_serves_its_models() -> None:
    reg: Registry[Connector] = Registry()
    a = conn("a", "m1", "m2")
    assert reg.add(a) is None
    assert list(reg.serving("m1")) == [a]
    assert list(reg.serving("m2")) == [a]
    assert list(reg.serving("other")) == []
    assert a in reg
    assert len(reg) == 1


def test_listing_is_the_union_sorted_by_id() -> None:
    reg: Registry[Connector] = Registry()
    reg.add(conn("a", "zeta", "alpha"))
    reg.add(conn("b", "alpha", "beta"))
    assert [m.id for m in reg.models()] == ["alpha", "beta", "zeta"]


def test_merged_model_takes_the_smallest_known_context_length() -> None:
    reg: Registry[Connector] = Registry()
    reg.add(conn("a", "m", ctx=8192))
    reg.add(conn("b", "m", ctx=4096))
    reg.add(conn("c", "m"))
    info = reg.model("m")
    assert info is not None
    assert info.context_length == 4096
    assert reg.model("nope") is None


def test_same_name_replaces_the_old_connector_and_returns_it() -> None:
    reg: Registry[Connector] = Registry()
    old = conn("a", "m1")
    new = conn("a", "m2")
    reg.add(old)
    assert reg.add(new) is old
    assert old not in reg
    assert list(reg.serving("m1")) == []
    assert list(reg.serving("m2")) == [new]


def test_removing_a_replaced_connector_leaves_the_new_one() -> None:
    reg: Registry[Connector] = Registry()
    old, new = conn("a", "m"), conn("a", "m")
    reg.add(old)
    reg.add(new)
    assert reg.remove(old) is False
    assert list(reg.serving("m")) == [new]
    assert reg.remove(new) is True
    assert reg.models() == []
    assert len(reg) == 0


def test_model_update_reindexes_and_refreshes_the_listing() -> None:
    reg: Registry[Connector] = Registry()
    a = conn("a", "m1")
    reg.add(a)
    assert [m.id for m in reg.models()] == ["m1"]
    reg.update_models(a, [ModelInfo(id="m2")])
    assert [m.id for m in reg.models()] == ["m2"]
    assert list(reg.serving("m1")) == []
    assert list(reg.serving("m2")) == [a]


def test_model_update_of_an_unregistered_connector_only_changes_it() -> None:
    reg: Registry[Connector] = Registry()
    a = conn("a", "m1")
    reg.update_models(a, [ModelInfo(id="m2")])
    assert set(a.models) == {"m2"}
    assert reg.models() == []


def test_has_room_respects_max_streams_and_goaway() -> None:
    a = conn("a", "m", max_streams=1)
    assert a.has_room
    a.active = 1
    assert not a.has_room
    a.active = 0
    a.accepting = False
    assert not a.has_room
