"""Broker settings: layers, precedence, secrets, validation messages, portal completeness."""

from pathlib import Path

import pytest

from remotellm_broker.config import (
    BrokerSettings,
    ConfigError,
    env_name,
    load_settings,
)
from remotellm_broker.keys import generate_api_key, hash_secret

SESSION_SECRET = "s" * 32


def write(tmp_path: Path, text: str, name: str = "broker.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_need_nothing() -> None:
    settings = load_settings(None, {}, {})
    assert settings == BrokerSettings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert (settings.health_host, settings.health_port) == ("127.0.0.1", 8080)
    assert settings.users_file == "./users.yaml"
    assert (settings.rate_limit_rpm, settings.rate_limit_burst) == (600, 100)
    assert settings.max_streams_per_key == 64
    assert settings.max_body_bytes == 16 * 1024 * 1024
    assert settings.stream_window == 256 * 1024
    assert settings.gitlab_url == "https://gitlab.com"
    assert not settings.portal_enabled


def test_env_names_follow_the_field_names() -> None:
    assert env_name("rate_limit_rpm") == "REMOTELLM_BROKER_RATE_LIMIT_RPM"


def test_flags_beat_env_beat_file_beat_defaults(tmp_path: Path) -> None:
    config = write(tmp_path, "port: 1001\nhealth_port: 2001\nqueue_max: 3001\n")
    env = {"REMOTELLM_BROKER_PORT": "1002", "REMOTELLM_BROKER_HEALTH_PORT": "2002"}
    settings = load_settings(config, env, {"port": 1003})
    assert settings.port == 1003  # flag
    assert settings.health_port == 2002  # env
    assert settings.queue_max == 3001  # file
    assert settings.queue_timeout_s == 30.0  # default


def test_flags_left_unset_do_not_override(tmp_path: Path) -> None:
    settings = load_settings(None, {"REMOTELLM_BROKER_PORT": "1002"}, {"port": None})
    assert settings.port == 1002


def test_a_path_flag_is_accepted(tmp_path: Path) -> None:
    settings = load_settings(None, {}, {"users_file": tmp_path / "u.yaml"})
    assert settings.users_file == str(tmp_path / "u.yaml")


def test_env_values_are_converted_to_their_types() -> None:
    env = {
        "REMOTELLM_BROKER_QUEUE_TIMEOUT_S": "2.5",
        "REMOTELLM_BROKER_RATE_LIMIT_RPM": "0",
        "REMOTELLM_BROKER_LOG_LEVEL": "DEBUG",
        "REMOTELLM_BROKER_LOG_FORMAT": "Json",
        "REMOTELLM_BROKER_PUBLIC_URL": "https://llm.example.org",
    }
    settings = load_settings(None, env, {})
    assert settings.queue_timeout_s == 2.5
    assert settings.rate_limit_rpm == 0
    assert (settings.log_level, settings.log_format) == ("debug", "json")
    assert settings.public_url == "https://llm.example.org"


def test_list_settings_are_comma_separated_in_env() -> None:
    keys = [generate_api_key(), generate_api_key()]
    env = {"REMOTELLM_BROKER_API_KEYS": f" {keys[0]} ,{hash_secret(keys[1])},, "}
    assert load_settings(None, env, {}).api_keys == [keys[0], hash_secret(keys[1])]


def test_list_settings_in_the_file_may_be_lists_or_text(tmp_path: Path) -> None:
    tokens = ["a" * 20, "b" * 20]
    as_list = write(tmp_path, f"connector_tokens: [{tokens[0]}, {tokens[1]}]\n", "a.yaml")
    as_text = write(tmp_path, f"connector_tokens: {tokens[0]},{tokens[1]}\n", "b.yaml")
    assert load_settings(as_list, {}, {}).connector_tokens == tokens
    assert load_settings(as_text, {}, {}).connector_tokens == tokens


def test_secrets_come_from_files_named_in_env(tmp_path: Path) -> None:
    secret_file = write(tmp_path, SESSION_SECRET + "\n", "session")
    keys_file = write(tmp_path, f"{'k' * 20}\n{'m' * 20},{'n' * 20}\n", "keys")
    env = {
        "REMOTELLM_BROKER_SESSION_SECRET_FILE": str(secret_file),
        "REMOTELLM_BROKER_API_KEYS_FILE": str(keys_file),
        "REMOTELLM_BROKER_GITLAB_CLIENT_ID": "app-id",
        "REMOTELLM_BROKER_GITLAB_CLIENT_SECRET": "app-secret",
        "REMOTELLM_BROKER_PUBLIC_URL": "https://llm.example.org",
        "REMOTELLM_BROKER_PORTAL_ALLOWED_GROUPS": "acme",
    }
    settings = load_settings(None, env, {})
    assert settings.session_secret == SESSION_SECRET
    assert settings.api_keys == ["k" * 20, "m" * 20, "n" * 20]
    assert settings.portal_enabled


def test_only_secrets_have_a_file_variant(tmp_path: Path) -> None:
    port_file = write(tmp_path, "1234", "port")
    settings = load_settings(None, {"REMOTELLM_BROKER_PORT_FILE": str(port_file)}, {})
    assert settings.port == 8000


def test_a_secret_and_its_file_together_are_refused(tmp_path: Path) -> None:
    env = {
        "REMOTELLM_BROKER_SESSION_SECRET": SESSION_SECRET,
        "REMOTELLM_BROKER_SESSION_SECRET_FILE": str(write(tmp_path, SESSION_SECRET, "s")),
    }
    with pytest.raises(ConfigError, match="both REMOTELLM_BROKER_SESSION_SECRET and"):
        load_settings(None, env, {})


def test_an_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    env = {"REMOTELLM_BROKER_GITLAB_CLIENT_SECRET_FILE": str(tmp_path / "missing")}
    with pytest.raises(ConfigError, match=r"REMOTELLM_BROKER_GITLAB_CLIENT_SECRET_FILE=.*missing"):
        load_settings(None, env, {})


@pytest.mark.parametrize("field", ["api_keys", "connector_tokens", "session_secret"])
def test_secrets_are_never_taken_from_flags(field: str) -> None:
    with pytest.raises(ConfigError, match=f"{field} is a secret.*{env_name(field)}_FILE"):
        load_settings(None, {}, {field: "x" * 40})


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"REMOTELLM_BROKER_PORT": "eighty"}, "port from REMOTELLM_BROKER_PORT: 'eighty'"),
        ({"REMOTELLM_BROKER_PORT": "70000"}, "port from REMOTELLM_BROKER_PORT: '70000'"),
        ({"REMOTELLM_BROKER_RATE_LIMIT_RPM": "-1"}, "rate_limit_rpm from .*: '-1'"),
        ({"REMOTELLM_BROKER_QUEUE_TIMEOUT_S": "0"}, "queue_timeout_s from .*: '0'"),
        ({"REMOTELLM_BROKER_LOG_FORMAT": "xml"}, "log_format from .*: 'xml'"),
        ({"REMOTELLM_BROKER_PUBLIC_URL": "llm.example.org"}, "public_url from .*'llm.example.org'"),
        ({"REMOTELLM_BROKER_HOST": ""}, "host from REMOTELLM_BROKER_HOST: ''"),
    ],
)
def test_a_bad_value_names_the_field_its_source_and_the_value(
    env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError, match=f"invalid value for {expected}"):
        load_settings(None, env, {})


