"""The portal's view of the broker settings: on (everything it needs is set) or off (and why).

The broker refuses to start with a half-configured portal (``config.load_settings``); this
module still checks on its own, because the portal also needs ``public_url`` — GitLab sends the
browser back to ``{public_url}/auth/callback``, and that address must come from the operator,
never from a request's Host header.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from remotellm_broker.config import BrokerSettings
from remotellm_broker.portal.access import AccessRules

__all__ = ["PortalConfig", "missing_portal_settings", "portal_config"]


@dataclass(frozen=True)
class PortalConfig:
    public_url: str
    gitlab_url: str
    client_id: str
    client_secret: str
    session_secret: str
    access: AccessRules = field(default_factory=AccessRules)
    #: ``admin_gitlab_groups``: the only groups a session remembers (a cookie stays small).
    admin_groups: tuple[str, ...] = ()

    @property
    def api_url(self) -> str:
        """What API clients use as their base URL (the OpenAI SDKs append ``/chat/...``)."""
        return f"{self.public_url}/v1"

    @property
    def redirect_uri(self) -> str:
        """The callback registered in the GitLab application."""
        return f"{self.public_url}/auth/callback"

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def public_origin(self) -> str:
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def gitlab_host(self) -> str:
        return urlsplit(self.gitlab_url).netloc or self.gitlab_url


def missing_portal_settings(settings: BrokerSettings) -> list[str]:
    """Names of the settings the portal still needs (empty: it can run)."""
    needed = {
        "gitlab_client_id": settings.gitlab_client_id,
        "gitlab_client_secret": settings.gitlab_client_secret,
        "session_secret": settings.session_secret,
        "public_url": settings.public_url,
    }
    return [name for name, value in needed.items() if not value]


def portal_config(settings: BrokerSettings) -> PortalConfig | None:
    public_url, client_id = settings.public_url, settings.gitlab_client_id
    client_secret, session_secret = settings.gitlab_client_secret, settings.session_secret
    if not (public_url and client_id and client_secret and session_secret):
        return None
    return PortalConfig(
        public_url=public_url.rstrip("/"),
        gitlab_url=settings.gitlab_url.rstrip("/"),
        client_id=client_id,
        client_secret=client_secret,
        session_secret=session_secret,
        access=AccessRules.from_settings(
            groups=settings.portal_allowed_groups,
            users=settings.portal_allowed_users,
            allow_any=settings.portal_allow_any_gitlab_user,
        ),
        admin_groups=tuple(settings.admin_gitlab_groups),
    )
