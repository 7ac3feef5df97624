"""Stream resumption: a link drops, the connector reconnects with its resume token, and every
stream continues from the byte offsets both sides report, each byte delivered exactly once."""

import pytest

from remotellm_protocol import (
    Body,
    BrokerSession,
    Cancel,
    CloseCode,
    ConnectorSession,
    Credit,
    Data,
    End,
    Ended,
    ErrorCode,
    Head,
    HeldStream,
    Hello,
    LocalProtocolError,
    Open,
    RemoteProtocolError,
    ResumedStream,
    StreamError,
    StreamState,
    Welcome,
    encode,
)
from remotellm_protocol.testing import TEST_PRINCIPAL, SessionPair


def open_frame(stream: int) -> Open:
    return Open(
        stream=stream, correlation_id="c", method="POST", path="/v1/chat/completions",
        principal=TEST_PRINCIPAL,
    )  # fmt: skip


WELCOME = Welcome(session_id="s", max_frame_bytes=4096, initial_window=64, heartbeat_s=5.0)


def response(pair: SessionPair, stream: int) -> bytes:
    """Every response byte the broker received on ``stream``, in order."""
    return b"".join(
        f.chunk for who, f in pair.log if who == "connector" and isinstance(f, Data)
        and f.stream == stream
    )  # fmt: skip


def request_body(pair: SessionPair, stream: int) -> bytes:
    return b"".join(
        f.chunk for who, f in pair.log if who == "broker" and isinstance(f, Body)
        and f.stream == stream
    )  # fmt: skip


# -- negotiation -----------------------------------------------------------------------------


def test_both_sides_must_show_support_before_anything_is_kept() -> None:
    assert SessionPair.handshaken(resumable=True).connector.resumable
    assert SessionPair.handshaken(resumable=True).broker.resumable
    old = SessionPair.handshaken()  # an older connector: no resumable flag, no token
    assert not old.connector.resumable
    assert not old.broker.resumable
    assert old.connector.welcome is not None
    assert old.connector.welcome.resume_token is None
    stream = old.open_stream().stream
    old.connector_sends(Head(stream=stream, status=200))
    old.connector_sends(Data(stream=stream, chunk=b"abc"))
    assert not old.connector.streams[stream].kept
    with pytest.raises(LocalProtocolError, match="not resumable"):
        old.connector.suspend()


def test_a_broker_that_does_not_resume_sends_no_token_and_the_connector_keeps_nothing() -> None:
    pair = SessionPair()
    pair.connector_sends(Hello(name="c", version="1", resumable=True))
    pair.broker_sends(WELCOME)
    assert not pair.connector.resumable
    stream = pair.open_stream().stream
    pair.connector_sends(Head(stream=stream, status=200))
    pair.connector_sends(End(stream=stream))
    assert pair.connector.ended == {}


def test_a_token_is_only_offered_to_a_connector_that_can_resume() -> None:
    connector, broker = ConnectorSession(), BrokerSession()
    broker.receive(connector.send(Hello(name="c", version="1")))
    offered = Welcome(
        session_id="s", max_frame_bytes=4096, initial_window=1, heartbeat_s=1.0, resume_token="t"
    )
    with pytest.raises(LocalProtocolError, match="cannot resume"):
        broker.send(offered)
    with pytest.raises(RemoteProtocolError, match="cannot resume"):
        connector.receive(encode(offered))


def test_ended_needs_a_resumable_connection_and_an_end_awaiting_it() -> None:
    old = SessionPair.handshaken()
    stream = old.open_stream().stream
    old.connector_sends(End(stream=stream, error=StreamError(code=ErrorCode.INTERNAL)))
    with pytest.raises(LocalProtocolError, match="awaits no ended"):
        old.broker.send(Ended(stream=stream))
    with pytest.raises(RemoteProtocolError, match="awaits no ended"):
        old.connector.receive(encode(Ended(stream=stream)))
    pair = SessionPair.handshaken(resumable=True)
    live = pair.open_stream().stream
    with pytest.raises(RemoteProtocolError, match="awaits no ended"):
        pair.connector.receive(encode(Ended(stream=live)))


