"""``check`` reports each end with a fix, exits 0 only when both are fine."""

import io
import socket

from broker_peer import BrokerPeer
from conftest import StartConnector, make_settings
from remotellm_connector.check import run_check
from remotellm_connector.demo_llm import DemoLLMServer


async def report(**overrides: object) -> tuple[int, str]:
    out = io.StringIO()
    code = await run_check(make_settings(**overrides), out)
    return code, out.getvalue()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_all_good_lists_models_and_the_handshake(
    peer: BrokerPeer, demo: DemoLLMServer
) -> None:
    code, text = await report(broker_url=peer.url, llm_url=demo.url)
    assert code == 0, text
    assert "demo (context 8192)" in text
    assert "also answers: " in text  # the Responses/Messages APIs it found, or "none"
    assert "authenticated, wire version remotellm.v1" in text
    assert text.rstrip().endswith("all good")
    conn = await peer.next_connection()
    assert conn.hello is not None
    assert conn.hello.name == "test-connector-check"
    assert conn.hello.models == []  # nothing is ever routed to a check
    await conn.wait_closed()
    assert conn.goaway is not None


async def test_check_does_not_disturb_the_running_connector(
    peer: BrokerPeer, demo: DemoLLMServer, start_connector: StartConnector
) -> None:
    await start_connector()
    daemon = await peer.next_connection()
    code, _ = await report(broker_url=peer.url, llm_url=demo.url)
    assert code == 0
    assert not daemon.closed.is_set()


async def test_bad_token_fails_with_the_fix(peer: BrokerPeer, demo: DemoLLMServer) -> None:
    code, text = await report(broker_url=peer.url, llm_url=demo.url, token="rct-wrong")
    assert code == 1
    assert "broker  FAIL" in text
    assert "HTTP 401" in text
    assert "fix: check REMOTELLM_CONNECTOR_TOKEN" in text


async def test_version_mismatch_fails_with_the_fix(peer: BrokerPeer, demo: DemoLLMServer) -> None:
    peer.speaks = (9,)
    code, text = await report(broker_url=peer.url, llm_url=demo.url)
    assert code == 1
    assert "does not speak wire version remotellm.v1" in text


async def test_llm_refused_fails_with_the_fix(peer: BrokerPeer) -> None:
    code, text = await report(broker_url=peer.url, llm_url=f"http://127.0.0.1:{closed_port()}")
    assert code == 1
    assert "LLM     FAIL" in text
    assert "fix: start the LLM server" in text
    assert "broker  ok" in text


async def test_llm_wrong_url_fails_with_the_fix(peer: BrokerPeer) -> None:
    wrong = peer.url.replace("ws://", "http://").replace("/v1/relay", "")
    code, text = await report(broker_url=peer.url, llm_url=wrong)
    assert code == 1
    assert "HTTP 404" in text
    assert "not an OpenAI-compatible API" in text


async def test_missing_broker_url_and_token_are_reported(demo: DemoLLMServer) -> None:
    code, text = await report(llm_url=demo.url)
    assert code == 1
    assert "--broker-url" in text
