"""Version negotiation: the WebSocket subprotocol names the wire version.

The connector offers every version it speaks in ``Sec-WebSocket-Protocol``; the broker picks
the highest one it also speaks, or refuses the upgrade when there is none. So a connector one
release older or newer than the broker keeps working as long as they share a version.
"""

from collections.abc import Iterable

__all__ = [
    "SUBPROTOCOLS",
    "SUBPROTOCOL_PREFIX",
    "SUPPORTED_VERSIONS",
    "choose_subprotocol",
    "parse_subprotocol",
    "subprotocol",
]

SUBPROTOCOL_PREFIX = "remotellm.v"

#: Wire versions this release speaks, newest first.
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)


def subprotocol(version: int) -> str:
    """The WebSocket subprotocol name of a wire version: ``remotellm.v1`` for 1."""
    return f"{SUBPROTOCOL_PREFIX}{version}"


def parse_subprotocol(name: str) -> int | None:
    """The wire version a subprotocol name stands for, or None if it is not one of ours."""
    if not name.startswith(SUBPROTOCOL_PREFIX):
        return None
    digits = name[len(SUBPROTOCOL_PREFIX) :]
    if not digits.isascii() or not digits.isdigit() or digits.startswith("0"):
        return None
    return int(digits)


def choose_subprotocol(
    offered: Iterable[str], supported: Iterable[int] = SUPPORTED_VERSIONS
) -> str | None:
    """The subprotocol for the highest version both sides speak, or None."""
    ours = set(supported)
    common = {v for v in map(parse_subprotocol, offered) if v is not None and v in ours}
    return subprotocol(max(common)) if common else None


SUBPROTOCOLS: tuple[str, ...] = tuple(subprotocol(v) for v in SUPPORTED_VERSIONS)
