"""Comparing a relayed llama-server answer with a direct one, byte for byte.

llama.cpp answers the same seeded request with the same tokens; only the fields that change per
response differ (ids, timestamps, timings, cache counters), so both sides are normalized first.
"""

import re

__all__ = ["normalized"]

_PER_RESPONSE = [
    (re.compile(rb'"(id|item_id|call_id)":"[^"]*"'), rb'"\1":"X"'),
    (re.compile(rb'"(created|created_at|completed_at)":\d+'), rb'"\1":0'),
    (re.compile(rb'"timings":\{[^}]*\}'), b'"timings":{}'),
    (re.compile(rb'"(cached_tokens|cache_read_input_tokens)":\d+'), rb'"\1":0'),
]


def normalized(body: bytes) -> bytes:
    """``body`` with every per-response field replaced by a fixed value."""
    for pattern, replacement in _PER_RESPONSE:
        body = pattern.sub(replacement, body)
    return body
