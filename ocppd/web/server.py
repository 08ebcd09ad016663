"""The installer's web page, served by the daemon (aiohttp, Jinja2 templates, Chart.js).

(Above 400 lines: one class, because every route shares the session store, the request
guard and the live stream; the password and session rules live in auth.py.)

Everything it shows comes from the control socket's commands (ocppd.control) and the event
stream (ocppd.events): no second source of truth, and every action goes through the same
dispatch ``ocppctl`` uses, with the same checks and answers.

Security, in the order a request meets it:
- only clients from ``web.allow_from`` (default: the local network) get an answer at all;
- every page, the event stream and every action need a session (login with the installer's
  password); a session ends after ``web.session_timeout_s`` idle, or 12 h;
- every POST carries the session's CSRF token (a form field or the X-CSRF-Token header), the
  login form a token bound to a cookie of its own; a cross-site Origin is refused too;
- failed logins are limited per client and in total (ocppd.web.auth.LoginThrottle);
- with ``web.cert_file``/``key_file`` it speaks HTTPS only and the cookie is Secure;
- a strict Content-Security-Policy: no inline script, nothing from other origins.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import ipaddress
import json
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from ocppd import privacy
from ocppd.config import WebConfig
from ocppd.control import Refused, UsageError, dispatch
from ocppd.ctl import config_answer
from ocppd.errors import ConfigError
from ocppd.events import Subscription, display_id_tag
from ocppd.systemd import redact
from ocppd.tasks import within
from ocppd.web.auth import (
    LoginThrottle,
    Session,
    Sessions,
    csrf_ok,
    read_password_hash,
    verify_password,
)

log = logging.getLogger("ocppd.web")

HERE = Path(__file__).parent
# Debian's libjs-chart.js; the page works without it (no chart, the numbers stay)
CHART_JS_DIR = Path("/usr/share/javascript/chart.js")
CHART_JS_FILE = "chart.min.js"
COOKIE = "ocppd_session"
LOGIN_COOKIE = "ocppd_login"
HISTORY_POINTS = 3600  # per connector: an hour of one-second readings
LOG_LINES = 200
FAULTS_KEPT = 50
SSE_KEEPALIVE_S = 15.0
STREAMS_PER_SESSION = 4  # a few tabs; each stream holds a queue of events
PAGES = ("/", "/config", "/check")
# the actions the page offers, and the control command each maps to
ACTIONS = {"start": "swipe", "stop": "stop", "unlock": "unlock", "availability": "availability",
           "limit": "limit", "meter": "meter"}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")

# where a request keeps its session (a typed key where aiohttp has them, 3.10+)
SESSION_KEY: Any = web.RequestKey("session", object) if hasattr(web, "RequestKey") else "session"
_CLOSE = "_close"  # an event kind of our own: the server is stopping


class LogTail(logging.Handler):
    """The newest log lines, for the page (secrets masked as in the journal)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=LOG_LINES)

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            at = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
            text = privacy.scrub(redact(record.getMessage()))
            self.lines.append(f"{at} {record.levelname.lower()}: {text}")


class Api:
    """What the page needs from the daemon: the control socket's API (app.ControlApiImpl)."""

    def __init__(self, api: Any) -> None:
        self.api = api

    async def run(self, cmd: str, **args: Any) -> Any:
        return await dispatch(self.api, cmd, args)


def _networks(cfg: WebConfig) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(n, strict=False) for n in cfg.allow_from]


def _client_allowed(remote: str | None, nets: list[Any]) -> bool:
    if not remote:
        return False
    try:
        ip = ipaddress.ip_address(remote.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == n.version and ip in n for n in nets)