def test_a_bad_value_in_the_file_names_the_file(tmp_path: Path) -> None:
    config = write(tmp_path, "max_body_bytes: lots\n")
    with pytest.raises(ConfigError, match=rf"max_body_bytes from max_body_bytes in {config}"):
        load_settings(config, {}, {})


def test_a_bad_flag_value_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="port from --port: -5"):
        load_settings(None, {}, {"port": -5})


def test_a_bad_secret_is_never_echoed() -> None:
    env = {"REMOTELLM_BROKER_SESSION_SECRET": "too-short-secret"}
    with pytest.raises(ConfigError, match="session_secret") as info:
        load_settings(None, env, {})
    assert "too-short-secret" not in str(info.value)
    assert "<secret>" in str(info.value)


def test_a_malformed_service_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match="api_keys from REMOTELLM_BROKER_API_KEYS: entry 2") as i:
        load_settings(None, {"REMOTELLM_BROKER_API_KEYS": f"{generate_api_key()},tiny"}, {})
    assert "tiny" not in str(i.value)


def test_an_unknown_setting_in_the_file_is_refused(tmp_path: Path) -> None:
    config = write(tmp_path, "prot: 8000\n")
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        load_settings(config, {}, {})


def test_an_unknown_flag_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load_settings(None, {}, {"colour": "blue"})


