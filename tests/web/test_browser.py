"""The web page in a real browser: Debian's chromium, headless, driven by selenium, against the
daemon on the simulator and a real Central System.

Screenshots at phone and desktop widths go to $OCPPD_ARTEFACTS (default build/artefacts/web).
Skipped, with the reason, only where chromium or its driver cannot be found
(scripts/bootstrap.sh installs both with apt).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import PASSWORD, Web

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = Path(os.environ.get("OCPPD_ARTEFACTS", ROOT / "build" / "artefacts")) / "web"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
DESKTOP, PHONE = (1280, 1000), (390, 844)
ID_TAG = "BROWSER01"
TIMEOUT_S = 20.0

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                "(pip install -e '.[test]')")
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(f"no {CHROMIUM} or {CHROMEDRIVER}: apt-get install chromium chromium-driver "
                "(scripts/bootstrap.sh does)", allow_module_level=True)

from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser() -> Iterator[Any]:
    profile = tempfile.mkdtemp(prefix="ocppd-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                 f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
        opts.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=opts, service=service)
    driver.set_page_load_timeout(TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


async def do(fn: Callable[..., Any], *args: Any) -> Any:
    """Selenium blocks: run it beside the daemon's event loop."""
    return await asyncio.to_thread(fn, *args)


async def wait_for(driver: Any, pred: Callable[[Any], Any], what: str) -> Any:
    def waiting() -> Any:
        try:
            return WebDriverWait(driver, TIMEOUT_S, poll_frequency=0.1).until(pred)
        except TimeoutException:
            raise AssertionError(f"browser: no {what} within {TIMEOUT_S} s") from None

    return await do(waiting)


async def ocppctl(web: Web, *args: str) -> str:
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "ocppd.ctl", "--config", str(web.cfg_path), *args],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return str(result.stdout)


def _text(driver: Any, css: str) -> str:
    els = driver.find_elements(By.CSS_SELECTOR, css)
    return str(els[0].text) if els else ""


def _chart_points(driver: Any) -> int:
    return int(driver.execute_script(
        "var c = document.getElementById('chart-1');"
        "var ch = (typeof Chart !== 'undefined' && c) ? Chart.getChart(c) : null;"
        "return ch ? ch.data.labels.length : -1;"))


def _no_sideways_scroll(driver: Any) -> bool:
    return bool(driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth + 1;"))


async def shoot(driver: Any, name: str, size: tuple[int, int]) -> Path:
    await do(driver.set_window_size, *size)
    await asyncio.sleep(0)  # (no wait on time: the shot is of whatever is drawn now)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    await do(driver.save_screenshot, str(path))
    assert path.stat().st_size > 1000
    return path


async def test_watch_a_session_start_grow_and_stop_it_from_the_page(
    web: Web, browser: Any
) -> None:
    d = web.daemon
    assert d.station is not None
    c = d.station.connectors[1]

    # log in with the keyboard alone: the password field has the focus
    await do(browser.get, web.url + "/")
    await wait_for(browser, lambda b: b.current_url.endswith("/login"), "login redirect")
    active = await do(lambda: browser.switch_to.active_element)
    assert active.get_attribute("id") == "password"
    await do(active.send_keys, PASSWORD + Keys.ENTER)
    await wait_for(browser, lambda b: _text(b, "#c1-h").startswith("Connector 1"), "dashboard")
    assert "Available" in _text(browser, "#c1-h")

    # a session started from the command line shows up without reloading by hand
    await ocppctl(web, "plug", "1")
    await ocppctl(web, "swipe", ID_TAG, "--connector", "1")
    await wait_for(browser, lambda b: b.find_elements(By.ID, "stop-1"), "stop button")
    await wait_for(browser, lambda b: "Charging" in _text(b, "#c1-h"), "Charging")
    assert ID_TAG not in await do(lambda: browser.page_source)  # shown the privacy-safe way

    # the chart grows with live readings (pushed, not reloaded)
    first = await wait_for(browser, lambda b: _chart_points(b) >= 2 and _chart_points(b),
                           "chart points")
    await wait_for(browser, lambda b: _chart_points(b) > first + 1, "the chart growing")
    power = _text(browser, '#connector-1 [data-field="power_kw"]')
    assert power not in ("", "–") and float(power) > 0

    await shoot(browser, "session-desktop", DESKTOP)
    await shoot(browser, "session-phone", PHONE)
    assert await do(_no_sideways_scroll, browser)

    # stop it from the page, after the confirmation
    await do(browser.set_window_size, *DESKTOP)
    await do(lambda: browser.find_element(By.ID, "stop-1").click())
    alert = await wait_for(browser, lambda b: b.switch_to.alert, "confirmation")
    assert "Stop the session on connector 1" in alert.text
    await do(alert.accept)
    await wait_for(browser, lambda b: b.find_elements(By.ID, "start-1"), "start form")
    assert c.tx is None and not c.contactor_closed
    rows = await do(lambda: browser.find_element(By.CSS_SELECTOR, "#tx-h + div tbody").text)
    assert "local" in rows


async def test_config_rejects_a_bad_value_with_its_message(web: Web, browser: Any) -> None:
    await do(browser.get, web.url + "/login")
    await do(lambda: browser.find_element(By.ID, "password").send_keys(PASSWORD + Keys.ENTER))
    await wait_for(browser, lambda b: b.find_elements(By.ID, "c1-h"), "dashboard")
    await do(browser.get, web.url + "/config")

    def set_key(value: str) -> None:
        field = browser.find_element(By.ID, "v-HeartbeatInterval")
        field.clear()
        field.send_keys(value + Keys.ENTER)

    await do(set_key, "-5")
    flash = await wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".flash.error"),
                           "rejection")
    text = flash[0].text
    assert text.startswith("HeartbeatInterval: Rejected (expects a whole number")
    assert d_key(web, "HeartbeatInterval") == "300"
    # write-only keys are never shown, not even masked in a value field
    row = await do(lambda: browser.find_element(By.ID, "key-AuthorizationKey").text)
    assert "write-only" in row
    await do(set_key, "120")
    ok = await wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".flash.ok"),
                        "accepted")
    assert ok[0].text == "HeartbeatInterval: Accepted"
    assert d_key(web, "HeartbeatInterval") == "120"

    await do(browser.get, web.url + "/check")
    table = await do(lambda: browser.find_element(By.TAG_NAME, "main").text)
    for item in ("control pilot", "contactor", "RCD / ground-fault monitor", "L1 voltage"):
        assert item in table
    await shoot(browser, "check-phone", PHONE)
    assert await do(_no_sideways_scroll, browser)
    await do(browser.get, web.url + "/config")
    await shoot(browser, "config-phone", PHONE)


def d_key(web: Web, name: str) -> str:
    assert web.daemon.cp is not None
    return web.daemon.cp.keys.get(name)
