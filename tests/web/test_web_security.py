"""The web page refuses what it must: no session, a wrong CSRF token, too many failed logins,
clients outside web.allow_from. Real HTTP against the daemon on the simulator."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from ocppd import config
from ocppd.web.auth import (
    FAILS_PER_CLIENT,
    LoginThrottle,
    Sessions,
    hash_password,
    read_password_hash,
    verify_password,
)

from .conftest import PASSWORD, Web, web_config

PAGES = ["/", "/config", "/check"]
# every state-changing request the page can make: (path, form fields)
POSTS = [
    ("/action/start", {"connector_id": "1", "id_tag": "TAG1"}),
    ("/action/stop", {"connector_id": "1"}),
    ("/action/unlock", {"connector_id": "1"}),
    ("/action/availability", {"connector_id": "1", "operative": "false"}),
    ("/action/limit", {"connector_id": "1", "limit_a": "6"}),
    ("/action/meter", {"connector_id": "1"}),
    ("/config", {"key": "HeartbeatInterval", "value": "77"}),
    ("/logout", {}),
]


def client() -> aiohttp.ClientSession:
    # cookies from an IP-address host are what a phone on the local network gets too
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login(http: aiohttp.ClientSession, url: str, password: str = PASSWORD) -> str:
    """Log in; returns the page's CSRF token ("" when the login failed)."""
    async with http.get(f"{url}/login") as r:
        page = await r.text()
    token = re.search(r'name="login_token" value="([^"]+)"', page)
    assert token, page
    async with http.post(f"{url}/login", data={"login_token": token.group(1),
                                               "password": password}) as r:
        page = await r.text()
    m = re.search(r'<meta name="csrf" content="([^"]*)"', page)
    return m.group(1) if m else ""


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with client() as session:
        yield session


