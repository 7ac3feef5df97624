import sys
from typing import Any

import hypothesis.strategies as st
import msgspec
import pytest
from hypothesis import given

from remotellm_protocol import (
    FRAME_TYPES,
    MAX_NESTING_DEPTH,
    CloseCode,
    Data,
    End,
    Frame,
    GoAway,
    Head,
    Hello,
    LocalProtocolError,
    ModelInfo,
    Open,
    RemoteProtocolError,
    decode,
    encode,
)
from remotellm_protocol.codec import _too_deep
from remotellm_protocol.testing import TEST_PRINCIPAL

raw = msgspec.msgpack.encode
DATA = {"t": "data", "stream": 1, "chunk": b"x"}


def rejected(data: bytes, **kwargs: Any) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        decode(data, **kwargs)
    return info.value


def nested(depth: int, innermost: bytes = b"\x01") -> bytes:
    """A data frame whose unknown field ``z`` nests ``depth`` arrays (the frame is level 1)."""
    return (
        b"\x84"
        + raw("t")
        + raw("data")
        + raw("stream")
        + b"\x01"
        + raw("chunk")
        + (raw(b"x") + raw("z") + b"\x91" * depth + innermost)
    )


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("frame_type", FRAME_TYPES, ids=lambda t: t.__name__)
@given(data=st.data())
def test_every_frame_type_survives_a_round_trip(frame_type: type[Any], data: st.DataObject) -> None:
    frame = data.draw(st.from_type(frame_type))
    assert decode(encode(frame)) == frame


@given(frame=st.from_type(Frame))  # type: ignore[arg-type]
def test_any_frame_decodes_to_its_own_type(frame: Frame) -> None:
    assert type(decode(encode(frame))) is type(frame)


def test_a_frame_is_a_msgpack_map_whose_t_key_is_the_tag() -> None:
    as_map = msgspec.msgpack.decode(encode(GoAway(reason="bye")))
    assert as_map == {"t": "goaway", "reason": "bye"}
    assert next(iter(as_map)) == "t"


def test_bytes_travel_as_msgpack_bin_and_text_as_str() -> None:
    assert encode(Data(stream=1, chunk=b"hi")) == (
        b"\x83\xa1t\xa4data\xa6stream\x01\xa5chunk\xc4\x02hi"
    )


def test_headers_travel_as_arrays_of_two_strings() -> None:
    frame = Head(stream=3, status=200, headers=[("content-type", "text/event-stream")])
    assert msgspec.msgpack.decode(encode(frame))["headers"] == [
        ["content-type", "text/event-stream"]
    ]


# -- schema evolution ------------------------------------------------------------------------


def test_decode_ignores_unknown_fields_so_newer_peers_can_add_some() -> None:
    newer = raw({**DATA, "priority": 3, "trace": {"id": [1, 2, {"deep": b"z"}]}})
    assert decode(newer) == Data(stream=1, chunk=b"x")


def test_decode_ignores_unknown_fields_of_any_msgpack_type() -> None:
    exotic = [None, True, 1.5, -(2**63), 2**64 - 1, msgspec.msgpack.Ext(5, b"abc"), b"", "é"]
    assert decode(raw({**DATA, "x": exotic})) == Data(stream=1, chunk=b"x")


def test_decode_fills_in_defaults_for_missing_optional_fields() -> None:
    frame = decode(raw({"t": "hello", "name": "box", "version": "1"}))
    assert frame == Hello(name="box", version="1", models=[], max_streams=16)


def test_decode_accepts_nil_for_optional_fields() -> None:
    frame = decode(raw({"t": "end", "stream": 1, "usage": None, "error": None}))
    assert frame == End(stream=1)


def test_decode_keeps_the_last_value_of_a_repeated_key() -> None:
    repeated = b"\x84" + raw("t") + raw("head") + raw("stream") + b"\x01"
    repeated += raw("status") + raw(200) + raw("stream") + b"\x02"
    assert decode(repeated) == Head(stream=2, status=200)


