"""Property tests: whatever bytes or frames arrive, and in whatever order, only the documented
errors come out, a refused frame changes nothing, and the two sessions of a pair agree."""

import contextlib
from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
import msgspec
from hypothesis import given

from remotellm_protocol import (
    Body,
    BrokerSession,
    Cancel,
    ConnectorSession,
    Credit,
    Data,
    End,
    Frame,
    GoAway,
    Head,
    Hello,
    LocalProtocolError,
    ModelInfo,
    Models,
    Open,
    RemoteProtocolError,
    SessionState,
    StreamError,
    Usage,
    Welcome,
    decode,
    encode,
)
from remotellm_protocol.testing import TEST_PRINCIPAL, SessionPair

Session = ConnectorSession | BrokerSession

# -- bytes -----------------------------------------------------------------------------------


@given(data=st.binary(max_size=200))
def test_decoding_random_bytes_raises_nothing_but_remote_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode(data)


@given(
    frame=st.from_type(Frame),  # type: ignore[arg-type]
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 10_000),
)
def test_decoding_damaged_frames_raises_nothing_but_remote_protocol_errors(
    frame: Frame, edits: list[tuple[int, int]], cut: int
) -> None:
    damaged = bytearray(encode(frame))
    for position, value in edits:
        damaged[position % len(damaged)] = value
    for candidate in (bytes(damaged), bytes(damaged[: cut % len(damaged)])):
        with contextlib.suppress(RemoteProtocolError):
            decode(candidate)


# -- plausible frames: small ids and sizes, so random sequences reach deep states -------------

ids = st.integers(min_value=-1, max_value=5)
chunks = st.binary(max_size=40)
small = st.integers(min_value=0, max_value=80)
errors = st.none() | st.builds(StreamError, code=st.integers(0, 12), message=st.just("m"))

plausible_hellos = st.builds(
    Hello,
    name=st.just("c"),
    version=st.just("1"),
    models=st.just([ModelInfo(id="m")]),
    max_streams=st.integers(0, 3),
)
plausible_welcomes = st.builds(
    Welcome,
    session_id=st.just("s"),
    max_frame_bytes=st.sampled_from([1000, 1024, 4096]),
    initial_window=st.integers(0, 64),
    heartbeat_s=st.just(5.0),
)
plausible_opens = st.builds(
    Open,
    stream=ids,
    correlation_id=st.just("c"),
    method=st.just("POST"),
    path=st.just("/v1/completions"),
    principal=st.just(TEST_PRINCIPAL),
    body=chunks,
    more_body=st.booleans(),
)
plausible_frames: st.SearchStrategy[Frame] = st.one_of(
    plausible_hellos,
    plausible_welcomes,
    st.builds(Models, models=st.just([])),
    plausible_opens,
    st.builds(Body, stream=ids, chunk=chunks, last=st.booleans()),
    st.builds(Head, stream=ids, status=st.sampled_from([200, 404, 99, 101, 204, 304, 600])),
    st.builds(Data, stream=ids, chunk=chunks),
    st.builds(Data, stream=ids, chunk=chunks),
    st.builds(End, stream=ids, usage=st.none() | st.just(Usage()), error=errors),
    st.builds(Credit, stream=ids, delivered=small),
    st.builds(Cancel, stream=ids, reason=st.integers(0, 5)),
    st.builds(GoAway),
    st.from_type(Frame),  # type: ignore[arg-type]
)


def snapshot(session: Session) -> tuple[Any, ...]:
    """Everything a session knows, to prove a refused frame changed none of it."""
    streams = {
        i: (
            s.state,
            s.cancelled,
            s.sent,
            s.delivered,
            s.credited,
            s.window,
            s.body,
            s.body_done,
            s.head_seen,
            bytes(s.kept),
            s.kept_from,
        )
        for i, s in session.streams.items()
    }
    common = (
        session.state,
        streams,
        session.last_stream_id,
        session.max_frame_bytes,
        session.window,
        session.max_streams,
        session.local_goaway,
        session.remote_goaway,
        session.resumable,
        sorted(session.ended),
    )
    if isinstance(session, ConnectorSession):
        return (*common, session.hello_sent, session.session_id, session.heartbeat_s)
    return (*common, session.hello)


def check_invariants(session: Session) -> None:
    assert len(session.streams) <= max(session.max_streams, 0)
    for stream_id, stream in session.streams.items():
        assert 0 < stream_id <= session.last_stream_id
        assert 0 <= stream.credited <= stream.sent
        assert stream.sent - stream.credited <= stream.window
        assert 0 <= session.available(stream_id) <= stream.window
        if isinstance(session, BrokerSession):
            assert stream.credited <= stream.delivered <= stream.sent


REFUSED = object()


def attempt(session: Session, action: Callable[[], object], error: type[Exception]) -> object:
    """The result of ``action``, or REFUSED if it raised ``error`` (and changed nothing)."""
    before = snapshot(session)
    try:
        return action()
    except error:
        assert snapshot(session) == before
        return REFUSED


