"""Write the conformance vectors of wire version 1 (deterministic: same library, same files).

    python vectors/generate.py            # rewrite vectors/{valid,invalid,sequences}/
    python vectors/generate.py --out DIR  # write them somewhere else (the tests compare)

The expectations below are written by hand from the specification (docs/protocol.md), not
computed by the library; ``tests/test_vectors.py`` then checks the library against them, and
checks that the committed files are what this script writes. Formats: vectors/README.md.
"""

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import msgspec

from remotellm_protocol import (
    Body,
    Cancel,
    CancelReason,
    CloseCode,
    Credit,
    Data,
    End,
    Ended,
    ErrorCode,
    Frame,
    GoAway,
    Head,
    HeldStream,
    Hello,
    ModelInfo,
    Models,
    Open,
    Principal,
    ResumedStream,
    StreamError,
    Usage,
    Welcome,
    encode,
)

raw = msgspec.msgpack.encode
PROTOCOL_ERROR = int(CloseCode.PROTOCOL_ERROR)
MESSAGE_TOO_BIG = int(CloseCode.MESSAGE_TOO_BIG)
DEFAULT_LIMIT = 1024 * 1024

PRINCIPAL = Principal(user_id="gitlab:42", key_id="k-1a2b", name="ada")
HELLO = Hello(name="gpu-box", version="1.0.0", models=[ModelInfo(id="llama3")], max_streams=2)
WELCOME = Welcome(session_id="s-1", max_frame_bytes=4096, initial_window=16, heartbeat_s=5.0)
R_HELLO = Hello(name="gpu-box", version="1.3.0", max_streams=2, resumable=True)
R_WELCOME = Welcome(session_id="s-1", max_frame_bytes=4096, initial_window=16, heartbeat_s=5.0,
                    resume_token="rt-1", resume_window_s=30.0)  # fmt: skip


def open_(stream: int, *, body: bytes = b"{}", more_body: bool = False) -> Open:
    return Open(
        stream=stream,
        correlation_id=f"req-{stream}",
        method="POST",
        path="/v1/chat/completions",
        principal=PRINCIPAL,
        headers=[("content-type", "application/json")],
        body=body,
        more_body=more_body,
    )


def as_json(frame: Frame) -> Any:
    """The JSON form of a frame: every field, bytes as base64 strings (RFC 4648, padded)."""
    return json.loads(msgspec.json.encode(frame))


# -- valid: bytes that decode to a frame -----------------------------------------------------