async def test_every_page_and_action_needs_a_session(web: Web,
                                                     http: aiohttp.ClientSession) -> None:
    for page in PAGES:
        async with http.get(web.url + page, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/login", page
    for path in ("/events", "/api/status"):
        async with http.get(web.url + path) as r:
            assert r.status == 401, path
    for path, form in POSTS:
        async with http.post(web.url + path, data=form, allow_redirects=False) as r:
            assert r.status == 401, path
    # a forged cookie is no session either
    http.cookie_jar.update_cookies({"ocppd_session": "forged"})
    async with http.get(web.url + "/api/status") as r:
        assert r.status == 401


async def test_every_action_refuses_a_wrong_or_missing_csrf_token(
    web: Web, http: aiohttp.ClientSession
) -> None:
    d = web.daemon
    assert d.station is not None
    csrf = await login(http, web.url)
    assert csrf
    async with http.get(web.url + "/api/status") as r:
        assert r.status == 200
    for path, form in POSTS:
        for bad in ({}, {"csrf": ("y" if csrf.startswith("x") else "x") + csrf[1:]}):
            async with http.post(web.url + path, data={**form, **bad},
                                 allow_redirects=False) as r:
                assert r.status == 403, (path, bad)
        async with http.post(web.url + path, data=form, allow_redirects=False,
                             headers={"X-CSRF-Token": "wrong"}) as r:
            assert r.status == 403, path
    # nothing happened: still logged in, connector available, no limit, key unchanged
    c = d.station.connectors[1]
    assert c.operative and c.local_limit_a is None and c.tx is None
    assert d.cp is not None and d.cp.keys.get("HeartbeatInterval") == "300"
    async with http.get(web.url + "/api/status") as r:
        assert r.status == 200
    # a request from another site is refused even with the token
    async with http.post(web.url + "/action/meter", data={"csrf": csrf, "connector_id": "1"},
                         headers={"Origin": "http://evil.example"},
                         allow_redirects=False) as r:
        assert r.status == 403
    # and with the right token the same action goes through
    async with http.post(web.url + "/action/limit",
                         data={"csrf": csrf, "connector_id": "1", "limit_a": "6"}) as r:
        assert r.status == 200
        assert "local limit 6 A" in await r.text()
    assert c.local_limit_a == 6.0


async def test_login_needs_its_own_token_and_the_password(web: Web,
                                                          http: aiohttp.ClientSession) -> None:
    async with http.post(web.url + "/login", data={"password": PASSWORD},
                         allow_redirects=False) as r:
        assert r.status == 403  # no login token: a cross-site login attempt
    assert await login(http, web.url, "wrong password!") == ""
    async with http.get(web.url + "/api/status") as r:
        assert r.status == 401
    assert await login(http, web.url) != ""
    async with http.get(web.url + "/api/status") as r:
        assert r.status == 200
        st = await r.json()
    assert st["charge_point_id"] == "CP-TEST-1"
    # the cookie cannot be read by scripts and is not sent cross-site
    async with client() as other:
        async with other.get(web.url + "/login") as r:
            token = re.search(r'name="login_token" value="([^"]+)"', await r.text())
            assert token is not None
        async with other.post(web.url + "/login", allow_redirects=False,
                              data={"login_token": token.group(1), "password": PASSWORD}) as r:
            cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    # logging out ends the session
    async with http.get(web.url + "/") as r:
        csrf = re.search(r'<meta name="csrf" content="([^"]*)"', await r.text())
        assert csrf is not None
    async with http.post(web.url + "/logout", data={"csrf": csrf.group(1)}) as r:
        assert r.url.path == "/login"
    async with http.get(web.url + "/api/status") as r:
        assert r.status == 401


async def test_failed_logins_are_rate_limited(web: Web, http: aiohttp.ClientSession) -> None:
    for _ in range(FAILS_PER_CLIENT):
        assert await login(http, web.url, "not the password") == ""
    async with http.get(f"{web.url}/login") as r:
        token = re.search(r'name="login_token" value="([^"]+)"', await r.text())
        assert token is not None
    # now even the right password is refused for a while
    async with http.post(f"{web.url}/login", data={"login_token": token.group(1),
                                                   "password": PASSWORD}) as r:
        assert r.status == 429
        assert int(r.headers["Retry-After"]) > 0
    async with http.get(web.url + "/api/status") as r:
        assert r.status == 401


def test_throttle_and_session_timeout_follow_the_clock() -> None:
    now = [0.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    for _ in range(FAILS_PER_CLIENT):
        assert throttle.retry_after_s("10.0.0.2") is None
        throttle.failed("10.0.0.2")
    assert throttle.retry_after_s("10.0.0.2") is not None
    assert throttle.retry_after_s("10.0.0.3") is None  # another client may still try
    now[0] = 301.0
    assert throttle.retry_after_s("10.0.0.2") is None

    sessions = Sessions(timeout_s=900, clock=lambda: now[0])
    s = sessions.create()
    now[0] += 899
    assert sessions.get(s.token) is s  # in use: the idle time starts again
    now[0] += 899
    assert sessions.get(s.token) is s
    now[0] += 901
    assert sessions.get(s.token) is None


def test_password_is_stored_as_an_scrypt_hash() -> None:
    stored = hash_password(PASSWORD)
    assert stored.startswith("scrypt$") and PASSWORD not in stored
    assert verify_password(PASSWORD, stored)
    assert not verify_password(PASSWORD + "x", stored)
    assert not verify_password(PASSWORD, "plain")
    assert hash_password(PASSWORD) != stored  # salted


def test_set_web_password_from_the_command_line(tmp_path: Path) -> None:
    path = web_config(tmp_path, "ws://127.0.0.1:9/")
    (tmp_path / "web-password").unlink()
    run = [sys.executable, "-m", "ocppd", "--config", str(path), "--set-web-password"]
    short = subprocess.run(run, input="short\n", capture_output=True, text=True, timeout=30)
    assert short.returncode == 1 and "at least 10 characters" in short.stderr
    assert not (tmp_path / "web-password").exists()
    ok = subprocess.run(run, input="a long enough secret\n", capture_output=True, text=True,
                        timeout=30)
    assert ok.returncode == 0, ok.stderr
    stored = read_password_hash(tmp_path / "web-password")
    assert stored is not None and verify_password("a long enough secret", stored)
    assert (tmp_path / "web-password").stat().st_mode & 0o077 == 0o040


async def test_clients_outside_allow_from_are_refused(tmp_path: Path, cs: object) -> None:
    from harness import running

    path = web_config(tmp_path, cs.url,  # type: ignore[attr-defined]
                      web={"allow_from": '["10.0.0.0/8"]'})
    async with running(config.load(path)) as d, client() as http:
        assert d.web is not None
        async with http.get(f"http://127.0.0.1:{d.web.port}/login") as r:
            assert r.status == 403


def test_web_config_errors_name_the_key(tmp_path: Path) -> None:
    path = web_config(tmp_path, "ws://127.0.0.1:9/",
                      web={"allow_from": '["10.0.0.0/33"]', "cert_file": '"/nonexistent.pem"'})
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    text = "\n".join(err.value.problems)
    assert "web.allow_from[0]: not a network in CIDR notation" in text
    assert "web.key_file: cert_file and key_file go together" in text


async def test_https_when_certificates_are_configured(tmp_path: Path, cs: object) -> None:
    import ssl

    import trustme
    from harness import running

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "web.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "web.key"))
    path = web_config(tmp_path, cs.url,  # type: ignore[attr-defined]
                      web={"cert_file": f'"{tmp_path / "web.crt"}"',
                           "key_file": f'"{tmp_path / "web.key"}"'})
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    async with running(config.load(path)) as d, client() as http:
        assert d.web is not None
        url = f"https://127.0.0.1:{d.web.port}"
        async with http.get(f"{url}/login", ssl=ctx) as r:
            assert r.status == 200
            assert "Secure" in r.headers["Set-Cookie"]
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"http://127.0.0.1:{d.web.port}/login") as r:
                await r.read()
        await asyncio.sleep(0)


async def test_a_port_in_use_is_a_config_error_naming_the_key(tmp_path: Path, cs: object) -> None:
    import socket

    from harness import running

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = web_config(tmp_path, cs.url, web={"port": str(port)})  # type: ignore[attr-defined]
        with pytest.raises(config.ConfigError) as err:
            async with running(config.load(path)):
                pass
    assert err.value.problems[0].startswith(f"web.port: cannot listen on 127.0.0.1 port {port}")
