"""Which connector holds each response of the Responses API, and whose response it is.

A model server that stores responses (``store: true``) answers ``GET /v1/responses/{id}``,
``previous_response_id`` and their siblings only for the responses *it* made. The broker
therefore notes, for every ``POST /v1/responses`` it relays, the response id (read from the
first bytes of the answer: the top-level ``"id"`` of a JSON response, or of the
``response.created`` event that opens a stream), the user, the model and the connector; the
requests by id then go to that connector, and only for that user: another user's key gets
404, as if the id did not exist, and cannot continue someone else's conversation with
``previous_response_id``.

Bounded (``capacity`` ids, oldest forgotten first) and in memory: after a broker restart the
ids made before it are unknown (404); a stateless client (``store: false``, the whole
conversation in ``input``) never needs this.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Final, NamedTuple

__all__ = ["StoredResponse", "StoredResponses", "sniff_response_id"]

#: The first ``"id": "…"`` of an answer: the response's own (it opens the object or event).
_ID = re.compile(rb'"id"\s*:\s*"([A-Za-z0-9_-]{1,128})"')
_SNIFF_BYTES: Final = 4096


def sniff_response_id(first_chunk: bytes) -> str | None:
    """The response id in the first bytes of a Responses API answer, if it is there."""
    match = _ID.search(first_chunk, 0, _SNIFF_BYTES)
    return match.group(1).decode() if match else None


class StoredResponse(NamedTuple):
    user_id: str
    model: str
    connector: str


class StoredResponses:
    """Response id → where it lives and whose it is; the ``capacity`` most recent."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, response_id: str, entry: StoredResponse) -> None:
        self._entries[response_id] = entry
        self._entries.move_to_end(response_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def lookup(self, response_id: str) -> StoredResponse | None:
        return self._entries.get(response_id)

    def forget(self, response_id: str) -> None:
        self._entries.pop(response_id, None)
