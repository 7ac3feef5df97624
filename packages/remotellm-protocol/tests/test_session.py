"""The per-connection state machines, driven through ``SessionPair`` (both sides check every
frame) or, to play a misbehaving peer, by feeding hand-encoded frames to one side."""

import msgspec
import pytest

from remotellm_protocol import (
    Body,
    BrokerSession,
    Cancel,
    CancelReason,
    CloseCode,
    ConnectorSession,
    Credit,
    Data,
    End,
    ErrorCode,
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
    StreamState,
    Usage,
    Welcome,
    decode,
    encode,
)
from remotellm_protocol.session import DATA_FRAME_OVERHEAD, RESPONSE_STATUSES
from remotellm_protocol.testing import TEST_PRINCIPAL, SessionPair

FAILED = StreamError(code=ErrorCode.UPSTREAM_UNREACHABLE, message="connection refused")
WELCOME = Welcome(session_id="s", max_frame_bytes=4096, initial_window=1000, heartbeat_s=5.0)


def open_frame(stream: int, *, more_body: bool = False, body: bytes = b"") -> Open:
    return Open(
        stream=stream,
        correlation_id=f"req-{stream}",
        method="POST",
        path="/v1/chat/completions",
        principal=TEST_PRINCIPAL,
        body=body,
        more_body=more_body,
    )


def streaming(pair: SessionPair) -> int:
    """Open a stream and send its head; return its id."""
    stream = pair.open_stream().stream
    pair.connector_sends(Head(stream=stream, status=200))
    return stream


def remote_error(session: ConnectorSession | BrokerSession, frame: Frame) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        session.receive(encode(frame))
    return info.value.message


def local_error(session: ConnectorSession | BrokerSession, frame: Frame) -> str:
    with pytest.raises(LocalProtocolError) as info:
        session.send(frame)
    return info.value.message


# -- handshake -------------------------------------------------------------------------------


def test_the_connector_speaks_first_with_hello() -> None:
    connector, broker = ConnectorSession(), BrokerSession()
    hello = Hello(name="box", version="1.0", models=[ModelInfo(id="m")], max_streams=4)
    assert broker.receive(connector.send(hello)) == hello
    assert (broker.hello, broker.max_streams, broker.state) == (hello, 4, SessionState.HANDSHAKE)


def test_welcome_opens_both_sessions_with_the_limits_it_announces() -> None:
    pair = SessionPair()
    pair.connector_sends(Hello(name="box", version="1.0"))
    assert pair.broker_sends(WELCOME) == WELCOME
    for session in (pair.connector, pair.broker):
        assert (session.state, session.max_frame_bytes, session.window) == (
            SessionState.OPEN,
            4096,
            1000,
        )
    assert (pair.connector.session_id, pair.connector.heartbeat_s) == ("s", 5.0)


@pytest.mark.parametrize(
    "frame", [Models(models=[]), GoAway(), WELCOME, End(stream=1), Data(stream=1, chunk=b"")]
)
def test_a_broker_accepts_nothing_before_hello(frame: Frame) -> None:
    assert "expected hello" in remote_error(BrokerSession(), frame)


def test_a_broker_refuses_a_second_hello() -> None:
    broker = BrokerSession()
    broker.receive(encode(Hello(name="a", version="1")))
    assert "hello before welcome" in remote_error(broker, Hello(name="b", version="1"))
    assert "data before welcome" in remote_error(broker, Data(stream=1, chunk=b""))


def test_a_model_list_may_follow_hello_before_welcome() -> None:
    pair = SessionPair()
    pair.connector_sends(Hello(name="box", version="1"))
    models = Models(models=[ModelInfo(id="m", owned_by="me", context_length=8192)])
    assert pair.connector_sends(models) == models
    assert pair.broker.state is SessionState.HANDSHAKE


def test_a_broker_refuses_a_hello_that_offers_no_streams_and_keeps_waiting() -> None:
    broker = BrokerSession()
    assert "max_streams" in remote_error(broker, Hello(name="a", version="1", max_streams=0))
    assert broker.hello is None
    broker.receive(encode(Hello(name="a", version="1")))
    assert broker.hello is not None


def test_a_connector_cannot_offer_fewer_than_one_stream_and_may_then_try_again() -> None:
    connector = ConnectorSession()
    assert "max_streams" in local_error(connector, Hello(name="a", version="1", max_streams=0))
    assert not connector.hello_sent
    connector.send(Hello(name="a", version="1", max_streams=1))
    assert (connector.hello_sent, connector.max_streams) == (True, 1)


