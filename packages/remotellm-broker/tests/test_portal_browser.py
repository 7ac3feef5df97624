"""A real headless Chromium through the portal: login page → fake GitLab's authorize page
(click "Authorize") → key page → click "Copy key" → the clipboard holds the key.

Also visits the account, rotated-key, blocked, "no access" and error pages, logs out and
checks a copy of the cookie taken before is dead, checks nothing overflows a
phone-width screen, and saves a screenshot of each page under ``test-artifacts/portal/``.

Selenium is blocking and the servers run on this test's event loop, so the browser side runs
in a worker thread (``asyncio.to_thread``) while the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from broker_rig import wait_for
from connector_peer import ConnectorPeer
from fake_gitlab import GitLabUser
from portal_rig import PortalRig, running_portal
from remotellm_broker.app import BROKER
from remotellm_broker.portal.sessions import COOKIE_NAME

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO / "test-artifacts" / "portal"
DESKTOP = (1100, 800)
PHONE = (390, 844)
WAIT_S = 10.0
MODELS = ("llama3.1:8b", "qwen2.5-coder:7b")  # served by a connector, shown on the key page


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """Debian's chromium + chromedriver (scripts/ensure-system-deps.sh installs them)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.fail("chromium/chromedriver not installed: run scripts/ensure-system-deps.sh")
    with tempfile.TemporaryDirectory(prefix="portal-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        ):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
        try:
            driver.set_page_load_timeout(WAIT_S)
            yield driver
        finally:
            driver.quit()


def _viewport(driver: webdriver.Chrome, size: tuple[int, int], *, mobile: bool) -> None:
    width, height = size
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


def _screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """The whole page (not just the viewport) as a PNG in test-artifacts/portal/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    content = metrics["cssContentSize"]
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {
                "x": 0,
                "y": 0,
                "width": content["width"],
                "height": content["height"],
                "scale": 1,
            },
        },
    )
    path = ARTIFACTS / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def _fits_phone(driver: webdriver.Chrome) -> None:
    _viewport(driver, PHONE, mobile=True)
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - window.innerWidth;"
    )
    assert overflow <= 0, f"page is {overflow}px wider than a phone screen"


def _page(driver: webdriver.Chrome, name: str) -> None:
    """Screenshot at desktop width, then check and screenshot at phone width."""
    _viewport(driver, DESKTOP, mobile=False)
    _screenshot(driver, f"portal-{name}")
    _fits_phone(driver)
    _screenshot(driver, f"portal-{name}-phone")
    _viewport(driver, DESKTOP, mobile=False)


def _wait_for(driver: webdriver.Chrome, css: str) -> None:
    WebDriverWait(driver, WAIT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, css))


def _read_clipboard(driver: webdriver.Chrome) -> str:
    text = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "navigator.clipboard.readText().then(done, (e) => done('ERROR: ' + e));"
    )
    return str(text)


def _walk_the_portal(rig: PortalRig) -> None:
    with chromium() as driver:
        driver.execute_cdp_cmd(
            "Browser.grantPermissions",
            {"origin": rig.url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
        )
        driver.get(rig.url + "/")
        _page(driver, "login")

        driver.find_element(By.ID, "login").click()
        _wait_for(driver, "#authorize")  # fake GitLab's "Authorize application" page
        assert driver.current_url.startswith(rig.fake.url + "/oauth/authorize")
        _screenshot(driver, "gitlab-authorize")
        driver.find_element(By.ID, "authorize").click()

        _wait_for(driver, "#api-key")
        key = driver.find_element(By.ID, "api-key").text
        assert key.startswith("sk-")
        assert len(key) == 35
        assert rig.store.authenticate(key) is not None
        assert driver.find_element(By.ID, "cline-model").text == "llama3.1:8b"
        # the page replaced its URL: a reload must not resubmit the used callback
        assert driver.current_url == rig.url + "/"

        copy = driver.find_element(By.CSS_SELECTOR, 'button[data-copy="api-key"]')
        copy.click()
        WebDriverWait(driver, WAIT_S).until(lambda d: copy.get_attribute("data-copied") == "true")
        assert copy.text == "Copied"
        assert _read_clipboard(driver) == key
        driver.find_element(By.CSS_SELECTOR, 'button[data-copy="curl-chat"]').click()
        assert key in _read_clipboard(driver)
        _page(driver, "key")

        driver.find_element(By.ID, "done").click()
        _wait_for(driver, "#rotate")
        assert key not in driver.page_source
        assert key[:7] in driver.find_element(By.ID, "key-prefix").text
        _page(driver, "account")

        driver.find_element(By.ID, "rotate").click()
        _wait_for(driver, "#api-key")
        new_key = driver.find_element(By.ID, "api-key").text
        assert new_key != key
        assert rig.store.authenticate(key) is None
        assert rig.store.authenticate(new_key) is not None
        _screenshot(driver, "portal-rotated")

        rig.store.block("ada")
        driver.get(rig.url + "/")
        _wait_for(driver, "h1")
        assert "Access blocked" in driver.page_source
        _page(driver, "blocked")

        rig.fake.down = True
        driver.get(rig.url + "/auth/login")
        _wait_for(driver, "#retry")
        assert "GitLab is not answering" in driver.page_source
        _page(driver, "error")


async def test_a_real_browser_logs_in_and_copies_its_key(tmp_path: Path) -> None:
    async with running_portal(tmp_path) as rig:
        rig.fake.approval = "button"
        token = rig.store.create_connector_token("home-gpu")
        peer = ConnectorPeer(rig.relay_url, token, name="home-gpu", models=MODELS)
        await peer.connect()
        try:
            await wait_for(lambda: set(MODELS) <= set(_served(rig)))
            await asyncio.to_thread(_walk_the_portal, rig)
        finally:
            await peer.close()


def _served(rig: PortalRig) -> list[str]:
    state = rig.app.get(BROKER)
    return [] if state is None else [m.id for m in state.registry.models()]


def _denied_then_member_logs_out(rig: PortalRig) -> tuple[str, str]:
    """A stranger sees the "no access" page; then a member logs in and out. Returns the
    member's session cookie as it was before logout, and the CSRF token of its page."""
    with chromium() as driver:
        rig.fake.user = GitLabUser(666, "mallory", "Mallory", memberships=["acme-evil"])
        driver.get(rig.url + "/")
        driver.find_element(By.ID, "login").click()
        _wait_for(driver, "#authorize")
        driver.find_element(By.ID, "authorize").click()
        _wait_for(driver, "#denied")
        assert "No access to this broker" in driver.page_source
        assert "@mallory" in driver.page_source
        assert not driver.find_elements(By.ID, "api-key")
        _page(driver, "denied")

        rig.fake.user = GitLabUser(7, "grace", "Grace Hopper", memberships=["acme/team-a"])
        driver.get(rig.url + "/")
        driver.find_element(By.ID, "login").click()
        _wait_for(driver, "#authorize")
        driver.find_element(By.ID, "authorize").click()
        _wait_for(driver, "#api-key")
        driver.find_element(By.ID, "done").click()
        _wait_for(driver, "#rotate")
        cookie = driver.get_cookie(COOKIE_NAME)
        assert cookie is not None
        csrf = driver.find_element(By.CSS_SELECTOR, 'input[name="csrf_token"]').get_attribute(
            "value"
        )
        assert csrf
        driver.find_element(By.ID, "logout").click()
        _wait_for(driver, "#login")
        return str(cookie["value"]), csrf


async def test_a_real_browser_stranger_is_denied_and_logout_ends_the_session(
    tmp_path: Path,
) -> None:
    async with running_portal(tmp_path, portal_allowed_groups=["acme"]) as rig:
        rig.fake.approval = "button"
        rig.fake.groups = ["acme", "acme/team-a", "acme-evil"]
        stolen, csrf = await asyncio.to_thread(_denied_then_member_logs_out, rig)
        assert rig.store.get_user("gitlab:666") is None
        member = rig.store.get_user("gitlab:7")
        assert member is not None
        assert member.has_key
        key_id = member.key_id
        thief = rig.browser()
        thief.http.cookie_jar.update_cookies({COOKIE_NAME: stolen})
        page = await thief.post("/auth/rotate", {"csrf_token": csrf})
        assert page.status == 403
        assert page.key() is None
        after = rig.store.get_user("gitlab:7")
        assert after is not None
        assert after.key_id == key_id  # the member's key was not rotated away
