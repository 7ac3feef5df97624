"""``remotellm-connector demo-llm``: the fake upstream as a command, for the demo and the bench.

Its defaults give a visible cadence for a person watching curl; the benchmark passes its own
``--tokens/--ttft-ms/--gap-ms``. When the server is up, one line goes to stdout:
``demo LLM listening on http://HOST:PORT/v1 (models: …)`` — scripts that start it with
``--port 0`` read the port from there.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

from remotellm_connector.demo_llm.app import DemoLLMServer, run_demo_llm
from remotellm_connector.demo_llm.config import DEMO_CONFIG, DemoLLMConfig
from remotellm_connector.demo_llm.script import load_script

__all__ = ["demo_llm_command", "main"]


def demo_llm_command() -> click.Command:
    """A fresh ``demo-llm`` command, for the connector's CLI group to register."""

    @click.command(name="demo-llm")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
    @click.option("--port", default=8001, show_default=True, help="Port to bind (0: any).")
    @click.option("--tokens", default=24, show_default=True, help="Tokens per response.")
    @click.option("--ttft-ms", default=150.0, show_default=True, help="Time to first token.")
    @click.option("--gap-ms", default=40.0, show_default=True, help="Time between tokens.")
    @click.option(
        "--model",
        "models",
        multiple=True,
        default=("demo",),
        show_default=True,
        help="Model id to serve (repeat for several).",
    )
    @click.option(
        "--max-model-len", default=8192, show_default=True, help="Context length reported."
    )
    @click.option(
        "--api-key",
        envvar="REMOTELLM_DEMO_LLM_API_KEY",
        default=None,
        help="Require this bearer key (env: REMOTELLM_DEMO_LLM_API_KEY).",
    )
    @click.option(
        "--script",
        "script_path",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="YAML/JSON list of {match, api, reply} rules scripting replies; first match wins.",
    )
    def demo_llm(
        host: str,
        port: int,
        tokens: int,
        ttft_ms: float,
        gap_ms: float,
        models: tuple[str, ...],
        max_model_len: int,
        api_key: str | None,
        script_path: Path | None,
    ) -> None:
        """Run a fake OpenAI/Anthropic-compatible LLM (deterministic tokens, no GPU needed)."""
        try:
            script = load_script(script_path) if script_path is not None else ()
            config = DemoLLMConfig(
                models=tuple(models),
                tokens=tokens,
                ttft_s=ttft_ms / 1000,
                gap_s=gap_ms / 1000,
                api_key=api_key or None,
                max_model_len=max_model_len,
                script=script,
            )
        except ValueError as exc:  # ScriptError is a ValueError too
            raise click.BadParameter(str(exc)) from None
        asyncio.run(_serve(host, port, config))

    return demo_llm


async def _serve(host: str, port: int, config: DemoLLMConfig) -> None:
    """Serve until SIGINT/SIGTERM; a second Ctrl-C falls through to Python's default."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: signal.Signals) -> None:
        loop.remove_signal_handler(signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)

    def announce(server: DemoLLMServer) -> None:
        models = ", ".join(server.app[DEMO_CONFIG].models)
        click.echo(f"demo LLM listening on {server.base_url} (models: {models})", nl=True)

    await run_demo_llm(host, port, config, on_ready=announce, stop=stop)


def main() -> None:
    """``python -m remotellm_connector.demo_llm``."""
    demo_llm_command().main(prog_name="python -m remotellm_connector.demo_llm")