@pytest.mark.parametrize(
    "name",
    ["", "x" * 65, "tab\there", "new\nline", "two words", "nb\u00a0sp", "zero\u200bwidth"],
)
def test_a_connector_name_is_1_to_64_characters_without_controls_or_spaces(name: str) -> None:
    hello = Hello(name=name, version="1")
    assert "hello.name" in local_error(ConnectorSession(), hello)
    assert "hello.name" in remote_error(BrokerSession(), hello)
    for good in ("é" * 64, "lab-gpu_1.example", "模型-🚀"):
        assert BrokerSession().receive(encode(Hello(name=good, version="1"))) is not None


def test_a_connector_sends_hello_once() -> None:
    connector = ConnectorSession()
    connector.send(Hello(name="a", version="1"))
    assert local_error(connector, Hello(name="a", version="1")) == "hello sent twice"


def test_a_connector_sends_models_only_after_hello() -> None:
    assert local_error(ConnectorSession(), Models(models=[])) == "models before hello"


@pytest.mark.parametrize(
    "frame", [Head(stream=1, status=200), Data(stream=1, chunk=b""), End(stream=1), GoAway()]
)
def test_a_connector_sends_no_stream_frames_and_no_goaway_before_welcome(frame: Frame) -> None:
    connector = ConnectorSession()
    connector.send(Hello(name="a", version="1"))
    assert "not allowed in session state HANDSHAKE" in local_error(connector, frame)


def test_a_connector_refuses_welcome_before_it_sent_hello() -> None:
    assert "before hello was sent" in remote_error(ConnectorSession(), WELCOME)


@pytest.mark.parametrize("frame", [GoAway(), open_frame(1), Credit(stream=1, delivered=0)])
def test_a_connector_expects_welcome_first(frame: Frame) -> None:
    connector = ConnectorSession()
    connector.send(Hello(name="a", version="1"))
    assert "expected welcome" in remote_error(connector, frame)


@pytest.mark.parametrize(
    "welcome",
    [
        Welcome(session_id="s", max_frame_bytes=1023, initial_window=1, heartbeat_s=5.0),
        Welcome(session_id="s", max_frame_bytes=1024, initial_window=0, heartbeat_s=5.0),
    ],
)
def test_unusable_limits_in_welcome_are_refused_by_both_sides(welcome: Welcome) -> None:
    connector, broker = ConnectorSession(), BrokerSession()
    broker.receive(connector.send(Hello(name="a", version="1")))
    assert "unusable limits" in local_error(broker, welcome)
    assert broker.state is SessionState.HANDSHAKE
    assert "unusable limits" in remote_error(connector, welcome)
    assert connector.state is SessionState.HANDSHAKE


def test_the_smallest_usable_limits_are_accepted() -> None:
    pair = SessionPair.handshaken(window=1, max_frame_bytes=1024)
    assert pair.connector.max_data_chunk == 1024 - DATA_FRAME_OVERHEAD


@pytest.mark.parametrize("frame", [WELCOME, open_frame(1), GoAway()])
def test_a_broker_sends_nothing_before_hello(frame: Frame) -> None:
    assert "before hello/welcome" in local_error(BrokerSession(), frame)


def test_a_broker_sends_welcome_before_anything_else() -> None:
    broker = BrokerSession()
    broker.receive(encode(Hello(name="a", version="1")))
    assert "before hello/welcome" in local_error(broker, open_frame(1))


def test_welcome_comes_once() -> None:
    pair = SessionPair.handshaken()
    assert "never sends welcome" in local_error(pair.broker, WELCOME)
    assert "never sends welcome here" in remote_error(pair.connector, WELCOME)


def test_the_handshake_frames_may_carry_a_long_model_list() -> None:
    pair = SessionPair.handshaken(models=[ModelInfo(id=f"model-{i}") for i in range(5000)])
    assert pair.broker.hello is not None
    assert len(pair.broker.hello.models) == 5000


def test_models_may_be_announced_again_at_any_time() -> None:
    pair = SessionPair.handshaken()
    stream = streaming(pair)
    assert pair.connector_sends(Models(models=[ModelInfo(id="new")])) == Models(
        models=[ModelInfo(id="new")]
    )
    assert stream in pair.broker.streams


