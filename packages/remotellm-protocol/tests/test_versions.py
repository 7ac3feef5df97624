import pytest

from remotellm_protocol import (
    SUBPROTOCOLS,
    SUPPORTED_VERSIONS,
    choose_subprotocol,
    parse_subprotocol,
    subprotocol,
)


def test_this_release_speaks_wire_version_1_as_remotellm_v1() -> None:
    assert SUPPORTED_VERSIONS == (1,)
    assert SUBPROTOCOLS == ("remotellm.v1",)


def test_subprotocol_names_a_version() -> None:
    assert subprotocol(1) == "remotellm.v1"
    assert subprotocol(12) == "remotellm.v12"


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("remotellm.v1", 1),
        ("remotellm.v2", 2),
        ("remotellm.v10", 10),
        ("remotellm.v", None),
        ("remotellm.v01", None),
        ("remotellm.v0", None),
        ("remotellm.v1.1", None),
        ("remotellm.v-1", None),
        ("remotellm.v\u0661", None),  # an Arabic-Indic digit is a digit, but not ASCII
        ("remotellm.V1", None),
        ("chat", None),
        ("", None),
    ],
)
def test_parse_subprotocol_reads_only_our_names(name: str, version: int | None) -> None:
    assert parse_subprotocol(name) == version


def test_choose_subprotocol_picks_the_highest_common_version() -> None:
    offered = ["remotellm.v3", "remotellm.v1", "remotellm.v2"]
    assert choose_subprotocol(offered, supported=(1, 2)) == "remotellm.v2"


def test_choose_subprotocol_ignores_names_that_are_not_ours() -> None:
    assert choose_subprotocol(["chat", "remotellm.v1", "remotellm.vx"]) == "remotellm.v1"


def test_choose_subprotocol_refuses_when_nothing_is_common() -> None:
    assert choose_subprotocol(["remotellm.v2"]) is None
    assert choose_subprotocol([]) is None


def test_a_connector_one_release_newer_still_meets_an_older_broker() -> None:
    newer_connector_offers = ["remotellm.v2", "remotellm.v1"]
    assert choose_subprotocol(newer_connector_offers, supported=(1,)) == "remotellm.v1"
    assert choose_subprotocol(SUBPROTOCOLS, supported=(2, 1)) == "remotellm.v1"
