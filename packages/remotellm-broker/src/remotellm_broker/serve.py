"""``remotellm-broker serve``: run the broker until SIGTERM/SIGINT, then drain and exit.

Settings come from ``config.load_settings`` (flags > ``REMOTELLM_BROKER_*`` > ``--config``
file > defaults). With nothing configured the broker still starts, on loopback, and prints
exactly how to create an API key and attach a connector, generating a connector token when
none exists yet (it is stored hashed in the users file and printed this once).

Both listeners set ``SO_REUSEPORT``, so a new broker process can start on the same ports while
the old one drains: a restart serves new requests as soon as the new process listens (see
docs/deploy: two instances of the systemd template unit take turns).

Shutdown, in order: readiness goes false, the listening sockets close, every connector gets
``goaway``, in-flight requests have ``shutdown_timeout`` seconds to finish, the rest end with
an error, connectors are closed with 1001, the health server stops last. A second signal
exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from aiohttp import web

from remotellm_broker import eventloop
from remotellm_broker.app import BROKER, create_app, create_health_app, drain
from remotellm_broker.config import BrokerSettings, ConfigError, load_settings
from remotellm_broker.logs import configure_logging, get_logger
from remotellm_broker.usagedb import UsageStoreError
from remotellm_broker.users import UserStore, UserStoreError

__all__ = ["BindError", "Bound", "run_broker", "sd_notify", "serve"]

log = get_logger("remotellm_broker.serve")

#: Request line and header size limits: generous, so odd-but-legal headers reach the app
#: (and get an OpenAI-shaped answer) instead of the HTTP parser's plain-text 400.
_MAX_HEADER_BYTES = 32 * 1024


class BindError(OSError):
    """A listening address could not be taken (in use, not ours, not permitted)."""

    def __init__(self, what: str, host: str, port: int, flag: str, cause: OSError) -> None:
        shown = f"[{host}]" if ":" in host else host
        reason = os.strerror(cause.errno) if cause.errno else str(cause)
        super().__init__(
            f"cannot listen for the {what} on {shown}:{port} ({reason}); "
            f"choose another port with {flag}"
        )


def sd_notify(message: bytes) -> None:
    """Tell systemd about our state (``Type=notify``: ``READY=1`` once listening, so a unit
    that takes over from a draining one is "started" only when it serves); a no-op outside
    systemd."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address.startswith(("/", "@")):
        return
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message, address)


async def _listen(runner: web.AppRunner, what: str, host: str, port: int, flag: str) -> None:
    # SO_REUSEPORT: a new broker process binds the same ports while the old one drains, so a
    # restart serves new requests at once (the kernel only shares a port between sockets of
    # the same user that all set the option; anything else holding it is still "in use").
    try:
        await web.TCPSite(runner, host, port, reuse_port=True).start()
    except OSError as exc:
        raise BindError(what, host, port, flag, exc) from None