# -- who sends what ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        open_frame(1),
        Body(stream=1, chunk=b""),
        Credit(stream=1, delivered=0),
        Cancel(stream=1, reason=1),
        WELCOME,
    ],
)
def test_a_connector_never_sends_broker_frames(frame: Frame) -> None:
    pair = SessionPair.handshaken()
    assert "a connector never sends" in local_error(pair.connector, frame)
    assert "a connector never sends" in remote_error(pair.broker, frame)


@pytest.mark.parametrize(
    "frame",
    [
        Hello(name="a", version="1"),
        Models(models=[]),
        Head(stream=1, status=200),
        Data(stream=1, chunk=b""),
        End(stream=1),
    ],
)
def test_a_broker_never_sends_connector_frames(frame: Frame) -> None:
    pair = SessionPair.handshaken()
    assert "a broker never sends" in local_error(pair.broker, frame)
    assert "a broker never sends" in remote_error(pair.connector, frame)


# -- opening streams ---------------------------------------------------------------------------


def test_open_creates_the_stream_on_both_sides() -> None:
    pair = SessionPair.handshaken()
    opened = pair.open_stream(body=b"{}")
    assert opened.stream == 1
    assert pair.connector.streams[1].state is StreamState.AWAITING_HEAD
    assert pair.broker.streams[1].state is StreamState.AWAITING_HEAD
    assert pair.broker.next_stream_id() == 2


def test_stream_ids_increase_but_may_skip() -> None:
    pair = SessionPair.handshaken()
    pair.broker_sends(open_frame(5))
    assert pair.broker.next_stream_id() == 6
    assert local_error(pair.broker, open_frame(3)) == "open reuses stream id 3"
    assert remote_error(pair.connector, open_frame(3)) == "open reuses stream id 3"


@pytest.mark.parametrize("stream", [0, -1])
def test_stream_ids_are_positive(stream: int) -> None:
    pair = SessionPair.handshaken()
    assert "reuses stream id" in local_error(pair.broker, open_frame(stream))
    assert "reuses stream id" in remote_error(pair.connector, open_frame(stream))


def test_stream_ids_fit_a_signed_64_bit_integer() -> None:
    pair = SessionPair.handshaken()
    assert "beyond" in local_error(pair.broker, open_frame(2**63))
    assert "beyond" in remote_error(pair.connector, open_frame(2**64 - 1))
    pair.broker_sends(open_frame(2**63 - 1))


def test_open_may_not_reuse_the_id_of_a_finished_stream() -> None:
    pair = SessionPair.handshaken()
    pair.open_stream()
    pair.connector_sends(End(stream=1, error=FAILED))
    assert "reuses stream id 1" in local_error(pair.broker, open_frame(1))
    assert "reuses stream id 1" in remote_error(pair.connector, open_frame(1))


def test_the_broker_opens_no_more_streams_than_the_connector_offered() -> None:
    pair = SessionPair.handshaken(max_streams=2)
    pair.open_stream()
    pair.open_stream()
    assert "limit of 2 streams" in local_error(pair.broker, open_frame(3))
    assert "limit of 2 streams" in remote_error(pair.connector, open_frame(3))
    pair.connector_sends(End(stream=1, error=FAILED))
    assert pair.open_stream().stream == 3


# -- request bodies ----------------------------------------------------------------------------


def test_a_large_request_body_follows_open_in_body_frames() -> None:
    pair = SessionPair.handshaken()
    stream = pair.open_stream(body=b"part1", more_body=True).stream
    assert pair.connector.streams[stream].state is StreamState.SENDING_BODY
    pair.broker_sends(Body(stream=stream, chunk=b"part2"))
    pair.broker_sends(Body(stream=stream, chunk=b"part3", last=True))
    for session in (pair.connector, pair.broker):
        assert session.streams[stream].state is StreamState.AWAITING_HEAD
    pair.connector_sends(Head(stream=stream, status=200))


def test_no_body_frame_follows_the_last_one() -> None:
    pair = SessionPair.handshaken()
    stream = pair.open_stream().stream  # the whole body was in open
    late = Body(stream=stream, chunk=b"more")
    assert "body not allowed" in local_error(pair.broker, late)
    assert "body not allowed" in remote_error(pair.connector, late)


def test_the_connector_answers_only_after_the_whole_body_unless_it_fails() -> None:
    pair = SessionPair.handshaken()
    stream = pair.open_stream(more_body=True).stream
    assert "head not allowed" in local_error(pair.connector, Head(stream=stream, status=200))
    assert "head not allowed" in remote_error(pair.broker, Head(stream=stream, status=200))
    pair.connector_sends(End(stream=stream, error=StreamError(code=ErrorCode.BAD_REQUEST)))
    assert stream not in pair.broker.streams


