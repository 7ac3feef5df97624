from remotellm_protocol import (
    CloseCode,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)


def test_both_kinds_of_protocol_error_share_one_base() -> None:
    assert issubclass(LocalProtocolError, ProtocolError)
    assert issubclass(RemoteProtocolError, ProtocolError)
    assert not issubclass(LocalProtocolError, RemoteProtocolError)
    assert issubclass(ProtocolError, Exception)


def test_a_protocol_error_closes_with_1002_unless_told_otherwise() -> None:
    error = RemoteProtocolError("bad frame")
    assert error.close_code is CloseCode.PROTOCOL_ERROR
    assert error.message == str(error) == "bad frame"


def test_a_protocol_error_carries_the_close_code_it_was_given() -> None:
    error = LocalProtocolError("too big", CloseCode.MESSAGE_TOO_BIG)
    assert error.close_code is CloseCode.MESSAGE_TOO_BIG
