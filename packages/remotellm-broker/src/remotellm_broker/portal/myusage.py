"""``/account/usage``: a signed-in user's own usage, limits and quotas.

The account page links here. It shows the user's tokens per day over the last 30 days (an
inline SVG chart), their requests by model, the limits that apply to them (their own, else the
broker's) and each quota with how much of it is used and when it resets. Only the user's own
records are read; the page takes no parameter that could name another user.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web
from aiohttp_session import Session, get_session

from remotellm_broker.config import BrokerSettings
from remotellm_broker.metering import usage_db_path
from remotellm_broker.portal import sessions
from remotellm_broker.portal.admins import is_admin
from remotellm_broker.portal.charts import daily_chart, read_report, window_days
from remotellm_broker.portal.pages import render, render_svg
from remotellm_broker.portal.sessions import csrf_token, current_user_id
from remotellm_broker.quota import QuotaState
from remotellm_broker.users import UserRecord, UserStore

__all__ = ["Limit", "UsagePages", "effective_limits", "signed_in"]


@dataclass(frozen=True)
class Limit:
    label: str
    value: str
    own: bool  # set for this user (else the broker-wide setting)


def _show(value: int, unit: str) -> str:
    return "unlimited" if value == 0 else f"{value:,} {unit}"


def effective_limits(settings: BrokerSettings, user: UserRecord) -> list[Limit]:
    """The limits that apply to ``user``: their own overrides, else the broker's."""
    rows = [
        ("Requests per minute", user.rate_limit_rpm, settings.rate_limit_rpm, "per minute"),
        ("Burst", user.rate_limit_burst, settings.rate_limit_burst, "requests"),
        ("Concurrent requests", user.max_streams, settings.max_streams_per_key, "at a time"),
    ]
    return [Limit(label, _show(default if own is None else own, unit), own is not None)
            for label, own, default, unit in rows]  # fmt: skip


def signed_in(store: UserStore, session: Session) -> UserRecord | None:
    """The session's user, if it still exists, is not blocked and (with server-side logout,
    issue 11) the session is of the user's current epoch; else the session ends."""
    user_id = current_user_id(session)
    user = store.get_user(user_id) if user_id else None
    if user is None or user.blocked or not _current_epoch(user, session):
        if user_id:
            session.invalidate()
        return None
    return user


def _current_epoch(user: UserRecord, session: Session) -> bool:
    # Server-side logout (issue 11, another branch) bumps a per-user epoch that the session
    # must match; where that exists, these pages honour it exactly as the account page does.
    epoch_of = getattr(sessions, "session_epoch", None)
    wanted = getattr(user, "session_epoch", None)
    return epoch_of is None or wanted is None or epoch_of(session) == (user.created, wanted)


def quota_view(quota: QuotaState) -> dict[str, object]:
    return {
        "name": quota.period.capitalize(),
        "limit": quota.limit,
        "used": quota.used,
        "left": max(0, quota.limit - quota.used),
        "resets": quota.resets_iso.replace("T", " ").replace(":00Z", " UTC"),
        "exhausted": quota.exhausted,
    }


class UsagePages:
    """The signed-in user's usage page."""

    def __init__(self, settings: BrokerSettings, store: UserStore) -> None:
        self.settings = settings
        self.store = store

    async def account_usage(self, request: web.Request) -> web.Response:
        from remotellm_broker.state import BROKER  # the app's state, created at start-up

        session = await get_session(request)
        user = signed_in(self.store, session)
        if user is None:
            return _redirect_home()
        now = time.time()
        days, since = window_days(now)
        path = usage_db_path(self.settings)
        daily = await read_report(path, "day", since, user.user_id)
        by_model = await read_report(path, "model", since, user.user_id)
        state = request.app[BROKER]
        quotas = state.usage.quotas(
            user.user_id, user.quota_daily_tokens, user.quota_monthly_tokens, now
        )
        return render(
            "usage.html",
            user=user,
            csrf=csrf_token(session),
            chart=daily_chart(days, daily, what="Your usage"),
            by_model=by_model,
            limits=effective_limits(self.settings, user),
            quotas=[quota_view(q) for q in quotas],
            is_admin=is_admin(self.settings, user, session),
        )

    async def account_chart(self, request: web.Request) -> web.Response:
        """The 30-day chart alone, as an SVG image: the account page shows it with
        ``<img src="/account/usage.svg">`` (same origin, the session cookie goes along)."""
        session = await get_session(request)
        user = signed_in(self.store, session)
        if user is None:
            return web.Response(status=403, text="not signed in\n")
        days, since = window_days(time.time())
        daily = await read_report(usage_db_path(self.settings), "day", since, user.user_id)
        chart = daily_chart(days, daily, what="Your usage")
        body = render_svg("usage_chart.svg", chart=chart)
        return web.Response(
            body=body.encode(),
            content_type="image/svg+xml",
            headers={
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
            },
        )


def _redirect_home() -> web.Response:
    response = web.Response(status=303, headers={"Location": "/", "Cache-Control": "no-store"})
    return response