@dataclass(frozen=True)
class Bound:
    """Where the broker actually listens (ports may have been 0)."""

    host: str
    port: int
    health_host: str
    health_port: int
    #: The running public app (its state is ``app[BROKER]``).
    app: web.Application = field(repr=False, compare=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


async def run_broker(
    settings: BrokerSettings,
    store: UserStore,
    *,
    stop: asyncio.Event,
    started: Callable[[Bound], None] | None = None,
    **app_options: Any,
) -> None:
    """Serve until ``stop`` is set, then shut down gracefully."""
    app = create_app(settings, store, **app_options)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=settings.shutdown_timeout + 5.0,
        max_line_size=_MAX_HEADER_BYTES,
        max_field_size=_MAX_HEADER_BYTES,
        # aiohttp closes a connection whose next request has not fully arrived this long
        # after the connection opened or the last response ended: the header timeout (and
        # the idle keep-alive timeout). Proven by tests/test_read_timeouts.py.
        keepalive_timeout=settings.header_timeout_s,
    )
    health_runner = web.AppRunner(create_health_app(app), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await health_runner.setup()
    try:
        await _listen(runner, "API", settings.host, settings.port, "--port")
        await _listen(
            health_runner,
            "health server",
            settings.health_host,
            settings.health_port,
            "--health-port",
        )
    except BindError:
        await runner.cleanup()  # nothing was served: no drain, no shutdown log lines
        await health_runner.cleanup()
        raise
    try:
        bound = Bound(
            settings.host,
            int(runner.addresses[0][1]),
            settings.health_host,
            int(health_runner.addresses[0][1]),
            app,
        )
        log.info(
            "broker_listening", url=bound.url, health=f"{bound.health_host}:{bound.health_port}"
        )
        if started is not None:
            started(bound)
        sd_notify(b"READY=1")
        # Everything alive now (modules, app, settings) lives as long as the process: keep it
        # out of the collector's generations, so each collection only walks request garbage.
        gc.collect()
        gc.freeze()
        await stop.wait()
    finally:
        sd_notify(b"STOPPING=1")
        state = app.get(BROKER)
        if state is not None:
            state.ready = False
            for site in list(runner.sites):
                # No new connections: first, so that a new process sharing the port
                # (SO_REUSEPORT) gets them rather than this one answering "shutting down".
                await site.stop()
            state.begin_shutdown()  # goaway to connectors, queued requests end
            await drain(state, settings.shutdown_timeout)
        await runner.cleanup()
        await health_runner.cleanup()
        log.info("broker_stopped")


def _hints(settings: BrokerSettings, store: UserStore, bound: Bound) -> list[str]:
    """What an operator needs to do next, when keys or connector tokens are missing."""
    users_file = settings.users_file
    lines: list[str] = []
    if not store.list_users() and not settings.api_keys:
        lines += [
            "No API users yet. Create one (prints the key):",
            f"  remotellm-broker users add alice --users-file {users_file}",
            f"Then: curl {bound.url}/v1/models -H 'Authorization: Bearer sk-...'",
            "",
        ]
    if not store.list_connector_tokens() and not settings.connector_tokens:
        token = store.create_connector_token("connector")
        base = settings.public_url or bound.url
        relay = base.replace("https://", "wss://", 1).replace("http://", "ws://", 1).rstrip("/")
        lines += [
            "No connector token existed, so one was created (named 'connector', shown once).",
            "On the machine with the GPU, next to the LLM server, run:",
            f"  REMOTELLM_CONNECTOR_TOKEN={token} remotellm-connector run "
            f"--broker-url {relay}/v1/relay",
            "",
        ]
    return lines


def _overrides(flags: dict[str, Any]) -> dict[str, object]:
    return {name: value for name, value in flags.items() if value is not None}


@click.command()
@click.option("--host", help="API address [default: 127.0.0.1].")
@click.option("--port", type=int, help="API port [default: 8000].")
@click.option("--health-host", help="Health/metrics address [default: 127.0.0.1].")
@click.option("--health-port", type=int, help="Health/metrics port [default: 8080].")
@click.option("--users-file", help="The users file [default: ./users.yaml].")
@click.option("--public-url", help="The URL users reach the broker at (portal links, hints).")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="REMOTELLM_BROKER_CONFIG",
    help="YAML settings file.",
)
@click.option("--rate-limit-rpm", type=int, help="Requests per minute per user, 0 = off [600].")
@click.option("--rate-limit-burst", type=int, help="Burst of requests per user, 0 = off [100].")
@click.option("--max-streams-per-key", type=int, help="Concurrent requests per user, 0 = off [64].")
@click.option(
    "--portal-allowed-groups",
    help="GitLab groups (full paths, comma-separated; subgroups included) whose members get keys.",
)
@click.option(
    "--portal-allowed-users",
    help="GitLab users who get keys: gitlab:ID or username, comma-separated.",
)
@click.option(
    "--portal-allow-any-gitlab-user",
    is_flag=True,
    default=None,
    help="Give a key to every account of the GitLab (gitlab.com: anyone). Off by default.",
)
@click.option(
    "--max-links-per-token", type=int, help="Simultaneous relay links per connector token [8]."
)
@click.option(
    "--max-models-per-connector", type=int, help="Models one connector may announce [256]."
)
@click.option(
    "--model-announcements-per-minute",
    type=int,
    help="Model lists (hello + models frames) per connector token per minute [30].",
)
@click.option(
    "--max-body-bytes-in-flight",
    type=int,
    help="Request-body bytes held at once, all requests; then 503 [268435456 = 256 MiB].",
)
@click.option(
    "--header-timeout-s",
    type=float,
    help="Seconds for a connection to send a request's headers (and idle keep-alive) [30].",
)
@click.option("--body-timeout-s", type=float, help="Seconds to receive a whole request body [60].")
@click.option(
    "--cors-allow-origins",
    help="Web origins whose pages may call the API, comma-separated, or * [default: none].",
)
@click.option(
    "--event-loop",
    type=click.Choice(["auto", "asyncio", "uvloop"]),
    help="Event loop [default: auto: uvloop when installed, else asyncio].",
)
def serve(config_file: Path | None, **flags: Any) -> None:
    """Run the broker: the OpenAI API, the relay for connectors, the portal."""
    try:
        settings = load_settings(config_file, os.environ, _overrides(flags))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    secrets = [*settings.api_keys, *settings.connector_tokens]  # never shown in a log line
    secrets += [settings.gitlab_client_secret or "", settings.session_secret or ""]
    configure_logging(settings.log_format, settings.log_level, secrets=secrets)
    try:
        store = UserStore(
            Path(settings.users_file),
            env_api_keys=settings.api_keys,
            env_connector_tokens=settings.connector_tokens,
        )
    except UserStoreError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        eventloop.run(_main(settings, store), settings.event_loop, log)
    except (BindError, UsageStoreError, eventloop.EventLoopError) as exc:
        raise click.ClickException(str(exc)) from None


async def _main(settings: BrokerSettings, store: UserStore) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second_signal_exiting", signal=signal.Signals(signum).name)
            os._exit(1)
        log.info("signal_received_draining", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)

    def started(bound: Bound) -> None:
        try:
            lines = _hints(settings, store, bound)
        except UserStoreError as exc:
            lines = [f"Could not create a connector token: {exc}"]
        click.echo(f"remotellm-broker serving the OpenAI API at {bound.url}/v1")
        for line in lines:
            click.echo(line)

    await run_broker(settings, store, stop=stop, started=started)
