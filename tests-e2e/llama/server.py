#!/usr/bin/env python3
"""Run a real llama.cpp ``llama-server`` on 127.0.0.1 serving the tiny random model.

Importable (stdlib only)::

    with start_llama_server() as llm:
        llm.base_url          # "http://127.0.0.1:PORT"   (/health, /props, /metrics live here)
        llm.openai_base_url   # "http://127.0.0.1:PORT/v1" (what OpenAI SDKs call base_url)
        llm.model             # "tiny-llama", the id in GET /v1/models

or from a shell, in the foreground until Ctrl-C::

    python tests-e2e/llama/server.py [--port N] [--parallel N] [--ctx N] [--alias NAME]

The binary and the model are made on first use by the sibling scripts
``build_llama_server.py`` (~6 min on 2 cores) and ``make_tiny_model.py`` (~15 s), which
cache them in ``$REMOTELLM_LLAMA_CACHE``; after that a start takes well under a second.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"  # never anything else: these servers have no auth
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
PORT_ATTEMPTS = 3  # a port picked as free can be taken before llama-server binds it


class LlamaServerError(RuntimeError):
    """The server could not be prepared or did not become ready."""


def run_setup_step(script: str, *args: str) -> Path:
    """Run a sibling setup script; it prints its artefact's path on stdout, progress on stderr."""
    proc = subprocess.run(
        [sys.executable, str(HERE / script), *args], stdout=subprocess.PIPE, text=True, check=False
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise LlamaServerError(
            f"{script} failed with exit code {proc.returncode} (its stderr says why)"
        )
    return Path(lines[-1])


def ensure_binary() -> Path:
    return run_setup_step("build_llama_server.py")


def ensure_model(seed: int = 0) -> Path:
    return run_setup_step("make_tiny_model.py", "--seed", str(seed))


def pick_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclasses.dataclass
class LlamaServer:
    """A running llama-server; stop() it, or use it as a context manager."""

    process: subprocess.Popen[bytes]
    port: int
    model: str
    model_path: Path
    log_path: Path  # the server's own stdout+stderr, kept after stop() for post-mortems

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it lingers; idempotent. Returns the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
        return int(self.process.returncode)

    def __enter__(self) -> LlamaServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def server_command(
    binary: Path,
    model_path: Path,
    port: int,
    *,
    parallel: int,
    ctx: int,
    alias: str,
    extra_args: Sequence[str],
) -> list[str]:
    return [
        str(binary),
        "--model",
        str(model_path),
        "--alias",
        alias,
        "--host",
        HOST,
        "--port",
        str(port),
        "--ctx-size",
        str(ctx),  # the total; llama-server splits it among the slots
        "--parallel",
        str(parallel),
        "--threads",
        str(os.cpu_count() or 2),
        "--no-ui",  # not built anyway; keeps GET / from pretending otherwise
        "--metrics",  # /metrics lets tests see what the upstream really processed
        *extra_args,
    ]


def health_status(base_url: str) -> int | None:
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=2.0) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code  # 503 while the model is loading
    except OSError:
        return None  # not listening yet


def says_listening(server: LlamaServer) -> bool:
    # /health alone could be answered by ANOTHER server already on the port: our process
    # then fails to bind but lives a few ms longer. Only our own log proves we own it.
    return f"listening on {server.base_url}" in server.log_path.read_text(errors="replace")


def wait_ready(server: LlamaServer, timeout_s: float) -> None:
    """Poll /health until 200; fail fast if the process dies, bounded by timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise LlamaServerError(
                f"llama-server exited with {server.process.returncode} before it was ready:\n"
                f"{log_tail(server.log_path)}"
            )
        if says_listening(server) and health_status(server.base_url) == 200:
            return
        time.sleep(0.1)
    server.stop()
    raise LlamaServerError(
        f"llama-server not ready after {timeout_s:.0f} s:\n{log_tail(server.log_path)}"
    )


def launch(cmd: list[str], model_path: Path, port: int, alias: str) -> LlamaServer:
    fd, log_name = tempfile.mkstemp(prefix=f"llama-server-{port}-", suffix=".log")
    with os.fdopen(fd, "wb") as log_file:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
    server = LlamaServer(
        process=process, port=port, model=alias, model_path=model_path, log_path=Path(log_name)
    )
    atexit.register(server.stop)  # no orphaned server burning CPU if a test forgets to stop it
    return server


def start_llama_server(
    port: int | None = None,
    *,
    parallel: int = 4,
    ctx: int = 4096,
    alias: str = "tiny-llama",
    seed: int = 0,
    extra_args: Sequence[str] = (),
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> LlamaServer:
    """Build/create what is missing, start llama-server on 127.0.0.1 and wait until it is ready.

    port None picks a free port. extra_args go to llama-server verbatim
    (e.g. ["--api-key", "k"]). seed selects the model's random weights.
    """
    binary = ensure_binary()
    model_path = ensure_model(seed)
    attempts = 1 if port is not None else PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        chosen = port if port is not None else pick_free_port()
        cmd = server_command(
            binary,
            model_path,
            chosen,
            parallel=parallel,
            ctx=ctx,
            alias=alias,
            extra_args=extra_args,
        )
        server = launch(cmd, model_path, chosen, alias)
        try:
            wait_ready(server, ready_timeout_s)
            return server
        except LlamaServerError:
            lost_port_race = "couldn't bind" in log_tail(server.log_path)
            if attempt == attempts or not lost_port_race:
                raise
    raise AssertionError("unreachable")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Run llama-server with the tiny random model on 127.0.0.1."
    )
    ap.add_argument("--port", type=int, default=None, help="default: a free port")
    ap.add_argument(
        "--parallel", type=int, default=4, help="slots (concurrent requests); default 4"
    )
    ap.add_argument(
        "--ctx", type=int, default=4096, help="total context, split among slots; default 4096"
    )
    ap.add_argument(
        "--alias", default="tiny-llama", help="model id in /v1/models; default tiny-llama"
    )
    ap.add_argument("--seed", type=int, default=0, help="random weights of the model; default 0")
    args, extra = ap.parse_known_args(argv)
    # SIGTERM should stop the child too, like Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    started = time.monotonic()
    with start_llama_server(
        args.port,
        parallel=args.parallel,
        ctx=args.ctx,
        alias=args.alias,
        seed=args.seed,
        extra_args=extra,
    ) as llm:
        print(
            f"READY {llm.openai_base_url} model={llm.model} pid={llm.process.pid} "
            f"start_s={time.monotonic() - started:.2f} log={llm.log_path}",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            llm.process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
