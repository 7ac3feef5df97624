"""The body of ``GET /v1/models``, kept ready as bytes between changes.

A listing is read far more often than connectors change, and a broker may carry dozens of
connectors with thousands of models each, so the encoded body is cached until the registry's
``version`` moves (a connector connected, left or announced a different list). Rebuilding it
reads each model's merged view, which the registry keeps current at every change, and encodes
msgspec Structs in one call: about 10 ms for 9,000 models, once per change, never per
listing.

Each object is OpenAI's model object plus what clients of local servers read: the context
length (``context_length`` and vLLM's ``max_model_len``) and ``available`` (false while no
connector can serve the model right now: its LLM server is down, or its connector is
reconnecting; requests for it wait briefly and then get 503 with ``Retry-After``) and
``endpoints`` (the API paths its servers answer).
"""

from __future__ import annotations

from typing import Any

import msgspec

from remotellm_broker.registry import Registry
from remotellm_broker.surfaces import BASELINE_ENDPOINTS, KNOWN_ENDPOINTS
from remotellm_protocol import ModelInfo

__all__ = ["ModelListing"]

_encoder = msgspec.json.Encoder()


class _ModelObject(msgspec.Struct, omit_defaults=True):
    """OpenAI's model object, plus ``available`` and the context length (when known)."""

    id: str
    object: str
    created: int
    owned_by: str
    available: bool
    #: The API paths a request for this model can use: the OpenAI routes every server has,
    #: plus what a connector announced and the broker knows (never a connector's junk).
    endpoints: list[str]
    context_length: int | None = None
    max_model_len: int | None = None


class _ModelList(msgspec.Struct):
    object: str
    data: list[_ModelObject]


class ModelListing:
    """The cached ``GET /v1/models`` body of one registry."""

    def __init__(self, registry: Registry[Any], created: int) -> None:
        self._registry = registry
        self._created = created
        self._body = b""
        self._version = -1

    def _object(self, info: ModelInfo) -> _ModelObject:
        return _ModelObject(
            id=info.id,
            object="model",
            created=self._created,
            owned_by=info.owned_by or "remotellm",
            available=info.available,
            endpoints=sorted(
                {*BASELINE_ENDPOINTS, *(e for e in info.endpoints or () if e in KNOWN_ENDPOINTS)}
            ),
            context_length=info.context_length or None,
            max_model_len=info.context_length or None,
        )

    def encode(self, info: ModelInfo) -> bytes:
        """One model object, as JSON."""
        return _encoder.encode(self._object(info))

    def body(self) -> bytes:
        """The whole listing, as JSON (rebuilt only after the registry changed)."""
        registry = self._registry
        ids = registry.model_ids()  # forgets expired models first: may move the version
        if registry.version != self._version:
            info = registry.model_info
            data = [self._object(info(model_id)) for model_id in ids]
            self._body = _encoder.encode(_ModelList(object="list", data=data))
            self._version = registry.version
        return self._body
