import itertools

import pytest

from remotellm_protocol import StreamState
from remotellm_protocol.streams import TRANSITIONS, Stream, StreamEvent

S, E = StreamState, StreamEvent
ALL_PAIRS = list(itertools.product(StreamState, StreamEvent))
MISSING = [pair for pair in ALL_PAIRS if pair not in TRANSITIONS]


def stream_in(state: StreamState) -> Stream:
    stream = Stream(7, 100, more_body=False)
    stream.state = state
    return stream


def test_a_stream_without_more_body_awaits_the_head_at_once() -> None:
    assert Stream(1, 10, more_body=False).state is S.AWAITING_HEAD


def test_a_stream_with_more_body_waits_for_the_rest_of_the_body() -> None:
    assert Stream(1, 10, more_body=True).state is S.SENDING_BODY


@pytest.mark.parametrize(("pair", "target"), list(TRANSITIONS.items()), ids=str)
def test_every_transition_in_the_table_is_taken(
    pair: tuple[StreamState, StreamEvent], target: StreamState
) -> None:
    state, event = pair
    stream = stream_in(state)
    assert stream.transition(event) is None
    assert stream.state is target


@pytest.mark.parametrize("pair", MISSING, ids=str)
def test_every_pair_missing_from_the_table_is_refused_and_changes_nothing(
    pair: tuple[StreamState, StreamEvent],
) -> None:
    state, event = pair
    stream = stream_in(state)
    problem = stream.transition(event)
    assert problem == f"{event.name.lower()} not allowed on stream 7 in state {state.name}"
    assert stream.state is state
    assert not stream.cancelled


def test_the_table_follows_the_lifecycle_of_the_specification() -> None:
    assert TRANSITIONS == {
        (S.SENDING_BODY, E.BODY): S.SENDING_BODY,
        (S.SENDING_BODY, E.BODY_LAST): S.AWAITING_HEAD,
        (S.SENDING_BODY, E.END_ERROR): S.CLOSED,
        (S.SENDING_BODY, E.CANCEL): S.SENDING_BODY,
        (S.AWAITING_HEAD, E.HEAD): S.STREAMING,
        (S.AWAITING_HEAD, E.END_ERROR): S.CLOSED,
        (S.AWAITING_HEAD, E.CREDIT): S.AWAITING_HEAD,
        (S.AWAITING_HEAD, E.CANCEL): S.AWAITING_HEAD,
        (S.STREAMING, E.DATA): S.STREAMING,
        (S.STREAMING, E.END_OK): S.CLOSED,
        (S.STREAMING, E.END_ERROR): S.CLOSED,
        (S.STREAMING, E.CREDIT): S.STREAMING,
        (S.STREAMING, E.CANCEL): S.STREAMING,
    }


def test_a_closed_stream_accepts_nothing() -> None:
    assert all((S.CLOSED, event) in MISSING for event in StreamEvent)


def test_only_a_stream_that_has_a_head_ends_without_an_error() -> None:
    assert stream_in(S.AWAITING_HEAD).transition(E.END_OK) is not None
    assert stream_in(S.SENDING_BODY).transition(E.END_OK) is not None
    assert stream_in(S.STREAMING).transition(E.END_OK) is None


@pytest.mark.parametrize("state", [S.SENDING_BODY, S.AWAITING_HEAD, S.STREAMING])
def test_cancel_is_accepted_once_in_every_live_state_without_changing_it(
    state: StreamState,
) -> None:
    stream = stream_in(state)
    assert stream.transition(E.CANCEL) is None
    assert (stream.state, stream.cancelled) == (state, True)
    assert stream.transition(E.CANCEL) == "stream 7 cancelled twice"
    assert stream.state is state


def test_a_cancelled_stream_still_ends_with_exactly_one_end() -> None:
    stream = stream_in(S.STREAMING)
    stream.transition(E.CANCEL)
    assert stream.transition(E.END_ERROR) is None
    assert stream.state is S.CLOSED


def test_available_is_the_window_minus_the_unacknowledged_bytes() -> None:
    stream = Stream(1, 100, more_body=False)
    assert stream.available == 100
    stream.sent = 80
    assert stream.available == 20
    stream.credited = 50
    assert stream.available == 70