# -- responses ---------------------------------------------------------------------------------


def test_a_whole_exchange_ends_with_usage() -> None:
    pair = SessionPair.handshaken()
    stream = streaming(pair)
    pair.connector_sends(Data(stream=stream, chunk=b"data: {}\n\n"))
    end = End(stream=stream, usage=Usage(prompt_tokens=3, completion_tokens=5, total_tokens=8))
    assert pair.connector_sends(end) == end
    assert pair.connector.streams == pair.broker.streams == {}


def test_data_needs_a_head_first() -> None:
    pair = SessionPair.handshaken()
    stream = pair.open_stream().stream
    data = Data(stream=stream, chunk=b"x")
    assert "data not allowed" in local_error(pair.connector, data)
    assert "data not allowed" in remote_error(pair.broker, data)


def test_a_stream_has_one_head() -> None:
    pair = SessionPair.handshaken()
    stream = streaming(pair)
    assert "head not allowed" in local_error(pair.connector, Head(stream=stream, status=200))
    assert "head not allowed" in remote_error(pair.broker, Head(stream=stream, status=200))


@pytest.mark.parametrize("status", [0, 99, 100, 101, 103, 199, 204, 205, 304, 600, -200, 2**40])
def test_a_head_carries_a_final_http_status_that_has_a_body(status: int) -> None:
    pair = SessionPair.handshaken()
    stream = pair.open_stream().stream
    head = Head(stream=stream, status=status)
    assert f"has status {status}" in local_error(pair.connector, head)
    assert f"has status {status}" in remote_error(pair.broker, head)
    pair.connector_sends(Head(stream=stream, status=599))


@pytest.mark.parametrize("status", [200, 203, 206, 301, 302, 400, 404, 429, 503, 599])
def test_every_other_status_from_200_to_599_is_accepted(status: int) -> None:
    pair = SessionPair.handshaken()
    stream = pair.open_stream().stream
    pair.connector_sends(Head(stream=stream, status=status))
    assert status in RESPONSE_STATUSES


def test_an_upstream_error_status_is_relayed_as_a_normal_response() -> None:
    pair = SessionPair.handshaken()
    stream = pair.open_stream().stream
    pair.connector_sends(Head(stream=stream, status=404))
    pair.connector_sends(Data(stream=stream, chunk=b'{"error": "no such model"}'))
    pair.connector_sends(End(stream=stream))


def test_a_failure_before_the_head_is_an_end_with_an_error() -> None:
    pair = SessionPair.handshaken()
    stream = pair.open_stream().stream
    assert "end_ok not allowed" in local_error(pair.connector, End(stream=stream))
    assert "end_ok not allowed" in remote_error(pair.broker, End(stream=stream))
    assert pair.connector_sends(End(stream=stream, error=FAILED)) == End(
        stream=stream, error=FAILED
    )


def test_a_stream_ends_exactly_once() -> None:
    pair = SessionPair.handshaken()
    stream = streaming(pair)
    pair.connector_sends(End(stream=stream))
    assert local_error(pair.connector, End(stream=stream)) == "end for finished stream 1"
    assert remote_error(pair.broker, End(stream=stream)) == "end for finished stream 1"


@pytest.mark.parametrize(
    "frame", [Head(stream=9, status=200), Data(stream=9, chunk=b""), End(stream=9)]
)
def test_connector_frames_for_a_stream_never_opened_are_errors(frame: Frame) -> None:
    pair = SessionPair.handshaken()
    assert "unknown stream 9" in local_error(pair.connector, frame)
    assert "unknown stream 9" in remote_error(pair.broker, frame)


@pytest.mark.parametrize("frame", [Head(stream=1, status=200), Data(stream=1, chunk=b"x")])
def test_connector_frames_for_a_finished_stream_are_errors(frame: Frame) -> None:
    pair = SessionPair.handshaken()
    stream = streaming(pair)
    pair.connector_sends(End(stream=stream))
    assert "finished stream 1" in local_error(pair.connector, frame)
    assert "finished stream 1" in remote_error(pair.broker, frame)


@pytest.mark.parametrize(
    "frame",
    [Body(stream=4, chunk=b""), Credit(stream=4, delivered=0), Cancel(stream=4, reason=1)],
)
def test_broker_frames_for_a_stream_never_opened_are_errors(frame: Frame) -> None:
    pair = SessionPair.handshaken()
    pair.open_stream()
    assert "unknown stream 4" in local_error(pair.broker, frame)
    assert "unknown stream 4" in remote_error(pair.connector, frame)


