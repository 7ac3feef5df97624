"""Prometheus metrics of one connector, in their own ``CollectorRegistry``.

A private registry (not the global default) keeps test runs and embedding processes from
colliding. Everything is updated per request or per connection, never per chunk: a stream adds
its bytes and tokens once, when it ends.
"""

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from remotellm_connector.__about__ import __version__
from remotellm_protocol import ErrorCode

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """Every metric the connector exports (the list is in docs/connector.md)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        p = "remotellm_connector_"
        Info(p + "build", "Connector version.", registry=r).info({"version": __version__})
        self.relay_connected = Gauge(
            p + "relay_connected", "1 while the relay to the broker is up.", registry=r
        )
        self.reconnects = Counter(
            p + "reconnects", "Relay connections established after the first.", registry=r
        )
        self.connect_failures = Counter(
            p + "connect_failures", "Failed attempts to connect to the broker.", registry=r
        )
        self.alerting = Gauge(
            p + "alerting", "1 after 5 failed connection attempts in a row.", registry=r
        )
        self.llm_up = Gauge(p + "llm_up", "1 while the LLM server lists its models.", registry=r)
        self.models = Gauge(p + "models", "Models announced to the broker.", registry=r)
        self.active_streams = Gauge(p + "active_streams", "Streams in progress.", registry=r)
        self.requests = Counter(
            p + "requests",
            "Streams served, by model and outcome (ok, http_4xx, http_5xx, or an error code).",
            ["model", "outcome"],
            registry=r,
        )
        self.ttfb = Histogram(
            p + "ttfb_seconds",
            "From open to the first response byte relayed.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            p + "request_duration_seconds",
            "From open to end.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.bytes = Counter(p + "relayed_bytes", "Response bytes relayed.", registry=r)
        self.tokens = Counter(
            p + "tokens", "Tokens reported by the LLM, by kind.", ["kind"], registry=r
        )
        self.upstream_errors = Counter(
            p + "upstream_errors",
            "Failures talking to the LLM server, by error code.",
            ["code"],
            registry=r,
        )
        self.usage_records_dropped = Counter(
            p + "usage_records_dropped",
            "Usage records lost: the write queue was full, or the database could not be written.",
            ["reason"],
            registry=r,
        )
        self._prompt = self.tokens.labels("prompt")
        self._completion = self.tokens.labels("completion")
        for code in (
            ErrorCode.UPSTREAM_UNREACHABLE,
            ErrorCode.UPSTREAM_TIMEOUT,
            ErrorCode.UPSTREAM_INTERRUPTED,
        ):
            self.upstream_errors.labels(code.name.lower())

    def stream_done(
        self,
        *,
        model: str,
        outcome: str,
        ttfb: float | None,
        duration: float,
        nbytes: int,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        """Record one finished stream."""
        self.requests.labels(model, outcome).inc()
        if ttfb is not None:
            self.ttfb.observe(ttfb)
        self.duration.observe(duration)
        if nbytes:
            self.bytes.inc(nbytes)
        if prompt_tokens:
            self._prompt.inc(prompt_tokens)
        if completion_tokens:
            self._completion.inc(completion_tokens)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
