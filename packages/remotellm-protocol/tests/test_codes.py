import pytest

from remotellm_protocol import CancelReason, CloseCode, ErrorCode


def test_error_codes_keep_their_wire_values() -> None:
    assert {c.name: c.value for c in ErrorCode} == {
        "UNKNOWN": 0,
        "UPSTREAM_UNREACHABLE": 1,
        "UPSTREAM_TIMEOUT": 2,
        "UPSTREAM_STATUS": 3,
        "UPSTREAM_INTERRUPTED": 4,
        "CANCELLED": 5,
        "POLICY_DENIED": 6,
        "RATE_LIMITED": 7,
        "OVERLOADED": 8,
        "BAD_REQUEST": 9,
        "INTERNAL": 10,
        "GOING_AWAY": 11,
    }


def test_cancel_reasons_keep_their_wire_values() -> None:
    assert {c.name: c.value for c in CancelReason} == {
        "UNKNOWN": 0,
        "CLIENT_GONE": 1,
        "DEADLINE": 2,
        "SHUTDOWN": 3,
        "USER_BLOCKED": 4,
    }


def test_close_codes_are_rfc_6455_codes_or_in_the_private_range() -> None:
    assert all(1000 <= c <= 1015 or 4000 <= c <= 4999 for c in CloseCode)
    assert CloseCode.PROTOCOL_ERROR == 1002
    assert CloseCode.MESSAGE_TOO_BIG == 1009
    assert CloseCode.REPLACED == 4001


@pytest.mark.parametrize("code", list(ErrorCode))
def test_error_code_parse_returns_known_codes_as_themselves(code: ErrorCode) -> None:
    assert ErrorCode.parse(int(code)) is code


@pytest.mark.parametrize("value", [12, 99, -1, 2**63])
def test_error_code_parse_maps_a_newer_peers_code_to_unknown(value: int) -> None:
    assert ErrorCode.parse(value) is ErrorCode.UNKNOWN


def test_cancel_reason_parse_is_tolerant_too() -> None:
    assert CancelReason.parse(2) is CancelReason.DEADLINE
    assert CancelReason.parse(77) is CancelReason.UNKNOWN


def test_codes_are_plain_ints_on_the_wire() -> None:
    assert ErrorCode.RATE_LIMITED == 7
    assert isinstance(CancelReason.SHUTDOWN, int)
