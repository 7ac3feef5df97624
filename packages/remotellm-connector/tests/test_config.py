"""Settings: flags > env > file > defaults, and one clear message for a bad value."""

from pathlib import Path

import pytest

from remotellm_connector.config import (
    ConfigError,
    load_settings,
    normalize_broker_url,
    normalize_llm_url,
    read_token,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "connector.yaml"
    path.write_text(text)
    return path


def test_defaults_apply_when_nothing_is_given() -> None:
    s = load_settings(None, {}, {})
    assert (s.health_host, s.health_port, s.max_streams, s.max_retries) == (
        "127.0.0.1",
        9180,
        None,  # derived from the LLM server at start-up (capacity.py)
        0,
    )
    assert s.broker_url is None
    assert s.llm_url is None
    assert s.name  # the hostname


def test_flags_beat_env_which_beats_the_file_which_beats_defaults(tmp_path: Path) -> None:
    config = write(tmp_path, "max_streams: 3\nhealth_port: 9001\nname: from-file\nmax_retries: 7\n")
    env = {"REMOTELLM_CONNECTOR_MAX_STREAMS": "4", "REMOTELLM_CONNECTOR_HEALTH_PORT": "9002"}
    s = load_settings(config, env, {"max_streams": 5, "health_port": None})
    assert s.max_streams == 5  # flag
    assert s.health_port == 9002  # env (the flag was not given)
    assert s.name == "from-file"  # file
    assert s.max_retries == 7
    assert s.shutdown_grace_s == 30.0  # default


def test_env_lists_are_comma_separated() -> None:
    env = {"REMOTELLM_CONNECTOR_ALLOWED_USERS": "gitlab:1, local:bob,,"}
    assert load_settings(None, env, {}).allowed_users == ["gitlab:1", "local:bob"]


@pytest.mark.parametrize(
    "entry", ["alice", "gitlab:alice", "local:", "gitlab:12a", "Local:alice", "gitlab:0"]
)
def test_unqualified_allowed_user_is_refused_with_both_qualified_forms(
    tmp_path: Path, entry: str
) -> None:
    config = write(tmp_path, f"allowed_users: [local:bob, '{entry}']\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, {}, {})
    message = str(caught.value)
    assert "allowed_users" in message
    assert repr(entry) in message
    assert "local:alice" in message
    assert "gitlab:123" in message


def test_qualified_allowed_users_load() -> None:
    env = {"REMOTELLM_CONNECTOR_ALLOWED_USERS": "local:alice,gitlab:123,env:0a1b2c3d"}
    assert load_settings(None, env, {}).allowed_users == [
        "local:alice",
        "gitlab:123",
        "env:0a1b2c3d",
    ]


def test_empty_env_value_counts_as_unset() -> None:
    assert load_settings(None, {"REMOTELLM_CONNECTOR_HEALTH_PORT": ""}, {}).health_port == 9180


def test_bad_env_value_names_field_value_and_source() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"REMOTELLM_CONNECTOR_HEALTH_PORT": "eighty"}, {})
    message = str(caught.value)
    assert "health_port" in message
    assert "'eighty'" in message
    assert "REMOTELLM_CONNECTOR_HEALTH_PORT" in message


def test_out_of_range_value_is_refused_with_its_source(tmp_path: Path) -> None:
    config = write(tmp_path, "max_streams: 0\n")
    with pytest.raises(ConfigError, match=r"max_streams = 0 \(from .*connector.yaml\)"):
        load_settings(config, {}, {})


def test_bad_flag_value_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"health_port = 70000 \(from --health-port\)"):
        load_settings(None, {}, {"health_port": 70000})


def test_unknown_key_in_the_file_is_a_typo_not_ignored(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting 'max_stream'"):
        load_settings(write(tmp_path, "max_stream: 3\n"), {}, {})


def test_secrets_may_not_live_in_the_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="REMOTELLM_CONNECTOR_TOKEN"):
        load_settings(write(tmp_path, "token: rct-abc\n"), {}, {})


def test_missing_and_malformed_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "missing.yaml", {}, {})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "a: [\n"), {}, {})
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(write(tmp_path, "- 1\n"), {}, {})


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, ""), {}, {}).max_streams is None


def test_bad_urls_are_refused_at_start_up() -> None:
    with pytest.raises(ConfigError, match="broker_url = 'ftp://x'"):
        load_settings(None, {}, {"broker_url": "ftp://x"})
    with pytest.raises(ConfigError, match="llm_url"):
        load_settings(None, {"REMOTELLM_CONNECTOR_LLM_URL": "localhost:11434"}, {})


def test_name_with_spaces_is_refused() -> None:
    with pytest.raises(ConfigError, match="name = 'my gpu'"):
        load_settings(None, {}, {"name": "my gpu"})


def test_secret_values_never_appear_in_repr_or_errors() -> None:
    s = load_settings(None, {"REMOTELLM_CONNECTOR_TOKEN": "rct-secret"}, {})
    assert s.token == "rct-secret"
    assert "rct-secret" not in repr(s)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://broker.example.com", "wss://broker.example.com/v1/relay"),
        ("http://127.0.0.1:8000/", "ws://127.0.0.1:8000/v1/relay"),
        ("wss://b.example/v1/relay", "wss://b.example/v1/relay"),
        ("ws://b.example:9/custom", "ws://b.example:9/custom"),
    ],
)
def test_broker_url_is_completed_to_the_relay_endpoint(given: str, expected: str) -> None:
    assert normalize_broker_url(given) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:11434/v1", "http://127.0.0.1:11434"),
        ("http://127.0.0.1:11434/v1/", "http://127.0.0.1:11434"),
        ("HTTP://gpu:8000", "http://gpu:8000"),
        ("http://gpu/prefix/", "http://gpu/prefix"),
    ],
)
def test_llm_url_loses_trailing_slash_and_v1(given: str, expected: str) -> None:
    assert normalize_llm_url(given) == expected


def test_token_comes_from_env_before_the_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("rct-from-file\n")
    from_file = load_settings(None, {}, {"token_file": str(token_file)})
    assert read_token(from_file) == "rct-from-file"
    both = load_settings(
        None, {"REMOTELLM_CONNECTOR_TOKEN": "rct-env"}, {"token_file": str(token_file)}
    )
    assert read_token(both) == "rct-env"


def test_missing_token_says_where_to_put_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="REMOTELLM_CONNECTOR_TOKEN or pass --token-file"):
        read_token(load_settings(None, {}, {}))
    with pytest.raises(ConfigError, match="cannot read it"):
        read_token(load_settings(None, {}, {"token_file": str(tmp_path / "nope")}))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        read_token(load_settings(None, {}, {"token_file": str(tmp_path / "empty")}))


def test_the_default_health_port_is_none_of_the_llm_servers_ports() -> None:
    from remotellm_connector.discovery import CANDIDATES

    taken = {int(url.rsplit(":", 1)[1]) for _, url in CANDIDATES}
    assert taken == {11434, 8080, 8000, 1234}  # autodetection still looks where servers are
    assert load_settings(None, {}, {}).health_port not in taken
