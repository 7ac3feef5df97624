"""What users would pick instead of remotellm: the peers every run measures beside it.

Standard peers (``bench:all`` starts them unless ``--paths`` says otherwise):

- ``relay-1hop``, ``relay-2hop``: the thinnest aiohttp relays (``bench.thinrelay``), one
  process, or two chained (client → relay → relay → LLM, the shape of broker + connector).
  Byte copiers, no parsing: the floor for a relay written in Python.
- ``ssh``: a throwaway sshd on a free loopback port with fresh host and user keys, and
  ``ssh -N -R`` publishing the demo LLM on another free port, as a GPU owner would tunnel it
  (needs Debian's openssh-server, which ``scripts/ensure-system-deps.sh`` installs).

Optional (``--with litellm``): the LiteLLM proxy, from its own venv (its pins clash with
ours), found at ``$BENCH_LITELLM``, ``bench/.venv-litellm/bin/litellm`` or on ``PATH``.

A starter that cannot run here raises ``Skipped`` with the command that would enable it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bench.paths import MODEL, BenchPath, Skipped, free_port, http_json, wait_for

if TYPE_CHECKING:
    from bench.paths import Rig

__all__ = ["STANDARD_PATHS", "starters"]

#: remotellm and the peers every run measures beside it (``--paths`` replaces them).
STANDARD_PATHS = ("remotellm", "relay-1hop", "relay-2hop", "ssh")

_LITELLM_VENV = Path(__file__).parent / ".venv-litellm" / "bin" / "litellm"
_THIN = Path(__file__).with_name("thinrelay.py")


def starters(rig: Rig) -> dict[str, Callable[[], BenchPath]]:
    return {
        "relay-1hop": lambda: start_thin(rig, 1),
        "relay-2hop": lambda: start_thin(rig, 2),
        "ssh": lambda: start_ssh(rig),
        "litellm": lambda: start_litellm(rig),
    }


def start_thin(rig: Rig, hops: int) -> BenchPath:
    """``hops`` thin relays chained in front of the demo LLM (the last one dials it)."""
    name, procs, upstream = f"relay-{hops}hop", [], rig.upstream_url
    for hop in range(hops, 0, -1):
        port = free_port()
        argv = [sys.executable, str(_THIN), "--port", str(port), "--upstream", upstream]
        procs.insert(0, rig.spawn(f"{name}-{hop}", argv))
        procs[0].role = f"relay{hop}"
        upstream = f"http://127.0.0.1:{port}"
    path = BenchPath(name, upstream, None, procs)
    wait_for(name, lambda: http_json(f"{path.url}/v1/models"), procs, 30)
    return path


def _find(*candidates: str | Path | None) -> str | None:
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def start_litellm(rig: Rig) -> BenchPath:
    exe = _find(os.environ.get("BENCH_LITELLM"), _LITELLM_VENV, shutil.which("litellm"))
    if exe is None:
        raise Skipped(
            "litellm not installed: python -m venv bench/.venv-litellm && "
            "bench/.venv-litellm/bin/pip install 'litellm[proxy]' (or set BENCH_LITELLM)"
        )
    config = rig.workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {rig.upstream_url}/v1\n"
        "      api_key: none\n"
    )
    port = free_port()
    argv = [exe, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    proc = rig.spawn("litellm", argv, env={**os.environ, "LITELLM_LOG": "ERROR"})
    path = BenchPath("litellm", f"http://127.0.0.1:{port}", None, [proc])
    wait_for("litellm", lambda: http_json(f"{path.url}/health/liveliness"), [proc], 120)
    return path


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_ssh(rig: Rig) -> BenchPath:
    sshd = _find(shutil.which("sshd"), "/usr/sbin/sshd")
    ssh, keygen = shutil.which("ssh"), shutil.which("ssh-keygen")
    if sshd is None or ssh is None or keygen is None:
        raise Skipped("ssh -R needs sshd, ssh and ssh-keygen (apt-get install openssh-server)")
    if os.geteuid() == 0 and not Path("/run/sshd").is_dir():
        # sshd started as root insists on its privilege separation directory, which the
        # package's boot-time tmpfiles rule creates; a container never booted it.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    home = rig.workdir / "ssh"
    home.mkdir(mode=0o700, exist_ok=True)
    for name in ("host_key", "user_key"):
        if not (home / name).exists():
            subprocess.run(
                [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(home / name)], check=True
            )
    (home / "authorized_keys").write_bytes((home / "user_key.pub").read_bytes())
    sshd_port, tunnel_port = free_port(), free_port()
    (home / "sshd_config").write_text(
        f"Port {sshd_port}\nListenAddress 127.0.0.1\nHostKey {home / 'host_key'}\n"
        f"AuthorizedKeysFile {home / 'authorized_keys'}\nPidFile {home / 'sshd.pid'}\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\nPermitRootLogin yes\n"
        "AllowTcpForwarding yes\nGatewayPorts no\n"
    )
    daemon = rig.spawn("sshd", [sshd, "-D", "-e", "-f", str(home / "sshd_config")])
    wait_for("sshd", lambda: _port_open(sshd_port), [daemon], 15)
    upstream_port = rig.upstream_url.rsplit(":", 1)[1]
    tunnel = rig.spawn(
        "ssh",
        [ssh, "-N", "-p", str(sshd_port), "-i", str(home / "user_key"),
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "ExitOnForwardFailure=yes", "-o", "BatchMode=yes",
         "-R", f"127.0.0.1:{tunnel_port}:127.0.0.1:{upstream_port}",
         f"{os.environ.get('USER', 'root')}@127.0.0.1"],
    )  # fmt: skip
    path = BenchPath("ssh", f"http://127.0.0.1:{tunnel_port}", None, [daemon, tunnel])
    wait_for("the ssh -R tunnel", lambda: http_json(f"{path.url}/v1/models"), [daemon, tunnel], 15)
    return path