class WebServer:
    """Start with ``await start()``, end with ``await stop()``."""

    def __init__(self, cfg: WebConfig, api: Any, *,
                 clock: Callable[[], float] | None = None) -> None:
        self.cfg = cfg
        self.api = Api(api)
        self._raw_api = api
        kw = {} if clock is None else {"clock": clock}
        self.sessions = Sessions(cfg.session_timeout_s, **kw)
        self.throttle = LoginThrottle(**kw)
        self.tls = cfg.cert_file is not None and cfg.key_file is not None
        self._nets = _networks(cfg)
        self._runner: web.AppRunner | None = None
        self.tail = LogTail()
        self.history: dict[int, collections.deque[dict[str, Any]]] = {}
        self.faults: collections.deque[dict[str, Any]] = collections.deque(maxlen=FAULTS_KEPT)
        self._history_tx: dict[int, int | None] = {}
        self._feed: asyncio.Task[None] | None = None
        self._sse: set[Subscription] = set()
        self.port: int | None = None
        self.chart_js = CHART_JS_DIR / CHART_JS_FILE

    # --- lifecycle --------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        aiohttp_jinja2.setup(
            app,
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=jinja2.select_autoescape(default=True),
            context_processors=[self._context],
        )
        env = aiohttp_jinja2.get_env(app)
        env.filters["kwh"] = lambda wh: "–" if wh is None else f"{wh / 1000:.3f}"
        env.filters["kw"] = lambda w: "–" if w is None else f"{w / 1000:.2f}"
        env.filters["amps"] = lambda a: "–" if a is None else f"{a:g}"
        env.filters["tag"] = display_id_tag
        env.filters["when"] = lambda s: "–" if not s else str(s)[:19].replace("T", " ")
        r = app.router
        r.add_get("/login", self.login_page)
        r.add_post("/login", self.login)
        r.add_post("/logout", self.logout)
        r.add_get("/", self.dashboard)
        r.add_get("/config", self.config_page)
        r.add_post("/config", self.config_set)
        r.add_get("/check", self.check_page)
        r.add_get("/events", self.events)
        r.add_get("/api/status", self.status_json)
        r.add_post("/action/{name}", self.action)
        r.add_static("/static/", HERE / "static", append_version=False)
        r.add_get("/javascript/chart.js/chart.min.js", self.chart)
        return app

    async def start(self) -> None:
        ctx = None
        if self.tls:
            assert self.cfg.cert_file is not None and self.cfg.key_file is not None
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                ctx.load_cert_chain(self.cfg.cert_file, self.cfg.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError([f"web.cert_file: cannot use {self.cfg.cert_file} with "
                                   f"{self.cfg.key_file}: {exc}"]) from None
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.listen, self.cfg.port, ssl_context=ctx)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ConfigError([f"web.port: cannot listen on {self.cfg.listen} port "
                               f"{self.cfg.port}: {exc.strerror or exc}"]) from None
        logging.getLogger("ocppd").addHandler(self.tail)
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.cfg.port
        if not self.chart_js.is_file():
            log.warning("web: %s is missing (apt install libjs-chart.js): no charts",
                        self.chart_js)
        if read_password_hash(self.cfg.password_file) is None:
            log.warning("web: no password in %s: set one with ocppd --set-web-password",
                        self.cfg.password_file)
        self._feed = asyncio.ensure_future(self._follow())
        log.info("web page on %s://%s:%d/ (clients from %s)", "https" if self.tls else "http",
                 self.cfg.listen, self.port, ", ".join(self.cfg.allow_from))

    async def stop(self) -> None:
        logging.getLogger("ocppd").removeHandler(self.tail)
        if self._feed is not None:
            self._feed.cancel()
            with contextlib.suppress(BaseException):
                await self._feed
        for sub in list(self._sse):
            sub.put({"kind": _CLOSE})  # the streams end, so the runner need not wait for them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- the session history for the charts -------------------------------------------------

    async def _follow(self) -> None:
        """Keep the readings of running sessions, so a page opened later has the chart so
        far. Runs off the same event stream the page gets."""
        sub: Subscription = await self._raw_api.subscribe(False)
        try:
            while True:
                self._note(await sub.get())
        finally:
            sub.close()

    def _note(self, ev: dict[str, Any]) -> None:
        kind = ev.get("kind")
        if kind == "snapshot":
            return
        cid = ev.get("connector_id")
        if not isinstance(cid, int):
            return
        if kind == "fault":
            self.faults.appendleft(ev)
        elif kind == "session_started":
            self.history[cid] = collections.deque(maxlen=HISTORY_POINTS)
            self._history_tx[cid] = ev.get("local_tx_id")
        elif kind == "reading" and ev.get("local_tx_id") is not None:
            if self._history_tx.get(cid) != ev.get("local_tx_id"):  # page opened mid-session
                self.history[cid] = collections.deque(maxlen=HISTORY_POINTS)
                self._history_tx[cid] = ev.get("local_tx_id")
            self.history[cid].append({"at": ev["at"], "power_w": ev.get("power_w"),
                                      "energy_wh": ev.get("energy_wh")})

    # --- middleware: network, session, CSRF, headers ----------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        if not _client_allowed(request.remote, self._nets):
            log.info("web: refused a client outside web.allow_from: %s", request.remote)
            return web.Response(status=403, text="not from this network\n")
        origin = request.headers.get("Origin")
        if request.method == "POST" and origin is not None and origin != self._origin(request):
            return web.Response(status=403, text="cross-site request refused\n")
        public = request.path in ("/login",) or request.path.startswith("/static/")
        session = self.sessions.get(request.cookies.get(COOKIE),
                                    touch=request.path != "/events")
        if session is None and not public:
            if request.method == "GET" and request.path in PAGES:
                raise web.HTTPSeeOther("/login")
            return web.json_response({"error": "log in first"}, status=401)
        if session is not None and request.method == "POST" and not public:
            token = request.headers.get("X-CSRF-Token")
            if token is None:
                form = await request.post()
                value = form.get("csrf")
                token = value if isinstance(value, str) else None
            if not csrf_ok(session, token):
                return web.json_response({"error": "bad or missing CSRF token"}, status=403)
        request[SESSION_KEY] = session
        resp = await handler(request)
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on forms
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        if not request.path.startswith(("/static/", "/javascript/")):
            resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    def _origin(self, request: web.Request) -> str:
        return f"{'https' if self.tls else 'http'}://{request.host}"

    def _set_cookie(self, resp: web.StreamResponse, name: str, value: str) -> None:
        resp.set_cookie(name, value, httponly=True, samesite="Strict", secure=self.tls, path="/")

    async def _context(self, request: web.Request) -> dict[str, Any]:
        session = request.get(SESSION_KEY)
        flash: list[tuple[str, str]] = []
        if isinstance(session, Session):
            flash, session.flash = session.flash, []
        return {"session": session, "csrf": session.csrf if isinstance(session, Session) else "",
                "flash": flash, "path": request.path}

    # --- login ------------------------------------------------------------------------------

    async def login_page(self, request: web.Request) -> web.StreamResponse:
        token = request.cookies.get(LOGIN_COOKIE) or _token()
        resp = aiohttp_jinja2.render_template("login.html", request, {
            "login_token": token,
            "no_password": read_password_hash(self.cfg.password_file) is None,
            "error": request.query.get("error"),
        })
        self._set_cookie(resp, LOGIN_COOKIE, token)
        return resp

    async def login(self, request: web.Request) -> web.StreamResponse:
        client = request.remote or "?"
        wait_s = self.throttle.retry_after_s(client)
        if wait_s is not None:
            return web.Response(status=429, headers={"Retry-After": str(int(wait_s) + 1)},
                                text=f"too many failed logins; try again in {wait_s:.0f} s\n")
        form = await request.post()
        token, password = form.get("login_token"), form.get("password")
        cookie = request.cookies.get(LOGIN_COOKIE)
        if not isinstance(token, str) or not cookie or not csrf_ok_plain(cookie, token):
            return web.json_response({"error": "bad or missing CSRF token"}, status=403)
        stored = read_password_hash(self.cfg.password_file)
        if stored is None or not isinstance(password, str) or not await asyncio.to_thread(
            verify_password, password, stored
        ):
            self.throttle.failed(client)
            log.warning("web: failed login from %s", client)
            raise web.HTTPSeeOther("/login?error=1")
        self.throttle.succeeded(client)
        session = self.sessions.create()
        log.info("web: login from %s", client)
        resp = web.HTTPSeeOther("/")
        self._set_cookie(resp, COOKIE, session.token)
        resp.del_cookie(LOGIN_COOKIE, path="/")
        raise resp

    async def logout(self, request: web.Request) -> web.StreamResponse:
        self.sessions.drop(request.cookies.get(COOKIE))
        resp = web.HTTPSeeOther("/login")
        resp.del_cookie(COOKIE, path="/")
        raise resp

    # --- pages ------------------------------------------------------------------------------

    async def _status(self) -> dict[str, Any]:
        status: dict[str, Any] = await self.api.run("status")  # idTags as pseudonyms
        return status

    @aiohttp_jinja2.template("dashboard.html")
    async def dashboard(self, request: web.Request) -> dict[str, Any]:
        status = await self._status()
        txs = await self.api.run("transactions", limit=10)  # idTags as pseudonyms
        events = await self.api.run("events", limit=20)
        history = {cid: list(points) for cid, points in self.history.items()
                   if any(c["id"] == cid and c.get("local_tx_id") is not None
                          and self._history_tx.get(cid) == c.get("local_tx_id")
                          for c in status["connectors"])}
        return {
            "st": status, "transactions": txs, "events": events, "faults": list(self.faults),
            "log": list(self.tail.lines)[-40:],
            "history_json": json.dumps(history),
            "chart_js": self.chart_js.is_file(),
            "chart_js_path": str(self.chart_js),
        }

    @aiohttp_jinja2.template("config.html")
    async def config_page(self, request: web.Request) -> dict[str, Any]:
        shown = await self.api.run("config_show")
        return {"keys": shown["keys"], "toml": shown["toml"], "source": shown["source"]}

    async def config_set(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        key, value = form.get("key"), form.get("value")
        session = request[SESSION_KEY]
        assert isinstance(session, Session)
        if not isinstance(key, str) or not isinstance(value, str):
            session.flash.append(("error", "give a key and a value"))
            raise web.HTTPSeeOther("/config")
        try:
            answer = await self.api.run("config_set", key=key, value=value)
            hint = (await self.api.run("config_hint", key=key)
                    if answer == "Rejected" else None)
        except (UsageError, Refused) as exc:
            session.flash.append(("error", f"{key}: {exc}"))
        else:
            level = "ok" if answer in ("Accepted", "RebootRequired") else "error"
            session.flash.append((level, config_answer(key, answer, hint)))
        raise web.HTTPSeeOther("/config")

    @aiohttp_jinja2.template("check.html")
    async def check_page(self, request: web.Request) -> dict[str, Any]:
        return {"checks": await self.api.run("checks"), "st": await self._status()}

    async def status_json(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(await self._status())

    async def chart(self, request: web.Request) -> web.StreamResponse:
        if not self.chart_js.is_file():
            return web.Response(
                status=404, content_type="application/javascript",
                text=f"/* {self.chart_js} is missing: apt install libjs-chart.js */\n")
        return web.FileResponse(self.chart_js, headers={"Cache-Control": "max-age=86400"})

    # --- actions ----------------------------------------------------------------------------

    async def action(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        session = request[SESSION_KEY]
        assert isinstance(session, Session)
        if name not in ACTIONS:
            return web.json_response({"error": f"no action {name!r}"}, status=404)
        form = await request.post()
        try:
            args = _action_args(name, {k: v for k, v in form.items() if isinstance(v, str)})
            result = await self.api.run(ACTIONS[name], **args)
        except (UsageError, Refused) as exc:
            level, message = "error", str(exc)
        else:
            level, message = "ok", _said(name, args, result)
        log.info("web: %s %s: %s", name, args.get("connector_id", ""), message)
        if "application/json" in request.headers.get("Accept", ""):
            return web.json_response({"ok": level == "ok", "message": message},
                                     status=200 if level == "ok" else 409)
        session.flash.append((level, message))
        back = form.get("back")
        raise web.HTTPSeeOther(back if isinstance(back, str) and back in PAGES else "/")

    # --- live updates -----------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the event stream, while the session lasts."""
        token = request.cookies.get(COOKIE)
        session = request[SESSION_KEY]
        assert isinstance(session, Session)
        if session.streams >= STREAMS_PER_SESSION:
            return web.json_response({"error": "too many open pages"}, status=429)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store",
                                           "Content-Security-Policy": CSP,
                                           "X-Content-Type-Options": "nosniff"})
        session.streams += 1
        sub: Subscription | None = None
        try:
            await resp.prepare(request)
            sub = await self._raw_api.subscribe(False)
            self._sse.add(sub)
            while self.sessions.get(token, touch=False) is not None:
                try:
                    ev = await within(sub.get(), SSE_KEEPALIVE_S)
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                if ev.get("kind") == _CLOSE:
                    return resp
                data = json.dumps(ev, separators=(",", ":"), default=str)
                await resp.write(f"event: {ev['kind']}\ndata: {data}\n\n".encode())
            await resp.write(b"event: logout\ndata: {}\n\n")
        except ConnectionError:
            pass  # the browser went away
        finally:
            session.streams -= 1
            if sub is not None:
                sub.close()
                self._sse.discard(sub)
        return resp


def csrf_ok_plain(expected: str, got: str) -> bool:
    return hmac.compare_digest(expected.encode(), got.encode())


def _token() -> str:
    return secrets.token_urlsafe(32)


def _connector_arg(form: dict[str, str]) -> int:
    try:
        return int(form.get("connector_id", ""))
    except ValueError:
        raise UsageError("connector_id must be an integer") from None


def _action_args(name: str, form: dict[str, str]) -> dict[str, Any]:
    """Form fields to control-command arguments (the command checks them as for ocppctl)."""
    cid = _connector_arg(form)
    match name:
        case "start":
            return {"id_tag": form.get("id_tag", ""), "connector_id": cid}
        case "availability":
            operative = form.get("operative")
            if operative not in ("true", "false"):
                raise UsageError("operative must be true or false")
            return {"connector_id": cid, "operative": operative == "true"}
        case "limit":
            text = form.get("limit_a", "").strip()
            if not text or text.lower() == "none":
                return {"connector_id": cid, "limit_a": None}
            try:
                return {"connector_id": cid, "limit_a": float(text)}
            except ValueError:
                raise UsageError(f"not a current in amperes: {text!r}") from None
        case _:
            return {"connector_id": cid}


def _said(name: str, args: dict[str, Any], result: Any) -> str:
    cid = args.get("connector_id")
    match name:
        case "availability":
            what = "available" if args["operative"] else "unavailable"
            if result == "scheduled":
                return f"connector {cid} becomes {what} when its transaction ends"
            return f"connector {cid} is {what}"
        case "limit":
            limit = args["limit_a"]
            return (f"connector {cid}: local limit lifted" if limit is None
                    else f"connector {cid}: local limit {limit:g} A")
        case "meter":
            return f"connector {cid}: meter read, values sent to the central system"
        case _:
            return str(result)