def test_an_end_is_kept_until_ended_confirms_it() -> None:
    pair = SessionPair.handshaken(resumable=True)
    stream = pair.open_stream().stream
    pair.connector_sends(Head(stream=stream, status=200))
    pair.connector_sends(Data(stream=stream, chunk=b"tail"))
    pair.connector_sends(End(stream=stream))
    assert stream not in pair.connector.streams
    assert pair.connector.ended[stream].kept == b"tail"
    pair.broker_sends(Ended(stream=stream))
    assert pair.connector.ended == {}
    assert pair.broker.ended == {}


# -- what is kept ----------------------------------------------------------------------------


def test_the_connector_keeps_exactly_the_unacknowledged_response_bytes() -> None:
    pair = SessionPair.handshaken(resumable=True, window=16)
    stream = pair.open_stream().stream
    pair.connector_sends(Head(stream=stream, status=200))
    pair.connector_sends(Data(stream=stream, chunk=b"0123456789"))
    pair.connector_sends(Data(stream=stream, chunk=b"abcdef"))
    kept = pair.connector.streams[stream]
    assert (bytes(kept.kept), kept.kept_from) == (b"0123456789abcdef", 0)
    pair.broker_sends(Credit(stream=stream, delivered=12))
    assert (bytes(kept.kept), kept.kept_from) == (b"cdef", 12)
    assert len(kept.kept) <= kept.window


def test_the_broker_keeps_the_request_body_until_head_shows_it_all_came() -> None:
    pair = SessionPair.handshaken(resumable=True)
    stream = pair.open_stream(body=b"part1", more_body=True).stream
    pair.broker_sends(Body(stream=stream, chunk=b"part2", last=True))
    assert pair.broker.streams[stream].kept == b"part1part2"
    pair.connector_sends(Head(stream=stream, status=200))
    assert pair.broker.streams[stream].kept == b""


# -- resuming --------------------------------------------------------------------------------


def test_response_bytes_lost_in_flight_are_replayed_once_from_the_broker_s_offset() -> None:
    pair = SessionPair.handshaken(resumable=True, window=32)
    stream = pair.open_stream().stream
    pair.connector_sends(Head(stream=stream, status=200))
    pair.connector_sends(Data(stream=stream, chunk=b"data: one\n\n"))
    pair.broker_sends(Credit(stream=stream, delivered=5))
    pair.connector.send(Data(stream=stream, chunk=b"data: two\n\n"))  # lost with the link
    available = pair.connector.available(stream)
    resumed = pair.resume()
    assert resumed.connector.welcome is not None
    assert resumed.connector.welcome.streams == [
        ResumedStream(stream=stream, received=11, delivered=5, head=True)
    ]
    assert resumed.connector.replay(stream) == [Data(stream=stream, chunk=b"data: two\n\n")]
    assert resumed.connector.replay(stream) == []  # each replay is handed out once
    resumed.connector_sends(Data(stream=stream, chunk=b"data: two\n\n"))
    assert resumed.connector.available(stream) == available
    resumed.connector_sends(Data(stream=stream, chunk=b"data: [DONE]\n\n"))
    resumed.connector_sends(End(stream=stream))
    resumed.broker_sends(Ended(stream=stream))
    assert response(resumed, stream) == b"data: one\n\ndata: two\n\ndata: [DONE]\n\n"
    assert resumed.connector.resume_dropped == []
    assert resumed.broker.resume_dropped == []


def test_a_lost_head_and_end_are_replayed_too() -> None:
    pair = SessionPair.handshaken(resumable=True)
    stream = pair.open_stream().stream
    pair.connector.send(Head(stream=stream, status=429, headers=[("retry-after", "1")]))
    pair.connector.send(Data(stream=stream, chunk=b"{}"))
    pair.connector.send(End(stream=stream))
    resumed = pair.resume()
    assert resumed.connector.welcome is not None
    assert resumed.connector.welcome.streams == [ResumedStream(stream=stream)]
    assert resumed.connector.streams[stream].state is StreamState.AWAITING_HEAD
    resumed.replay()
    assert [type(f).__name__ for _, f in resumed.log[-3:]] == ["Head", "Data", "End"]
    assert response(resumed, stream) == b"{}"
    assert stream not in resumed.broker.streams
    assert stream in resumed.connector.ended  # until the broker's ended


