"""``/admin``: the operator's page: users, connectors, live streams, usage over time.

Admins are named in the settings: ``admin_gitlab_ids`` (GitLab user ids) and
``admin_gitlab_groups`` (members of those GitLab groups; see ``admins.py``). Anyone else
signed in gets 403, and a visitor who is not signed in is sent to the login page; nothing on
the page or behind its forms is reachable otherwise.

Every action is a POST with the session's CSRF token and, when the browser sends one, the
broker's own Origin; it goes through the same ``UserStore`` methods as the CLI (``users
block``, ``users unblock``, ``users limits``, ``users quota``), so users.yaml stays the one
source of truth and the change reaches every broker process within a second. Cutting a live
stream ends it like a cancelled request (HTTP 499 / an SSE error event for the client,
``cancel`` to the connector). Each action writes one ``portal_admin_action`` log line naming
the admin, the action and its target.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog
from aiohttp import web
from aiohttp_session import Session, get_session

from remotellm_broker.config import BrokerSettings
from remotellm_broker.metering import usage_db_path
from remotellm_broker.portal.admins import is_admin
from remotellm_broker.portal.charts import (
    daily_chart,
    read_daily_by,
    read_report,
    sparkline,
    window_days,
)
from remotellm_broker.portal.csrf import CSRF_FIELD, csrf_matches
from remotellm_broker.portal.myusage import signed_in
from remotellm_broker.portal.pages import render
from remotellm_broker.portal.sessions import csrf_token
from remotellm_broker.usagedb import GROUPS
from remotellm_broker.users import UserRecord, UserStore, UserStoreError
from remotellm_protocol import CancelReason

__all__ = ["AdminPages"]

log = structlog.get_logger(__name__)

_MAX_FORM_BYTES = 4096
_MAX_USERS_SHOWN = 200
_LIMIT_FIELDS = ("rpm", "burst", "streams", "daily", "monthly")


class AdminPages:
    def __init__(self, settings: BrokerSettings, store: UserStore, public_origin: str) -> None:
        self.settings = settings
        self.store = store
        self.public_origin = public_origin

    # -- access ---------------------------------------------------------------------------

    async def _admin(self, request: web.Request) -> tuple[UserRecord, Session] | web.Response:
        session = await get_session(request)
        user = signed_in(self.store, session)
        if user is None:
            return _redirect("/")
        if not is_admin(self.settings, user, session):
            log.info("portal_admin_refused", user_id=user.user_id, path=request.path)
            return render(
                "error.html",
                status=403,
                user=user,
                csrf=csrf_token(session),
                title="Admins only",
                message="This page is for the broker's operators.",
                keys_still_work=False,
            )
        return user, session

    async def _form(self, request: web.Request) -> tuple[UserRecord, dict[str, str]] | web.Response:
        """An admin's CSRF-checked form, or the response refusing it."""
        found = await self._admin(request)
        if isinstance(found, web.Response):
            return found
        user, session = found
        origin = request.headers.get("Origin")
        size = request.content_length
        if (origin is not None and origin != self.public_origin) or size is None:
            return self._expired(user, session)
        if size > _MAX_FORM_BYTES:
            return web.Response(status=413, text="form too large\n")
        form = await request.post()
        if not csrf_matches(csrf_token(session), form.get(CSRF_FIELD)):
            log.info("portal_csrf_rejected", user_id=user.user_id, path=request.path)
            return self._expired(user, session)
        return user, {k: v for k, v in form.items() if isinstance(v, str)}

    def _expired(self, user: UserRecord, session: Session) -> web.Response:
        return render(
            "error.html",
            status=403,
            user=user,
            csrf=csrf_token(session),
            title="This form has expired",
            message="The page you submitted from is out of date or was not this site's. "
            "Open the admin page again and retry.",
            keys_still_work=False,
        )

    # -- the page -------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        from remotellm_broker.state import BROKER

        found = await self._admin(request)
        if isinstance(found, web.Response):
            return found
        user, session = found
        state = request.app[BROKER]
        query = request.query.get("q", "")[:100].strip()
        by = request.query.get("by", "user")
        by = by if by in GROUPS and by != "day" else "user"
        now = time.time()
        folded = query.casefold()
        users = [
            u
            for u in self.store.list_users()
            if not folded
            or folded in u.name.casefold()
            or folded in u.user_id.casefold()
            or folded in u.display_name.casefold()
        ]
        days, since = window_days(now)
        path = usage_db_path(self.settings)
        daily = await read_report(path, "day", since)
        grouped = await read_report(path, by, since)
        per_day = await read_daily_by(path, by, since)
        peak = max((v for days_ in per_day.values() for v in days_.values()), default=0)
        sparks = {key: sparkline(days, per_day.get(key, {}), peak) for key in per_day}
        connectors = [
            {
                "name": link.name,
                "models": sorted(link.models),
                "active": link.active,
                "max_streams": link.max_streams,
                "accepting": link.accepting,
            }
            for link in state.registry
        ]
        streams = [
            {
                "request_id": ex.request_id,
                "user_id": ex.user_id,
                "model": ex.model,
                "connector": ex.connector or "waiting",
                "age": f"{ex.duration_s:.1f}s",
                "bytes": ex.nbytes,
            }
            for ex in state.live()
        ]
        return render(
            "admin.html",
            user=user,
            csrf=csrf_token(session),
            query=query,
            users=users[:_MAX_USERS_SHOWN],
            users_total=len(users),
            used_today={u.user_id: state.usage.ledger.used(u.user_id, "daily", now) for u in users},
            connectors=connectors,
            streams=streams,
            by=by,
            chart=daily_chart(days, daily, what="Everyone"),
            grouped=grouped,
            sparks=sparks,
            defaults=self.settings,
        )

    # -- actions --------------------------------------------------------------------------

    async def block(self, request: web.Request) -> web.Response:
        return await self._user_action(request, "block")

    async def unblock(self, request: web.Request) -> web.Response:
        return await self._user_action(request, "unblock")

    async def _user_action(self, request: web.Request, action: str) -> web.Response:
        found = await self._form(request)
        if isinstance(found, web.Response):
            return found
        admin, form = found
        target = form.get("user_id", "")
        if self.store.get_user(target) is None:
            return web.Response(status=400, text="no such user\n")
        edit = self.store.block if action == "block" else self.store.unblock
        return await self._apply(admin, action, target, lambda: edit(target))

    async def limits(self, request: web.Request) -> web.Response:
        found = await self._form(request)
        if isinstance(found, web.Response):
            return found
        admin, form = found
        target = form.get("user_id", "")
        if self.store.get_user(target) is None:
            return web.Response(status=400, text="no such user\n")
        values: dict[str, int | None] = {}
        for field in _LIMIT_FIELDS:
            raw = form.get(field, "").strip()
            if not raw:
                values[field] = None  # the broker-wide setting
            elif raw.isdigit() and len(raw) <= 12:
                values[field] = int(raw)
            else:
                return web.Response(status=400, text=f"{field}: a whole number, or empty\n")

        def edit() -> None:
            self.store.set_limits(
                target,
                rate_limit_rpm=values["rpm"],
                rate_limit_burst=values["burst"],
                max_streams=values["streams"],
            )
            self.store.set_quotas(
                target, daily_tokens=values["daily"], monthly_tokens=values["monthly"]
            )

        return await self._apply(admin, "limits", target, edit, **values)

    async def cut(self, request: web.Request) -> web.Response:
        from remotellm_broker.state import BROKER

        found = await self._form(request)
        if isinstance(found, web.Response):
            return found
        admin, form = found
        request_id = form.get("request_id", "")
        cut = [ex for ex in request.app[BROKER].live() if ex.request_id == request_id]
        for ex in cut:
            ex.cut(CancelReason.UNKNOWN)
        log.info(
            "portal_admin_action",
            admin=admin.user_id,
            action="cut",
            target=request_id[:128],
            found=len(cut),
        )
        return _redirect("/admin#streams")

    async def _apply(
        self,
        admin: UserRecord,
        action: str,
        target: str,
        edit: Callable[[], None],
        **details: object,
    ) -> web.Response:
        try:
            await asyncio.to_thread(edit)
        except UserStoreError as exc:
            log.warning("portal_admin_action_failed", admin=admin.user_id, action=action,
                        target=target, error=str(exc))  # fmt: skip
            return web.Response(status=400, text=f"{exc}\n")
        log.info(
            "portal_admin_action", admin=admin.user_id, action=action, target=target, **details
        )
        return _redirect("/admin#users")


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})
