"""Restarting without refusing connections: two brokers share the ports (SO_REUSEPORT) and
tell systemd when they listen (``Type=notify``); the template unit that takes turns is valid."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from broker_rig import running_broker
from remotellm_broker.serve import BindError

UNIT = Path(__file__).resolve().parents[3] / "docs" / "deploy" / "remotellm-broker@.service"


async def test_a_second_broker_binds_the_ports_of_a_running_one(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with running_broker(tmp_path / "a") as first:
        ports = {"port": first.bound.port, "health_port": first.bound.health_port}
        async with running_broker(tmp_path / "b", **ports) as second:
            assert (second.bound.port, second.bound.health_port) == (
                first.bound.port,
                first.bound.health_port,
            )
            await first.shutdown()  # the first one drains and goes; the second serves on
            async with second.http.get(second.health_url + "/healthz") as resp:
                assert resp.status == 200
            async with second.http.get(second.url + "/v1/models", headers=second.auth) as resp:
                assert resp.status == 200


async def test_a_port_held_by_a_socket_without_reuseport_is_still_in_use(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        with pytest.raises(BindError, match="in use"):
            async with running_broker(tmp_path, port=squatter.getsockname()[1]):
                pass


async def test_the_broker_tells_systemd_when_it_listens_and_when_it_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(path))
        notify.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        loop = asyncio.get_running_loop()
        async with running_broker(tmp_path) as rig:
            ready = await asyncio.wait_for(loop.sock_recv(notify, 64), 5)
            assert ready == b"READY=1"
            await rig.shutdown()
            stopping = await asyncio.wait_for(loop.sock_recv(notify, 64), 5)
            assert stopping == b"STOPPING=1"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify_accepts_the_template_unit(tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert "Type=notify" in text
    # verify wants the program to exist: use this interpreter with ``-m remotellm_broker``.
    text = text.replace("/usr/local/bin/remotellm-broker", f"{sys.executable} -m remotellm_broker")
    unit = tmp_path / "remotellm-broker@blue.service"
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
