"""The one rule table both roles check frames against, in both directions."""

import pytest

from remotellm_protocol import (
    FRAME_TYPES,
    Body,
    BrokerSession,
    Cancel,
    ConnectorSession,
    Credit,
    Data,
    End,
    Ended,
    Frame,
    GoAway,
    Head,
    Hello,
    Models,
    Open,
    ProtocolError,
    Welcome,
    encode,
)
from remotellm_protocol.rules import RULES, Role
from remotellm_protocol.testing import TEST_PRINCIPAL, SessionPair

SAMPLES: list[Frame] = [
    Hello(name="a", version="1"),
    Welcome(session_id="s", max_frame_bytes=4096, initial_window=1, heartbeat_s=1.0),
    Models(models=[]),
    Open(stream=1, correlation_id="c", method="POST", path="/", principal=TEST_PRINCIPAL),
    Body(stream=1, chunk=b""),
    Head(stream=1, status=200),
    Data(stream=1, chunk=b""),
    End(stream=1),
    Credit(stream=1, delivered=0),
    Cancel(stream=1, reason=1),
    GoAway(),
    Ended(stream=1),
]


def test_every_frame_type_has_exactly_one_rule() -> None:
    assert set(RULES) == set(FRAME_TYPES)


def test_roles_know_their_peer() -> None:
    assert (Role.CONNECTOR.peer, Role.BROKER.peer) == (Role.BROKER, Role.CONNECTOR)


@pytest.mark.parametrize("kind", FRAME_TYPES, ids=lambda t: t.__struct_config__.tag)
def test_only_the_rule_s_sender_may_send_a_frame_and_its_peer_may_receive_it(
    kind: type[Frame],
) -> None:
    """One table drives both directions: a frame whose rule names the broker as sender is
    refused by the connector's send and by the broker's receive, and the other way round."""
    sender = RULES[kind].sender
    frame = next(f for f in SAMPLES if type(f) is kind)
    pair = SessionPair.handshaken()
    sides: list[tuple[Role, ConnectorSession | BrokerSession]] = [
        (Role.CONNECTOR, pair.connector),
        (Role.BROKER, pair.broker),
    ]
    for role, session in sides:
        if sender not in (None, role):
            with pytest.raises(ProtocolError, match=f"a {role.value} never sends"):
                session.send(frame)
            peer = pair.broker if role is Role.CONNECTOR else pair.connector
            with pytest.raises(ProtocolError, match=f"a {role.value} never sends"):
                peer.receive(encode(frame))
        elif "stream" not in frame.__struct_fields__ and RULES[kind].when_open:
            peer = pair.broker if role is Role.CONNECTOR else pair.connector
            assert peer.receive(session.send(frame)) == frame
