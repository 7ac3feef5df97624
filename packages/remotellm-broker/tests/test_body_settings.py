"""The body budget and read timeouts are settings like any other: flag, environment, YAML."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from remotellm_broker.config import ConfigError, load_settings
from remotellm_broker.intake import BodyBudget
from remotellm_broker.serve import serve

MIB = 1024 * 1024


def test_defaults_suit_a_team() -> None:
    settings = load_settings(None, {}, {})
    assert settings.max_body_bytes_in_flight == 256 * MIB  # 16 bodies of the largest size
    assert settings.header_timeout_s == 30.0
    assert settings.body_timeout_s == 60.0


def test_each_comes_from_flag_env_or_file(tmp_path: Path) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text("body_timeout_s: 300\nheader_timeout_s: 20\n")
    env = {"REMOTELLM_BROKER_MAX_BODY_BYTES_IN_FLIGHT": "1073741824"}
    settings = load_settings(config, env, {"header_timeout_s": 10.0})
    assert settings.body_timeout_s == 300.0
    assert settings.header_timeout_s == 10.0
    assert settings.max_body_bytes_in_flight == 1024 * MIB


def test_a_budget_smaller_than_one_body_is_refused() -> None:
    env = {"REMOTELLM_BROKER_MAX_BODY_BYTES_IN_FLIGHT": str(MIB)}
    with pytest.raises(ConfigError, match=r"max_body_bytes_in_flight.*less than max_body_bytes"):
        load_settings(None, env, {})


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--body-timeout-s", "0"], "--body-timeout-s"),
        (["--header-timeout-s", "-1"], "--header-timeout-s"),
        (["--max-body-bytes-in-flight", "1000"], "--max-body-bytes-in-flight"),
    ],
)
def test_serve_flags_reach_the_settings(tmp_path: Path, args: list[str], named: str) -> None:
    result = CliRunner().invoke(serve, ["--users-file", str(tmp_path / "u.yaml"), *args])
    assert result.exit_code != 0
    assert named in result.output


def test_the_budget_counts_reservations_and_refuses_past_its_limit() -> None:
    budget = BodyBudget(100)
    assert budget.try_reserve(60)
    assert not budget.try_reserve(41)
    assert budget.try_reserve(40)
    budget.release(60)
    assert budget.used == 40
    assert budget.try_reserve(60)
