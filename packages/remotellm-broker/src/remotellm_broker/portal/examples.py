"""Which model id the key page's examples use.

The examples are meant to be pasted into a shell or a Python file, so a model id only goes in
when it is plainly safe there; anything odd falls back to a placeholder the user replaces.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

__all__ = ["PLACEHOLDER_MODEL", "ModelIds", "example_model", "listed_models"]

#: Lists the models connectors serve right now (the app passes it to ``add_portal``).
ModelIds = Callable[[], Sequence[str]]

PLACEHOLDER_MODEL = "MODEL_ID"
MAX_LISTED = 20
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")


def _safe(models: Sequence[str]) -> list[str]:
    return sorted({m for m in models if _SAFE_ID.fullmatch(m)})


def example_model(models: Sequence[str]) -> str:
    safe = _safe(models)
    return safe[0] if safe else PLACEHOLDER_MODEL


def listed_models(models: Sequence[str]) -> list[str]:
    return _safe(models)[:MAX_LISTED]
