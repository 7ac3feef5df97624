import dataclasses

import msgspec
import pytest

from remotellm_protocol import (
    FRAME_TYPES,
    Body,
    Data,
    End,
    GoAway,
    Head,
    Hello,
    ModelInfo,
    Open,
    Principal,
    StreamError,
    Usage,
    Welcome,
)
from remotellm_protocol.testing import TEST_PRINCIPAL


def tag(frame_type: type[msgspec.Struct]) -> object:
    return frame_type.__struct_config__.tag


def test_frame_tags_are_the_wire_names_of_the_specification() -> None:
    assert [tag(t) for t in FRAME_TYPES] == [
        "hello",
        "welcome",
        "models",
        "open",
        "body",
        "head",
        "data",
        "end",
        "credit",
        "cancel",
        "goaway",
        "ended",
    ]


def test_every_frame_is_tagged_by_the_t_field() -> None:
    assert {t.__struct_config__.tag_field for t in FRAME_TYPES} == {"t"}


VALUE_TYPES = (ModelInfo, Principal, Usage, StreamError)


@pytest.mark.parametrize("frame_type", FRAME_TYPES + VALUE_TYPES, ids=lambda t: t.__name__)
def test_frames_and_values_are_frozen_and_keyword_only(frame_type: type[msgspec.Struct]) -> None:
    assert frame_type.__struct_config__.frozen
    if frame_type.__struct_fields__:
        with pytest.raises(TypeError, match="positional"):
            frame_type(1)


def test_a_frame_cannot_be_changed_after_it_is_made() -> None:
    frame = Data(stream=1, chunk=b"x")
    with pytest.raises(AttributeError):
        frame.stream = 2  # type: ignore[misc]


def test_embedded_values_are_frozen_too() -> None:
    with pytest.raises(AttributeError):
        TEST_PRINCIPAL.user_id = "someone else"  # type: ignore[misc]


def test_equal_frames_compare_and_hash_equal() -> None:
    assert Data(stream=1, chunk=b"x") == Data(stream=1, chunk=b"x")
    assert hash(End(stream=1)) == hash(End(stream=1))
    assert Data(stream=1, chunk=b"x") != Body(stream=1, chunk=b"x")


def test_optional_fields_have_the_documented_defaults() -> None:
    hello = Hello(name="box", version="1.0")
    assert (hello.models, hello.max_streams, hello.resume_token) == ([], 16, None)
    opened = Open(stream=1, correlation_id="c", method="POST", path="/", principal=TEST_PRINCIPAL)
    assert (opened.headers, opened.deadline_ms, opened.body, opened.more_body) == (
        [],
        None,
        b"",
        False,
    )
    assert Body(stream=1, chunk=b"").last is False
    assert Head(stream=1, status=200).headers == []
    assert (End(stream=1).usage, End(stream=1).error) == (None, None)
    assert GoAway().reason == ""
    assert ModelInfo(id="m") == ModelInfo(
        id="m", owned_by=None, context_length=None, endpoints=None
    )
    assert Usage() == Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)
    assert StreamError(code=1) == StreamError(code=1, message="", retry_after=None)


def test_mutable_defaults_are_not_shared_between_frames() -> None:
    assert Hello(name="a", version="1").models is not Hello(name="b", version="1").models


def test_every_field_of_welcome_is_required() -> None:
    with pytest.raises(TypeError):
        Welcome(session_id="s")  # type: ignore[call-arg]


def test_field_names_are_stable() -> None:
    fields = {t.__name__: t.__struct_fields__ for t in FRAME_TYPES}
    assert fields == {
        "Hello": (
            "name",
            "version",
            "models",
            "max_streams",
            "resume_token",
            "resumable",
            "streams",
        ),
        "Welcome": (
            "session_id",
            "max_frame_bytes",
            "initial_window",
            "heartbeat_s",
            "resume_token",
            "resume_window_s",
            "streams",
        ),
        "Models": ("models",),
        "Open": (
            "stream",
            "correlation_id",
            "method",
            "path",
            "principal",
            "headers",
            "deadline_ms",
            "body",
            "more_body",
        ),
        "Body": ("stream", "chunk", "last"),
        "Head": ("stream", "status", "headers"),
        "Data": ("stream", "chunk"),
        "End": ("stream", "usage", "error"),
        "Credit": ("stream", "delivered"),
        "Cancel": ("stream", "reason"),
        "GoAway": ("reason",),
        "Ended": ("stream",),
    }


def test_frames_are_not_dataclasses_but_msgspec_structs() -> None:
    assert not dataclasses.is_dataclass(Data)
    assert all(issubclass(t, msgspec.Struct) for t in FRAME_TYPES)
