"""A connector token is one identity, and revoking it is immediate (issue 11 item 2).

The attacker holds a valid connector token of its own (``HostileConnector``) and tries to
take over another connector's name, to attach under many names, to hold many links, or to
keep serving after its token was revoked.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from click.testing import CliRunner

from broker_rig import Rig, assert_openai_error, read_sse, running_broker, wait_for
from connector_peer import PeerStream, sse_chunks
from hostile_connector import HostileConnector, hello
from remotellm_broker.cli import main as cli
from remotellm_protocol import CloseCode


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_broker(tmp_path, max_links_per_token=3, handshake_timeout_s=5.0) as rig:
        yield rig


def _registered(rig: Rig) -> dict[str, object]:
    return {c.name: c for c in rig.state.registry}


async def test_a_link_presenting_another_tokens_connector_name_is_refused(rig: Rig) -> None:
    victim = await rig.peer(name="gpu-a")  # token created as `tokens create gpu-a`
    attacker_token = rig.store.create_connector_token("mallory")
    async with HostileConnector(rig.relay_url, attacker_token) as evil:
        assert await evil.connect(hello("gpu-a")) is None
        assert evil.close_code == CloseCode.NAME_TAKEN
        assert "belongs to another connector token" in evil.close_reason
    assert _registered(rig)["gpu-a"] is not None
    assert victim.ws is not None
    assert not victim.ws.closed  # not replaced


async def test_a_name_first_attached_with_sticks_to_its_token(rig: Rig) -> None:
    first = rig.store.create_connector_token("tok-first")
    second = rig.store.create_connector_token("tok-second")
    async with HostileConnector(rig.relay_url, first) as owner:
        assert await owner.connect(hello("lab-box")) is not None
        await wait_for(lambda: "lab-box" in _registered(rig))
        async with HostileConnector(rig.relay_url, second) as thief:
            assert await thief.connect(hello("lab-box")) is None
            assert thief.close_code == CloseCode.NAME_TAKEN
            assert "in use by another connector token" in thief.close_reason
        await owner.close()
    await wait_for(lambda: "lab-box" not in _registered(rig))
    # Still its name when its owner is away.
    async with HostileConnector(rig.relay_url, second) as thief:
        assert await thief.connect(hello("lab-box")) is None
        assert thief.close_code == CloseCode.NAME_TAKEN


async def test_one_token_attaches_under_one_connector_name_only(rig: Rig) -> None:
    token = rig.store.create_connector_token("tok-one")
    async with HostileConnector(rig.relay_url, token) as first:
        assert await first.connect(hello("box-1")) is not None
        async with HostileConnector(rig.relay_url, token) as second:
            assert await second.connect(hello("box-2")) is None
            assert second.close_code == CloseCode.NAME_TAKEN
            assert "bound to connector name 'box-1'" in second.close_reason
    assert "box-2" not in _registered(rig)


async def test_a_reconnect_with_the_same_token_replaces_the_old_link(rig: Rig) -> None:
    token = rig.token_for("gpu-b")
    old = await rig.peer(name="gpu-b")
    async with HostileConnector(rig.relay_url, token) as new:
        assert await new.connect(hello("gpu-b")) is not None
        await wait_for(lambda: old.close_code is not None)
        assert old.close_code == CloseCode.REPLACED


async def test_one_token_holds_at_most_max_links_per_token(rig: Rig) -> None:
    token = rig.store.create_connector_token("tok-many")
    held = [HostileConnector(rig.relay_url, token) for _ in range(3)]
    try:
        for link in held:  # upgraded, never saying hello: links being set up count too
            await link.dial()
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await HostileConnector(rig.relay_url, token).dial()
        assert refused.value.status == 429
        other = HostileConnector(rig.relay_url, rig.store.create_connector_token("tok-other"))
        await other.dial()  # another token is not affected
        await other.close()
        await held[0].close()
        await wait_for(lambda: rig.state.token_links.links("tok-many") == 2)
        again = HostileConnector(rig.relay_url, token)
        await again.dial()  # a slot freed up
        await again.close()
    finally:
        for link in held:
            await link.close()


def _revoke_with_the_cli(rig: Rig, name: str) -> None:
    result = CliRunner().invoke(
        cli, ["tokens", "revoke", name, "--users-file", rig.settings.users_file]
    )
    assert result.exit_code == 0, result.output


async def test_revoking_a_token_closes_its_links_within_a_second_and_ends_their_streams(
    rig: Rig,
) -> None:
    started = asyncio.Event()

    async def slow(stream: PeerStream) -> None:
        await stream.head(200, [("content-type", "text/event-stream")])
        await stream.data(sse_chunks(1, done=False)[0])
        started.set()
        await asyncio.Event().wait()  # keeps generating until told otherwise

    peer = await rig.peer(name="gpu-revoked", script=slow)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with rig.http.post(rig.url + "/v1/chat/completions", json=body, headers=rig.auth) as resp:
        await started.wait()
        await asyncio.to_thread(_revoke_with_the_cli, rig, "gpu-revoked")
        revoked_at = time.monotonic()  # the edit is on disk: the promise starts here
        lines = await read_sse(resp)
        client_saw_end = time.monotonic() - revoked_at
    await wait_for(lambda: peer.close_code is not None, within=2.0)
    assert peer.close_code == CloseCode.TOKEN_REVOKED
    assert client_saw_end < 1.0, client_saw_end
    assert lines[-2] == "event: error"
    assert_openai_error(json.loads(lines[-1].removeprefix("data: ")), "upstream_interrupted")
    assert "data: [DONE]" not in lines
    assert "gpu-revoked" not in _registered(rig)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await HostileConnector(rig.relay_url, peer.token).dial()
    assert refused.value.status == 401


def _delete_token_by_hand(path: Path, name: str) -> None:
    """What an operator's editor does: rewrite users.yaml without the token's entry."""
    content = yaml.safe_load(path.read_text())
    kept = [t for t in content["connector_tokens"] if t["name"] != name]
    assert len(kept) == len(content["connector_tokens"]) - 1
    content["connector_tokens"] = kept
    path.write_text(yaml.safe_dump(content))


async def test_a_token_deleted_from_users_yaml_by_hand_closes_its_links(rig: Rig) -> None:
    token = rig.store.create_connector_token("tok-hand")
    async with HostileConnector(rig.relay_url, token) as link:
        assert await link.connect(hello("hand-box")) is not None
        await asyncio.to_thread(_delete_token_by_hand, Path(rig.settings.users_file), "tok-hand")
        assert await link.wait_closed(within=2.0) == CloseCode.TOKEN_REVOKED
        assert link.close_reason == "connector token revoked"
    # Its name binding went with it: a new token may serve under that name.
    fresh = rig.store.create_connector_token("tok-hand-2")
    async with HostileConnector(rig.relay_url, fresh) as link:
        assert await link.connect(hello("hand-box")) is not None
