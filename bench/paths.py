"""The paths under test, each started as real processes on 127.0.0.1 with free ports.

- ``direct``: client → demo LLM. The baseline every ratio is taken against.
- ``remotellm``: client → broker → WebSocket → connector → demo LLM, started with the console
  scripts exactly as an operator would (``users add``, ``users limits``, ``tokens create``,
  ``serve``, ``run``), limits lifted so the relay, not a rate limit, is measured.
  They run on uvloop, their default where it is installed (the bench env has it).
- ``remotellm-asyncio``, ``remotellm-defaults``, ``remotellm-gc``, ``remotellm-mmap``
  (``--paths remotellm,…``): the same processes with one knob changed (asyncio's own loop,
  ``--event-loop asyncio``; the connector's default stream cap instead of 4096;
  ``gc.freeze()`` after the imports; glibc's malloc thresholds), to measure a change.
- ``relay-1hop``, ``relay-2hop``, ``ssh`` (standard peers) and ``litellm`` (``--with
  litellm``): what a user could pick instead (see ``bench.others``).

One demo LLM serves every path, so all paths see the same upstream. A path's *middle*
processes are what the runner samples (CPU, RSS) and SIGSTOPs while another path is measured.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BenchPath", "Proc", "Rig", "Skipped", "free_port", "http_json"]

BIN = Path(sys.executable).parent
MODEL = "demo"


class Skipped(Exception):
    """An optional path cannot run here; the message says why and how to enable it."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(
    url: str, *, key: str | None = None, body: object = None, timeout: float = 5.0
) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def descendants(pid: int) -> list[int]:
    """Child processes, recursively, from /proc (Linux); empty elsewhere."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo += children.get(child, [])
    return found


def wait_for(what: str, check: Callable[[], object], procs: list[Proc], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.role} exited while waiting for {what}: {proc.tail()}")
        try:
            if check():
                return
        except (OSError, ValueError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Proc:
    role: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class BenchPath:
    name: str
    url: str
    key: str | None = None
    middle: list[Proc] = field(default_factory=list)

    def pids(self) -> dict[str, list[int]]:
        """Each middle process with its descendants (an sshd forwards in a child process)."""
        return {p.role: [p.pid, *descendants(p.pid)] for p in self.middle if p.popen.poll() is None}

    def signal(self, signum: signal.Signals) -> None:
        for pids in self.pids().values():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def probe(self, timeout: float = 10.0) -> None:
        """One small non-streaming answer: the path is up (again, after a SIGCONT)."""
        body = {"model": MODEL, "messages": [{"role": "user", "content": "probe"}]}
        answer = http_json(
            f"{self.url}/v1/chat/completions",
            key=self.key,
            body=body | {"max_tokens": 2},
            timeout=timeout,
        )
        if not isinstance(answer, dict) or "choices" not in answer:
            raise RuntimeError(f"{self.name}: unexpected probe answer {answer!r}")


@dataclass
class Rig:
    """Every process of a run; ``close`` (or leaving the ``with``) stops them all."""

    workdir: Path
    upstream_url: str = ""
    upstream_pid: int = 0
    procs: list[Proc] = field(default_factory=list)
    paths: dict[str, BenchPath] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def __enter__(self) -> Rig:
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def spawn(self, role: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        """Start a process; its output goes to ``<role>.log`` in the work directory."""
        log = self.workdir / f"{role}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        proc = Proc(role, popen, log)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
                proc.popen.terminate()
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        self.procs.clear()

    def start_upstream(self) -> None:
        port = free_port()
        argv = [sys.executable, "-m", "remotellm_connector.demo_llm", "--port", str(port)]
        argv += ["--tokens", "16", "--ttft-ms", "0", "--gap-ms", "0", "--model", MODEL]
        proc = self.spawn("upstream", argv)
        self.upstream_url, self.upstream_pid = f"http://127.0.0.1:{port}", proc.pid
        wait_for("the demo LLM", lambda: http_json(f"{self.upstream_url}/v1/models"), [proc], 30)
        self.paths["direct"] = BenchPath("direct", self.upstream_url)

    def upstream_stats(self) -> dict[str, object]:
        stats = http_json(f"{self.upstream_url}/_demo/stats")
        assert isinstance(stats, dict)
        return stats

    def reset_upstream_stats(self) -> None:
        http_json(f"{self.upstream_url}/_demo/stats/reset", body={})

    def add(self, name: str) -> None:
        """Start an optional path, or note why it was skipped."""
        from bench import others

        starters = {
            "remotellm": self.start_remotellm,
            "remotellm-asyncio": lambda: self.start_remotellm("remotellm-asyncio", env=_ASYNCIO),
            "remotellm-defaults": lambda: self.start_remotellm(
                "remotellm-defaults", max_streams=None
            ),
            "remotellm-gc": lambda: self.start_remotellm("remotellm-gc", prelude=_GC_FREEZE),
            "remotellm-mmap": lambda: self.start_remotellm("remotellm-mmap", env=_NO_MMAP_CHURN),
            **others.starters(self),
        }
        if name not in starters:
            raise SystemExit(f"unknown path {name!r}; known: {', '.join(starters)}")
        try:
            self.paths[name] = starters[name]()
        except Skipped as why:
            self.skipped[name] = str(why)

    def start_remotellm(
        self,
        name: str = "remotellm",
        *,
        prelude: str = "",
        env: dict[str, str] | None = None,
        max_streams: int | None = 4096,
    ) -> BenchPath:
        """Broker + connector. Bench-only variants, to measure a change before making it:
        ``prelude`` is Python run after the entry point's imports and before its ``main``
        (``_GC_FREEZE``); ``env`` adds variables to both processes (``remotellm-mmap``: glibc
        malloc thresholds, see ``_NO_MMAP_CHURN``; ``remotellm-asyncio``: the event loop);
        ``max_streams`` None leaves the connector's own default (derived from the LLM server).
        """
        users = str(self.workdir / f"{name}-users.yaml")
        key = _cli("remotellm-broker", "users", "add", "bench", "--users-file", users)
        _cli("remotellm-broker", "users", "limits", "bench", "--rpm", "0", "--burst", "0",
             "--max-streams", "0", "--users-file", users)  # fmt: skip
        token = _cli("remotellm-broker", "tokens", "create", "bench", "--users-file", users)
        port = free_port()
        broker = self.spawn(
            f"{name}-broker",
            [*_entry("remotellm-broker", prelude), "serve", "--port", str(port),
             "--health-port", str(free_port()), "--users-file", users,
             "--rate-limit-rpm", "0", "--rate-limit-burst", "0", "--max-streams-per-key", "0"],
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        env = {**os.environ, **(env or {}), "REMOTELLM_CONNECTOR_TOKEN": token}
        connector = self.spawn(
            f"{name}-connector",
            [*_entry("remotellm-connector", prelude), "run",
             "--broker-url", f"ws://127.0.0.1:{port}/v1/relay", "--llm-url", self.upstream_url,
             "--name", "bench", "--health-port", str(free_port()),
             *([] if max_streams is None else ["--max-streams", str(max_streams)])],
            env=env,
        )  # fmt: skip
        broker.role, connector.role = "broker", "connector"
        path = BenchPath(name, f"http://127.0.0.1:{port}", key, [broker, connector])

        def serves_model() -> bool:
            listing = http_json(f"{path.url}/v1/models", key=key, timeout=1.0)
            return isinstance(listing, dict) and any(
                m.get("id") == MODEL for m in listing.get("data", [])
            )

        wait_for("the connector's models at the broker", serves_model, path.middle, 30)
        return path


#: asyncio reads a socket with ``sock.recv(256 KiB)``: a fresh 256 KiB bytes object per read.
#: glibc serves it with mmap, shrinks it with mremap and frees it with munmap (three system
#: calls and page faults per read) unless its mmap threshold is pinned above that size.
_NO_MMAP_CHURN = {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "16777216"}


#: The services' opt-out of their default uvloop (``event_loop`` setting).
_ASYNCIO = {"REMOTELLM_BROKER_EVENT_LOOP": "asyncio", "REMOTELLM_CONNECTOR_EVENT_LOOP": "asyncio"}
#: Start-up objects (every imported module) out of the collector's reach: a full collection
#: then walks only what the running service allocated.
_GC_FREEZE = "import gc; gc.collect(); gc.freeze()"


def _entry(script: str, prelude: str) -> list[str]:
    """The console script, or its entry point with ``prelude`` run just before ``main``."""
    if not prelude:
        return [str(BIN / script)]
    module = script.replace("-", "_") + ".cli"
    code = (
        f"import sys; from {module} import main; {prelude}; "
        f"sys.argv[0] = {script!r}; sys.exit(main())"
    )
    return [sys.executable, "-c", code]


def _cli(tool: str, *args: str) -> str:
    done = subprocess.run(
        [str(BIN / tool), *args], capture_output=True, text=True, check=False, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(f"{tool} {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()
