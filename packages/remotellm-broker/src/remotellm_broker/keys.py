"""API keys and connector tokens: how they are made, hashed, shown and recognised.

A key is ``sk-`` + 32 lowercase hex characters (128 random bits); a connector token is
``rct-`` + 48 hex characters (192 bits). Neither is ever stored: the user store keeps
``hash_secret(key)`` plus ``display_prefix(key)`` so an operator can tell keys apart.

Why a plain SHA-256 and not a slow password hash: the secrets are long uniformly random
strings, not passwords. Nobody can brute-force a 128-bit preimage however fast the hash is,
so a slow KDF would only slow down every API request. The same reasoning makes looking keys
up by their hash in a dict safe (see ``users.py``).

This module is pure: no I/O, no aiohttp.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

__all__ = [
    "API_KEY_PREFIX",
    "CONNECTOR_TOKEN_PREFIX",
    "HASH_PREFIX",
    "EnvKey",
    "display_prefix",
    "generate_api_key",
    "generate_connector_token",
    "hash_secret",
    "key_id_for_hash",
    "looks_like_api_key",
    "looks_like_connector_token",
    "looks_like_hash",
    "parse_env_key",
    "secrets_equal",
]

API_KEY_PREFIX = "sk-"
CONNECTOR_TOKEN_PREFIX = "rct-"
HASH_PREFIX = "sha256:"

_API_KEY_RE = re.compile(r"sk-[0-9a-f]{32}")
_CONNECTOR_TOKEN_RE = re.compile(r"rct-[0-9a-f]{48}")
_HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")
# Raw service-account keys from the environment need not be ``sk-`` keys (an operator may
# reuse a vault-generated secret), but a short one could be guessed.
MIN_ENV_KEY_LENGTH = 16


def generate_api_key() -> str:
    """A new API key: ``sk-`` + 32 lowercase hex characters from the OS CSPRNG."""
    return API_KEY_PREFIX + secrets.token_hex(16)


def generate_connector_token() -> str:
    """A new connector token: ``rct-`` + 48 lowercase hex characters."""
    return CONNECTOR_TOKEN_PREFIX + secrets.token_hex(24)


def hash_secret(secret: str) -> str:
    """``sha256:<hex>`` of the secret's UTF-8 bytes: the only form that is ever stored."""
    return HASH_PREFIX + hashlib.sha256(secret.encode("utf-8")).hexdigest()


def display_prefix(key: str) -> str:
    """The first 7 characters and an ellipsis (``sk-1a2b…``): enough to tell keys apart,
    far too little to use (it reveals 16 of 128 bits)."""
    return key[:7] + "…"


def key_id_for_hash(secret_hash: str) -> str:
    """A stable, non-secret id for a stored key, for logs, metrics and rate-limit buckets.

    Derived from the hash (not the key), so the id of a key can be computed from the file;
    64 bits of a hash of a 128-bit random key reveal nothing usable about the key.
    """
    return "k-" + secret_hash.removeprefix(HASH_PREFIX)[:16]


def looks_like_api_key(value: str) -> bool:
    """True for a well-formed ``sk-`` key (cheap check before any lookup)."""
    return _API_KEY_RE.fullmatch(value) is not None


def looks_like_connector_token(value: str) -> bool:
    """True for a well-formed ``rct-`` connector token."""
    return _CONNECTOR_TOKEN_RE.fullmatch(value) is not None


def looks_like_hash(value: str) -> bool:
    """True for ``sha256:`` + 64 lowercase hex characters."""
    return _HASH_RE.fullmatch(value) is not None


def secrets_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets or hashes."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


class EnvKey:
    """One parsed entry of ``REMOTELLM_BROKER_API_KEYS`` / ``..._CONNECTOR_TOKENS``.

    An entry is a raw secret or its hash (``sha256:<hex>``), so an operator can keep only
    hashes in the environment. The account's name is derived from the hash, so it is the
    same whether the raw key or its hash was configured (and reveals nothing). There is no
    ``NAME=secret`` syntax on purpose: base64 secrets end in ``=`` and would be misread.
    """

    __slots__ = ("name", "secret_hash")

    def __init__(self, name: str, secret_hash: str) -> None:
        self.name = name
        self.secret_hash = secret_hash

    def __repr__(self) -> str:
        return f"EnvKey(name={self.name!r})"


def parse_env_key(entry: str, *, name_prefix: str = "env-") -> EnvKey:
    """Parse one configured service key; raises ``ValueError`` with a message that never
    contains the secret itself."""
    entry = entry.strip()
    if entry.lower().startswith(HASH_PREFIX):
        lowered = entry.lower()
        if not looks_like_hash(lowered):
            raise ValueError("a hashed key must be 'sha256:' followed by 64 hex characters")
        secret_hash = lowered
    else:
        if len(entry) < MIN_ENV_KEY_LENGTH:
            raise ValueError(f"a raw key must be at least {MIN_ENV_KEY_LENGTH} characters long")
        secret_hash = hash_secret(entry)
    return EnvKey(name_prefix + secret_hash.removeprefix(HASH_PREFIX)[:8], secret_hash)
