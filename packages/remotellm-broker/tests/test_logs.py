"""Logging: one JSON line per request with the agreed fields; never keys or prompt text."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from broker_rig import running_broker
from connector_peer import serve_sse

PROMPT = "my secret prompt text"


async def test_one_json_line_per_request_without_secrets(
    tmp_path: Path, captured: io.StringIO
) -> None:
    async with running_broker(tmp_path) as rig:
        await rig.peer(script=serve_sse(2))
        body = {"model": "m", "messages": [{"role": "user", "content": PROMPT}], "stream": True}
        headers = {**rig.auth, "X-Request-ID": "log-test-1", "Cookie": "portal=abc"}
        async with rig.http.post(
            rig.url + "/v1/chat/completions", json=body, headers=headers
        ) as resp:
            await resp.read()
        async with rig.http.get(
            rig.url + "/v1/models", headers={"Authorization": "Bearer sk-wrong"}
        ) as resp:
            assert resp.status == 401
        token = rig.token
        key = rig.key
    text = captured.getvalue()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    requests = [r for r in records if r.get("event") == "request"]
    relayed = [r for r in requests if r.get("request_id") == "log-test-1"]
    assert len(relayed) == 1
    line = relayed[0]
    assert line["user_id"] == "local:alice"
    assert line["model"] == "m"
    assert line["connector"] == "peer"
    assert line["status"] == 200
    assert line["completion_tokens"] == 2
    assert line["ttft_ms"] is not None
    assert line["duration_ms"] >= line["ttft_ms"]
    assert any(r["status"] == 401 for r in requests)
    for secret in (key, token, PROMPT, "portal=abc", "sk-wrong"):
        assert secret not in text


def test_malformed_http_tracebacks_become_one_warning(captured: io.StringIO) -> None:
    from aiohttp.http_exceptions import BadHttpMessage

    try:
        raise BadHttpMessage("Invalid header")
    except BadHttpMessage:
        logging.getLogger("aiohttp.server").exception("Error handling request from %s", "1.2.3.4")
    record = json.loads(captured.getvalue().splitlines()[-1])
    assert record["level"] == "warning"
    assert "exception" not in record
    assert "Traceback" not in captured.getvalue()
