"""A connector token is one identity: the links made with it, and the name it serves under.

Every WebSocket a connector opens on ``/v1/relay`` holds a ``Lease`` on the token it
presented, from the upgrade until the socket closes. The leases give three guarantees:

- **a cap**: one token holds at most ``max_links`` leases at a time (a link being set up
  counts), so a leaked token cannot pin thousands of sockets;
- **one name**: the first connector name a token attaches with sticks to it for the life of
  the broker process, and a name sticks to one token. A token that ``tokens create NAME``
  named ``NAME`` owns that connector name too, across restarts. So a link that presents
  another token's name is refused, and a reconnect replaces the old link (same name) only
  when it presents the same token. A ``remotellm-connector check`` probe (hello named
  ``<name>-check``, no models) is let in by a token that is unbound or bound to ``<name>``,
  and binds nothing, so checking before ``run`` does not lock the token to the probe's name;
- **revocation**: ``revoke`` finds every lease whose token no longer authenticates and runs
  its ``on_revoke`` (which closes the socket and ends its streams).

Pure: no aiohttp, no clock. The relay endpoint drives it; ``BrokerState`` owns one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["PROBE_SUFFIX", "Lease", "TokenLinks"]

#: What ``remotellm-connector check`` appends to the connector name it says hello with.
PROBE_SUFFIX = "-check"


@dataclass(eq=False)
class Lease:
    """One link's hold on the connector token it was made with."""

    token_name: str
    #: The token itself, kept only to re-check it after users.yaml changes (never logged).
    secret: str = field(repr=False)
    #: Closes the link; set by the relay endpoint once it has a socket.
    on_revoke: Callable[[], None] = lambda: None
    #: The connector name this link attached with, once bound.
    connector: str | None = None
    #: Set by ``TokenLinks.revoke``: the link must not (or no longer) serve.
    revoked: bool = False


class TokenLinks:
    """Leases and name bindings of every connector token."""

    def __init__(self, max_links: int) -> None:
        self.max_links = max_links
        self._leases: dict[str, list[Lease]] = {}
        #: token name -> the connector name it is bound to, and the reverse.
        self._name_of_token: dict[str, str] = {}
        self._token_of_name: dict[str, str] = {}

    def links(self, token_name: str) -> int:
        """How many links hold a lease on ``token_name`` now."""
        return len(self._leases.get(token_name, ()))

    def lease(self, token_name: str, secret: str) -> Lease | None:
        """A lease for a new link, or None when the token is at its cap."""
        held = self._leases.setdefault(token_name, [])
        if len(held) >= self.max_links:
            return None
        lease = Lease(token_name, secret)
        held.append(lease)
        return lease

    def release(self, lease: Lease) -> None:
        """The link closed (idempotent). Its name binding stays with the token."""
        held = self._leases.get(lease.token_name)
        if held is not None and lease in held:
            held.remove(lease)
            if not held:
                del self._leases[lease.token_name]

    def bind(
        self,
        lease: Lease,
        connector: str,
        owner: Callable[[str], str | None],
        *,
        probe: bool = False,
    ) -> str | None:
        """Attach ``lease`` under ``connector``; None if allowed, else why not.

        ``owner(name)`` is the token that ``tokens create`` named ``name``, if any. A
        ``probe`` (the check's ``<name>-check`` hello) is allowed but binds nothing.
        """
        token = lease.token_name
        named_for = owner(connector)
        if named_for is not None and named_for != token:
            return f"connector name {connector!r} belongs to another connector token"
        holder = self._token_of_name.get(connector)
        if holder is not None and holder != token:
            return f"connector name {connector!r} is in use by another connector token"
        bound = self._name_of_token.get(token)
        if probe and (bound is None or connector == f"{bound}{PROBE_SUFFIX}"):
            lease.connector = connector
            return None
        if bound is not None and bound != connector:
            return f"this connector token is bound to connector name {bound!r}"
        self._name_of_token[token] = connector
        self._token_of_name[connector] = token
        lease.connector = connector
        return None

    def revoke(self, still_valid: Callable[[Lease], bool]) -> list[Lease]:
        """Call ``on_revoke`` of every lease whose token is no longer valid, release them
        and drop their tokens' name bindings; return them."""
        revoked = [
            lease for held in self._leases.values() for lease in held if not still_valid(lease)
        ]
        for lease in revoked:
            lease.revoked = True
            self.release(lease)
            name = self._name_of_token.pop(lease.token_name, None)
            if name is not None:
                self._token_of_name.pop(name, None)
        for lease in revoked:
            lease.on_revoke()
        return revoked

    def forget(self, valid_tokens: Callable[[str], bool]) -> None:
        """Drop the name bindings of tokens that no longer exist (and hold no lease)."""
        for token in [t for t in self._name_of_token if not valid_tokens(t)]:
            self._token_of_name.pop(self._name_of_token.pop(token), None)
