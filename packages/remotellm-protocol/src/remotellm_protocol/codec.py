"""Encode frames to msgpack bytes and decode them back, with one reusable encoder/decoder.

Decoding is the trust boundary: whatever the bytes are, the caller gets either a valid frame or
a ``RemoteProtocolError`` (never a msgspec error, a ``KeyError`` or a ``RecursionError``).
"""

import msgspec

from remotellm_protocol.codes import CloseCode
from remotellm_protocol.errors import RemoteProtocolError
from remotellm_protocol.frames import Frame
from remotellm_protocol.limits import DEFAULT_MAX_FRAME_BYTES

__all__ = ["decode", "encode"]

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Frame] = msgspec.msgpack.Decoder(Frame)


def encode(frame: Frame) -> bytes:
    """The msgpack bytes of ``frame``: the payload of one binary WebSocket message."""
    return _encoder.encode(frame)


def decode(data: bytes, *, max_size: int = DEFAULT_MAX_FRAME_BYTES) -> Frame:
    """The frame in ``data``, one binary WebSocket message.

    Raises ``RemoteProtocolError`` for input over ``max_size`` bytes (close code 1009) and for
    anything that is not exactly one valid frame (close code 1002).
    """
    if len(data) > max_size:
        raise RemoteProtocolError(
            f"frame of {len(data)} bytes exceeds the limit of {max_size}",
            CloseCode.MESSAGE_TOO_BIG,
        )
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise RemoteProtocolError(f"malformed frame: {exc}") from None
    except RecursionError:
        raise RemoteProtocolError("malformed frame: nested too deeply") from None
