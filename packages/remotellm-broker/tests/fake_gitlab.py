"""A local stand-in for GitLab's OAuth provider and user API, for the portal's tests.

It speaks the parts of GitLab the portal uses the way GitLab (Doorkeeper) does: the
authorization endpoint validates the client and redirect URI and answers with ``code`` and
``state`` (or ``error=access_denied``), the token endpoint authenticates the client (HTTP Basic
or form fields), checks that the code is known, unexpired, unused, issued to this client for
this redirect URI, and that the PKCE ``code_verifier`` hashes to the S256 challenge.
``/oauth/userinfo`` (GitLab's OpenID Connect userinfo, doorkeeper-openid_connect) wants a Bearer
token with the ``openid`` scope and answers GitLab's claims: ``sub`` (the user id, as a string),
``nickname`` and ``preferred_username`` (the username), ``name``, ``groups`` (the full path of
every group the user is a member of, directly or through an ancestor group: a member of
``acme`` is listed in ``acme/team-a`` too, a member of ``acme/team-a`` alone is not listed in
``acme``) and ``groups_direct``. With ``openid`` the token answer carries an RS256 ``id_token``
(``iss``, ``sub``, ``aud``, ``exp``, ``iat``, ``auth_time``, ``sub_legacy``, ``groups_direct``),
whose key is at ``/oauth/discovery/keys``; ``/.well-known/openid-configuration`` is GitLab's
discovery document. ``/api/v4/user`` wants ``read_user``. Errors use GitLab's own
shapes (``{"error": "invalid_grant", "error_description": ...}``, ``{"message": "401
Unauthorized"}``). A ``down`` switch makes every endpoint answer like a dead upstream behind
GitLab's nginx (502), and ``stop()`` closes the port so connections are refused.

It records every token request, so a test can prove the portal refused a bad callback *before*
talking to GitLab.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlencode

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

INVALID_GRANT = (
    "The provided authorization grant is invalid, expired, revoked, does not match the "
    "redirection URI used in the authorization request, or was issued to another client."
)
INVALID_CLIENT = (
    "Client authentication failed due to unknown client, no client authentication included, "
    "or unsupported authentication method."
)
CODE_TTL_S = 600.0  # GitLab: authorization codes expire after ten minutes
TOKEN_TTL_S = 7200

Approval = Literal["auto", "button", "deny"]


@dataclass
class GitLabUser:
    """A GitLab account: what userinfo and ``/api/v4/user`` say about it. ``memberships``
    are the groups it is a direct member of (full paths)."""

    id: int
    username: str
    name: str
    state: str = "active"
    memberships: list[str] = field(default_factory=list)


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    scopes: frozenset[str]
    challenge: str | None
    challenge_method: str | None
    user: GitLabUser
    expires_at: float
    used: bool = False


@dataclass
class TokenRequest:
    """One call to ``/oauth/token`` as received (for assertions)."""

    form: dict[str, str]
    status: int


@dataclass
class FakeGitLab:
    """Configuration and recorded traffic of one fake GitLab instance."""

    client_id: str = "portal-client-id"
    client_secret: str = "portal-client-secret"
    redirect_uris: list[str] = field(default_factory=list)
    user: GitLabUser = field(default_factory=lambda: GitLabUser(101, "ada", "Ada Lovelace"))
    #: Every group on this instance (full paths); a member of a group is a member of its
    #: subgroups too, as in GitLab.
    groups: list[str] = field(default_factory=list)
    approval: Approval = "auto"
    down: bool = False
    token_requests: list[TokenRequest] = field(default_factory=list)
    user_requests: int = 0
    #: The ID token sent with each access token (``openid`` scope only).
    id_tokens: dict[str, str] = field(default_factory=dict)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""
    _grants: dict[str, _Grant] = field(default_factory=dict)
    _tokens: dict[str, tuple[GitLabUser, frozenset[str], float]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _signing_key: rsa.RSAPrivateKey = field(default_factory=lambda: _signing_key())

    # -- the app ----------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        @web.middleware
        async def down(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            if self.down:  # what GitLab's nginx says when Puma is gone
                body = "<html><head><title>502 Bad Gateway</title></head><body>502</body></html>"
                return web.Response(status=502, text=body, content_type="text/html")
            return await handler(request)

        app = web.Application(middlewares=[down])
        app.router.add_get("/oauth/authorize", self._authorize)
        app.router.add_post("/oauth/authorize", self._authorize_decision)
        app.router.add_post("/oauth/token", self._token)
        app.router.add_get("/api/v4/user", self._api_user)
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/oauth/discovery/keys", self._jwks)
        app.router.add_route("GET", "/oauth/userinfo", self._userinfo)
        app.router.add_route("POST", "/oauth/userinfo", self._userinfo)
        return app

    async def _authorize(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        if request.method == "HEAD":  # a liveness probe, not a login
            return web.Response(status=400)
        self.authorize_requests.append(params)
        problem = self._check_client_and_redirect(params)
        if problem:
            # Like GitLab: a bad client or redirect URI is never redirected to (RFC 6749 4.1.2.1)
            return _html_page("An error has occurred", problem, status=400)
        redirect_uri, state = params["redirect_uri"], params.get("state")
        if params.get("response_type") != "code":
            return _redirect_error(redirect_uri, state, "unsupported_response_type")
        method = params.get("code_challenge_method")
        if params.get("code_challenge") and method not in ("plain", "S256"):
            return _redirect_error(redirect_uri, state, "invalid_request")
        scopes = frozenset(params.get("scope", "").split())
        if not scopes or not scopes <= {"read_user", "openid", "profile", "email", "api"}:
            return _redirect_error(redirect_uri, state, "invalid_scope")
        if self.approval == "deny":
            return _redirect_error(redirect_uri, state, "access_denied")
        if self.approval == "button":
            return self._approval_page(params)
        return self._approve(params)

    async def _authorize_decision(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        if self._check_client_and_redirect(form):
            return _html_page("An error has occurred", "invalid request", status=400)
        if form.get("decision") != "approve":
            return _redirect_error(form["redirect_uri"], form.get("state"), "access_denied")
        return self._approve(form)

    def _check_client_and_redirect(self, params: dict[str, str]) -> str | None:
        if params.get("client_id") != self.client_id:
            return INVALID_CLIENT
        if params.get("redirect_uri") not in self.redirect_uris:
            return "The redirect URI included is not valid."
        return None

    def _approve(self, params: dict[str, str]) -> web.Response:
        code = secrets.token_hex(32)
        self._grants[code] = _Grant(
            client_id=params["client_id"],
            redirect_uri=params["redirect_uri"],
            scopes=frozenset(params.get("scope", "").split()),
            challenge=params.get("code_challenge"),
            challenge_method=params.get("code_challenge_method"),
            user=self.user,
            expires_at=time.monotonic() + CODE_TTL_S,
        )
        query = {"code": code}
        if params.get("state"):
            query["state"] = params["state"]
        return _found(f"{params['redirect_uri']}?{urlencode(query)}")

    def _approval_page(self, params: dict[str, str]) -> web.Response:
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in params.items()
        )
        body = (
            f"<p>An application is requesting access to your GitLab account "
            f"<b>@{html.escape(self.user.username)}</b> "
            f"(scope: {html.escape(params.get('scope', ''))}).</p>"
            f'<form method="post" action="/oauth/authorize">{hidden}'
            f'<button id="authorize" name="decision" value="approve">Authorize</button> '
            f'<button id="deny" name="decision" value="deny">Deny</button></form>'
        )
        return _html_page("Authorize application", body, status=200, escape=False)

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        response = self._token_response(request, form)
        self.token_requests.append(TokenRequest(form=form, status=response.status))
        return response

    def _token_response(self, request: web.Request, form: dict[str, str]) -> web.Response:
        client_id, client_secret = _client_credentials(request, form)
        if client_id != self.client_id or not secrets.compare_digest(
            client_secret or "", self.client_secret
        ):
            return _oauth_error(401, "invalid_client", INVALID_CLIENT)
        if form.get("grant_type") != "authorization_code":
            return _oauth_error(
                400,
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
            )
        code = form.get("code")
        if not code:
            return _oauth_error(400, "invalid_request", "Missing required parameter: code.")
        grant = self._grants.get(code)
        if grant is None or grant.used or grant.expires_at < time.monotonic():
            return _oauth_error(400, "invalid_grant", INVALID_GRANT)
        grant.used = True  # a code works once, even when this request fails below
        if grant.client_id != client_id or grant.redirect_uri != form.get("redirect_uri"):
            return _oauth_error(400, "invalid_grant", INVALID_GRANT)
        if not _pkce_ok(grant, form.get("code_verifier")):
            return _oauth_error(400, "invalid_grant", INVALID_GRANT)
        token = secrets.token_hex(32)
        self._tokens[token] = (grant.user, grant.scopes, time.time() + TOKEN_TTL_S)
        answer: dict[str, object] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": TOKEN_TTL_S,
            "refresh_token": secrets.token_hex(32),
            "scope": " ".join(sorted(grant.scopes)),
            "created_at": int(time.time()),
        }
        if "openid" in grant.scopes:
            answer["id_token"] = self.id_tokens[token] = self._id_token(grant.user, client_id)
        return web.json_response(answer)

    def _id_token(self, user: GitLabUser, audience: str) -> str:
        """An RS256 ID token as doorkeeper-openid_connect signs it for GitLab."""
        now = int(time.time())
        claims = {
            "iss": self.url,
            "sub": str(user.id),
            "aud": audience,
            "exp": now + 120,
            "iat": now,
            "auth_time": now,
            "sub_legacy": hashlib.sha256(f"legacy-{user.id}".encode()).hexdigest(),
            "groups_direct": list(user.memberships),
        }
        header = {"typ": "JWT", "kid": self._kid(), "alg": "RS256"}
        signing_input = f"{_b64json(header)}.{_b64json(claims)}".encode()
        signature = self._signing_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input.decode()}.{_b64(signature)}"

    def _kid(self) -> str:
        modulus = self._signing_key.public_key().public_numbers().n
        return hashlib.sha256(str(modulus).encode()).hexdigest()[:43]

    async def _jwks(self, request: web.Request) -> web.Response:
        numbers = self._signing_key.public_key().public_numbers()
        key = {
            "kty": "RSA",
            "kid": self._kid(),
            "e": _b64(numbers.e.to_bytes(3, "big")),
            "n": _b64(numbers.n.to_bytes(256, "big")),
            "use": "sig",
            "alg": "RS256",
        }
        return web.json_response({"keys": [key]})

    async def _discovery(self, request: web.Request) -> web.Response:
        """GitLab's ``/.well-known/openid-configuration`` (the fields clients use)."""
        base = self.url
        return web.json_response(
            {
                "issuer": base,
                "authorization_endpoint": f"{base}/oauth/authorize",
                "token_endpoint": f"{base}/oauth/token",
                "revocation_endpoint": f"{base}/oauth/revoke",
                "introspection_endpoint": f"{base}/oauth/introspect",
                "userinfo_endpoint": f"{base}/oauth/userinfo",
                "jwks_uri": f"{base}/oauth/discovery/keys",
                "scopes_supported": ["api", "read_api", "read_user", "openid", "profile", "email"],
                "response_types_supported": ["code"],
                "response_modes_supported": ["query", "fragment", "form_post"],
                "grant_types_supported": [
                    "authorization_code",
                    "password",
                    "client_credentials",
                    "device_code",
                    "refresh_token",
                ],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "claim_types_supported": ["normal"],
                "claims_supported": [
                    "iss",
                    "sub",
                    "aud",
                    "exp",
                    "iat",
                    "sub_legacy",
                    "name",
                    "nickname",
                    "preferred_username",
                    "email",
                    "email_verified",
                    "website",
                    "profile",
                    "picture",
                    "groups",
                    "groups_direct",
                ],
                "code_challenge_methods_supported": ["plain", "S256"],
            }
        )

    async def _api_user(self, request: web.Request) -> web.Response:
        self.user_requests += 1
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        entry = self._tokens.get(token) if scheme.lower() == "bearer" else None
        if entry is None or entry[2] < time.time():
            return web.json_response({"message": "401 Unauthorized"}, status=401)
        user, scopes, _ = entry
        if not scopes & {"read_user", "api", "read_api"}:
            return web.json_response(
                {
                    "error": "insufficient_scope",
                    "error_description": "The request requires higher privileges than "
                    "provided by the access token.",
                    "scope": "api read_api read_user",
                },
                status=403,
            )
        return web.json_response(
            {
                "id": user.id,
                "username": user.username,
                "name": user.name,
                "state": user.state,
                "locked": False,
                "avatar_url": f"{self.url}/uploads/-/system/user/avatar/{user.id}/avatar.png",
                "web_url": f"{self.url}/{user.username}",
                "created_at": "2024-01-02T03:04:05.678Z",
                "bot": False,
            }
        )

    async def _userinfo(self, request: web.Request) -> web.Response:
        """GitLab's OIDC userinfo (doorkeeper-openid_connect): Bearer token with ``openid``."""
        self.user_requests += 1
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        entry = self._tokens.get(token) if scheme.lower() == "bearer" else None
        if entry is None or entry[2] < time.time():
            return web.json_response(
                {"error": "invalid_token", "error_description": "The access token is invalid"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="Doorkeeper", error="invalid_token"'},
            )
        user, scopes, _ = entry
        if "openid" not in scopes:
            return web.json_response(
                {
                    "error": "insufficient_scope",
                    "error_description": "The request requires higher privileges than "
                    "provided by the access token.",
                },
                status=403,
            )
        return web.json_response(
            {
                "sub": str(user.id),
                "sub_legacy": hashlib.sha256(f"legacy-{user.id}".encode()).hexdigest(),
                "name": user.name,
                "nickname": user.username,
                "preferred_username": user.username,
                "website": "",
                "profile": f"{self.url}/{user.username}",
                "picture": f"{self.url}/uploads/-/system/user/avatar/{user.id}/avatar.png",
                "groups": self.groups_of(user),
                "groups_direct": list(user.memberships),
            }
        )

    def groups_of(self, user: GitLabUser) -> list[str]:
        """The ``groups`` claim: direct memberships and every subgroup below them."""
        found = list(user.memberships)
        for path in self.groups:
            inherited = any(path.startswith(m + "/") for m in user.memberships)
            if inherited and path not in found:
                found.append(path)
        return found

    def access_tokens(self) -> list[str]:
        """The access tokens handed out so far, oldest first."""
        return list(self._tokens)

    def issue_token(self, user: GitLabUser, scopes: frozenset[str]) -> str:
        """An access token as if ``user`` had authorized ``scopes`` (for tests of the fake)."""
        token = secrets.token_hex(32)
        self._tokens[token] = (user, scopes, time.time() + TOKEN_TTL_S)
        return token

    def expire_codes(self) -> None:
        """Every authorization code handed out so far expires (as after GitLab's ten minutes)."""
        for grant in self._grants.values():
            grant.expires_at = 0.0

    # -- running it ----------------------------------------------------------------------------

    async def start(self) -> str:
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        """Close the port: later connections are refused."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@asynccontextmanager
async def running_fake_gitlab(**kwargs: object) -> AsyncIterator[FakeGitLab]:
    fake = FakeGitLab(**kwargs)  # type: ignore[arg-type]
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@functools.cache
def _signing_key() -> rsa.RSAPrivateKey:
    """One RSA key per test process: generating one takes a while on a busy machine."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64json(value: object) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def _client_credentials(
    request: web.Request, form: dict[str, str]
) -> tuple[str | None, str | None]:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(auth[6:], validate=True).decode()
        except ValueError:
            return None, None
        client_id, _, secret = decoded.partition(":")
        return client_id, secret
    return form.get("client_id"), form.get("client_secret")