def test_an_end_the_broker_already_has_is_not_resumed_but_forgotten() -> None:
    pair = SessionPair.handshaken(resumable=True)
    stream = pair.open_stream().stream
    pair.connector_sends(End(stream=stream, error=StreamError(code=ErrorCode.INTERNAL)))
    resumed = pair.resume()  # the broker's ended was lost: the connector still held it
    assert resumed.connector.resume_dropped == [stream]
    assert resumed.connector.streams == {}
    assert resumed.broker.streams == {}


def test_a_request_body_still_uploading_resumes_from_the_connector_s_offset() -> None:
    pair = SessionPair.handshaken(resumable=True)
    stream = pair.open_stream(body=b"[1,", more_body=True).stream
    pair.broker_sends(Body(stream=stream, chunk=b"2,"))
    pair.broker.send(Body(stream=stream, chunk=b"3,"))  # lost
    pair.broker.send(Body(stream=stream, chunk=b"4]", last=True))  # lost
    resumed = pair.resume()
    assert resumed.broker.hello is not None
    assert resumed.broker.hello.streams == [HeldStream(stream=stream, body=5, body_done=False)]
    assert resumed.broker.streams[stream].state is StreamState.SENDING_BODY
    resumed.replay()
    assert b"[1," + request_body(pair, stream) == b"[1,2,3,4]"
    assert resumed.connector.streams[stream].state is StreamState.AWAITING_HEAD


def test_a_lost_last_empty_body_piece_is_replayed() -> None:
    pair = SessionPair.handshaken(resumable=True)
    stream = pair.open_stream(body=b"{}", more_body=True).stream
    pair.broker.send(Body(stream=stream, chunk=b"", last=True))  # lost
    resumed = pair.resume()
    assert resumed.broker.replay(stream) == [Body(stream=stream, chunk=b"", last=True)]


def test_a_cancel_lost_with_the_link_may_be_sent_again() -> None:
    pair = SessionPair.handshaken(resumable=True)
    stream = pair.open_stream().stream
    pair.broker.send(Cancel(stream=stream, reason=1))  # lost
    resumed = pair.resume()
    resumed.broker_sends(Cancel(stream=stream, reason=1))
    resumed.connector_sends(End(stream=stream, error=StreamError(code=ErrorCode.CANCELLED)))


def test_streams_keep_their_ids_and_new_ones_continue_after_them() -> None:
    pair = SessionPair.handshaken(resumable=True)
    first = pair.open_stream().stream
    pair.broker_sends(open_frame(7))
    resumed = pair.resume()
    assert sorted(resumed.connector.streams) == [first, 7] == sorted(resumed.broker.streams)
    assert resumed.broker.next_stream_id() == 8
    assert resumed.open_stream().stream == 8


def test_a_resumed_connection_can_drop_and_resume_again() -> None:
    pair = SessionPair.handshaken(resumable=True, window=8)
    stream = pair.open_stream().stream
    pair.connector_sends(Head(stream=stream, status=200))
    pair.connector.send(Data(stream=stream, chunk=b"abcd"))
    once = pair.resume()
    once.replay()
    once.connector.send(Data(stream=stream, chunk=b"efgh"))
    twice = once.resume()
    twice.replay()
    twice.connector_sends(End(stream=stream))
    assert response(twice, stream) == b"abcdefgh"


