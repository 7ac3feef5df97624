"""Micro-benchmark of the relay protocol's codec and sessions (stdlib only, no pytest).

    hatch run bench:codec              # about 10 s
    hatch run bench:codec --repeat 9   # steadier figures on a busy machine

Measures the per-frame CPU cost the protocol adds to every relayed chunk: encode and decode of
a typical 200-byte ``data`` frame (one SSE event of a streaming chat completion) and of a
4 KiB ``open`` frame (a chat request with a short conversation), then a ``data`` frame through
both sessions (``ConnectorSession.send`` + ``BrokerSession.receive``) with and without the
broker's batched ``acknowledge``. Each figure is the best of ``--repeat`` timing runs, since
on a shared machine the noise only ever adds time.
"""

import argparse
import json
import platform
import sys
import timeit
from collections.abc import Callable

import msgspec

from remotellm_protocol import Data, Head, Open, __version__, decode, encode
from remotellm_protocol.testing import TEST_PRINCIPAL, SessionPair

DATA_FRAME_BYTES = 200
OPEN_FRAME_BYTES = 4096


def sse_event(size: int) -> bytes:
    """An SSE event of a streaming chat completion, padded to ``size`` bytes."""
    event = {
        "id": "chatcmpl-42",
        "object": "chat.completion.chunk",
        "model": "llama3",
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": None}],
    }
    empty = len(b"data: " + json.dumps(event).encode() + b"\n\n")
    event["choices"][0]["delta"]["content"] = "x" * (size - empty)  # type: ignore[index]
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def data_frame() -> Data:
    overhead = len(encode(Data(stream=7, chunk=b"")))
    frame = Data(stream=7, chunk=sse_event(DATA_FRAME_BYTES - overhead))
    assert len(encode(frame)) == DATA_FRAME_BYTES
    return frame


def open_frame() -> Open:
    def build(body: bytes) -> Open:
        return Open(
            stream=7,
            correlation_id="0f3c9a7e-5b1d-4c2e-9f3a-7d6e5c4b3a21",
            method="POST",
            path="/v1/chat/completions",
            principal=TEST_PRINCIPAL,
            headers=[
                ("content-type", "application/json"),
                ("accept", "text/event-stream"),
                ("x-request-id", "0f3c9a7e-5b1d-4c2e-9f3a-7d6e5c4b3a21"),
                ("user-agent", "OpenAI/Python 1.40.0"),
            ],
            deadline_ms=600_000,
            body=body,
        )

    def request(pad: int) -> bytes:
        messages = [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Summarise the text below. " + "lorem ipsum " * 100},
            {"role": "assistant", "content": "x" * pad},
            {"role": "user", "content": "Shorter, please."},
        ]
        return json.dumps({"model": "llama3", "stream": True, "messages": messages}).encode()

    pad = OPEN_FRAME_BYTES - len(encode(build(request(0))))
    frame = build(request(pad))
    assert len(encode(frame)) == OPEN_FRAME_BYTES
    return frame


def through_sessions(acknowledge: bool) -> Callable[[], object]:
    """One ``data`` frame from the connector's session to the broker's, optionally with the
    broker acknowledging it (a credit frame goes back once a quarter window has built up)."""
    pair = SessionPair.handshaken(window=256 * 1024 if acknowledge else 2**62)
    stream = pair.open_stream().stream
    pair.connector_sends(Head(stream=stream, status=200))
    frame = msgspec.structs.replace(data_frame(), stream=stream)
    size = len(frame.chunk)
    connector, broker = pair.connector, pair.broker

    def plain() -> object:
        return broker.receive(connector.send(frame))

    def acknowledged() -> object:
        received = broker.receive(connector.send(frame))
        credit = broker.acknowledge(stream, size)
        if credit is not None:
            connector.receive(credit)
        return received

    return acknowledged if acknowledge else plain


def measure(action: Callable[[], object], repeat: int) -> float:
    """Seconds per call: the best of ``repeat`` runs of a loop lasting at least 0.2 s."""
    timer = timeit.Timer(action)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timing runs per figure")
    args = parser.parse_args()

    data, opened = data_frame(), open_frame()
    data_bytes, open_bytes = encode(data), encode(opened)
    cases: list[tuple[str, Callable[[], object]]] = [
        ("encode  data  200 B", lambda: encode(data)),
        ("decode  data  200 B", lambda: decode(data_bytes)),
        ("encode+decode data  200 B", lambda: decode(encode(data))),
        ("encode  open  4 KiB", lambda: encode(opened)),
        ("decode  open  4 KiB", lambda: decode(open_bytes)),
        ("encode+decode open  4 KiB", lambda: decode(encode(opened))),
        ("session send+receive data", through_sessions(acknowledge=False)),
        ("  ... + acknowledge/credit", through_sessions(acknowledge=True)),
    ]
    print(
        f"remotellm-protocol {__version__}, msgspec {msgspec.__version__}, "
        f"Python {platform.python_version()} ({platform.machine()}), best of {args.repeat}"
    )
    print(f"{'operation':<28} {'µs/frame':>10} {'frames/s':>12}")
    for name, action in cases:
        seconds = measure(action, args.repeat)
        print(f"{name:<28} {seconds * 1e6:>10.2f} {1 / seconds:>12,.0f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
