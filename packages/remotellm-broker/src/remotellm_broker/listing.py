"""The body of ``GET /v1/models``, kept ready as bytes between changes.

A listing is read far more often than connectors change, and a broker may carry dozens of
connectors with thousands of models each, so a listing never builds or encodes the whole list
on the request path: the encoded body is cached until the registry's ``version`` moves, and
rebuilding it reuses the encoded object of every model whose merged view did not change (an
``ModelInfo`` is a frozen value, so it keys its own bytes). Rebuilding after one connector
changed therefore costs a join of cached pieces, not an encode of every model.

Each object is OpenAI's model object plus what clients of local servers read: the context
length (``context_length`` and vLLM's ``max_model_len``) and ``available`` (false while no
connector can serve the model right now: its LLM server is down, or its connector is
reconnecting; requests for it wait briefly and then get 503 with ``Retry-After``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from remotellm_broker.registry import Registry
from remotellm_protocol import ModelInfo

__all__ = ["ModelListing"]

_encoder = msgspec.json.Encoder()


class ModelListing:
    """The cached ``GET /v1/models`` body of one registry."""

    def __init__(self, registry: Registry[Any], created: int) -> None:
        self._registry = registry
        self._created = created
        self._objects: dict[ModelInfo, bytes] = {}
        self._body = b""
        self._version = -1

    def encode(self, info: ModelInfo) -> bytes:
        """One model object, as JSON."""
        obj: dict[str, object] = {
            "id": info.id,
            "object": "model",
            "created": self._created,
            "owned_by": info.owned_by or "remotellm",
            "available": info.available,
        }
        if info.context_length:
            obj["context_length"] = info.context_length
            obj["max_model_len"] = info.context_length
        return _encoder.encode(obj)

    def body(self) -> bytes:
        """The whole listing, as JSON (rebuilt only after the registry changed)."""
        registry = self._registry
        ids = registry.model_ids()  # forgets expired models first: may move the version
        if registry.version == self._version:
            return self._body
        old, new = self._objects, {}
        parts = []
        for model_id in ids:
            info = registry.model_info(model_id)
            encoded = old.get(info)
            if encoded is None:
                encoded = self.encode(info)
            new[info] = encoded
            parts.append(encoded)
        self._objects = new
        self._body = b'{"object":"list","data":[' + b",".join(parts) + b"]}"
        self._version = registry.version
        return self._body