def test_the_replay_is_cut_to_the_new_frame_limit() -> None:
    pair = SessionPair.handshaken(resumable=True, window=4000)
    stream = pair.open_stream().stream
    pair.connector_sends(Head(stream=stream, status=200))
    pair.connector.send(Data(stream=stream, chunk=b"x" * 3000))
    resumed = pair.resume(max_frame_bytes=1024)
    frames = resumed.connector.replay(stream)
    assert [len(f.chunk) for f in frames if isinstance(f, Data)] == [984, 984, 984, 48]


# -- what is refused -------------------------------------------------------------------------


def suspended_pair() -> tuple[SessionPair, ConnectorSession, BrokerSession]:
    """A dropped resumable pair with one streaming stream; a new broker that received the
    connector's resuming hello."""
    pair = SessionPair.handshaken(resumable=True)
    stream = pair.open_stream().stream
    pair.connector_sends(Head(stream=stream, status=200))
    held = pair.connector.suspend()
    connector = ConnectorSession(resume=held)
    broker = BrokerSession()
    broker.receive(
        connector.send(
            Hello(name="c", version="1", resumable=True, resume_token=held.token,
                  streams=held.held())
        )
    )  # fmt: skip
    return pair, connector, broker


@pytest.mark.parametrize("case", ["unknown", "wrong", "replayed"])
def test_a_wrong_unknown_or_replayed_token_is_refused_with_its_close_code(case: str) -> None:
    pair, _, broker = suspended_pair()
    kept = pair.broker.suspend()
    assert broker.hello is not None
    if case == "wrong":
        kept.token = "r-someone-else"
    if case == "replayed":
        again = BrokerSession()
        again.receive(encode(broker.hello))
        streams = again.restore(kept)
        again.send(Welcome(session_id="s2", max_frame_bytes=4096, initial_window=1,
                           heartbeat_s=1.0, resume_token="r-2", streams=streams))  # fmt: skip
    with pytest.raises(RemoteProtocolError) as info:
        broker.restore(None if case == "unknown" else kept)
    assert info.value.close_code is CloseCode.RESUME_REFUSED


def test_restore_needs_a_resuming_hello_before_welcome() -> None:
    with pytest.raises(LocalProtocolError, match="resumable hello"):
        BrokerSession().restore(None)


def test_a_broker_that_skips_restore_cannot_welcome_a_resuming_hello() -> None:
    _, _, broker = suspended_pair()
    with pytest.raises(LocalProtocolError, match="before restore"):
        broker.send(WELCOME)


def test_a_stream_only_one_side_still_has_ends_on_that_side() -> None:
    pair = SessionPair.handshaken(resumable=True)
    both = pair.open_stream().stream
    only_broker = open_frame(5)
    pair.broker.send(only_broker)  # the open was lost: the connector never saw stream 5
    resumed = pair.resume()
    assert resumed.broker.resume_dropped == [5]
    assert sorted(resumed.broker.streams) == [both]
    # the broker restarted and knows nothing: the connector must start afresh
    again = SessionPair.handshaken(resumable=True)
    again.open_stream()
    with pytest.raises(RemoteProtocolError) as info:
        again.resume(broker_side=None)
    assert info.value.close_code is CloseCode.RESUME_REFUSED


def test_the_broker_may_resume_fewer_streams_and_the_connector_drops_the_rest() -> None:
    pair, connector, broker = suspended_pair()
    broker.restore(pair.broker.suspend())
    broker.send(WELCOME)  # resumes none of them
    connector.receive(encode(WELCOME))
    assert connector.resume_dropped == [1]
    assert broker.resume_dropped == [1]
    assert connector.streams == {}
    assert broker.streams == {}


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        (ResumedStream(stream=9), "not held on both sides"),
        (ResumedStream(stream=1, received=1, delivered=0, head=True), "outside"),
        (ResumedStream(stream=1, received=0, delivered=1, head=True), "outside"),
    ],
)
def test_a_welcome_with_impossible_offsets_is_a_protocol_error(
    entry: ResumedStream, why: str
) -> None:
    _, connector, _ = suspended_pair()
    welcome = Welcome(session_id="s", max_frame_bytes=4096, initial_window=1,
                      heartbeat_s=1.0, resume_token="r", streams=[entry])  # fmt: skip
    with pytest.raises(RemoteProtocolError, match=why) as info:
        connector.receive(encode(welcome))
    assert info.value.close_code is CloseCode.PROTOCOL_ERROR