# -- flow control ------------------------------------------------------------------------------


def test_the_connector_may_fill_the_window_but_not_exceed_it() -> None:
    pair = SessionPair.handshaken(window=100)
    stream = streaming(pair)
    pair.connector_sends(Data(stream=stream, chunk=b"x" * 60))
    assert pair.connector.available(stream) == 40
    too_much = Data(stream=stream, chunk=b"x" * 41)
    assert "exceeds the 40 bytes of credit left" in local_error(pair.connector, too_much)
    assert pair.connector.streams[stream].sent == 60
    pair.connector_sends(Data(stream=stream, chunk=b"x" * 40))
    assert pair.connector.available(stream) == 0


def test_the_broker_refuses_data_beyond_the_window() -> None:
    pair = SessionPair.handshaken(window=100)
    stream = streaming(pair)
    assert "exceeds the 100 bytes" in remote_error(
        pair.broker, Data(stream=stream, chunk=b"x" * 101)
    )


def test_credit_reopens_the_window() -> None:
    pair = SessionPair.handshaken(window=100)
    stream = streaming(pair)
    pair.connector_sends(Data(stream=stream, chunk=b"x" * 100))
    pair.broker_sends(Credit(stream=stream, delivered=30))
    assert pair.connector.available(stream) == 30
    pair.connector_sends(Data(stream=stream, chunk=b"x" * 30))
    assert pair.broker.streams[stream].sent == 130


def test_credit_is_cumulative_and_never_moves_backwards() -> None:
    pair = SessionPair.handshaken(window=100)
    stream = streaming(pair)
    pair.connector_sends(Data(stream=stream, chunk=b"x" * 100))
    pair.broker_sends(Credit(stream=stream, delivered=50))
    pair.broker_sends(Credit(stream=stream, delivered=50))  # repeating is harmless
    backwards = Credit(stream=stream, delivered=49)
    assert "outside [50, 100]" in local_error(pair.broker, backwards)
    assert "outside [50, 100]" in remote_error(pair.connector, backwards)


def test_credit_never_exceeds_what_was_sent() -> None:
    pair = SessionPair.handshaken(window=100)
    stream = streaming(pair)
    pair.connector_sends(Data(stream=stream, chunk=b"x" * 10))
    ahead = Credit(stream=stream, delivered=11)
    assert "outside [0, 10]" in local_error(pair.broker, ahead)
    assert "outside [0, 10]" in remote_error(pair.connector, ahead)


def test_credit_comes_only_once_the_request_body_is_complete() -> None:
    pair = SessionPair.handshaken()
    stream = pair.open_stream(more_body=True).stream
    early = Credit(stream=stream, delivered=0)
    assert "credit not allowed" in local_error(pair.broker, early)
    assert "credit not allowed" in remote_error(pair.connector, early)


def test_available_is_zero_for_streams_it_does_not_know() -> None:
    pair = SessionPair.handshaken()
    assert pair.connector.available(42) == 0


def test_one_stream_out_of_credit_does_not_stop_another() -> None:
    pair = SessionPair.handshaken(window=10)
    slow, fast = streaming(pair), streaming(pair)
    pair.connector_sends(Data(stream=slow, chunk=b"x" * 10))
    assert pair.connector.available(slow) == 0
    pair.connector_sends(Data(stream=fast, chunk=b"y" * 10))
    pair.broker_sends(Credit(stream=fast, delivered=10))
    pair.connector_sends(Data(stream=fast, chunk=b"y" * 10))


# -- acknowledge: batched credit ---------------------------------------------------------------


def test_acknowledge_sends_credit_once_a_quarter_of_the_window_is_delivered() -> None:
    pair = SessionPair.handshaken(window=1000)
    stream = streaming(pair)
    pair.connector_sends(Data(stream=stream, chunk=b"x" * 1000))
    assert pair.broker.acknowledge(stream, 100) is None
    assert pair.broker.acknowledge(stream, 149) is None
    message = pair.broker.acknowledge(stream, 1)
    assert message is not None
    assert pair.connector.receive(message) == Credit(stream=stream, delivered=250)
    assert pair.connector.available(stream) == 250