def valid() -> dict[str, tuple[str, Frame, bytes]]:
    """name -> (description, frame, msgpack bytes)."""
    canonical: dict[str, tuple[str, Frame]] = {
        "hello-minimal": ("hello with only its required fields", Hello(name="a", version="0")),
        "hello-full": (
            "hello with every field, model metadata and a resume token",
            Hello(
                name="gpu-box",
                version="1.2.3",
                models=[
                    ModelInfo(id="llama3:8b", owned_by="library", context_length=8192),
                    ModelInfo(id="qwen2.5-coder"),
                ],
                max_streams=32,
                resume_token="r-9",
            ),
        ),
        "welcome": ("welcome with the default limits", Welcome(
            session_id="s-5f2c", max_frame_bytes=1048576, initial_window=262144, heartbeat_s=5.0
        )),
        "models-empty": ("a connector that serves nothing right now", Models(models=[])),
        "models": ("a model list with and without metadata", Models(models=[
            ModelInfo(id="llama3", owned_by="meta", context_length=131072),
            ModelInfo(id="mistral", owned_by=None, context_length=None),
        ])),
        "open-minimal": ("open with only its required fields (an embeddings request whose "
                         "body fits open.body)", Open(
            stream=1, correlation_id="c", method="POST", path="/v1/embeddings",
            principal=Principal(user_id="local:bob", key_id="k-2"),
        )),
        "open-full": ("open with every field: headers, deadline, a first body piece, more", Open(
            stream=7, correlation_id="0f3c9a7e-req", method="POST", path="/v1/chat/completions",
            principal=PRINCIPAL,
            headers=[("content-type", "application/json"), ("accept", "text/event-stream"),
                     ("x-request-id", "0f3c9a7e-req"), ("user-agent", "curl/8.5")],
            deadline_ms=600000, body=b'{"model":"llama3","stream":true,"messages":[',
            more_body=True,
        )),
        "body": ("a middle piece of a request body", Body(stream=7, chunk=b'{"role":"user"}')),
        "body-last": ("the last piece of a request body", Body(stream=7, chunk=b"]}", last=True)),
        "head-minimal": ("head without headers", Head(stream=1, status=200)),
        "head": ("head of a streaming response", Head(stream=7, status=200, headers=[
            ("content-type", "text/event-stream"), ("cache-control", "no-cache"),
        ])),
        "head-error-status": ("the upstream's own error status is relayed as is",
                              Head(stream=3, status=503)),
        "data": ("a typical SSE chunk", Data(
            stream=7, chunk=b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'
        )),
        "data-empty": ("an empty chunk is legal", Data(stream=1, chunk=b"")),
        "data-every-byte": ("data is binary: all 256 byte values",
                            Data(stream=1, chunk=bytes(range(256)))),
        "data-large-stream-id": ("the largest stream id (2**63 - 1)",
                                 Data(stream=2**63 - 1, chunk=b"x")),
        "end-ok": ("success without usage", End(stream=7)),
        "end-usage": ("success with usage", End(stream=7, usage=Usage(
            prompt_tokens=12, completion_tokens=34, total_tokens=46
        ))),
        "end-error": ("failure before head", End(stream=3, error=StreamError(
            code=ErrorCode.UPSTREAM_UNREACHABLE, message="connection refused"
        ))),
        "end-rate-limited": ("failure with a retry hint", End(stream=3, error=StreamError(
            code=ErrorCode.RATE_LIMITED, message="slow down", retry_after=1.5
        ))),
        "end-unknown-error-code": ("a newer peer's error code still decodes (read as UNKNOWN)",
                                   End(stream=3, error=StreamError(code=999, message="new"))),
        "credit": ("cumulative credit", Credit(stream=7, delivered=65536)),
        "credit-large": ("credit beyond 32 bits", Credit(stream=7, delivered=2**40)),
        "cancel": ("the API client went away",
                   Cancel(stream=7, reason=CancelReason.CLIENT_GONE)),
        "cancel-unknown-reason": ("a newer peer's cancel reason still decodes",
                                  Cancel(stream=7, reason=42)),
        "goaway-empty": ("goaway without a reason", GoAway()),
        "goaway": ("goaway with a reason", GoAway(reason="broker restarting")),
        "hello-resumable": ("a connector that can resume, on its first connection",
                            Hello(name="gpu-box", version="1.3.0", resumable=True)),
        "hello-resuming": ("a reconnect presenting the resume token and the streams it holds: "
                           "stream 7 has 5 body bytes so far, stream 9 its whole body", Hello(
            name="gpu-box", version="1.3.0", resumable=True, resume_token="rt-3b9f",
            streams=[HeldStream(stream=7, body=5, body_done=False),
                     HeldStream(stream=9, body=120, body_done=True)],
        )),
        "welcome-resumable": ("a broker that keeps streams for 30 s after a drop", Welcome(
            session_id="s-5f2c", max_frame_bytes=1048576, initial_window=262144, heartbeat_s=5.0,
            resume_token="rt-3b9f", resume_window_s=30.0,
        )),
        "welcome-resumed": ("accepting a resume: stream 7 still uploads; stream 9 continues at "
                            "response byte 4096, 2048 of them delivered", Welcome(
            session_id="s-61aa", max_frame_bytes=1048576, initial_window=262144, heartbeat_s=5.0,
            resume_token="rt-8c01", resume_window_s=30.0,
            streams=[ResumedStream(stream=7),
                     ResumedStream(stream=9, received=4096, delivered=2048, head=True)],
        )),
        "ended": ("the broker has the end of stream 9 (resumable connections only)",
                  Ended(stream=9)),
        "unicode": ("strings are UTF-8", Hello(name="Grüße-🚀", version="1", models=[
            ModelInfo(id="模型")
        ])),
    }  # fmt: skip
    vectors = {name: (why, frame, encode(frame)) for name, (why, frame) in canonical.items()}

    data = Data(stream=1, chunk=b"x")
    vectors.update(
        {
            "data-fields-in-any-order": (
                "map keys may come in any order, the tag included",
                data,
                raw({"chunk": b"x", "stream": 1, "t": "data"}),
            ),
            "data-unknown-fields": (
                "unknown fields are skipped, whatever their type (schema evolution)",
                data,
                raw({"t": "data", "stream": 1, "chunk": b"x", "new": [1, {"a": None}, 2.5]}),
            ),
            "data-wide-encodings": (
                "ints, strs and bins may use wider msgpack forms than needed",
                data,
                b"\x83\xd9\x01t\xda\x00\x04data\xa6stream\xce\x00\x00\x00\x01"
                b"\xa5chunk\xc6\x00\x00\x00\x01x",
            ),
            "hello-defaults-omitted": (
                "fields with defaults may be left out",
                Hello(name="a", version="0"),
                raw({"t": "hello", "name": "a", "version": "0"}),
            ),
            "welcome-int-heartbeat": (
                "an int where a float is expected is accepted",
                Welcome(session_id="s", max_frame_bytes=4096, initial_window=16, heartbeat_s=5.0),
                raw(
                    {
                        "t": "welcome",
                        "session_id": "s",
                        "max_frame_bytes": 4096,
                        "initial_window": 16,
                        "heartbeat_s": 5,
                    }
                ),
            ),
            "end-float32-retry-after": (
                "a float32 is accepted",
                End(stream=1, error=StreamError(code=7, retry_after=0.5)),
                b"\x83\xa1t\xa3end\xa6stream\x01\xa5error\x82\xa4code\x07"
                b"\xabretry_after\xca\x3f\x00\x00\x00",
            ),
            "data-unknown-field-with-int-keys": (
                "inside an ignored unknown field any well-formed msgpack is skipped, maps with "
                "non-string keys included",
                data,
                raw({"t": "data", "stream": 1, "chunk": b"x", "z": {1: {2.5: [None]}}}),
            ),
            "data-nested-maps-to-the-limit": (
                "string-keyed maps nested so that the frame reaches 32 levels are accepted",
                data,
                _data_with(b"\x81\xa1k" * 31 + b"\x01"),
            ),
            "data-nested-to-the-limit": (
                "an unknown field nested so that the frame reaches 32 levels is accepted",
                data,
                _nested(31),
            ),
        }
    )
    return vectors


