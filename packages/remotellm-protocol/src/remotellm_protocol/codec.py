"""Encode frames to msgpack bytes and decode them back, with one reusable encoder/decoder.

Decoding is the trust boundary: whatever the bytes are, the caller gets either a valid frame or
a ``RemoteProtocolError`` (never a msgspec error, a ``UnicodeDecodeError`` or a
``RecursionError``). Two hard limits apply: the frame size, checked before msgspec sees the
input, and the nesting depth (``MAX_NESTING_DEPTH``), checked after it.
"""

import msgspec

from remotellm_protocol.codes import CloseCode
from remotellm_protocol.errors import LocalProtocolError, RemoteProtocolError
from remotellm_protocol.frames import Body, Data, Frame, Open
from remotellm_protocol.limits import DEFAULT_MAX_FRAME_BYTES, MAX_NESTING_DEPTH

__all__ = ["decode", "encode"]

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Frame] = msgspec.msgpack.Decoder(Frame)


def encode(frame: Frame) -> bytes:
    """The msgpack bytes of ``frame``: the payload of one binary WebSocket message.

    Raises ``LocalProtocolError`` for a value msgpack cannot carry (an int beyond 64 bits, an
    object of an unsupported type, a list that contains itself): a bug in the caller,
    reported like every other misuse. Field types are not checked here; the peer's decoder
    checks them.
    """
    try:
        return _encoder.encode(frame)
    except (TypeError, OverflowError, RecursionError, msgspec.EncodeError) as exc:
        raise LocalProtocolError(f"cannot encode {type(frame).__name__}: {exc}") from exc


def decode(data: bytes, *, max_size: int = DEFAULT_MAX_FRAME_BYTES) -> Frame:
    """The frame in ``data``, one binary WebSocket message.

    Raises ``RemoteProtocolError`` for input over ``max_size`` bytes (close code 1009) and for
    anything that is not exactly one valid frame (close code 1002), including maps and arrays
    nested deeper than ``MAX_NESTING_DEPTH``.
    """
    if len(data) > max_size:
        raise RemoteProtocolError(
            f"frame of {len(data)} bytes exceeds the limit of {max_size}",
            CloseCode.MESSAGE_TOO_BIG,
        )
    try:
        frame = _decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        # msgspec raises UnicodeDecodeError, not DecodeError, for a str that is not UTF-8,
        # and RecursionError for nesting beyond the interpreter's recursion limit.
        raise RemoteProtocolError(f"malformed frame: {exc}") from None
    # Each level of nesting takes at least one byte outside the bin payload, so a frame that
    # is mostly payload (every data and body frame) needs no walk: the hot path stays cheap.
    if len(data) - _payload_size(frame) > MAX_NESTING_DEPTH and _too_deep(data, MAX_NESTING_DEPTH):
        raise RemoteProtocolError(f"malformed frame: nested deeper than {MAX_NESTING_DEPTH}")
    return frame


def _payload_size(frame: Frame) -> int:
    if isinstance(frame, Data | Body):
        return len(frame.chunk)
    if isinstance(frame, Open):
        return len(frame.body)
    return 0


# -- nesting depth -------------------------------------------------------------------------
#
# How to skip each msgpack opcode: (bytes of the length prefix, fixed payload bytes, values per
# length unit, length carried in the opcode itself). A non-zero third column marks a
# container: arrays hold ``length`` values, maps ``2 * length`` (keys and values).
# 0xc1 is never used: None.
_Rule = tuple[int, int, int, int]
_SPECIAL: dict[int, _Rule] = {
    0xC0: (0, 0, 0, 0), 0xC2: (0, 0, 0, 0), 0xC3: (0, 0, 0, 0),  # nil, false, true
    0xC4: (1, 0, 0, 0), 0xC5: (2, 0, 0, 0), 0xC6: (4, 0, 0, 0),  # bin 8/16/32
    0xC7: (1, 1, 0, 0), 0xC8: (2, 1, 0, 0), 0xC9: (4, 1, 0, 0),  # ext 8/16/32 (+ type)
    0xCA: (0, 4, 0, 0), 0xCB: (0, 8, 0, 0),  # float 32/64
    0xCC: (0, 1, 0, 0), 0xCD: (0, 2, 0, 0), 0xCE: (0, 4, 0, 0), 0xCF: (0, 8, 0, 0),  # uint
    0xD0: (0, 1, 0, 0), 0xD1: (0, 2, 0, 0), 0xD2: (0, 4, 0, 0), 0xD3: (0, 8, 0, 0),  # int
    0xD4: (0, 2, 0, 0), 0xD5: (0, 3, 0, 0), 0xD6: (0, 5, 0, 0), 0xD7: (0, 9, 0, 0),  # fixext
    0xD8: (0, 17, 0, 0),
    0xD9: (1, 0, 0, 0), 0xDA: (2, 0, 0, 0), 0xDB: (4, 0, 0, 0),  # str 8/16/32
    0xDC: (2, 0, 1, 0), 0xDD: (4, 0, 1, 0),  # array 16/32
    0xDE: (2, 0, 2, 0), 0xDF: (4, 0, 2, 0),  # map 16/32
}  # fmt: skip


def _rule(op: int) -> _Rule | None:
    if op <= 0x7F or op >= 0xE0:  # positive and negative fixint
        return (0, 0, 0, 0)
    if op <= 0x8F:  # fixmap
        return (0, 0, 2, op & 0x0F)
    if op <= 0x9F:  # fixarray
        return (0, 0, 1, op & 0x0F)
    if op <= 0xBF:  # fixstr
        return (0, 0, 0, op & 0x1F)
    return _SPECIAL.get(op)


_RULES: tuple[_Rule | None, ...] = tuple(_rule(op) for op in range(256))

#: Every byte that cannot open a map or an array (deleted to count the ones that can).
_NOT_CONTAINER = bytes(op for op, rule in enumerate(_RULES) if rule is None or not rule[2])


def _too_deep(data: bytes, limit: int) -> bool:
    """Whether the msgpack value at the start of ``data`` nests deeper than ``limit``.

    Walks the opcodes iteratively (no recursion, payloads skipped in O(1)), and only when the
    input holds more container opcodes than ``limit`` (one ``bytes.translate`` tells).
    Malformed input yields False: only input msgspec has decoded comes here anyway.
    """
    if len(data.translate(None, _NOT_CONTAINER)) <= limit:
        return False
    pending: list[int] = []  # values still to read in each open container
    pos, end = 0, len(data)
    while pos < end:
        rule = _RULES[data[pos]]
        if rule is None:
            return False
        prefix, fixed, per_item, length = rule
        length += int.from_bytes(data[pos + 1 : pos + 1 + prefix], "big")
        pos += 1 + prefix
        if not per_item:
            pos += fixed + length
        elif len(pending) >= limit:
            return True
        elif length:
            pending.append(length * per_item)
            continue
        while pending:  # a value is complete: close every container it completes
            pending[-1] -= 1
            if pending[-1]:
                break
            pending.pop()
        else:
            return False
    return False
