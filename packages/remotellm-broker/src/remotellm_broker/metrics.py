"""Prometheus metrics of the broker, in a registry of its own (served on the health port).

The hot path never touches a metric per chunk or per token: a request accumulates its byte
and token counts locally and reports them once, when it ends (``request_done``). Labelled
children are looked up once and cached, so even that is a dict lookup, not a ``labels()``
call with its lock. Label values come from our own vocabulary (known model ids, status
codes, user ids from the store), never from raw client input, so cardinality stays bounded.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from remotellm_protocol import Usage

__all__ = ["Metrics"]

_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_GAP_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5)
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """Every broker metric, registered in ``self.registry``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._requests = Counter(
            "remotellm_broker_requests",
            "API requests by model and final status (499: the client went away).",
            ["model", "status"],
            registry=r,
        )
        self._ttft = Histogram(
            "remotellm_broker_ttft_seconds",
            "Time from request arrival to the first response byte from the model.",
            ["model"],
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self._duration = Histogram(
            "remotellm_broker_request_duration_seconds",
            "Time from request arrival to the end of its response.",
            ["model"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.active_streams = Gauge(
            "remotellm_broker_active_streams", "Requests being relayed right now.", registry=r
        )
        self.queued = Gauge(
            "remotellm_broker_queued_requests",
            "Requests waiting for a free connector slot.",
            registry=r,
        )
        self.connectors = Gauge(
            "remotellm_broker_connectors_connected", "Connectors connected now.", registry=r
        )
        self.rate_limited = Counter(
            "remotellm_broker_rate_limited",
            "Requests refused with 429 by the broker's per-key limits.",
            ["limit"],
            registry=r,
        )
        self.rate_limited_requests = self.rate_limited.labels("requests")
        self.rate_limited_streams = self.rate_limited.labels("streams")
        self._bytes = Counter(
            "remotellm_broker_relayed_bytes",
            "Response body bytes relayed from connectors to clients.",
            registry=r,
        )
        tokens = Counter(
            "remotellm_broker_tokens",
            "Tokens relayed, as reported by the model servers.",
            ["kind"],
            registry=r,
        )
        self._prompt_tokens = tokens.labels("prompt")
        self._completion_tokens = tokens.labels("completion")
        self._user_tokens_family = Counter(
            "remotellm_broker_user_tokens",
            "Tokens (prompt + completion) used per user id.",
            ["user"],
            registry=r,
        )
        self.usage_records_written = Counter(
            "remotellm_broker_usage_records_written",
            "Usage records committed to the usage database.",
            registry=r,
        )
        self.usage_records_dropped = Counter(
            "remotellm_broker_usage_records_dropped",
            "Usage records lost: the write queue was full, or the database could not be "
            "written (disk full, the usage_max_db_mb cap).",
            ["reason"],
            registry=r,
        )
        self._inter_token = Histogram(
            "remotellm_broker_inter_token_seconds",
            "Mean gap between completion tokens of a request, after its first token "
            "((duration - TTFT) / (completion tokens - 1)), one observation per request.",
            ["model"],
            buckets=_GAP_BUCKETS,
            registry=r,
        )
        self._model_connectors = Gauge(
            "remotellm_broker_model_connectors",
            "Connectors serving each model now (0: a model that was served and is not now).",
            ["model"],
            registry=r,
        )
        self._served: set[str] = set()
        self._inter_token_children: dict[str, Histogram] = {}
        self._children: dict[tuple[str, str], Counter] = {}
        self._ttft_children: dict[str, Histogram] = {}
        self._duration_children: dict[str, Histogram] = {}
        self._user_tokens: dict[str, Counter] = {}

    def request_done(
        self,
        *,
        model: str,
        status: int,
        duration_s: float,
        ttft_s: float | None = None,
        nbytes: int = 0,
        usage: Usage | None = None,
        user_id: str | None = None,
    ) -> None:
        """Record one finished request (the only per-request metric call)."""
        key = (model, str(status))
        counter = self._children.get(key)
        if counter is None:
            counter = self._children[key] = self._requests.labels(model, str(status))
        counter.inc()
        self._histogram(self._duration, self._duration_children, model).observe(duration_s)
        if ttft_s is not None:
            self._histogram(self._ttft, self._ttft_children, model).observe(ttft_s)
        if nbytes:
            self._bytes.inc(nbytes)
        if usage is not None:
            self._prompt_tokens.inc(usage.prompt_tokens)
            self._completion_tokens.inc(usage.completion_tokens)
            total = usage.total_tokens or usage.prompt_tokens + usage.completion_tokens
            if user_id is not None and total:
                child = self._user_tokens.get(user_id)
                if child is None:
                    child = self._user_tokens[user_id] = self._user_tokens_family.labels(user_id)
                child.inc(total)

    def inter_token_gap(self, model: str, gap_s: float) -> None:
        """One request's mean gap between completion tokens (``metering.UsageBook.record``)."""
        self._histogram(self._inter_token, self._inter_token_children, model).observe(gap_s)

    def models_served(self, counts: dict[str, int]) -> None:
        """Connectors per model now; models served before and not now drop to 0."""
        for model in self._served - counts.keys():
            self._model_connectors.labels(model).set(0)
        for model, count in counts.items():
            self._model_connectors.labels(model).set(count)
        self._served |= counts.keys()

    @staticmethod
    def _histogram(family: Histogram, cache: dict[str, Histogram], model: str) -> Histogram:
        child = cache.get(model)
        if child is None:
            child = cache[model] = family.labels(model)
        return child

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
