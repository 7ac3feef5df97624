"""The aiohttp side of ``stored``: the broker's ``StoredResponses`` and the two questions the
Responses routes ask it (where does this id live, and is it yours; note this new id)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from remotellm_broker.exchange import Exchange
from remotellm_broker.openai_errors import OpenAIError
from remotellm_broker.stored import StoredResponse, StoredResponses, sniff_response_id
from remotellm_broker.users import KeyIdentity

__all__ = ["STORED", "remembering", "stored_for"]

#: Where each Responses API response made through this broker lives.
STORED = web.AppKey("stored_responses", StoredResponses)


def stored_for(
    request: web.Request, identity: KeyIdentity, response_id: str, param: str | None
) -> StoredResponse | None:
    """Where ``response_id`` lives; None when this broker does not know it. A response of
    another user is reported as not found: its id must not open someone else's data."""
    entry = request.app[STORED].lookup(response_id)
    if entry is not None and entry.user_id != identity.user_id:
        shown = response_id[:128]
        raise OpenAIError(
            404, f"Response with id '{shown}' not found.", code="response_not_found", param=param
        )
    return entry


def remembering(
    request: web.Request, identity: KeyIdentity, ex: Exchange
) -> Callable[[bytes], None]:
    """The hook that notes the id of a response as its first bytes pass."""
    stored = request.app[STORED]

    def remember(first_chunk: bytes) -> None:
        response_id = sniff_response_id(first_chunk)
        if response_id is not None and ex.model is not None and ex.connector is not None:
            stored.remember(response_id, StoredResponse(identity.user_id, ex.model, ex.connector))

    return remember