def test_acknowledge_never_credits_more_than_was_sent() -> None:
    pair = SessionPair.handshaken(window=1000)
    stream = streaming(pair)
    pair.connector_sends(Data(stream=stream, chunk=b"x" * 400))
    message = pair.broker.acknowledge(stream, 10_000)
    assert message is not None
    assert decode(message) == Credit(stream=stream, delivered=400)
    assert pair.broker.acknowledge(stream, 1) is None  # nothing more is owed


def test_acknowledge_with_a_tiny_window_credits_every_byte_but_never_nothing() -> None:
    pair = SessionPair.handshaken(window=3)
    stream = streaming(pair)
    assert pair.broker.acknowledge(stream, 0) is None
    pair.connector_sends(Data(stream=stream, chunk=b"x"))
    message = pair.broker.acknowledge(stream, 1)
    assert message is not None
    assert pair.connector.receive(message) == Credit(stream=stream, delivered=1)


def test_a_full_window_delivered_always_releases_credit() -> None:
    for window in (1, 2, 3, 4, 5, 7, 1000, 4097):
        pair = SessionPair.handshaken(window=window)
        stream = streaming(pair)
        pair.connector_sends(Data(stream=stream, chunk=b"x" * window))
        assert pair.broker.acknowledge(stream, window) is not None, window


def test_acknowledge_ignores_finished_unknown_and_cancelled_streams() -> None:
    pair = SessionPair.handshaken(window=100)
    done, cancelled = streaming(pair), streaming(pair)
    pair.connector_sends(Data(stream=done, chunk=b"x" * 100))
    pair.connector_sends(End(stream=done))
    pair.connector_sends(Data(stream=cancelled, chunk=b"x" * 100))
    pair.broker_sends(Cancel(stream=cancelled, reason=CancelReason.CLIENT_GONE))
    assert pair.broker.acknowledge(done, 100) is None
    assert pair.broker.acknowledge(99, 100) is None
    assert pair.broker.acknowledge(cancelled, 100) is None


def test_acknowledge_refuses_a_negative_count() -> None:
    pair = SessionPair.handshaken()
    with pytest.raises(LocalProtocolError):
        pair.broker.acknowledge(streaming(pair), -1)


def test_an_explicit_credit_counts_as_delivered_for_later_acknowledgements() -> None:
    pair = SessionPair.handshaken(window=100)
    stream = streaming(pair)
    pair.connector_sends(Data(stream=stream, chunk=b"x" * 100))
    pair.broker_sends(Credit(stream=stream, delivered=60))
    message = pair.broker.acknowledge(stream, 25)
    assert message is not None
    assert decode(message) == Credit(stream=stream, delivered=85)


# -- cancel ------------------------------------------------------------------------------------


def test_cancel_is_answered_with_an_end() -> None:
    pair = SessionPair.handshaken()
    stream = streaming(pair)
    cancel = Cancel(stream=stream, reason=CancelReason.CLIENT_GONE)
    assert pair.broker_sends(cancel) == cancel
    assert pair.connector.streams[stream].cancelled
    pair.connector_sends(End(stream=stream, error=StreamError(code=ErrorCode.CANCELLED)))
    assert stream not in pair.broker.streams


def test_data_may_still_flow_after_a_cancel_until_the_end() -> None:
    pair = SessionPair.handshaken()
    stream = streaming(pair)
    pair.broker_sends(Cancel(stream=stream, reason=CancelReason.DEADLINE))
    pair.connector_sends(Data(stream=stream, chunk=b"in flight"))
    pair.connector_sends(End(stream=stream))


def test_a_stream_is_cancelled_once() -> None:
    pair = SessionPair.handshaken()
    stream = streaming(pair)
    pair.broker_sends(Cancel(stream=stream, reason=1))
    again = Cancel(stream=stream, reason=1)
    assert local_error(pair.broker, again) == "stream 1 cancelled twice"
    assert remote_error(pair.connector, again) == "stream 1 cancelled twice"


def test_no_body_follows_a_cancel() -> None:
    pair = SessionPair.handshaken()
    stream = pair.open_stream(more_body=True).stream
    pair.broker_sends(Cancel(stream=stream, reason=CancelReason.CLIENT_GONE))
    body = Body(stream=stream, chunk=b"rest", last=True)
    assert local_error(pair.broker, body) == "body on cancelled stream 1"
    assert remote_error(pair.connector, body) == "body on cancelled stream 1"
    pair.connector_sends(End(stream=stream, error=StreamError(code=ErrorCode.CANCELLED)))


