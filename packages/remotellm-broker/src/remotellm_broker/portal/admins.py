"""Who is an admin of the portal: GitLab user ids or GitLab groups named in the settings.

``admin_gitlab_ids`` names users by their GitLab id (it survives a rename). For
``admin_gitlab_groups`` the login keeps the user's groups in the session
(``remember_groups``, from GitLab's OpenID Connect userinfo ``groups`` claim), so a user
removed from the group stops being an admin at their next login, at the latest when the
session expires (8 hours).
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp_session import Session

from remotellm_broker.config import BrokerSettings
from remotellm_broker.users import UserRecord

__all__ = ["is_admin", "remember_groups"]

_GROUPS_KEY = "groups"


def remember_groups(session: Session, groups: Iterable[str], admin_groups: Iterable[str]) -> None:
    """Keep, in the session at login, those of the user's GitLab groups (full paths) that make
    an admin: only those, so the cookie stays small however many groups the user is in."""
    wanted = {g.strip("/").casefold() for g in admin_groups}
    mine = sorted({g for g in groups if isinstance(g, str) and g.strip("/").casefold() in wanted})
    if mine:
        session[_GROUPS_KEY] = mine


def is_admin(settings: BrokerSettings, user: UserRecord, session: Session) -> bool:
    if user.gitlab_id is not None and user.gitlab_id in settings.admin_gitlab_ids:
        return True
    groups = session.get(_GROUPS_KEY)
    if not settings.admin_gitlab_groups or not isinstance(groups, list):
        return False
    wanted = {g.strip("/").casefold() for g in settings.admin_gitlab_groups}
    return any(isinstance(g, str) and g.strip("/").casefold() in wanted for g in groups)