@pytest.mark.parametrize(
    ("text", "match"),
    [("port: [1\n", "not valid YAML \\(line"), ("- a\n- b\n", "must be a mapping")],
)
def test_a_broken_config_file_is_refused(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_settings(write(tmp_path, text), {}, {})


def test_an_empty_config_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "# nothing yet\n"), {}, {}) == BrokerSettings()


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.yaml"):
        load_settings(tmp_path / "nope.yaml", {}, {})


def test_unrelated_environment_variables_are_ignored() -> None:
    env = {"REMOTELLM_BROKER_SOMETHING_ELSE": "1", "PORT": "1", "REMOTELLM_CONNECTOR_PORT": "2"}
    assert load_settings(None, env, {}) == BrokerSettings()


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"REMOTELLM_BROKER_GITLAB_CLIENT_ID": "id"}, "gitlab_client_secret"),
        ({"REMOTELLM_BROKER_GITLAB_CLIENT_SECRET": "sec"}, "gitlab_client_id"),
        ({"REMOTELLM_BROKER_SESSION_SECRET": SESSION_SECRET}, "gitlab_client_id"),
        ({"REMOTELLM_BROKER_GITLAB_URL": "https://git.example.org"}, "gitlab_client_id"),
        (
            {
                "REMOTELLM_BROKER_GITLAB_CLIENT_ID": "id",
                "REMOTELLM_BROKER_GITLAB_CLIENT_SECRET": "sec",
            },
            "session_secret",
        ),
        (
            {
                "REMOTELLM_BROKER_GITLAB_CLIENT_ID": "id",
                "REMOTELLM_BROKER_GITLAB_CLIENT_SECRET": "sec",
                "REMOTELLM_BROKER_SESSION_SECRET": SESSION_SECRET,
            },
            "public_url",
        ),
    ],
)
def test_a_half_configured_portal_names_what_is_missing(env: dict[str, str], missing: str) -> None:
    with pytest.raises(ConfigError, match=f"half-configured.*{missing} missing"):
        load_settings(None, env, {})


def test_a_complete_portal_is_enabled(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "gitlab_url: https://git.example.org\ngitlab_client_id: app\n"
        "portal_allow_any_gitlab_user: true\n",
    )
    env = {
        "REMOTELLM_BROKER_GITLAB_CLIENT_SECRET": "app-secret",
        "REMOTELLM_BROKER_SESSION_SECRET": SESSION_SECRET,
    }
    settings = load_settings(config, env, {"public_url": "https://llm.example.org"})
    assert settings.portal_enabled
    assert settings.gitlab_url == "https://git.example.org"
    assert settings.portal_allow_any_gitlab_user


_PORTAL_ENV = {
    "REMOTELLM_BROKER_GITLAB_CLIENT_ID": "app-id",
    "REMOTELLM_BROKER_GITLAB_CLIENT_SECRET": "app-secret",
    "REMOTELLM_BROKER_SESSION_SECRET": SESSION_SECRET,
    "REMOTELLM_BROKER_PUBLIC_URL": "https://llm.example.org",
}