def test_the_cancel_helper_skips_streams_that_ended_or_were_cancelled() -> None:
    pair = SessionPair.handshaken()
    live, ended = streaming(pair), streaming(pair)
    pair.connector_sends(End(stream=ended))
    message = pair.broker.cancel(live, CancelReason.SHUTDOWN)
    assert message is not None
    assert pair.connector.receive(message) == Cancel(stream=live, reason=CancelReason.SHUTDOWN)
    assert pair.broker.cancel(live, CancelReason.SHUTDOWN) is None
    assert pair.broker.cancel(ended, CancelReason.CLIENT_GONE) is None
    assert pair.broker.cancel(77, CancelReason.CLIENT_GONE) is None


def test_an_unknown_cancel_reason_is_still_a_cancel() -> None:
    pair = SessionPair.handshaken()
    stream = streaming(pair)
    received = pair.broker_sends(Cancel(stream=stream, reason=99))
    assert isinstance(received, Cancel)
    assert CancelReason.parse(received.reason) is CancelReason.UNKNOWN


# -- frames that cross an end on the wire ------------------------------------------------------


@pytest.mark.parametrize(
    "late",
    [
        Body(stream=1, chunk=b"late", last=True),
        Credit(stream=1, delivered=0),
        Cancel(stream=1, reason=CancelReason.CLIENT_GONE),
    ],
)
def test_broker_frames_crossing_the_connectors_end_are_tolerated(late: Frame) -> None:
    pair = SessionPair.handshaken()
    more_body = isinstance(late, Body)
    stream = pair.open_stream(more_body=more_body).stream
    if not more_body:
        pair.connector_sends(Head(stream=stream, status=200))
    end = pair.connector.send(End(stream=stream, error=FAILED))  # on the wire ...
    in_flight = pair.broker.send(late)  # ... while the broker sends this
    assert pair.connector.receive(in_flight) == late
    pair.broker.receive(end)
    assert pair.connector.streams == pair.broker.streams == {}


def test_credit_crossing_the_end_is_not_checked_against_a_forgotten_stream() -> None:
    pair = SessionPair.handshaken(window=100)
    stream = streaming(pair)
    pair.connector_sends(Data(stream=stream, chunk=b"x" * 100))
    end = pair.connector.send(End(stream=stream))
    credit = pair.broker.send(Credit(stream=stream, delivered=100))
    assert pair.connector.receive(credit) == Credit(stream=stream, delivered=100)
    pair.broker.receive(end)


# -- goaway ------------------------------------------------------------------------------------


def test_after_its_own_goaway_the_broker_opens_no_stream() -> None:
    pair = SessionPair.handshaken()
    stream = streaming(pair)
    pair.broker_sends(GoAway(reason="restart"))
    assert (pair.broker.local_goaway, pair.connector.remote_goaway) == (True, True)
    assert local_error(pair.broker, open_frame(2)) == "open after goaway"
    assert remote_error(pair.connector, open_frame(2)) == "open after the broker's goaway"
    pair.connector_sends(Data(stream=stream, chunk=b"in-flight streams finish"))
    pair.connector_sends(End(stream=stream))


def test_after_the_connectors_goaway_the_broker_opens_no_stream() -> None:
    pair = SessionPair.handshaken()
    stream = streaming(pair)
    pair.connector_sends(GoAway(reason="shutting down"))
    assert (pair.connector.local_goaway, pair.broker.remote_goaway) == (True, True)
    assert local_error(pair.broker, open_frame(2)) == "open after goaway"
    pair.broker_sends(Credit(stream=stream, delivered=0))
    pair.connector_sends(End(stream=stream))


def test_an_open_crossing_the_connectors_goaway_is_answered_with_going_away() -> None:
    pair = SessionPair.handshaken()
    goaway = pair.connector.send(GoAway())
    crossing = pair.broker.send(open_frame(1))
    assert pair.connector.receive(crossing) == open_frame(1)
    pair.broker.receive(goaway)
    refusal = End(stream=1, error=StreamError(code=ErrorCode.GOING_AWAY))
    assert pair.connector_sends(refusal) == refusal


def test_goaway_may_be_repeated() -> None:
    pair = SessionPair.handshaken()
    pair.broker_sends(GoAway(reason="one"))
    pair.broker_sends(GoAway(reason="two"))
    pair.connector_sends(GoAway())
    pair.connector_sends(GoAway())


# -- frame size --------------------------------------------------------------------------------


