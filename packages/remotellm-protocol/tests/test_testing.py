from pathlib import Path

import pytest

from remotellm_protocol import (
    Data,
    End,
    Head,
    ModelInfo,
    Open,
    RemoteProtocolError,
    SessionState,
    encode,
)
from remotellm_protocol.testing import TEST_PRINCIPAL, SessionPair, _find_vectors, vectors_path


def test_a_handshaken_pair_has_exchanged_hello_and_welcome() -> None:
    pair = SessionPair.handshaken(models=[ModelInfo(id="m")], max_streams=3, window=99)
    assert pair.connector.state is pair.broker.state is SessionState.OPEN
    assert pair.broker.hello is not None
    assert pair.broker.hello.models == [ModelInfo(id="m")]
    assert (pair.broker.max_streams, pair.connector.window) == (3, 99)
    assert [(sender, type(frame).__name__) for sender, frame in pair.log] == [
        ("connector", "Hello"),
        ("broker", "Welcome"),
    ]


def test_a_fresh_pair_has_done_nothing_yet() -> None:
    pair = SessionPair()
    assert pair.log == []
    assert pair.connector.state is pair.broker.state is SessionState.HANDSHAKE


def test_open_stream_opens_the_brokers_next_stream_with_test_defaults() -> None:
    pair = SessionPair.handshaken()
    first = pair.open_stream(body=b"{}", deadline_ms=500)
    second = pair.open_stream(more_body=True, path="/v1/embeddings", headers=())
    assert isinstance(first, Open)
    assert (first.stream, second.stream) == (1, 2)
    assert (first.principal, first.method, first.body, first.deadline_ms) == (
        TEST_PRINCIPAL,
        "POST",
        b"{}",
        500,
    )
    assert first.headers == [("content-type", "application/json")]
    assert (second.path, second.headers, second.more_body) == ("/v1/embeddings", [], True)


def test_each_side_of_the_pair_checks_every_frame() -> None:
    pair = SessionPair.handshaken()
    stream = pair.open_stream().stream
    # The broker's session refuses what the connector's session would have let through.
    with pytest.raises(RemoteProtocolError):
        pair.broker.receive(encode(Data(stream=stream, chunk=b"no head yet")))
    pair.connector_sends(Head(stream=stream, status=200))
    pair.connector_sends(End(stream=stream))
    assert pair.log[-1] == ("connector", End(stream=stream))


def test_vectors_path_finds_the_vectors_of_this_checkout_or_wheel() -> None:
    path = vectors_path()
    assert {p.name for p in path.iterdir()} >= {"valid", "invalid", "sequences"}


def test_the_vectors_inside_an_installed_package_win(tmp_path: Path) -> None:
    package = tmp_path / "site-packages" / "remotellm_protocol"
    (package / "vectors").mkdir(parents=True)
    (tmp_path / "vectors").mkdir()
    assert _find_vectors(package) == package / "vectors"


def test_a_source_checkout_keeps_the_vectors_beside_src(tmp_path: Path) -> None:
    package = tmp_path / "src" / "remotellm_protocol"
    package.mkdir(parents=True)
    (tmp_path / "vectors").mkdir()
    assert _find_vectors(package) == tmp_path / "vectors"


def test_missing_vectors_are_reported_not_guessed(tmp_path: Path) -> None:
    package = tmp_path / "src" / "remotellm_protocol"
    package.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no conformance vectors"):
        _find_vectors(package)