def test_offsets_that_contradict_the_stream_are_refused() -> None:
    pair = SessionPair.handshaken(resumable=True)
    stream = pair.open_stream(body=b"ab", more_body=True).stream
    held = pair.connector.suspend()
    kept = pair.broker.suspend()
    connector, broker = ConnectorSession(resume=held), BrokerSession()
    for streams, why in [
        ([HeldStream(stream=stream, body=3, body_done=False)], "more body"),
        ([HeldStream(stream=stream, body=2, body_done=True)], "more body"),
    ]:
        hello = Hello(name="c", version="1", resumable=True, resume_token=held.token,
                      streams=streams)  # fmt: skip
        with pytest.raises(LocalProtocolError, match="lists the suspended streams"):
            connector.send(hello)
        fresh = BrokerSession()
        fresh.receive(encode(hello))
        with pytest.raises(RemoteProtocolError, match=why):
            fresh.restore(kept)
    entry = ResumedStream(stream=stream, received=0, head=True)
    broker.receive(encode(Hello(name="c", version="1", resumable=True,
                                resume_token=held.token, streams=held.held())))  # fmt: skip
    broker.restore(kept)
    with pytest.raises(LocalProtocolError, match="head that was never sent"):
        broker.send(Welcome(session_id="s", max_frame_bytes=4096, initial_window=1,
                            heartbeat_s=1.0, resume_token="r", streams=[entry]))  # fmt: skip


def test_a_welcome_resumes_nothing_for_a_hello_that_resumed_nothing() -> None:
    connector = ConnectorSession()
    connector.send(Hello(name="c", version="1", resumable=True))
    welcome = Welcome(session_id="s", max_frame_bytes=4096, initial_window=1, heartbeat_s=1.0,
                      resume_token="r", streams=[ResumedStream(stream=1)])  # fmt: skip
    with pytest.raises(RemoteProtocolError, match="hello resumed nothing"):
        connector.receive(encode(welcome))


def test_response_bytes_without_a_head_are_refused() -> None:
    pair = SessionPair.handshaken(resumable=True)
    stream = pair.open_stream().stream
    pair.connector_sends(Head(stream=stream, status=200))
    pair.connector_sends(Data(stream=stream, chunk=b"abc"))
    held = pair.connector.suspend()
    connector = ConnectorSession(resume=held)
    connector.send(Hello(name="c", version="1", resumable=True, resume_token=held.token,
                         streams=held.held()))  # fmt: skip
    entry = ResumedStream(stream=stream, received=3, head=False)
    welcome = Welcome(session_id="s", max_frame_bytes=4096, initial_window=1, heartbeat_s=1.0,
                      resume_token="r", streams=[entry])  # fmt: skip
    with pytest.raises(RemoteProtocolError, match="without a head"):
        connector.receive(encode(welcome))


def test_a_hello_may_only_present_the_token_of_its_suspended_streams() -> None:
    with pytest.raises(LocalProtocolError, match="not the token"):
        ConnectorSession().send(Hello(name="c", version="1", resumable=True, resume_token="x"))
    pair = SessionPair.handshaken(resumable=True)
    held = pair.connector.suspend()
    with pytest.raises(LocalProtocolError, match="lists the suspended streams"):
        ConnectorSession(resume=held).send(Hello(name="c", version="1", resume_token=held.token))


def test_a_suspended_connector_knows_how_much_it_may_read_meanwhile() -> None:
    pair = SessionPair.handshaken(resumable=True, window=10)
    stream = pair.open_stream().stream
    pair.connector_sends(Head(stream=stream, status=200))
    pair.connector.send(Data(stream=stream, chunk=b"abc"))
    held = pair.connector.suspend()
    assert (held.available(stream), held.available(99)) == (7, 0)
    assert held.window_s > 0
