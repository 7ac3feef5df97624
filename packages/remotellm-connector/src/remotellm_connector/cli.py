"""The ``remotellm-connector`` command line: ``run``, ``check``, ``usage``, ``status``, …

Flag names are a contract (docs, systemd units and scripts use them). Each flag also reads
``REMOTELLM_CONNECTOR_<NAME>``; the precedence lives in ``config.load_settings``. The relay token
is never a flag: ``REMOTELLM_CONNECTOR_TOKEN`` or ``--token-file``.
"""

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from remotellm_connector.__about__ import __version__
from remotellm_connector.config import ConfigError, ConnectorSettings, load_settings, read_token

F = TypeVar("F", bound=Callable[..., Any])

#: Exit status for a configuration that cannot work (like a usage error).
EXIT_CONFIG = 2

_OPTIONS = [
    click.option(
        "--broker-url",
        help="Broker relay URL, e.g. wss://broker.example.com/v1/relay (https://host works).",
    ),
    click.option(
        "--llm-url",
        help="Local LLM server base URL [default: first of :11434, :8080, :8000, :1234 that "
        "answers].",
    ),
    click.option("--name", help="Connector name shown at the broker [default: hostname]."),
    click.option("--health-host", help="Health server address [default: 127.0.0.1]."),
    click.option("--health-port", type=int, help="Health server port [default: 9180]."),
    click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="REMOTELLM_CONNECTOR_CONFIG",
        help="YAML settings file.",
    ),
    click.option(
        "--max-streams",
        type=int,
        help="Concurrent streams served [default: 2 x llama.cpp's slots, else 256].",
    ),
    click.option(
        "--max-retries",
        type=int,
        help="Exit 1 after this many failed connection attempts in a row [default: 0, never].",
    ),
    click.option(
        "--token-file",
        help="File holding the connector token (else REMOTELLM_CONNECTOR_TOKEN).",
    ),
    click.option(
        "--data-dir",
        help="Where usage records are kept [default: ~/.local/share/remotellm-connector].",
    ),
    click.option(
        "--log-format",
        type=click.Choice(["auto", "json", "console"]),
        help="Log format [default: auto: JSON unless stderr is a terminal].",
    ),
    click.option(
        "--event-loop",
        type=click.Choice(["auto", "asyncio", "uvloop"]),
        help="Event loop [default: auto: uvloop when installed, else asyncio].",
    ),
]


class _Commands(click.Group):
    """``demo-llm`` is imported only when it runs or help lists it: the daemon (``run``)
    must not carry the demo server's modules in its memory for months."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "demo-llm"])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "demo-llm":
            from remotellm_connector.demo_llm import demo_llm_command

            return demo_llm_command()
        return super().get_command(ctx, cmd_name)


def _settings_options(func: F) -> F:
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def _load(config_file: Path | None, flags: dict[str, Any]) -> ConnectorSettings:
    try:
        return load_settings(config_file, os.environ, flags)
    except ConfigError as exc:
        click.echo(f"remotellm-connector: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="remotellm-connector")
def main() -> None:
    """Share the LLM on this machine with your team through a remotellm broker."""


@main.command()
@_settings_options
def run(config_file: Path | None, **flags: Any) -> None:
    """Connect to the broker and serve requests from the local LLM until stopped."""
    from remotellm_connector import eventloop
    from remotellm_connector.logs import configure_logging
    from remotellm_connector.service import StartupError, log, run_connector

    settings = _load(config_file, flags)
    if settings.broker_url is None:
        click.echo(
            "remotellm-connector: broker_url is not set: pass --broker-url "
            "(e.g. https://broker.example.com) or set REMOTELLM_CONNECTOR_BROKER_URL",
            err=True,
        )
        sys.exit(EXIT_CONFIG)
    try:
        token = read_token(settings)
    except ConfigError as exc:
        click.echo(f"remotellm-connector: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    secrets = (token, settings.llm_api_key)  # never shown in a log line, whatever their shape
    configure_logging(settings.log_format, settings.log_level, secrets=secrets)
    try:
        code = eventloop.run(run_connector(settings, token), settings.event_loop, log)
    except (StartupError, eventloop.EventLoopError) as exc:
        click.echo(f"remotellm-connector: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    sys.exit(code)


@main.command()
@_settings_options
def check(config_file: Path | None, **flags: Any) -> None:
    """Probe the LLM server and the broker; print what is wrong and how to fix it."""
    from remotellm_connector.check import run_check
    from remotellm_connector.logs import configure_logging

    settings = _load(config_file, flags)
    configure_logging("console", "error")
    sys.exit(asyncio.run(run_check(settings)))


@main.command()
@_settings_options
@click.option(
    "--by", type=click.Choice(["user", "model", "day"]), default="user", show_default=True
)
@click.option("--since", default="30d", show_default=True, help="Start: 30d, 2026-12-01, …")
@click.option("--until", default=None, help="End (exclusive) [default: now].")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
)
def usage(
    config_file: Path | None,
    by: str,
    since: str,
    until: str | None,
    fmt: str,
    **flags: Any,
) -> None:
    """Who used this GPU: requests and tokens by user, model or day, with your policy."""
    from remotellm_connector.config import data_dir
    from remotellm_connector.owner import run_usage

    settings = _load(config_file, flags)
    db = data_dir(settings, os.environ) / "usage.db"
    click.echo(run_usage(settings, db, by, since, until, fmt))


@main.command()
@_settings_options
@click.option("--json", "as_json", is_flag=True, help="The streams as JSON.")
def status(config_file: Path | None, as_json: bool, **flags: Any) -> None:
    """The streams the running connector serves now: user, model, age, progress."""
    import json

    from remotellm_connector.owner import fetch_streams, format_streams

    settings = _load(config_file, flags)
    streams = fetch_streams(settings)
    click.echo(json.dumps(streams, indent=2) if as_json else format_streams(streams))
