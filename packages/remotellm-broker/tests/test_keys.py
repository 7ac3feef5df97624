"""Keys and tokens: format, hashing, display prefix, service-key parsing."""

import re

import pytest

from remotellm_broker.keys import (
    MIN_ENV_KEY_LENGTH,
    display_prefix,
    generate_api_key,
    generate_connector_token,
    hash_secret,
    key_id_for_hash,
    looks_like_api_key,
    looks_like_connector_token,
    looks_like_hash,
    parse_env_key,
    secrets_equal,
)


def test_api_key_is_sk_and_32_lowercase_hex() -> None:
    key = generate_api_key()
    assert re.fullmatch(r"sk-[0-9a-f]{32}", key)
    assert looks_like_api_key(key)


def test_api_keys_are_unique() -> None:
    assert len({generate_api_key() for _ in range(1000)}) == 1000


def test_connector_token_is_rct_and_48_hex() -> None:
    token = generate_connector_token()
    assert re.fullmatch(r"rct-[0-9a-f]{48}", token)
    assert looks_like_connector_token(token)
    assert not looks_like_api_key(token)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "sk-",
        "sk-" + "0" * 31,
        "sk-" + "0" * 33,
        "sk-" + "A" * 32,
        "SK-" + "0" * 32,
        "sk-" + "g" * 32,
    ],
)
def test_malformed_api_keys_are_recognised(value: str) -> None:
    assert not looks_like_api_key(value)


def test_hash_is_sha256_hex_with_prefix() -> None:
    assert hash_secret("abc") == (
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert looks_like_hash(hash_secret(generate_api_key()))
    assert not looks_like_hash("sha256:xyz")


def test_display_prefix_shows_seven_characters_and_an_ellipsis() -> None:
    assert display_prefix("sk-1a2b3c4d5e") == "sk-1a2b…"


def test_key_id_is_derived_from_the_hash_not_the_key() -> None:
    key = generate_api_key()
    key_id = key_id_for_hash(hash_secret(key))
    assert re.fullmatch(r"k-[0-9a-f]{16}", key_id)
    assert key[3:] not in key_id


def test_secrets_equal_compares_exactly() -> None:
    assert secrets_equal("sha256:ab", "sha256:ab")
    assert not secrets_equal("sha256:ab", "sha256:ac")
    assert not secrets_equal("sha256:ab", "sha256:abc")


def test_env_key_raw_and_hashed_give_the_same_account() -> None:
    key = generate_api_key()
    raw = parse_env_key(key)
    hashed = parse_env_key(hash_secret(key).upper().replace("SHA256:", "sha256:"))
    assert raw.secret_hash == hashed.secret_hash == hash_secret(key)
    assert raw.name == hashed.name
    assert key not in repr(raw)


def test_env_key_surrounding_whitespace_is_ignored() -> None:
    key = generate_api_key()
    assert parse_env_key(f"  {key}\n").secret_hash == hash_secret(key)


def test_env_key_accepts_a_long_non_sk_secret() -> None:
    secret = "vault-generated-secret-value=="
    assert parse_env_key(secret).secret_hash == hash_secret(secret)


def test_env_key_too_short_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match=str(MIN_ENV_KEY_LENGTH)) as info:
        parse_env_key("hunter2")
    assert "hunter2" not in str(info.value)


def test_env_key_bad_hash_is_refused() -> None:
    with pytest.raises(ValueError, match="64 hex"):
        parse_env_key("sha256:1234")
