"""Who may get a key from the portal: the operator's access rules, checked at every login.

A GitLab account is admitted when any rule names it:

- ``portal_allowed_users``: ``gitlab:<id>`` (the id survives renames) or a username;
- ``portal_allowed_groups``: a group's full path; it admits the members of that group and of
  every subgroup below it (``acme`` admits a member of ``acme/team-a``). Group membership comes
  from the ``groups`` claim of GitLab's OpenID Connect userinfo, which lists the full path of
  every group the user belongs to, directly or through an ancestor group;
- ``portal_allow_any_gitlab_user``: everyone on this GitLab.

With no rule at all the broker does not start (``config._check_portal``), and ``AccessRules``
admits nobody: an empty rule set never means "everyone".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["AccessDecision", "AccessRules"]


@dataclass(frozen=True)
class AccessDecision:
    """The outcome for one login; ``reason`` is a short token for the log line."""

    allowed: bool
    reason: str


@dataclass(frozen=True)
class AccessRules:
    groups: tuple[str, ...] = ()
    user_ids: frozenset[int] = frozenset()
    usernames: frozenset[str] = frozenset()  # casefolded: GitLab usernames ignore case
    allow_any: bool = False

    @classmethod
    def from_settings(
        cls, *, groups: Iterable[str], users: Iterable[str], allow_any: bool
    ) -> AccessRules:
        ids: set[int] = set()
        names: set[str] = set()
        for entry in users:
            if entry.startswith("gitlab:"):
                ids.add(int(entry.removeprefix("gitlab:")))
            else:
                names.add(entry.casefold())
        return cls(
            groups=tuple(g.strip("/").casefold() for g in groups),
            user_ids=frozenset(ids),
            usernames=frozenset(names),
            allow_any=allow_any,
        )

    @property
    def empty(self) -> bool:
        return not (self.groups or self.user_ids or self.usernames or self.allow_any)

    def decide(self, user_id: int, username: str, groups: Iterable[str]) -> AccessDecision:
        if self.allow_any:
            return AccessDecision(True, "any_gitlab_user")
        if user_id in self.user_ids:
            return AccessDecision(True, "allowed_user_id")
        if username.casefold() in self.usernames:
            return AccessDecision(True, "allowed_username")
        if any(self._group_admits(path.casefold()) for path in groups):
            return AccessDecision(True, "allowed_group")
        if self.empty:
            return AccessDecision(False, "no_rules")
        return AccessDecision(False, "not_in_allowed_groups_or_users")

    def _group_admits(self, path: str) -> bool:
        # ``acme`` admits ``acme`` and ``acme/team-a``, never ``acme-evil`` nor ``acmeco``.
        return any(path == rule or path.startswith(rule + "/") for rule in self.groups)
