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


def test_a_model_whose_llm_is_down_stays_known_but_is_not_served() -> None:
    reg: Registry[Connector] = Registry()
    a = Connector("a", "s", [ModelInfo(id="m", available=False)], 4)
    reg.add(a)
    assert reg.known("m")
    assert reg.attached("m")
    assert not a.serves("m")
    assert reg.model_info("m").available is False
    reg.update_models(a, [ModelInfo(id="m")])
    assert a.serves("m")
    assert reg.model_info("m").available is True


def test_a_model_is_available_when_any_of_its_connectors_is() -> None:
    reg: Registry[Connector] = Registry()
    up = Connector("up", "s", [ModelInfo(id="m")], 4)
    down = Connector("down", "s", [ModelInfo(id="m", available=False)], 4)
    reg.add(down)
    reg.add(up)
    assert reg.model_info("m").available is True
    reg.remove(up)
    assert reg.model_info("m").available is False


def test_a_model_is_remembered_for_memory_s_after_its_last_connector_left() -> None:
    now = [100.0]
    reg: Registry[Connector] = Registry(memory_s=60.0, clock=lambda: now[0])
    a = conn("a", "m")
    reg.add(a)
    reg.remove(a)
    assert reg.known("m")
    assert not reg.attached("m")
    assert reg.model_ids() == ["m"]
    assert reg.model("m") == ModelInfo(id="m", available=False)
    now[0] += 59.0
    assert reg.known("m")
    now[0] += 2.0
    assert not reg.known("m")
    assert reg.model_ids() == []
    assert reg.model("m") is None


def test_a_returning_model_is_no_longer_remembered_but_served() -> None:
    now = [0.0]
    reg: Registry[Connector] = Registry(memory_s=10.0, clock=lambda: now[0])
    first = conn("a", "m")
    reg.add(first)
    reg.remove(first)
    second = conn("b", "m")
    reg.add(second)
    now[0] += 20.0
    assert reg.known("m")  # attached again: memory no longer matters
    assert reg.model_ids() == ["m"]
    reg.remove(second)
    now[0] += 5.0
    assert reg.known("m")  # remembered from its latest departure, not the first


def test_merged_view_survives_connectors_leaving_in_any_order() -> None:
    reg: Registry[Connector] = Registry()
    a = Connector("a", "s", [ModelInfo(id="m", owned_by="x", context_length=4096)], 4)
    b = Connector("b", "s", [ModelInfo(id="m", owned_by="y", context_length=8192)], 4)
    c = Connector("c", "s", [ModelInfo(id="m", owned_by="x", context_length=4096)], 4)
    for each in (a, b, c):
        reg.add(each)
    assert reg.model_info("m") == ModelInfo(id="m", owned_by="x", context_length=4096)
    reg.remove(a)
    assert reg.model_info("m") == ModelInfo(id="m", owned_by="x", context_length=4096)
    reg.remove(c)
    assert reg.model_info("m") == ModelInfo(id="m", owned_by="y", context_length=8192)


def test_the_version_moves_only_on_changes_and_listing_ids_stay_cached() -> None:
    reg: Registry[Connector] = Registry()
    a = conn("a", "m1", "m2")
    reg.add(a)
    ids = reg.model_ids()
    version = reg.version
    reg.update_models(a, [ModelInfo(id="m1"), ModelInfo(id="m2")])
    assert reg.version == version  # the same list again changes nothing
    assert reg.model_ids() is ids
    reg.update_models(a, [ModelInfo(id="m1"), ModelInfo(id="m2", available=False)])
    assert reg.version > version
    assert reg.model_ids() is ids  # same ids: the sorted list is reused
