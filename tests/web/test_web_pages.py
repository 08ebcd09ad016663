"""What the pages show, over plain HTTP against the daemon on the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import aiohttp
from harness import wait_until

from ocppd import ctl
from ocppd.privacy import tag

from .conftest import Web
from .test_web_security import client, login

ID_TAG = "PAGE0001"


async def test_dashboard_shows_the_session_with_idtags_pseudonymised(web: Web) -> None:
    d = web.daemon
    sock = d.cfg.control.socket
    await asyncio.to_thread(ctl.call, sock, "plug", {"connector_id": 1}, timeout_s=5)
    async with client() as http:
        csrf = await login(http, web.url)
        async with http.post(web.url + "/action/start", data={
                "csrf": csrf, "connector_id": "1", "id_tag": ID_TAG}) as r:
            page = await r.text()
        assert "started a transaction on connector 1" in page
        assert ID_TAG not in page  # neither in the flash line nor in the session row
        # the pseudonym the journal and ocppctl show, not a pseudonym of a pseudonym
        assert f"card {tag(ID_TAG)}" in page
        async with http.get(web.url + "/api/status") as r:
            st = await r.json()
        assert st["connectors"][0]["id_tag"] == tag(ID_TAG)
        assert st["connectors"][0]["limits"][0] == {"source": "connector", "limit_a": 32.0}
        async with http.post(web.url + "/action/stop",
                             data={"csrf": csrf, "connector_id": "1"}) as r:
            page = await r.text()
        assert "stopped the transaction on connector 1" in page
        assert ID_TAG not in page
        async with http.get(web.url + "/") as r:
            page = await r.text()
        assert tag(ID_TAG) in page and ID_TAG not in page  # the recent transactions
        # a second stop is refused with the reason, as ocppctl says it
        async with http.post(web.url + "/action/stop", headers={"Accept": "application/json"},
                             data={"csrf": csrf, "connector_id": "1"}) as r:
            assert r.status == 409
            assert (await r.json())["message"] == "connector 1 has no transaction to stop"


async def test_events_stream_starts_with_a_snapshot(web: Web) -> None:
    async with client() as http:
        await login(http, web.url)
        async with http.get(web.url + "/events") as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            assert await r.content.readline() == b"event: snapshot\n"
            data = (await r.content.readline()).decode()
            assert data.startswith("data: ")
            assert json.loads(data[6:])["status"]["charge_point_id"] == "CP-TEST-1"


async def test_events_snapshot_shows_the_idtag_as_its_pseudonym(web: Web) -> None:
    sock = web.daemon.cfg.control.socket
    await asyncio.to_thread(ctl.call, sock, "plug", {"connector_id": 1}, timeout_s=5)
    await asyncio.to_thread(ctl.call, sock, "swipe", {"id_tag": ID_TAG, "connector_id": 1},
                            timeout_s=10)
    async with client() as http:
        await login(http, web.url)
        async with http.get(web.url + "/events") as r:
            assert await r.content.readline() == b"event: snapshot\n"
            data = (await r.content.readline()).decode()
    # the pseudonym the journal and ocppctl show, not a pseudonym of a pseudonym
    assert json.loads(data[6:])["status"]["connectors"][0]["id_tag"] == tag(ID_TAG)


async def test_secrets_are_write_only_on_the_config_page(web: Web) -> None:
    d = web.daemon
    assert d.cp is not None
    secret = "00112233445566778899aabbccddeeff"
    async with client() as http:
        csrf = await login(http, web.url)
        async with http.post(web.url + "/config", data={
                "csrf": csrf, "key": "AuthorizationKey", "value": secret}) as r:
            page = await r.text()
        assert "AuthorizationKey: Accepted" in page or "AuthorizationKey: RebootRequired" in page
        assert d.cp.keys.get("AuthorizationKey") == secret
        assert secret not in page
        assert "restart" in page  # keys that need one are marked


async def test_chart_js_comes_from_debian_or_the_page_says_why_not(web: Web,
                                                                    tmp_path: Path) -> None:
    assert web.daemon.web is not None
    async with client() as http:
        await login(http, web.url)
        if Path("/usr/share/javascript/chart.js/chart.min.js").is_file():
            async with http.get(web.url + "/javascript/chart.js/chart.min.js") as r:
                assert r.status == 200 and "Chart.js" in (await r.text())[:200]
        web.daemon.web.chart_js = tmp_path / "missing.js"
        async with http.get(web.url + "/") as r:
            page = await r.text()
        assert "Charts are off" in page and "apt install libjs-chart.js" in page
        assert "/javascript/chart.js/chart.min.js" not in page
        async with http.get(web.url + "/javascript/chart.js/chart.min.js") as r:
            assert r.status == 404
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(web.url + "/static/style.css") as r:
            assert r.status == 200  # the login page needs its style before any login


async def test_events_stream_ends_with_the_session(web: Web) -> None:
    async with client() as http:
        csrf = await login(http, web.url)
        async with http.get(web.url + "/events") as stream:
            assert await stream.content.readline() == b"event: snapshot\n"
            async with http.post(web.url + "/logout", data={"csrf": csrf}) as r:
                assert r.url.path == "/login"
            # the next event finds the session gone: the stream says so and ends
            sock = web.daemon.cfg.control.socket
            await asyncio.to_thread(ctl.call, sock, "plug", {"connector_id": 1}, timeout_s=5)
            rest = await asyncio.wait_for(stream.content.read(), 10)
        assert rest.rstrip().endswith(b"event: logout\ndata: {}")


async def test_daemon_stops_promptly_with_a_browser_following_events(
    tmp_path: Path, cs: object
) -> None:
    from harness import booted, wait_until

    from ocppd import config
    from ocppd.app import Daemon

    from .conftest import web_config

    d = Daemon(config.load(web_config(tmp_path, cs.url)),  # type: ignore[attr-defined]
               install_signals=False)
    task = asyncio.ensure_future(d.run())
    try:
        await wait_until(lambda: d.web is not None and d.web.port is not None
                         and d.station is not None and d.station.started, what="start")
        await booted(cs)
        assert d.web is not None
        url = f"http://127.0.0.1:{d.web.port}"
        async with client() as http:
            await login(http, url)
            async with http.get(url + "/events") as stream:
                assert await stream.content.readline() == b"event: snapshot\n"
                d.stop_event.set()
                # the open stream does not hold the shutdown up (its budget: 5 s)
                assert await asyncio.wait_for(task, 5.0) == 0
                await asyncio.wait_for(stream.content.read(), 5.0)  # and it ends
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def test_a_session_may_follow_a_few_pages_not_any_number(web: Web) -> None:
    from ocppd.web.server import STREAMS_PER_SESSION

    async with client() as http:
        await login(http, web.url)
        streams = [await http.get(web.url + "/events") for _ in range(STREAMS_PER_SESSION)]
        for s in streams:
            assert s.status == 200 and await s.content.readline() == b"event: snapshot\n"
        async with http.get(web.url + "/events") as extra:
            assert extra.status == 429
        streams.pop().close()  # a tab closes: its place is free again, once the server
        # writes to it next (an event, or the keep-alive) and finds it gone
        sock = web.daemon.cfg.control.socket
        await asyncio.to_thread(ctl.call, sock, "plug", {"connector_id": 1}, timeout_s=5)
        assert web.daemon.web is not None
        sessions = list(web.daemon.web.sessions._by_token.values())
        await wait_until(lambda: sessions[0].streams < STREAMS_PER_SESSION, what="stream gone")
        async with http.get(web.url + "/events") as again:
            assert again.status == 200
        for s in streams:
            s.close()