def _pkce_ok(grant: _Grant, verifier: str | None) -> bool:
    if grant.challenge is None:
        return (
            True  # no PKCE asked for at authorize time (GitLab allows that for confidential apps)
        )
    if not verifier:
        return False
    if grant.challenge_method == "S256":
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
        return secrets.compare_digest(computed, grant.challenge)
    return secrets.compare_digest(verifier, grant.challenge)


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


def _redirect_error(redirect_uri: str, state: str | None, error: str) -> web.Response:
    descriptions = {
        "access_denied": "The resource owner or authorization server denied the request.",
        "invalid_scope": "The requested scope is invalid, unknown, or malformed.",
        "invalid_request": "The request is missing a required parameter, includes an "
        "unsupported parameter value, or is otherwise malformed.",
        "unsupported_response_type": "The authorization server does not support this "
        "response type.",
    }
    query = {"error": error, "error_description": descriptions[error]}
    if state:
        query["state"] = state
    return _found(f"{redirect_uri}?{urlencode(query)}")


def _found(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})


def _html_page(title: str, body: str, *, status: int, escape: bool = True) -> web.Response:
    content = html.escape(body) if escape else body
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title></head><body><h1>{html.escape(title)}</h1>{content}</body></html>"
    )
    return web.Response(status=status, text=page, content_type="text/html")