def test_portal_without_access_rule_refuses_to_start() -> None:
    """Attacker: any gitlab.com account. A portal configured with no rule would hand each one
    a key, so the broker does not start, and says how to open it on purpose."""
    with pytest.raises(ConfigError) as caught:
        load_settings(None, _PORTAL_ENV, {})
    message = str(caught.value)
    assert "https://gitlab.com" in message
    for name in (
        "REMOTELLM_BROKER_PORTAL_ALLOWED_GROUPS",
        "REMOTELLM_BROKER_PORTAL_ALLOWED_USERS",
        "REMOTELLM_BROKER_PORTAL_ALLOW_ANY_GITLAB_USER",
        "--portal-allow-any-gitlab-user",
    ):
        assert name in message
    for flag_value in ("false", "0"):
        env = {**_PORTAL_ENV, "REMOTELLM_BROKER_PORTAL_ALLOW_ANY_GITLAB_USER": flag_value}
        with pytest.raises(ConfigError, match="no access rule"):
            load_settings(None, env, {})


def test_portal_access_rules_from_env_file_and_flags(tmp_path: Path) -> None:
    env = {**_PORTAL_ENV, "REMOTELLM_BROKER_PORTAL_ALLOWED_USERS": "gitlab:42, grace"}
    settings = load_settings(None, env, {})
    assert settings.portal_allowed_users == ["gitlab:42", "grace"]
    assert not settings.portal_allow_any_gitlab_user
    config = write(tmp_path, "portal_allowed_groups: [acme, beta/ops]\n")
    assert load_settings(config, _PORTAL_ENV, {}).portal_allowed_groups == ["acme", "beta/ops"]
    flags = {"portal_allowed_groups": "acme,gamma", "portal_allow_any_gitlab_user": None}
    assert load_settings(config, _PORTAL_ENV, flags).portal_allowed_groups == ["acme", "gamma"]
    opened = {**_PORTAL_ENV, "REMOTELLM_BROKER_PORTAL_ALLOW_ANY_GITLAB_USER": "true"}
    assert load_settings(None, opened, {}).portal_allow_any_gitlab_user


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("PORTAL_ALLOWED_GROUPS", "acme/"),
        ("PORTAL_ALLOWED_GROUPS", "../acme"),
        ("PORTAL_ALLOWED_GROUPS", "acme team"),
        ("PORTAL_ALLOWED_USERS", "1234"),
        ("PORTAL_ALLOWED_USERS", "gitlab:abc"),
        ("PORTAL_ALLOWED_USERS", "local:alice"),
    ],
)
def test_malformed_portal_access_rules_are_refused(field: str, value: str) -> None:
    env = {**_PORTAL_ENV, f"REMOTELLM_BROKER_{field}": value}
    with pytest.raises(ConfigError, match=field.lower()):
        load_settings(None, env, {})


def test_repr_never_shows_secrets() -> None:
    key = generate_api_key()
    settings = BrokerSettings(
        api_keys=[key], session_secret=SESSION_SECRET, gitlab_client_secret="app-secret"
    )
    text = repr(settings)
    for secret in (key, SESSION_SECRET, "app-secret"):
        assert secret not in text
    assert "api_keys=<1 secrets>" in text
    assert "port=8000" in text


def test_spelling_out_the_default_gitlab_url_does_not_turn_the_portal_on(tmp_path: Path) -> None:
    config = write(tmp_path, "gitlab_url: https://gitlab.com\n")
    assert not load_settings(config, {}, {}).portal_enabled


def test_a_public_url_alone_does_not_turn_the_portal_on() -> None:
    settings = load_settings(None, {"REMOTELLM_BROKER_PUBLIC_URL": "https://llm.example.org"}, {})
    assert not settings.portal_enabled
