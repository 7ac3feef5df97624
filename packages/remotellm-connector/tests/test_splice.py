"""``stream_options.include_usage`` spliced into the client's bytes, whatever the body looks like.

Each result is read back twice: by a parser where the last of a repeated key wins (Python,
msgspec, Go, JavaScript, llama.cpp) and by one where the first wins, so a body with repeated
keys gets the option whichever way the model server reads it.
"""

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remotellm_connector.forward import UsageMode, plan_request
from remotellm_connector.splice import with_include_usage
from remotellm_protocol import Open, Principal

WHO = Principal(user_id="u", key_id="k")


def first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


def read_both(raw: bytes) -> tuple[Any, Any]:
    text = raw.decode()
    return json.loads(text), json.loads(text, object_pairs_hook=first_wins)


def plan(raw: bytes) -> bytes:
    frame = Open(
        stream=1, correlation_id="c", method="POST", path="/v1/chat/completions", principal=WHO
    )
    planned = plan_request(frame, raw)
    assert planned.usage is UsageMode.STRIP
    assert planned.original_body == raw
    return planned.body


def test_stream_options_null_becomes_an_object_with_include_usage() -> None:
    raw = b'{"model":"m","stream":true,"messages":[{}],"stream_options":null}'
    for parsed in read_both(plan(raw)):
        assert parsed["stream_options"] == {"include_usage": True}


def test_other_options_and_every_other_byte_stay_as_the_client_sent_them() -> None:
    raw = (
        b'{ "model" : "m\\u00e9" ,\n\t"stream":true, "n": 1.50e3,'
        b' "stream_options" : { "x" : [1, {"include_usage": false}] ,"y":"\xc3\xa9\\""} ,'
        b' "messages": [{"content": "stream_options \\" {\\"include_usage\\":false}"}] }'
    )
    out = plan(raw)
    assert out == raw.replace(b'{ "x"', b'{"include_usage":true, "x"')
    for parsed in read_both(out):
        assert parsed["stream_options"] == {
            "include_usage": True,
            "x": [1, {"include_usage": False}],  # nested: not the option, left alone
            "y": 'é"',
        }
        assert parsed["n"] == 1500.0


def test_include_usage_false_is_replaced_in_place() -> None:
    raw = b'{"stream":true,"stream_options":{"a":1,"include_usage" :  false ,"b":2},"model":"m"}'
    assert plan(raw) == raw.replace(b"false", b"true")


def test_repeated_keys_are_all_patched_whichever_one_wins() -> None:
    raw = (
        b'{"stream_options":{"include_usage":true},"model":"m","stream":true,'
        b'"stream_options":{"include_usage":false,"include_usage":false}}'
    )
    out = plan(raw)
    assert out.count(b'"include_usage":true') == 3
    for parsed in read_both(out):
        assert parsed["stream_options"] == {"include_usage": True}


def test_escaped_key_names_are_recognised() -> None:
    raw = b'{"model":"m","stream":true,"stream\\u005foptions":{"include\\u005Fusage":false}}'
    out = plan(raw)
    assert out == raw.replace(b"false", b"true")


def test_empty_stream_options_gets_the_member_without_a_stray_comma() -> None:
    raw = b'{"model":"m","stream":true,"stream_options":{ }}'
    assert plan(raw) == b'{"model":"m","stream":true,"stream_options":{"include_usage":true }}'


def test_absent_stream_options_is_added_after_the_opening_brace() -> None:
    raw = b'\n {"model":"m","stream":true,"messages":[{"content":"\xe2\x82\xac"}]}'
    assert plan(raw) == b'\n {"stream_options":{"include_usage":true},' + raw[3:]


def test_an_empty_object_gets_the_option_without_a_comma() -> None:
    assert with_include_usage(b"{ }") == b'{"stream_options":{"include_usage":true} }'


# -- any body ---------------------------------------------------------------------------------

_KEYS = st.sampled_from(
    ["model", "stream", "x", "stream_options", "stream\\u005foptions", "include_usage", "é"]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=8),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(st.tuples(_KEYS, inner), max_size=4).map(lambda pairs: ("obj", pairs)),
    ),
    max_leaves=12,
)
_SPACE = st.sampled_from(["", " ", "\n", "\t ", "\r\n  "])


@st.composite
def json_text(draw: st.DrawFn, value: Any) -> str:
    """``value`` as JSON with random whitespace; ("obj", pairs) keeps repeated keys."""
    ws = lambda: draw(_SPACE)  # noqa: E731
    if isinstance(value, tuple):
        members = [
            f'{ws()}"{key}"{ws()}:{ws()}{draw(json_text(item))}{ws()}' for key, item in value[1]
        ]
        return "{" + ",".join(members) + ws() + "}"
    if isinstance(value, list):
        return "[" + ",".join(ws() + draw(json_text(item)) + ws() for item in value) + "]"
    return json.dumps(value, ensure_ascii=draw(st.booleans()))


@settings(max_examples=300, deadline=None)
@given(st.data(), st.lists(st.tuples(_KEYS, _VALUES), max_size=6))
def test_any_object_gets_include_usage_and_keeps_everything_else(
    data: st.DataObject, members: list[tuple[str, Any]]
) -> None:
    text = data.draw(_SPACE) + data.draw(json_text(("obj", members))) + data.draw(_SPACE)
    raw = text.encode()
    out = with_include_usage(raw)
    for before, after in zip(read_both(raw), read_both(out), strict=True):
        options = after.pop("stream_options")
        assert isinstance(options, dict)
        assert options.pop("include_usage") is True
        old = before.pop("stream_options", None)
        kept = old if isinstance(old, dict) else {}
        assert options == {k: v for k, v in kept.items() if k != "include_usage"}
        assert after == before
    msgspec.json.decode(out)  # still one valid JSON document


@pytest.mark.parametrize("raw", [b"[1]", b'{"a" 1}', b'{"a":1', b""])
def test_what_is_not_an_object_is_refused_not_guessed(raw: bytes) -> None:
    with pytest.raises((ValueError, IndexError)):
        with_include_usage(raw)
