"""A real headless Chromium on the usage and admin pages: the chart renders, nothing is
wider than a 390 px phone, and the admin's buttons and forms work when clicked.

Screenshots go to test-artifacts/portal/ (docs/img/ holds copies for docs/portal.md).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from broker_rig import wait_for
from connector_peer import ConnectorPeer, serve_sse, stall
from portal_rig import PortalRig, running_portal
from remotellm_broker import usagedb
from remotellm_broker.app import BROKER
from remotellm_broker.usagedb import UsageRow
from remotellm_protocol import Usage
from test_portal_browser import WAIT_S, _page, _wait_for, chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ADA = 101
MESSAGES = [{"role": "user", "content": "x"}]


def _history(db: Path, now: float) -> None:
    """Thirty days of made-up traffic, so the charts have something to show."""
    conn = usagedb.connect(db)
    rows = []
    people = ["gitlab:101", "local:bob", "local:ci-bot"]
    models = ["llama3.1:8b", "qwen2.5-coder:7b"]
    for day in range(30):
        for n in range((day * 7) % 11 + 2):
            rows.append(
                UsageRow(
                    ts=now - day * 86400 - n * 60,
                    request_id=f"h{day}-{n}",
                    user_id=people[n % 3],
                    key_id="k",
                    connector="home-gpu" if n % 2 else "lab-gpu",
                    model=models[n % 2],
                    endpoint="/v1/chat/completions",
                    status=502 if (day + n) % 17 == 5 else 200,
                    prompt_tokens=300 + 40 * n,
                    completion_tokens=200 + 25 * ((day + n) % 13),
                    ttft_ms=150.0 + n,
                    duration_ms=2000.0,
                )
            )
    usagedb.insert(conn, rows)
    conn.close()


def _walk(rig: PortalRig) -> None:
    with chromium() as driver:
        driver.get(rig.url + "/auth/login")
        _wait_for(driver, "#api-key")  # fake GitLab approved at once: the key page
        driver.find_element(By.ID, "done").click()
        _wait_for(driver, "#usage-link")
        # The account page shows the 30-day chart as a same-origin SVG image.
        WebDriverWait(driver, WAIT_S).until(
            lambda d: d.execute_script(
                "const i = document.getElementById('usage-chart-img');"
                "return i.complete && i.naturalWidth > 0;"
            )
        )
        _page(driver, "account-usage")
        driver.find_element(By.ID, "usage-link").click()
        _wait_for(driver, "#usage-chart svg")
        bars = driver.find_elements(By.CSS_SELECTOR, "#usage-chart rect.bar")
        assert len(bars) == 30
        assert max(float(b.get_attribute("height") or 0) for b in bars) > 100
        assert "of 400,000 tokens used" in driver.find_element(By.ID, "quotas").text
        _page(driver, "usage")

        driver.find_element(By.ID, "admin-link").click()
        _wait_for(driver, "#user-table")
        assert "home-gpu" in driver.find_element(By.ID, "connector-table").text
        assert len(driver.find_elements(By.CSS_SELECTOR, "#stream-table tr[data-request]")) == 1
        sparks = driver.find_elements(By.CSS_SELECTOR, "#admin-usage svg.spark")
        assert len(sparks) == 3  # one per user: their tokens per day
        assert all(len(s.find_elements(By.TAG_NAME, "rect")) == 30 for s in sparks)
        _page(driver, "admin")

        # Block bob with his row's button.
        driver.find_element(
            By.CSS_SELECTOR, 'tr[data-user="local:bob"] button[data-action="block"]'
        ).click()
        _wait_for(driver, 'tr[data-user="local:bob"] button[data-action="unblock"]')
        assert rig.store.find_users("bob")[0].blocked

        # Give bob a daily quota through his row's form.
        row = driver.find_element(By.CSS_SELECTOR, 'tr[data-user="local:bob"]')
        row.find_element(By.TAG_NAME, "summary").click()
        daily = row.find_element(By.NAME, "daily")
        daily.clear()
        daily.send_keys("12345")
        row.find_element(By.CSS_SELECTOR, 'button[data-action="limits"]').click()
        WebDriverWait(driver, WAIT_S).until(
            lambda d: "daily=12345" in d.find_element(By.ID, "user-table").text
        )
        assert rig.store.find_users("bob")[0].quota_daily_tokens == 12345

        # Cut the live stream.
        driver.find_element(By.CSS_SELECTOR, 'button[data-action="cut"]').click()
        _wait_for(driver, "#stream-table")
        WebDriverWait(driver, WAIT_S).until(
            lambda d: not d.find_elements(By.CSS_SELECTOR, "#stream-table tr[data-request]")
        )

        driver.get(rig.url + "/admin?by=model")
        _wait_for(driver, "#admin-usage")
        assert "qwen2.5-coder:7b" in driver.find_element(By.ID, "admin-usage").text


async def test_a_real_browser_reads_its_usage_and_an_admin_acts_on_the_admin_page(
    tmp_path: Path,
) -> None:
    _history(tmp_path / "usage.db", time.time())
    async with running_portal(tmp_path, admin_gitlab_ids=[ADA], quota_daily_tokens=400_000) as rig:
        rig.store.add_user("bob")
        rig.store.add_user("ci-bot")
        token = rig.store.create_connector_token("home-gpu")
        fast = ConnectorPeer(
            rig.relay_url,
            token,
            name="home-gpu",
            models=("llama3.1:8b",),
            script=serve_sse(3, usage=Usage(prompt_tokens=5, completion_tokens=3)),
        )
        slow = ConnectorPeer(
            rig.relay_url,
            rig.store.create_connector_token("lab-gpu"),
            name="lab-gpu",
            models=("qwen2.5-coder:7b",),
            script=stall,
        )
        await fast.connect()
        await slow.connect()
        ci_key = rig.store.rotate("ci-bot")
        async with aiohttp.ClientSession() as http:
            request = asyncio.create_task(
                http.post(
                    rig.url + "/v1/chat/completions",
                    json={"model": "qwen2.5-coder:7b", "messages": MESSAGES},
                    headers={"Authorization": f"Bearer {ci_key}"},
                )
            )
            state = rig.app[BROKER]
            try:
                await wait_for(lambda: len(state.live()) == 1)
                await asyncio.to_thread(_walk, rig)
                resp = await asyncio.wait_for(request, 10)
                assert resp.status == 499
                resp.release()
            finally:
                await fast.close()
                await slow.close()
