"""Taking a connector slot for a request, waiting in the fair queue when none is free.

The router decides synchronously; this is the asynchronous side: a queued request waits on a
future that the router's ``grant`` callback resolves when a slot frees up, and gives up on
its wait (503 with ``Retry-After``), on its deadline, when the broker cuts it (user blocked,
shutdown) or when its client leaves. A slot granted in the same instant as the request gave
up is handed straight back, so no slot ever leaks.

How long it waits depends on why: when connectors serving the model are only busy, the queue
timeout; when none can take it at all (none attached after a blip, the only one draining,
its LLM server down) the shorter attach wait, because a reconnecting connector or a
restarting server usually returns within seconds and is then served at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from remotellm_broker.exchange import CutError, Exchange
from remotellm_broker.link import ConnectorLink
from remotellm_broker.openai_errors import (
    OpenAIError,
    from_cancel,
    model_not_found,
    retry_after_header,
)
from remotellm_broker.router import Waiter
from remotellm_broker.state import BrokerState

__all__ = ["UNAVAILABLE_RETRY_AFTER_S", "acquire_slot"]

#: The ``Retry-After`` of a model nothing serves now: about a connector's reconnect delay.
UNAVAILABLE_RETRY_AFTER_S = 2.0


async def acquire_slot(
    state: BrokerState,
    ex: Exchange,
    tried: Sequence[ConnectorLink],
    remaining_s: float,
    endpoint: str | None = None,
) -> ConnectorLink:
    """A slot on a connector serving ``ex.model`` (through ``endpoint``, when the request
    needs one not every server has) other than ``tried``; ``OpenAIError`` if
    none comes within the queue timeout (or ``remaining_s`` of the request's deadline)."""
    assert ex.model is not None
    assert ex.key_id is not None
    if ex.cut_reason is not None:
        raise from_cancel(ex.cut_reason)
    router = state.router
    link = router.pick(ex.model, tried, endpoint)
    if link is not None:
        return link
    future: asyncio.Future[ConnectorLink] = asyncio.get_running_loop().create_future()

    def grant(conn: ConnectorLink) -> bool:
        if future.done():
            return False
        future.set_result(conn)
        return True

    busy = router.has_candidate(ex.model, tried, endpoint)
    waiter = Waiter(ex.model, ex.key_id, grant, tuple(tried), endpoint)
    if not router.enqueue(waiter):
        raise OpenAIError(
            503,
            "Too many requests are waiting for this model; try again later.",
            code="queue_full",
            headers=retry_after_header(1.0),
        )
    ex.waiting = future
    state.metrics.queued.inc()
    queue_timeout = state.settings.queue_timeout_s
    wait_s = queue_timeout if busy else state.settings.attach_wait_s
    try:
        async with asyncio.timeout(min(wait_s, remaining_s)):
            return await future
    except BaseException as exc:
        router.withdraw(waiter)
        if future.done() and not future.cancelled() and future.exception() is None:
            router.release(future.result())  # granted just as we gave up: give it back
        if isinstance(exc, TimeoutError) and not busy:
            error = _unavailable(state, ex.model)
            if error.status == 404:
                ex.model = None  # a model that does not exist is not recorded as one
            raise error from None
        if isinstance(exc, TimeoutError):
            raise OpenAIError(
                503,
                "Every connector serving this model is busy; try again later.",
                code="no_capacity",
                headers=retry_after_header(max(1.0, queue_timeout / 10)),
            ) from None
        if isinstance(exc, CutError):
            raise from_cancel(exc.reason) from None
        raise
    finally:
        ex.waiting = None
        state.metrics.queued.dec()


def _unavailable(state: BrokerState, model: str) -> OpenAIError:
    """503 for a known model that nothing could serve within the attach wait (404 for one
    that no connector brought while a newly started broker waited for them)."""
    if not state.registry.known(model):
        return model_not_found(model)
    shown = model if len(model) <= 100 else model[:100] + "…"
    if state.registry.attached(model):
        why = f"The model server behind '{shown}' is not answering right now"
    else:
        why = f"No connector serving '{shown}' is connected right now"
    return OpenAIError(
        503,
        f"{why}; try again shortly.",
        code="model_unavailable",
        headers=retry_after_header(UNAVAILABLE_RETRY_AFTER_S),
    )
