"""The connector's side of a relay connection (see ``session`` for the shared rules)."""

from remotellm_protocol.resume import Suspended
from remotellm_protocol.rules import Role
from remotellm_protocol.session import Session

__all__ = ["ConnectorSession"]


class ConnectorSession(Session):
    """The connector's side: sends ``hello``, serves streams the broker opens."""

    def __init__(self, resume: Suspended | None = None) -> None:
        """``resume``: the streams of the dropped connection, from its ``suspend()``; then
        ``hello`` may present their token (``resume.token``, ``streams=resume.held()``)."""
        super().__init__(Role.CONNECTOR, resume)

    @property
    def hello_sent(self) -> bool:
        return self.hello is not None

    @property
    def session_id(self) -> str | None:
        """``welcome.session_id``, once the broker has answered."""
        return None if self.welcome is None else self.welcome.session_id

    @property
    def heartbeat_s(self) -> float | None:
        """``welcome.heartbeat_s``, once the broker has answered."""
        return None if self.welcome is None else self.welcome.heartbeat_s
