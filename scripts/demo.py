"""The README's run command (`hatch run demo:up`): a broker and a connector on loopback.

It relays to the first local LLM server it finds on its usual port (Ollama 11434, llama.cpp
8080, vLLM 8000, LM Studio 1234); when none answers it starts the built-in demo LLM and says
so. It issues a demo key, prints the base URL, the key and a curl line that streams a reply,
and stops everything cleanly on Ctrl-C. `--once` runs the printed request itself and exits
(used by the tests so this command cannot rot).

Everything is started with the console scripts, exactly as an operator and an LLM owner would.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

LLM_PORTS = ((11434, "Ollama"), (8080, "llama.cpp"), (8000, "vLLM"), (1234, "LM Studio"))
BIN = Path(sys.executable).parent


def free_port(preferred: int | None = None) -> int:
    candidates = [preferred] if preferred else []
    for port in [*candidates, 0]:
        with socket.socket() as s:
            # As the servers bind (aiohttp sets SO_REUSEADDR): the last run's connections in
            # TIME_WAIT must not push a rerun right after Ctrl-C off the preferred port.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free port on 127.0.0.1")


def http_json(url: str, *, key: str | None = None, timeout: float = 1.0) -> object:
    request = urllib.request.Request(url)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def find_local_llm() -> tuple[str, str] | None:
    for port, name in LLM_PORTS:
        url = f"http://127.0.0.1:{port}"
        try:
            body = http_json(f"{url}/v1/models", timeout=0.5)
        except (OSError, ValueError):
            continue
        if isinstance(body, dict) and isinstance(body.get("data"), list):
            return url, name
    return None


def cli(tool: str, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(BIN / tool), *args], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{tool} {' '.join(args)} failed:\n{done.stderr.strip()}")
    return done.stdout.strip()


def wait_until(what: str, check: object, timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()  # type: ignore[operator]
        except (OSError, ValueError):
            result = None
        if result:
            return result
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


@contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in reversed(started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(started):
            try:
                proc.wait(timeout=35)
            except subprocess.TimeoutExpired:
                proc.kill()


def models_listed(base: str, key: str) -> list[str]:
    body = http_json(f"{base}/v1/models", key=key)
    assert isinstance(body, dict)
    return [m["id"] for m in body.get("data", [])]


def stream_once(base: str, key: str, model: str) -> str:
    payload = json.dumps(
        {
            "model": model,
            "stream": True,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "Say hello"}],
        }
    ).encode()
    request = urllib.request.Request(
        f"{base}/v1/chat/completions",
        data=payload,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    text = []
    with urllib.request.urlopen(request, timeout=60) as response:
        for raw in response:
            line = raw.decode().strip()
            if line.startswith("data:") and line != "data: [DONE]":
                for choice in json.loads(line[5:]).get("choices", []):
                    text.append(choice.get("delta", {}).get("content") or "")
    return "".join(text)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=".demo", help="where users.yaml lives (default .demo)")
    ap.add_argument("--port", type=int, default=8000, help="broker API port if free")
    ap.add_argument("--once", action="store_true", help="stream one reply, then stop")
    ap.add_argument("--demo-llm", action="store_true", help="always use the built-in demo LLM")
    args = ap.parse_args(argv)

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    users_file = str(workdir / "users.yaml")

    with processes() as procs:
        found = None if args.demo_llm else find_local_llm()
        if found:
            llm_url, llm_name = found
            print(f"* using your {llm_name} server at {llm_url}")
        else:
            llm_port = free_port()
            llm_url = f"http://127.0.0.1:{llm_port}"
            procs.append(
                subprocess.Popen(
                    [str(BIN / "remotellm-connector"), "demo-llm", "--port", str(llm_port)]
                )
            )
            wait_until("the demo LLM", lambda: http_json(f"{llm_url}/v1/models"))
            print(
                "* no local LLM found on 11434/8080/8000/1234: started the built-in demo LLM "
                f"at {llm_url} (it answers with numbered demo tokens, not a real model)"
            )

        # A second run finds the token of the first in users.yaml: replace it (it was shown
        # once and is gone), so `hatch run demo:up` works again and again.
        if (
            "demo-connector"
            in cli("remotellm-broker", "tokens", "list", "--users-file", users_file).split()
        ):
            cli(
                "remotellm-broker", "tokens", "revoke", "demo-connector", "--users-file", users_file
            )
        token = cli(
            "remotellm-broker", "tokens", "create", "demo-connector", "--users-file", users_file
        )
        try:
            key = cli("remotellm-broker", "users", "add", "demo", "--users-file", users_file)
        except SystemExit:
            key = cli("remotellm-broker", "users", "rotate", "demo", "--users-file", users_file)

        port = free_port(args.port)
        base = f"http://127.0.0.1:{port}"
        procs.append(
            subprocess.Popen(
                [
                    str(BIN / "remotellm-broker"),
                    "serve",
                    "--port",
                    str(port),
                    "--health-port",
                    str(free_port()),
                    "--users-file",
                    users_file,
                    "--public-url",
                    base,
                ]
            )
        )
        env = {**os.environ, "REMOTELLM_CONNECTOR_TOKEN": token}
        procs.append(
            subprocess.Popen(
                [
                    str(BIN / "remotellm-connector"),
                    "run",
                    "--broker-url",
                    f"ws://127.0.0.1:{port}/v1/relay",
                    "--llm-url",
                    llm_url,
                    "--name",
                    "demo",
                    "--health-port",
                    str(free_port()),
                ],
                env=env,
            )
        )
        models = wait_until(
            "the connector to announce its models", lambda: models_listed(base, key)
        )
        assert isinstance(models, list)
        model = models[0]
        hello = '"messages": [{"role": "user", "content": "Say hello"}]'
        print(
            f"""
remotellm is up.
  base URL : {base}/v1
  API key  : {key}
  model    : {model}

Stream a reply:
  curl -N {base}/v1/chat/completions -H "Authorization: Bearer {key}" \\
    -H "Content-Type: application/json" \\
    -d '{{"model": "{model}", "stream": true, {hello}}}'

Ctrl-C stops everything.""",
            flush=True,
        )
        if args.once:
            reply = stream_once(base, key, model)
            print(f"* streamed reply: {reply!r}")
            return 0 if reply else 1
        try:
            while all(p.poll() is None for p in procs):
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("\n* stopping", flush=True)
            return 0
        print("* a process exited; stopping", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
