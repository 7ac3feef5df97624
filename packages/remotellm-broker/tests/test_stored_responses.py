"""Stored responses of the Responses API: fetched, continued, cancelled and deleted by id on
the connector whose server made them, and only by the user who made them."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from broker_rig import Rig, running_broker
from connector_peer import PeerStream
from remotellm_broker.stored import StoredResponse, StoredResponses, sniff_response_id
from surface_scripts import ALL_ENDPOINTS, RESPONSE_EVENTS, RESPONSE_JSON, answer_json

ID = "resp_abc123"  # the id in RESPONSE_JSON and RESPONSE_EVENTS


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_broker(tmp_path) as rig:
        yield rig


async def holder(stream: PeerStream) -> None:
    """A model server that stores responses: creates one, answers requests for it by id."""
    frame = stream.open
    if frame.method == "POST" and frame.path == "/v1/responses":
        streamed = json.loads(frame.body or b"{}").get("stream")
        if streamed:
            await stream.head(200, [("content-type", "text/event-stream")])
            for event in RESPONSE_EVENTS:
                await stream.data(event)
            await stream.end()
            return
        await answer_json(RESPONSE_JSON)(stream)
    elif frame.path == f"/v1/responses/{ID}/input_items":
        await answer_json(b'{"object":"list","data":[]}')(stream)
    elif frame.method == "DELETE":
        await answer_json(b'{"id":"%s","object":"response","deleted":true}' % ID.encode())(stream)
    else:
        await answer_json(RESPONSE_JSON)(stream)


async def test_a_response_is_fetched_continued_and_deleted_on_the_connector_that_made_it(
    rig: Rig,
) -> None:
    first = await rig.peer(name="maker", endpoints=ALL_ENDPOINTS, script=holder)
    client = rig.client()
    made = await client.responses.create(model="m", input="hi")
    other = await rig.peer(name="other", endpoints=ALL_ENDPOINTS, script=holder, max_streams=64)
    # the maker reconnects (same name, same server): now "other" comes first for the router
    await first.close()
    maker = await rig.peer(name="maker", endpoints=ALL_ENDPOINTS, script=holder)
    assert [c.name for c in rig.state.registry.serving("m")] == ["other", "maker"]
    fetched = await client.responses.retrieve(made.id)
    items = await client.responses.input_items.list(made.id)
    for _ in range(3):
        await client.responses.create(model="m", input="more", previous_response_id=made.id)
    await client.responses.cancel(made.id)
    await client.responses.delete(made.id)
    assert fetched.id == ID
    assert items.data == []
    assert [o.path for o in maker.opens] == [
        f"/v1/responses/{ID}",
        f"/v1/responses/{ID}/input_items",
        "/v1/responses",
        "/v1/responses",
        "/v1/responses",
        f"/v1/responses/{ID}/cancel",
        f"/v1/responses/{ID}",
    ]
    assert [o.method for o in maker.opens][-1] == "DELETE"
    assert not other.opens  # less loaded, but it does not hold the response
    with pytest.raises(openai.NotFoundError):  # deleted: forgotten by the broker too
        await client.responses.retrieve(made.id)


async def test_a_streamed_response_is_remembered_from_response_created(rig: Rig) -> None:
    maker = await rig.peer(name="maker", endpoints=ALL_ENDPOINTS, script=holder)
    stream = await rig.client().responses.create(model="m", input="hi", stream=True)
    _ = [event async for event in stream]
    await rig.client().responses.retrieve(ID)
    assert maker.opens[-1].path == f"/v1/responses/{ID}"


async def test_another_user_cannot_read_or_continue_someone_elses_response(rig: Rig) -> None:
    maker = await rig.peer(name="maker", endpoints=ALL_ENDPOINTS, script=holder)
    await rig.client().responses.create(model="m", input="secret")
    mallory = rig.client(api_key=rig.store.add_user("mallory"))
    for attempt in (
        mallory.responses.retrieve(ID),
        mallory.responses.delete(ID),
        mallory.responses.cancel(ID),
        mallory.responses.input_items.list(ID),
        mallory.responses.create(model="m", input="go on", previous_response_id=ID),
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            await attempt
        assert caught.value.code == "response_not_found"
    assert len(maker.opens) == 1  # nothing of Mallory's reached the model server


async def test_unknown_ids_and_bad_requests_by_id_are_refused_before_any_connector(
    rig: Rig,
) -> None:
    peer = await rig.peer(endpoints=ALL_ENDPOINTS, script=holder)
    with pytest.raises(openai.NotFoundError) as caught:
        await rig.client().responses.retrieve("resp_never_made")
    assert "store: false" in caught.value.message
    async with rig.http.get(rig.url + "/v1/responses/resp_x?limit=5", headers=rig.auth) as r:
        assert r.status == 400
    async with rig.http.get(rig.url + "/v1/responses/a%2F..%2Fb", headers=rig.auth) as r:
        assert r.status == 404
    async with rig.http.get(rig.url + f"/v1/responses/{ID}") as r:
        assert r.status == 401
    assert not peer.opens


async def test_a_stateless_previous_response_id_the_broker_never_saw_is_passed_through(
    rig: Rig,
) -> None:
    peer = await rig.peer(endpoints=ALL_ENDPOINTS, script=answer_json(RESPONSE_JSON))
    await rig.client().responses.create(model="m", input="x", previous_response_id="resp_old")
    assert json.loads(peer.opens[0].body)["previous_response_id"] == "resp_old"


async def test_when_the_holder_is_gone_the_client_is_told_to_retry(rig: Rig) -> None:
    maker = await rig.peer(name="maker", endpoints=ALL_ENDPOINTS, script=holder)
    await rig.client().responses.create(model="m", input="hi")
    await rig.peer(name="other", endpoints=ALL_ENDPOINTS, script=holder)
    await maker.close()
    with pytest.raises(openai.APIStatusError) as caught:
        await rig.client().responses.retrieve(ID)
    assert caught.value.status_code == 503
    assert caught.value.response.headers["retry-after"] == "5"


def test_the_store_sniffs_ids_and_forgets_the_oldest() -> None:
    assert sniff_response_id(RESPONSE_JSON) == ID
    assert sniff_response_id(RESPONSE_EVENTS[0]) == ID
    assert sniff_response_id(b'{"object":"response"}') is None
    assert sniff_response_id(b" " * 5000 + b'{"id":"late"}') is None
    stored = StoredResponses(capacity=2)
    for n in range(3):
        stored.remember(f"r{n}", StoredResponse("u", "m", "c"))
    assert stored.lookup("r0") is None
    assert stored.lookup("r2") == StoredResponse("u", "m", "c")
    assert len(stored) == 2