# -- malformed input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "truncated"),
        (raw([1, 2]), "Expected `object`"),
        (raw({"stream": 1}), "missing required field `t`"),
        (raw({"t": "nope"}), "Invalid value 'nope'"),
        (raw({"t": 7}), "Expected `str`"),
        (raw({1: 2}), "Expected `str`"),
        (raw({"t": "data", "stream": 1}), "missing required field `chunk`"),
        (raw({**DATA, "chunk": "x"}), "Expected `bytes`, got `str`"),
        (raw({**DATA, "stream": "1"}), "Expected `int`"),
        (raw({**DATA, "stream": True}), "Expected `int`"),
        (raw({**DATA, "stream": 1.0}), "Expected `int`"),
        (raw({"t": "head", "stream": 1, "status": 200, "headers": [["a", "b", "c"]]}), "length 2"),
        (raw({"t": "head", "stream": 1, "status": 200, "headers": [["a", 1]]}), "Expected `str`"),
        (b"\xc1", "invalid opcode"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_decode_rejects_input_that_is_not_a_frame(data: bytes, why: str) -> None:
    error = rejected(data)
    assert why in error.message
    assert error.close_code is CloseCode.PROTOCOL_ERROR


def test_decode_rejects_every_truncation_of_a_valid_frame() -> None:
    whole = encode(
        Open(stream=1, correlation_id="c", method="POST", path="/", principal=TEST_PRINCIPAL)
    )
    for cut in range(len(whole)):
        rejected(whole[:cut])


def test_decode_rejects_trailing_garbage() -> None:
    assert "trailing" in rejected(encode(GoAway()) + b"\x00").message


def test_decode_rejects_two_frames_in_one_message() -> None:
    rejected(encode(GoAway()) + encode(GoAway()))


@pytest.mark.parametrize("header", [b"\xc6", b"\xdb", b"\xc9"])
def test_decode_rejects_lengths_claiming_4_gib_without_allocating(header: bytes) -> None:
    assert "truncated" in rejected(raw(DATA)[:-3] + header + b"\xff\xff\xff\xff").message
    assert "truncated" in rejected(nested(0, header + b"\xff\xff\xff\xff")).message


def test_decode_rejects_frames_over_the_size_limit_with_message_too_big() -> None:
    frame = encode(Data(stream=1, chunk=b"x" * 100))
    error = rejected(frame, max_size=len(frame) - 1)
    assert error.close_code is CloseCode.MESSAGE_TOO_BIG
    assert decode(frame, max_size=len(frame)) == Data(stream=1, chunk=b"x" * 100)


def test_decode_applies_the_default_size_limit_of_one_mebibyte() -> None:
    big = encode(Data(stream=1, chunk=b"x" * (1024 * 1024)))
    assert rejected(big).close_code is CloseCode.MESSAGE_TOO_BIG


# -- nesting ---------------------------------------------------------------------------------


def test_decode_accepts_nesting_up_to_the_limit() -> None:
    assert decode(nested(MAX_NESTING_DEPTH - 1)) == Data(stream=1, chunk=b"x")
    assert decode(nested(MAX_NESTING_DEPTH - 2, b"\x90")) == Data(stream=1, chunk=b"x")


def test_decode_rejects_nesting_one_level_beyond_the_limit() -> None:
    assert "nested deeper than 32" in rejected(nested(MAX_NESTING_DEPTH)).message
    rejected(nested(MAX_NESTING_DEPTH - 1, b"\x90"))  # an empty array is a level too


def test_decode_wraps_the_recursion_error_of_absurd_nesting() -> None:
    error = rejected(nested(500_000))
    assert error.close_code is CloseCode.PROTOCOL_ERROR
    assert error.__cause__ is None  # a clean error, not a chained RecursionError


def test_decode_counts_levels_of_maps_and_long_container_forms_alike() -> None:
    levels = b"\x81\x00" * 10 + b"\xdc\x00\x01" * 10 + b"\xde\x00\x01\x00" * 10 + b"\xdd\0\0\0\1"
    assert decode(nested(0, levels + b"\x01")) == Data(stream=1, chunk=b"x")  # 32 levels
    rejected(nested(0, levels + b"\x91\x01"))


def test_decode_never_lets_a_recursion_error_escape_on_a_nearly_full_stack() -> None:
    data = nested(MAX_NESTING_DEPTH - 1)
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    limit = sys.getrecursionlimit()
    outcome: object
    sys.setrecursionlimit(depth + 12)
    try:
        # Python 3.11 counts msgspec's C recursion against this limit; later versions do not.
        outcome = decode(data)
    except RemoteProtocolError as error:
        outcome = error
    finally:
        sys.setrecursionlimit(limit)
    if isinstance(outcome, RemoteProtocolError):
        assert "recursion" in outcome.message
    else:
        assert outcome == Data(stream=1, chunk=b"x")


def depth_of(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((max(depth_of(k), depth_of(v)) for k, v in value.items()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=300)
    | st.binary(max_size=300)
    | st.builds(msgspec.msgpack.Ext, st.integers(-128, 127), st.binary(max_size=20))
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=20)
        | st.dictionaries(st.integers(0, 10**6) | st.text(max_size=3), inner, max_size=20)
    ),
    max_leaves=80,
)


@given(value=values, limit=st.integers(min_value=0, max_value=6))
def test_the_depth_check_agrees_with_the_real_depth_of_any_msgpack_value(
    value: object, limit: int
) -> None:
    assert _too_deep(raw(value), limit) is (depth_of(value) > limit)


def test_the_depth_check_leaves_malformed_input_to_the_decoder() -> None:
    assert _too_deep(b"\x91" * 5 + b"\xc1", 2) is True  # too deep before it gets there
    assert _too_deep(b"\x91\x91\xc1\x91\x91\x91", 2) is False
    assert _too_deep(b"\x91\x91\x91", 2) is True
    assert _too_deep(b"\x94\x90\x90\x90", 2) is False  # truncated: the decoder will say so
    assert _too_deep(b"\x01\x91\x91\x91\x91", 2) is False  # what follows is trailing garbage


# -- encoding errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        Data(stream=2**64, chunk=b""),
        Data(stream=1, chunk=object()),  # type: ignore[arg-type]
        Hello(name="x", version="1", models=[ModelInfo(id="m", context_length=-(2**63) - 1)]),
    ],
)
def test_encode_reports_values_msgpack_cannot_carry_as_local_errors(frame: Frame) -> None:
    with pytest.raises(LocalProtocolError, match="cannot encode"):
        encode(frame)


def test_encode_reports_a_self_containing_list_as_a_local_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(LocalProtocolError):
        encode(Head(stream=1, status=200, headers=loop))