MOVES = st.sampled_from(
    ["open", "body", "head", "data", "end", "credit", "acknowledge"] * 2
    + ["data", "cancel", "cancel-helper", "goaway", "wild", "hello", "welcome"]
)
SENDERS = st.sampled_from(["connector", "broker"])
STATUSES = st.sampled_from([200, 200, 500, 99, 101, 204, 304])
CHOICES = st.integers(min_value=0, max_value=4)


def aimed(data: st.DataObject, frame: Frame, session: Session) -> Frame:
    """Point most stream frames at a stream the session knows (or the next id), so that random
    sequences reach deep states instead of bouncing off "unknown stream"."""
    if "stream" not in frame.__struct_fields__:
        return frame
    known = sorted({*session.streams, session.last_stream_id, session.last_stream_id + 1})
    choice = data.draw(CHOICES)
    stream = known[choice % len(known)] if choice else frame.stream  # type: ignore[attr-defined]
    return msgspec.structs.replace(frame, stream=stream)


def agree(pair: SessionPair) -> None:
    for session in (pair.connector, pair.broker):
        check_invariants(session)
    assert pair.connector.state is pair.broker.state
    assert pair.connector.streams.keys() == pair.broker.streams.keys()
    for stream_id, ours in pair.connector.streams.items():
        theirs = pair.broker.streams[stream_id]
        assert (ours.state, ours.sent, ours.credited, ours.cancelled) == (
            theirs.state,
            theirs.sent,
            theirs.credited,
            theirs.cancelled,
        )


def next_move(data: st.DataObject, pair: SessionPair) -> tuple[str, Frame | None]:
    """Who acts next and with which frame: mostly moves that make sense for a stream that
    exists (so the sequence reaches deep states), sometimes nonsense. Frames are built here
    from a few cheap draws: making strategies at every step would be slow."""
    broker = pair.broker
    candidates = sorted({*broker.streams, broker.last_stream_id, broker.last_stream_id + 1})
    stream = candidates[data.draw(CHOICES) % len(candidates)]
    choice = data.draw(CHOICES)
    match move := data.draw(MOVES):
        case "hello":
            return "connector", data.draw(plausible_hellos)
        case "welcome":
            return "broker", data.draw(plausible_welcomes)
        case "goaway":
            return data.draw(SENDERS), GoAway()
        case "wild":
            return data.draw(SENDERS), data.draw(plausible_frames)
        case "acknowledge" | "cancel-helper":
            message = (
                broker.acknowledge(stream, choice * 7)
                if move == "acknowledge"
                else broker.cancel(stream, 1)
            )
            if message is not None:
                pair.connector.receive(message)
            return "helper", None
        case "head":
            return "connector", Head(stream=stream, status=data.draw(STATUSES))
    return stream_move(move, pair, stream, choice)