def _data_with(field: bytes) -> bytes:
    """``Data(stream=1, chunk=b"x")`` plus an unknown field ``z`` holding ``field``."""
    known = raw("t") + raw("data") + raw("stream") + raw(1) + raw("chunk") + raw(b"x")
    return b"\x84" + known + raw("z") + field


def _nested(arrays: int, innermost: bytes = b"\x01") -> bytes:
    """A data frame (level 1) whose unknown field nests ``arrays`` arrays (levels 2, 3, ...)
    around ``innermost``."""
    return _data_with(b"\x91" * arrays + innermost)


# -- invalid: bytes decode must reject -------------------------------------------------------


def invalid() -> dict[str, tuple[str, bytes, int, int]]:
    """name -> (description, bytes, close code, max frame bytes)."""
    data = encode(Data(stream=1, chunk=b"hello"))
    opened = encode(open_(1))
    unknown = _data_with
    data_without_chunk = b"\x83" + raw("t") + raw("data") + raw("stream") + raw(1) + raw("chunk")

    cases: dict[str, tuple[str, bytes]] = {
        "empty": ("no bytes at all", b""),
        "truncated-header": ("cut inside the map", data[:3]),
        "truncated-in-tag": ("cut inside the tag string", data[:5]),
        "truncated-in-chunk": ("cut inside the bin payload", data[:-2]),
        "truncated-open": ("an open frame cut in half", opened[: len(opened) // 2]),
        "trailing-garbage": ("one frame followed by a stray byte", data + b"\x00"),
        "two-frames": ("two frames in one message", data + data),
        "not-a-map": ("an array, not a map", raw(["data", 1, b"x"])),
        "not-a-map-int": ("a bare integer", b"\x01"),
        "missing-tag": ("no t field", raw({"stream": 1, "chunk": b"x"})),
        "unknown-tag": ("a frame type this version does not know", raw({"t": "ping"})),
        "tag-not-a-string": ("t must be a str", raw({"t": 1})),
        "key-not-a-string": ("map keys must be str", raw({"t": "goaway", 1: 2})),
        "missing-required-field": ("data without chunk", raw({"t": "data", "stream": 1})),
        "nil-for-str": ("nil only where a field is 'or nil'",
                        raw({"t": "goaway", "reason": None})),
        "chunk-as-str": ("bytes must be msgpack bin, never str",
                         raw({"t": "data", "stream": 1, "chunk": "x"})),
        "stream-as-str": ("an int field holding a str",
                          raw({"t": "data", "stream": "1", "chunk": b"x"})),
        "stream-as-bool": ("booleans are not ints",
                           raw({"t": "data", "stream": True, "chunk": b"x"})),
        "stream-as-float": ("floats are not ints",
                            raw({"t": "data", "stream": 1.0, "chunk": b"x"})),
        "header-of-three": ("a header is exactly [name, value]",
                            raw({"t": "head", "stream": 1, "status": 200,
                                 "headers": [["a", "b", "c"]]})),
        "header-not-an-array": ("headers is an array of arrays",
                                raw({"t": "head", "stream": 1, "status": 200,
                                     "headers": ["a"]})),
        "principal-missing-key-id": ("nested values are checked too", raw({
            "t": "open", "stream": 1, "correlation_id": "c", "method": "GET", "path": "/",
            "principal": {"user_id": "u"},
        })),
        "model-id-as-int": ("model metadata is typed",
                            raw({"t": "models", "models": [{"id": 5}]})),
        "status-as-str": ("a head status is an int",
                          raw({"t": "head", "stream": 1, "status": "200"})),
        "status-as-float": ("a head status is an int, never a float",
                            raw({"t": "head", "stream": 1, "status": 200.0})),
        "ended-without-stream": ("ended names its stream", raw({"t": "ended"})),
        "held-stream-body-as-str": ("resume offsets are ints", raw({
            "t": "hello", "name": "a", "version": "1", "resumable": True, "resume_token": "t",
            "streams": [{"stream": 1, "body": "5"}],
        })),
        "resumed-stream-head-as-int": ("flags are booleans, never ints", raw({
            "t": "welcome", "session_id": "s", "max_frame_bytes": 4096, "initial_window": 16,
            "heartbeat_s": 5.0, "streams": [{"stream": 1, "head": 1}],
        })),
        "usage-as-list": ("usage is a map",
                          raw({"t": "end", "stream": 1, "usage": [1, 2, 3]})),
        "invalid-utf8-in-tag": ("a str must be valid UTF-8",
                                b"\x81\xa1t\xa2\xff\xfe"),
        "invalid-utf8-in-field": ("a str must be valid UTF-8",
                                  b"\x82\xa1t\xa6goaway\xa6reason\xa1\xff"),
        "reserved-opcode": ("0xc1 is never used in msgpack", b"\xc1"),
        "bin32-claims-4-gib": ("a bin32 header claiming 4 GiB with 1 byte behind it",
                               data_without_chunk + b"\xc6\xff\xff\xff\xff" + b"x"),
        "str32-claims-4-gib": ("a str32 header claiming 4 GiB",
                               unknown(b"\xdb\xff\xff\xff\xff")),
        "array32-claims-4-g-items": ("an array32 header claiming 4 G items",
                                     unknown(b"\xdd\xff\xff\xff\xff")),
        "map32-claims-4-g-pairs": ("a map32 header claiming 4 G pairs",
                                   unknown(b"\xdf\xff\xff\xff\xff")),
        "ext32-claims-4-gib": ("an ext32 header claiming 4 GiB",
                               unknown(b"\xc9\xff\xff\xff\xff\x01")),
        "nested-33-levels": ("one level beyond the nesting limit of 32, in an unknown field",
                             _nested(32)),
        "nested-33-levels-empty": ("an empty array counts as a level",
                                   _nested(31, b"\x90")),
        "nested-10000-levels": ("absurd nesting must be rejected, not overflow the stack",
                                _nested(10_000)),
        "nested-maps": ("maps count as levels too (string keys, so only the depth is wrong)",
                        unknown(b"\x81\xa1k" * 32 + b"\x01")),
    }  # fmt: skip
    out = {name: (why, blob, PROTOCOL_ERROR, DEFAULT_LIMIT) for name, (why, blob) in cases.items()}
    out["oversize"] = (
        "a frame one byte over the limit in force (here 64 bytes) closes with 1009",
        encode(Data(stream=1, chunk=b"x" * (65 - len(encode(Data(stream=1, chunk=b"")))))),
        MESSAGE_TOO_BIG,
        64,
    )
    return out


# -- sequences: frames a session must reject (or, for accept-*, tolerate) ---------------------

Step = tuple[str, Frame]  # ("send" | "receive", frame)


def _connector(*steps: Step) -> list[Step]:
    return [("send", HELLO), ("receive", WELCOME), *steps]


def _broker(*steps: Step) -> list[Step]:
    return [("receive", HELLO), ("send", WELCOME), *steps]


def _streaming(stream: int = 1) -> list[Step]:
    """Broker-side steps that open ``stream`` and receive its head."""
    return [("send", open_(stream)), ("receive", Head(stream=stream, status=200))]


FAILED = End(stream=1, error=StreamError(code=ErrorCode.UPSTREAM_UNREACHABLE, message="down"))
CANCELLED = End(stream=1, error=StreamError(code=ErrorCode.CANCELLED))


def sequences() -> dict[str, tuple[str, str, list[Step], str]]:
    """name -> (description, role, steps, outcome of the last step)."""
    head = ("send", Head(stream=1, status=200))
    seqs: dict[str, tuple[str, str, list[Step], str]] = {
        # the connector's session receives something wrong from a broker
        "welcome-before-hello": ("the connector speaks first", "connector",
                                 [("receive", WELCOME)], "reject"),
        "open-before-welcome": ("welcome is the broker's first frame", "connector",
                                [("send", HELLO), ("receive", open_(1))], "reject"),
        "welcome-unusable-limits": ("max_frame_bytes below 1024", "connector", [
            ("send", HELLO), ("receive", Welcome(
                session_id="s", max_frame_bytes=1023, initial_window=16, heartbeat_s=5.0
            )),
        ], "reject"),
        "second-welcome": ("welcome comes once", "connector", _connector(("receive", WELCOME)),
                           "reject"),
        "head-from-broker": ("a broker never sends connector frames", "connector",
                             _connector(("receive", open_(1)),
                                        ("receive", Head(stream=1, status=200))), "reject"),
        "open-reusing-id": ("stream ids are never reused", "connector",
                            _connector(("receive", open_(1)), ("receive", open_(1))), "reject"),
        "open-id-zero": ("stream ids start at 1", "connector",
                         _connector(("receive", open_(0))), "reject"),
        "open-id-beyond-2-63": ("stream ids fit a signed 64-bit integer", "connector",
                                _connector(("receive", open_(2**63))), "reject"),
        "open-decreasing-id": ("stream ids increase", "connector",
                               _connector(("receive", open_(5)), ("receive", open_(4))),
                               "reject"),
        "open-beyond-max-streams": ("hello.max_streams is 2", "connector", _connector(
            ("receive", open_(1)), ("receive", open_(2)), ("receive", open_(3)),
        ), "reject"),
        "open-after-goaway": ("no new stream after the broker's goaway", "connector",
                              _connector(("receive", GoAway()), ("receive", open_(1))),
                              "reject"),
        "body-for-unknown-stream": ("frames for a stream never opened", "connector",
                                    _connector(("receive", Body(stream=9, chunk=b""))),
                                    "reject"),
        "credit-for-unknown-stream": ("frames for a stream never opened", "connector",
                                      _connector(("receive", Credit(stream=9, delivered=0))),
                                      "reject"),
        "cancel-for-unknown-stream": ("frames for a stream never opened", "connector",
                                      _connector(("receive", Cancel(stream=9, reason=1))),
                                      "reject"),
        "body-after-last": ("the body ended with open (more_body false)", "connector",
                            _connector(("receive", open_(1)),
                                       ("receive", Body(stream=1, chunk=b"x"))), "reject"),
        "body-after-cancel": ("no body frame follows a cancel", "connector", _connector(
            ("receive", open_(1, more_body=True)), ("receive", Cancel(stream=1, reason=1)),
            ("receive", Body(stream=1, chunk=b"x", last=True)),
        ), "reject"),
        "cancel-twice": ("a stream is cancelled once", "connector", _connector(
            ("receive", open_(1)), ("receive", Cancel(stream=1, reason=1)),
            ("receive", Cancel(stream=1, reason=1)),
        ), "reject"),
        "credit-before-body-complete": ("credit only once the request body is complete",
                                        "connector", _connector(
            ("receive", open_(1, more_body=True)), ("receive", Credit(stream=1, delivered=0)),
        ), "reject"),
        "credit-beyond-sent": ("credit never exceeds the bytes sent", "connector", _connector(
            ("receive", open_(1)), head, ("send", Data(stream=1, chunk=b"x" * 10)),
            ("receive", Credit(stream=1, delivered=11)),
        ), "reject"),
        "credit-backwards": ("credit is cumulative: it never decreases", "connector", _connector(
            ("receive", open_(1)), head, ("send", Data(stream=1, chunk=b"x" * 10)),
            ("receive", Credit(stream=1, delivered=8)), ("receive", Credit(stream=1, delivered=7)),
        ), "reject"),
        # ... and what it must tolerate
        "accept-body-crossing-end": ("body sent before the broker saw the connector's end",
                                     "connector", _connector(
            ("receive", open_(1, more_body=True)), ("send", FAILED),
            ("receive", Body(stream=1, chunk=b"x", last=True)),
        ), "accept"),
        "accept-credit-crossing-end": ("credit crossing the end", "connector", _connector(
            ("receive", open_(1)), head, ("send", Data(stream=1, chunk=b"x" * 16)),
            ("send", End(stream=1)), ("receive", Credit(stream=1, delivered=16)),
        ), "accept"),
        "accept-cancel-crossing-end": ("cancel crossing the end", "connector", _connector(
            ("receive", open_(1)), head, ("send", End(stream=1)),
            ("receive", Cancel(stream=1, reason=CancelReason.CLIENT_GONE)),
        ), "accept"),
        "accept-open-crossing-own-goaway": ("an open that crossed the connector's goaway is "
                                            "accepted (and answered with GOING_AWAY)",
                                            "connector", _connector(
            ("send", GoAway()), ("receive", open_(1)),
            ("send", End(stream=1, error=StreamError(code=ErrorCode.GOING_AWAY))),
        ), "accept"),
        "accept-full-window-then-credit": ("a full window, then credit reopens it",
                                           "connector", _connector(
            ("receive", open_(1)), head, ("send", Data(stream=1, chunk=b"x" * 16)),
            ("receive", Credit(stream=1, delivered=4)), ("send", Data(stream=1, chunk=b"y" * 4)),
            ("receive", Cancel(stream=1, reason=1)), ("send", CANCELLED),
        ), "accept"),
        # resumption, within one connection (docs/protocol.md, "Resumption")
        "accept-resumable-end-then-ended": ("on a resumable connection the broker confirms "
                                            "each end with ended", "connector", [
            ("send", R_HELLO), ("receive", R_WELCOME), ("receive", open_(1)), head,
            ("send", Data(stream=1, chunk=b"x" * 16)), ("receive", Credit(stream=1, delivered=16)),
            ("send", End(stream=1)), ("receive", Ended(stream=1)),
        ], "accept"),
        "ended-without-resumption": ("ended only on a resumable connection", "connector",
                                     _connector(("receive", open_(1)), head,
                                                ("send", End(stream=1)),
                                                ("receive", Ended(stream=1))), "reject"),
        "ended-for-live-stream": ("ended confirms an end that was sent", "connector", [
            ("send", R_HELLO), ("receive", R_WELCOME), ("receive", open_(1)),
            ("receive", Ended(stream=1)),
        ], "reject"),
        "ended-twice": ("an end is confirmed once", "connector", [
            ("send", R_HELLO), ("receive", R_WELCOME), ("receive", open_(1)), head,
            ("send", End(stream=1)), ("receive", Ended(stream=1)), ("receive", Ended(stream=1)),
        ], "reject"),
        "welcome-token-unasked": ("a resume token only for a hello that is resumable",
                                  "connector", [("send", HELLO), ("receive", R_WELCOME)],
                                  "reject"),
        "welcome-resumes-unasked": ("welcome.streams only answer a hello with a resume token",
                                    "connector", [("send", R_HELLO), ("receive", Welcome(
            session_id="s-1", max_frame_bytes=4096, initial_window=16, heartbeat_s=5.0,
            resume_token="rt-1", streams=[ResumedStream(stream=1)],
        ))], "reject"),
        "ended-from-connector": ("ended is the broker's", "broker", [
            ("receive", R_HELLO), ("send", R_WELCOME), *_streaming(), ("receive", End(stream=1)),
            ("receive", Ended(stream=1)),
        ], "reject"),
        # the broker's session receives something wrong from a connector
        "models-before-hello": ("hello is the connector's first frame", "broker",
                                [("receive", Models(models=[]))], "reject"),
        "hello-without-streams": ("max_streams is at least 1", "broker",
                                  [("receive", Hello(name="a", version="1", max_streams=0))],
                                  "reject"),
        "hello-without-name": ("a name is 1-64 characters", "broker",
                               [("receive", Hello(name="", version="1"))], "reject"),
        "hello-name-too-long": ("a name is 1-64 characters (code points)", "broker",
                                [("receive", Hello(name="é" * 65, version="1"))], "reject"),
        "hello-name-with-space": ("no space, control, format or separator character in a name",
                                  "broker", [("receive", Hello(name="gpu box", version="1"))],
                                  "reject"),
        "accept-hello-name-64-characters": ("64 code points of any letters, digits, marks, "
                                            "punctuation or symbols", "broker",
                                            [("receive", Hello(name="é" * 63 + "🚀",
                                                               version="1"))], "accept"),
        "second-hello": ("hello comes once", "broker", _broker(("receive", HELLO)), "reject"),
        "open-from-connector": ("a connector never sends broker frames", "broker",
                                _broker(("receive", open_(1))), "reject"),
        "head-for-unknown-stream": ("frames for a stream never opened", "broker",
                                    _broker(("receive", Head(stream=1, status=200))), "reject"),
        "data-for-unknown-stream": ("frames for a stream never opened", "broker",
                                    _broker(("receive", Data(stream=1, chunk=b""))), "reject"),
        "end-for-unknown-stream": ("frames for a stream never opened", "broker",
                                   _broker(("receive", FAILED)), "reject"),
        "data-before-head": ("head comes before data", "broker", _broker(
            ("send", open_(1)), ("receive", Data(stream=1, chunk=b"x")),
        ), "reject"),
        "head-twice": ("one head per stream", "broker", _broker(
            *_streaming(), ("receive", Head(stream=1, status=200)),
        ), "reject"),
        "head-bad-status": ("a status is 200..599", "broker", _broker(
            ("send", open_(1)), ("receive", Head(stream=1, status=600)),
        ), "reject"),
        "head-interim-status": ("1xx is interim, never the status of a response", "broker",
                                _broker(("send", open_(1)),
                                        ("receive", Head(stream=1, status=100))), "reject"),
        "head-switching-protocols": ("101 would hand the client's connection over", "broker",
                                     _broker(("send", open_(1)),
                                             ("receive", Head(stream=1, status=101))), "reject"),
        "head-no-content": ("204 carries no body: what follows would be a second response",
                            "broker", _broker(("send", open_(1)),
                                              ("receive", Head(stream=1, status=204))), "reject"),
        "head-reset-content": ("205 carries no body", "broker", _broker(
            ("send", open_(1)), ("receive", Head(stream=1, status=205)),
        ), "reject"),
        "head-not-modified": ("304 carries no body", "broker", _broker(
            ("send", open_(1)), ("receive", Head(stream=1, status=304)),
        ), "reject"),
        "accept-head-statuses-with-a-body": ("206 and 429 carry a body, like every status of "
                                             "200-599 but 204, 205 and 304", "broker", _broker(
            *[("send", open_(i)) for i in (1, 2)],
            ("receive", Head(stream=1, status=206)), ("receive", Head(stream=2, status=429)),
        ), "accept"),
        "head-before-body-complete": ("the connector waits for the whole body", "broker",
                                      _broker(("send", open_(1, more_body=True)),
                                              ("receive", Head(stream=1, status=200))),
                                      "reject"),
        "end-ok-without-head": ("a failure before head carries an error", "broker", _broker(
            ("send", open_(1)), ("receive", End(stream=1)),
        ), "reject"),
        "duplicate-end": ("exactly one end per stream", "broker", _broker(
            *_streaming(), ("receive", End(stream=1)), ("receive", End(stream=1)),
        ), "reject"),
        "data-after-end": ("nothing follows end", "broker", _broker(
            *_streaming(), ("receive", End(stream=1)), ("receive", Data(stream=1, chunk=b"")),
        ), "reject"),
        "data-beyond-window": ("the window is 16 bytes", "broker", _broker(
            *_streaming(), ("receive", Data(stream=1, chunk=b"x" * 16)),
            ("receive", Data(stream=1, chunk=b"y")),
        ), "reject"),
        "data-beyond-window-at-once": ("one chunk larger than the window", "broker", _broker(
            *_streaming(), ("receive", Data(stream=1, chunk=b"x" * 17)),
        ), "reject"),
        "accept-credit-reopens-window": ("data within the credited window", "broker", _broker(
            *_streaming(), ("receive", Data(stream=1, chunk=b"x" * 16)),
            ("send", Credit(stream=1, delivered=16)), ("receive", Data(stream=1, chunk=b"y" * 16)),
            ("receive", End(stream=1, usage=Usage(prompt_tokens=1, completion_tokens=2,
                                                  total_tokens=3))),
        ), "accept"),
        "accept-models-right-after-hello": ("a model list may follow hello before welcome",
                                            "broker", [("receive", HELLO),
                                                       ("receive", Models(models=[]))],
                                            "accept"),
        "accept-data-after-cancel": ("data in flight when the cancel was sent", "broker",
                                     _broker(*_streaming(), ("send", Cancel(stream=1, reason=1)),
                                             ("receive", Data(stream=1, chunk=b"late")),
                                             ("receive", CANCELLED)), "accept"),
    }  # fmt: skip
    return seqs


# -- writing ---------------------------------------------------------------------------------


def _dump(path: Path, value: object) -> None:
    text = json.dumps(value, indent=2, ensure_ascii=False) + "\n"
    path.write_text(text, encoding="utf-8", newline="\n")


def generate(out: Path) -> None:
    """(Re)write every vector under ``out``."""
    for kind in ("valid", "invalid", "sequences"):
        shutil.rmtree(out / kind, ignore_errors=True)
        (out / kind).mkdir(parents=True)
    for name, (why, frame, blob) in valid().items():
        _dump(out / "valid" / f"{name}.json", {
            "name": name, "description": why, "frame": as_json(frame),
            "msgpack_hex": blob.hex(), "canonical": blob == encode(frame),
        })  # fmt: skip
    for name, (why, blob, code, limit) in invalid().items():
        _dump(out / "invalid" / f"{name}.json", {
            "name": name, "description": why, "msgpack_hex": blob.hex(),
            "max_frame_bytes": limit, "close_code": code,
        })  # fmt: skip
    for name, (why, role, steps, outcome) in sequences().items():
        last = len(steps) - 1
        _dump(out / "sequences" / f"{role}-{name}.json", {
            "name": name, "description": why, "role": role,
            "steps": [
                {
                    "action": action, "frame": as_json(frame), "msgpack_hex": encode(frame).hex(),
                    "expect": "reject" if i == last and outcome == "reject" else "accept",
                }
                for i, (action, frame) in enumerate(steps)
            ],
        })  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