def test_a_frame_over_the_limit_is_refused_before_it_changes_anything() -> None:
    pair = SessionPair.handshaken(max_frame_bytes=1024, window=10_000)
    stream = streaming(pair)
    with pytest.raises(LocalProtocolError) as info:
        pair.connector.send(Data(stream=stream, chunk=b"x" * 1000))
    assert info.value.close_code is CloseCode.MESSAGE_TOO_BIG
    assert pair.connector.streams[stream].sent == 0
    with pytest.raises(LocalProtocolError):
        pair.connector.send(End(stream=stream, error=StreamError(code=1, message="m" * 2000)))
    assert stream in pair.connector.streams


def test_a_received_frame_over_the_limit_closes_with_message_too_big() -> None:
    pair = SessionPair.handshaken(max_frame_bytes=1024, window=10_000)
    stream = streaming(pair)
    with pytest.raises(RemoteProtocolError) as info:
        pair.broker.receive(encode(Data(stream=stream, chunk=b"x" * 1000)))
    assert info.value.close_code is CloseCode.MESSAGE_TOO_BIG
    with pytest.raises(RemoteProtocolError) as info:
        pair.connector.receive(encode(open_frame(2, body=b"x" * 1000)))
    assert info.value.close_code is CloseCode.MESSAGE_TOO_BIG


def test_a_data_chunk_of_max_data_chunk_bytes_always_fits_one_frame() -> None:
    pair = SessionPair.handshaken(max_frame_bytes=2048, window=10_000)
    stream = 2**63 - 1  # the longest stream id msgpack encodes
    pair.broker_sends(open_frame(stream))
    pair.connector_sends(Head(stream=stream, status=200))
    chunk = b"x" * pair.connector.max_data_chunk
    assert len(pair.connector.send(Data(stream=stream, chunk=chunk))) <= 2048


def test_an_open_over_the_limit_does_not_create_the_stream() -> None:
    pair = SessionPair.handshaken(max_frame_bytes=1024)
    with pytest.raises(LocalProtocolError):
        pair.broker.send(open_frame(1, body=b"x" * 2000))
    assert pair.broker.next_stream_id() == 1
    assert pair.broker.streams == {}


def test_a_local_error_in_the_handshake_changes_nothing() -> None:
    connector, broker = ConnectorSession(), BrokerSession()
    broker.receive(connector.send(Hello(name="a", version="1")))
    huge = Welcome(
        session_id="s" * 2_000_000, max_frame_bytes=4096, initial_window=1, heartbeat_s=1.0
    )
    with pytest.raises(LocalProtocolError):
        broker.send(huge)
    assert broker.state is SessionState.HANDSHAKE


# -- the connection ends -----------------------------------------------------------------------


def test_connection_lost_closes_the_session_and_names_the_streams_lost() -> None:
    pair = SessionPair.handshaken()
    first, second = streaming(pair), streaming(pair)
    pair.open_stream()
    pair.connector_sends(End(stream=second))
    assert pair.broker.connection_lost() == [first, 3]
    assert pair.broker.state is SessionState.CLOSED
    assert pair.broker.streams == {}
    assert pair.broker.connection_lost() == []


@pytest.mark.parametrize("make", [ConnectorSession, BrokerSession])
def test_a_closed_session_neither_sends_nor_receives(
    make: type[ConnectorSession] | type[BrokerSession],
) -> None:
    session = make()
    session.connection_lost()
    assert "after the connection was closed" in local_error(session, GoAway())
    with pytest.raises(LocalProtocolError, match="after the connection was closed"):
        session.receive(encode(GoAway()))


def test_a_session_can_be_lost_during_the_handshake() -> None:
    connector = ConnectorSession()
    connector.send(Hello(name="a", version="1"))
    assert connector.connection_lost() == []
    assert connector.state is SessionState.CLOSED


def test_receive_reports_garbage_as_a_remote_error() -> None:
    pair = SessionPair.handshaken()
    with pytest.raises(RemoteProtocolError) as info:
        pair.connector.receive(b"\xc1garbage")
    assert info.value.close_code is CloseCode.PROTOCOL_ERROR
    assert pair.connector.state is SessionState.OPEN


def test_receive_tolerates_unknown_fields_from_a_newer_peer() -> None:
    pair = SessionPair.handshaken()
    stream = pair.open_stream().stream
    newer = msgspec.msgpack.encode(
        {"t": "head", "stream": stream, "status": 200, "headers": [], "timing": {"ttft": 1.5}}
    )
    assert pair.broker.receive(newer) == Head(stream=stream, status=200)