def stream_move(move: str, pair: SessionPair, stream: int, choice: int) -> tuple[str, Frame]:
    known = pair.broker.streams.get(stream)
    sent, credited = (known.sent, known.credited) if known else (0, 0)
    available = pair.connector.available(stream)
    match move:
        case "open":
            opened = Open(
                stream=pair.broker.next_stream_id(),
                correlation_id="c",
                method="POST",
                path="/",
                principal=TEST_PRINCIPAL,
                more_body=choice % 2 == 1,
            )
            return "broker", opened
        case "body":
            return "broker", Body(stream=stream, chunk=b"b" * choice, last=choice % 2 == 0)
        case "data":
            size = [available, available + 1, 1, 0, 3][choice]
            return "connector", Data(stream=stream, chunk=b"d" * size)
        case "end":
            error = None if choice < 2 else StreamError(code=choice)
            return "connector", End(stream=stream, error=error)
        case "credit":
            delivered = [sent, credited, (sent + credited) // 2, sent + 1, credited - 1][choice]
            return "broker", Credit(stream=stream, delivered=delivered)
    return "broker", Cancel(stream=stream, reason=choice)


@given(
    handshaken=st.sampled_from([True, True, True, False]),
    window=st.integers(1, 48),
    max_streams=st.integers(1, 3),
    resumable=st.booleans(),
    data=st.data(),
)
def test_a_pair_fed_random_frames_stays_consistent(
    handshaken: bool, window: int, max_streams: int, resumable: bool, data: st.DataObject
) -> None:
    pair = (
        SessionPair.handshaken(
            window=window, max_streams=max_streams, max_frame_bytes=4096, resumable=resumable
        )
        if handshaken
        else SessionPair()
    )
    for _ in range(data.draw(st.integers(5, 60))):
        who, frame = next_move(data, pair)
        if frame is not None:
            sender, receiver = (
                (pair.broker, pair.connector) if who == "broker" else (pair.connector, pair.broker)
            )
            sent = attempt(sender, lambda s=sender, f=frame: s.send(f), LocalProtocolError)
            if isinstance(sent, bytes):
                # What one side's send accepts, the other side's receive accepts.
                assert receiver.receive(sent) == frame
        agree(pair)
    lost = pair.connector.connection_lost()
    assert lost == pair.broker.connection_lost()
    assert pair.connector.state is pair.broker.state is SessionState.CLOSED


@given(role=st.sampled_from([ConnectorSession, BrokerSession]), data=st.data())
def test_one_session_fed_a_misbehaving_peer_raises_only_protocol_errors(
    role: type[Session], data: st.DataObject
) -> None:
    session = role()
    for _ in range(data.draw(st.integers(5, 80))):
        frame = aimed(data, data.draw(plausible_frames), session)
        if data.draw(st.booleans()):
            attempt(session, lambda f=frame: session.send(f), LocalProtocolError)
        else:
            message = encode(frame)
            attempt(session, lambda m=message: session.receive(m), RemoteProtocolError)
        check_invariants(session)


@given(window=st.integers(1, 48), data=st.data())
def test_a_resume_after_random_traffic_and_a_cut_link_delivers_every_byte_once(
    window: int, data: st.DataObject
) -> None:
    """Random traffic on a resumable pair; then the link is cut, and what the connector
    sends afterwards is lost; then the connector resumes. Every response byte the connector
    ever sent reaches the broker exactly once and in order, and every body byte the broker
    sent reaches the connector, whatever was in flight."""
    pair = SessionPair.handshaken(
        window=window, max_streams=3, max_frame_bytes=4096, resumable=True
    )
    sent: dict[int, bytes] = {}
    for _ in range(data.draw(st.integers(5, 50))):
        who, frame = next_move(data, pair)
        if frame is not None:
            sender = pair.broker if who == "broker" else pair.connector
            message = attempt(sender, lambda s=sender, f=frame: s.send(f), LocalProtocolError)
            if isinstance(message, bytes):
                receiver = pair.connector if who == "broker" else pair.broker
                pair.log.append((who, receiver.receive(message)))
                if isinstance(frame, Data):
                    sent[frame.stream] = sent.get(frame.stream, b"") + frame.chunk
    for _ in range(data.draw(st.integers(0, 10))):  # the link is cut: these are lost
        move = data.draw(st.sampled_from(["data", "data", "end", "head"]))
        stream = data.draw(st.sampled_from(sorted({*pair.connector.streams, 1})))
        frame = (
            Head(stream=stream, status=200)
            if move == "head"
            else stream_move(move, pair, stream, data.draw(CHOICES))[1]
        )
        if isinstance(attempt(pair.connector, lambda f=frame: pair.connector.send(f),
                              LocalProtocolError), bytes) and isinstance(frame, Data):  # fmt: skip
            sent[frame.stream] = sent.get(frame.stream, b"") + frame.chunk
    resumed = pair.resume()
    resumed.replay()
    agree(resumed)
    received: dict[int, bytes] = {}
    for who, frame in resumed.log:
        if who == "connector" and isinstance(frame, Data):
            received[frame.stream] = received.get(frame.stream, b"") + frame.chunk
    assert received == {k: v for k, v in sent.items() if v}
    for stream_id, stream in resumed.connector.streams.items():
        assert stream.body == resumed.broker.streams[stream_id].body
        assert stream.body_done is resumed.broker.streams[stream_id].body_done


# -- batched credit never stalls a stream -----------------------------------------------------


@given(
    window=st.integers(1, 5000),
    total=st.integers(0, 20_000),
    chunk_sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=8),
    delivery_sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=8),
)
def test_acknowledge_never_stalls_a_connector_that_sends_whatever_its_window_allows(
    window: int, total: int, chunk_sizes: list[int], delivery_sizes: list[int]
) -> None:
    pair = SessionPair.handshaken(window=window)
    stream = pair.open_stream().stream
    pair.connector_sends(Head(stream=stream, status=200))
    sent = delivered = turn = credited = 0
    while delivered < total:
        turn += 1
        assert turn < 10 * (total + 1), "no progress: the stream stalled"
        room = min(pair.connector.available(stream), total - sent)
        if room:
            size = min(room, chunk_sizes[turn % len(chunk_sizes)])
            pair.connector_sends(Data(stream=stream, chunk=b"x" * size))
            sent += size
        # The broker hands what it holds to its client in pieces, acknowledging each.
        size = min(sent - delivered, delivery_sizes[turn % len(delivery_sizes)])
        delivered += size
        credit = pair.broker.acknowledge(stream, size)
        if credit is not None:
            received = pair.connector.receive(credit)
            assert isinstance(received, Credit)
            assert received.delivered - credited >= max(1, window // 4)  # batched
            credited = received.delivered
    pair.connector_sends(End(stream=stream))
