"""Exceptions raised by remotellm-protocol.

::

    ProtocolError                 base class; carries the CloseCode to close the relay with
    ├── LocalProtocolError        this side misused the API (sent a frame the state forbids);
    │                             a bug in the caller, never caused by the peer
    └── RemoteProtocolError       the peer broke the protocol: malformed bytes, unknown tag,
                                  frame out of order, data beyond the window, ...; close the
                                  connection with ``error.close_code``

Nothing else escapes the package: decoding errors from msgspec (including ``RecursionError``
on absurdly nested input) are converted to ``RemoteProtocolError`` at the boundary.
"""

from remotellm_protocol.codes import CloseCode

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ProtocolError(Exception):
    """A violation of the relay protocol."""

    def __init__(self, message: str, close_code: CloseCode = CloseCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.close_code = close_code


class LocalProtocolError(ProtocolError):
    """This side tried to do something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids."""
