"""The one place that wires everything: config -> storage, hardware, station, OCPP, control.

(Above 400 lines: it is the composition root, every feature is wired here and nowhere else.)

Lifecycle (issue: a daemon that starts and stops like a real Linux service):
- READY=1 once config, storage and hardware are up; the Central System may still be away.
- STATUS= says what the daemon is doing; WATCHDOG=1 comes from the event loop itself.
- SIGTERM/SIGINT: contactors open at once, transactions are handled (stopped with reason Reboot,
  or left for resumption when system.power_loss = "resume"), the outbox gets a moment to drain,
  storage closes cleanly: all within 5 s.
- SIGHUP: the log level is reloaded; anything else that changed is logged as needing a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocppd import __version__, config, privacy, security
from ocppd.config import Config
from ocppd.control import ControlServer, Refused
from ocppd.core.evse import PilotState
from ocppd.core.model import StopReason
from ocppd.errors import ConfigError, StorageError
from ocppd.events import EventBus
from ocppd.hw.base import Hardware
from ocppd.installer import InstallerActions, limit_reasons
from ocppd.ocpp.link import Link, LinkSettings
from ocppd.ocpp.v16 import FIRMWARE_JOB_KEY, mapping
from ocppd.ocpp.v16.chargepoint import ChargePoint
from ocppd.ocpp.v16.client_cert import ClientCertificates
from ocppd.ocpp.v16.keys import Keys, V16Policy, standard_keys
from ocppd.ocpp.v16.profile_switch import SecurityProfileSwitch
from ocppd.ocpp.v16.root_trial import RootTrial
from ocppd.ocpp.v16.security import SecurityLog
from ocppd.ocpp.validate import Validator
from ocppd.security import SecurityEventType, security_event
from ocppd.station import Refused as StationRefused
from ocppd.station import Station
from ocppd.storage import Store
from ocppd.systemd import (
    Notifier,
    redact,
    register_secret,
    run_watchdog,
    setup_logging,
    watchdog_interval_s,
)
from ocppd.tasks import within
from ocppd.warmup import warm_up

if TYPE_CHECKING:
    from ocppd.ocpp.v16.certificates import CertificateService
    from ocppd.ocpp.v16.firmware import FirmwareService
    from ocppd.ocpp.v16.smartcharging import SmartCharging

log = logging.getLogger("ocppd")

SHUTDOWN_BUDGET_S = 5.0
CS_ROOTS_BUNDLE = "central-system-roots.pem"  # in the state directory, see _central_system_ca

# A file of this name in the runtime directory ($RUNTIME_DIRECTORY, /run/ocppd under the unit)
# asks the daemon to treat its next stop as a restart that keeps the charging sessions: the
# package's postinst leaves it before the upgrade restart. Used once, then deleted.
KEEP_SESSIONS_MARKER = "keep-sessions-on-stop"
# In the store: the last run stopped for such a restart; its open transactions resume.
RESUME_AFTER_RESTART_KEY = "daemon.resume_after_restart"


def _take_keep_sessions_marker() -> bool:
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if not runtime:
        return False
    try:
        os.unlink(os.path.join(runtime, KEEP_SESSIONS_MARKER))
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("keep-sessions marker: %s; sessions are kept anyway", exc)
    return True


def not_configured_message(cfg: Config) -> str:
    where = cfg.source or config.DEFAULT_PATH
    return (f"not configured: set {' and '.join(config.IDENTITY_KEYS)} in {where}, "
            "then: systemctl restart ocppd")


class WallClock:
    """UTC wall clock; optionally corrected by the Central System's currentTime."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def set_offset_from(self, their_now: datetime) -> None:
        offset = their_now - datetime.now(UTC)
        if abs((offset - self.offset).total_seconds()) > 2:
            log.warning("clock corrected by %.1f s from the Central System", offset.total_seconds())
            security_event(SecurityEventType.SETTING_SYSTEM_TIME,
                           f"time from the Central System: offset {offset.total_seconds():+.1f} s")
            self.offset = offset


def build_hardware(cfg: Config) -> Hardware:
    """The board driver named in [hardware] driver, from the plugin registry (hw/drivers.py)."""
    from ocppd.hw import drivers

    return drivers.build_hardware(cfg)


async def close_hardware(hw: Hardware) -> None:
    """Release hardware that no station took over (start-up failed before it existed)."""
    with contextlib.suppress(Exception):
        await hw.board.close()
    for meter in hw.meters.values():
        with contextlib.suppress(Exception):
            await meter.close()
    for closer in hw.extra_closers:
        with contextlib.suppress(Exception):
            result = closer()
            if asyncio.iscoroutine(result):
                await result


def _restore_sim_registers(hw: Hardware, store: Store) -> None:
    """The simulated meters continue from the last register the store saw, like real ones."""
    last: dict[int, int] = {}
    for tx in store.recent_transactions(50):
        seen = max(
            v for v in (tx.meter_start_wh, tx.last_meter_wh, tx.meter_stop_wh) if v is not None
        )
        last[tx.connector_id] = max(last.get(tx.connector_id, 0), seen)
    restore = getattr(hw.sim, "restore_register", None)
    if restore is not None:
        for cid, wh in last.items():
            restore(cid, float(wh))


DATA_TRANSFER_PLUGINS = "ocppd.data_transfer"


def load_data_transfer_plugins(cp: ChargePoint) -> list[str]:
    """Let installed packages handle DataTransfer (OCPP 1.6 §5.6) without changing ocppd.

    A package declares an entry point in the group ``ocppd.data_transfer`` whose object is
    called with ``cp.register_data_transfer``; it registers its handlers through it. Plugins
    are looked for once, at the first DataTransfer for a vendor nobody registered. A plugin
    that fails to load is logged and skipped: the charger keeps running without it.
    """
    import importlib.metadata  # only when a DataTransfer needs it: scanning costs start-up time

    loaded = []
    for ep in importlib.metadata.entry_points(group=DATA_TRANSFER_PLUGINS):
        try:
            ep.load()(cp.register_data_transfer)
        except Exception:
            log.exception("DataTransfer plugin %s failed to load; skipped", ep.name)
            continue
        loaded.append(ep.name)
        log.info("DataTransfer plugin %s loaded", ep.name)
    return loaded


class Daemon:
    def __init__(
        self,
        cfg: Config,
        *,
        install_signals: bool = True,
        hardware: Hardware | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.cfg = cfg
        # the clock retries wait by; tests inject one they can step
        self.monotonic = monotonic
        self.sleep = sleep
        self._hardware = hardware  # tests hand in a prepared simulator
        self.install_signals = install_signals
        self.notifier = Notifier()
        self.wall = WallClock()
        self.stop_event = asyncio.Event()
        self.exit_code = 0
        self.reset_hard: bool | None = None
        self.store: Store | None = None
        self.station: Station | None = None
        self.cp: ChargePoint | None = None
        self.control: ControlServer | None = None
        self.smart: SmartCharging | None = None
        self.firmware: FirmwareService | None = None
        self.security_profile: SecurityProfileSwitch | None = None
        self.bus: EventBus | None = None  # ocppctl watch and the web page
        self.web: Any = None  # ocppd.web.WebServer when [web] enabled
        self.seclog: SecurityLog | None = None
        self.certs: CertificateService | None = None
        self.client_certs: ClientCertificates | None = None
        self.root_trial: RootTrial | None = None

    # --- setup ------------------------------------------------------------------------------------

    def _ensure_dir(self, key: str, directory: Path) -> None:
        """Subdirectories of the unit's state and runtime directories are ours to create."""
        try:
            directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                [f"{self.cfg.source}: {key}: cannot create directory {directory}: "
                 f"{exc.strerror or exc}"]) from None

    def _open_store(self) -> Store:
        s = self.cfg.storage
        self._ensure_dir("storage.path", s.path.parent)
        return Store.open(
            s.path,
            move_aside_corrupt=s.move_aside_corrupt,
            max_pending_events=s.outbox_max_messages,
            tx_samples_max=s.stop_txn_data_max_samples,
            security_log_max=self.cfg.security.security_log_max_entries,
            # the runtime directory is a tmpfs: the delivery watermark, rewritten on every
            # confirmation, costs the SD card nothing there (storage/txevents.py)
            mark_dir=Path(os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
                                  or self.cfg.control.socket.parent),
        )

    def _keys(self, store: Store) -> Keys:
        try:
            return Keys(store, standard_keys(connectors=len(self.cfg.connectors)), self.cfg.ocpp)
        except KeyError as exc:
            raise ConfigError(
                [f"{self.cfg.source}: ocpp.{exc.args[0]}: not an OCPP 1.6 key"]
            ) from None
        except ValueError as exc:
            raise ConfigError([f"{self.cfg.source}: ocpp.{exc}"]) from None

    def link_settings(self, keys: Keys, profile: int | None = None) -> LinkSettings:
        """The link's settings from the keys; ``profile``: for that SecurityProfile instead of
        the one in use (to check a new one's prerequisites)."""
        cs = self.cfg.central_system
        if profile is None:
            profile = max(cs.security_profile, keys.get_int("SecurityProfile"))

        def password() -> str | None:
            return keys.get("AuthorizationKey") or cs.password

        # a certificate of our own (CertificateSigned) comes before the configured one
        own = self.client_certs.files() if self.client_certs is not None else None
        return LinkSettings(
            url=cs.url,
            charge_point_id=self.cfg.charge_point.id,
            security_profile=profile,
            password=password,
            ca_file=self._central_system_ca(),
            client_cert_file=own or cs.client_cert_file,
            client_key_file=None if own else cs.client_key_file,
            insecure_skip_tls_verify=cs.insecure_skip_tls_verify,
            reconnect_min_s=cs.reconnect_min_s,
            reconnect_max_s=cs.reconnect_max_s,
            stable_after_s=cs.stable_after_s,
            response_timeout_s=cs.response_timeout_s,
            max_frame_bytes=cs.max_frame_bytes,
            ping_interval_s=float(keys.get_int("WebSocketPingInterval")),
            log_frames=self.cfg.logging.log_frames,
        )

    def _central_system_roots(self) -> list[Any]:
        """The Central System roots a certificate from CertificateSigned must chain up to: the
        installed CentralSystemRootCertificates and central_system.ca_file."""
        from ocppd import pki
        from ocppd.ocpp.v16.certificates import trusted_roots

        assert self.store is not None
        roots = trusted_roots(self.store, "central_system_root")
        ca_file = self.cfg.central_system.ca_file
        if ca_file is not None:
            try:
                roots += pki.load_pem_chain(ca_file.read_bytes())
            except (OSError, pki.CertificateError) as exc:
                log.error("central_system.ca_file %s unreadable: %s", ca_file, exc)
        return roots

    def _central_system_ca(self) -> Path | None:
        """What the link trusts for the Central System's certificate.

        Security Whitepaper: installed CentralSystemRootCertificates are the trust anchors of
        the Central System. With any installed, the link trusts exactly those and
        central_system.ca_file (if set), no longer the system store: a bundle of them is
        written next to the database and used from the next connection on. Without any, the
        configuration decides alone (ca_file, else the system store).
        """
        cs = self.cfg.central_system
        roots = [] if self.store is None else self.store.certificates("central_system_root")
        if not roots:
            return cs.ca_file
        if self.root_trial is not None and self.root_trial.pending is not None:
            # AdditionalRootCertificateCheck: the new root alone, so a connection proves it
            parts = [r.pem for r in self.root_trial.trusted(roots)]
        else:
            parts = [cs.ca_file.read_text()] if cs.ca_file else []
            parts += [r.pem for r in roots]
        bundle = self.cfg.storage.path.parent / CS_ROOTS_BUNDLE
        tmp = bundle.with_name(bundle.name + ".tmp")
        tmp.write_text("\n".join(p.strip() for p in parts) + "\n")
        tmp.replace(bundle)
        return bundle

    # --- features loaded on demand ----------------------------------------------------------------
    #
    # Smart Charging and Firmware Management are imported the first time they are needed: a
    # message of theirs arrives, a RemoteStartTransaction brings a profile, or the store holds
    # profiles or a firmware job from an earlier run (then they load at start-up). Most chargers
    # spend most of their life without either, and pay neither their start-up time nor memory.

    def _wire_on_demand_features(self, cp: ChargePoint, store: Store) -> None:
        def on_first(action: str, load: Callable[[], object]) -> Callable[..., Any]:
            async def first_call(payload: dict[str, Any]) -> Any:
                load()  # registers the feature's own handlers in place of this one
                return await cp.handlers[action](payload)

            return first_call

        for action in ("SetChargingProfile", "ClearChargingProfile", "GetCompositeSchedule"):
            cp.handlers[action] = on_first(action, self.smart_charging)
        for action in ("UpdateFirmware", "SignedUpdateFirmware", "GetDiagnostics", "GetLog"):
            cp.handlers[action] = on_first(action, self.firmware_management)
        for action in ("InstallCertificate", "GetInstalledCertificateIds", "DeleteCertificate"):
            cp.handlers[action] = on_first(action, self.certificate_management)
        cp.smart = self.smart_charging
        if store.has_profiles():
            self.smart_charging()
        if store.get_setting(FIRMWARE_JOB_KEY) is not None:
            self.firmware_management()  # its outcome is reported after the next boot

    def _wire_events(self, api: ControlApiImpl) -> None:
        """The local event stream (ocppd.events) on the hooks the parts already have."""
        assert self.station is not None and self.cp is not None
        self.bus = api.bus = bus = EventBus(
            api.status, redact=lambda text: privacy.scrub(redact(text)))
        self.cp.on_change.append(bus.changed)
        self.cp.link.on_frame.append(bus.frame)
        self.station.on_tx_started.append(bus.session_started)
        self.station.on_tx_confirmed.append(bus.session_confirmed)
        self.station.on_tx_ended.append(bus.session_stopped)

    def smart_charging(self) -> SmartCharging:
        """The Smart Charging profile, loaded and wired on first use."""
        if self.smart is None:
            from ocppd.ocpp.v16.smartcharging import SmartCharging

            assert self.store is not None and self.station is not None and self.cp is not None
            self.smart = smart = SmartCharging(
                cfg=self.cfg, store=self.store, station=self.station, keys=self.cp.keys,
                wall=self.wall, clock_steps=self.station.clock_steps,
            )
            smart.register(self.cp.handlers)
            self.station.on_tx_started.append(lambda cid, tx: smart.apply())
        return self.smart

    def certificate_management(self) -> CertificateService:
        """Certificate management (Security Whitepaper), loaded and wired on first use."""
        if self.certs is None:
            from ocppd.ocpp.v16.certificates import CertificateService

            assert self.store is not None and self.cp is not None
            cp = self.cp
            self.certs = CertificateService(
                cfg=self.cfg, store=self.store, keys=cp.keys, wall=self.wall,
                root_trial=self.root_trial, reconnect=lambda why: cp.link.reconnect_now(why),
                profile=lambda: max(self.cfg.central_system.security_profile,
                                    cp.keys.get_int("SecurityProfile")))
            self.certs.register(self.cp.handlers)
            keys, link = self.cp.keys, self.cp.link
            # a changed Central System root applies from the next connection on
            self.certs.on_central_system_roots_changed.append(
                lambda: link.update(self.link_settings(keys)))
        return self.certs

    def firmware_management(self) -> FirmwareService:
        """The Firmware Management profile, loaded and wired on first use."""
        if self.firmware is None:
            from ocppd.ocpp.v16.firmware import FirmwareService

            assert self.store is not None and self.station is not None and self.cp is not None
            self.firmware = FirmwareService(
                cfg=self.cfg,
                store=self.store,
                station=self.station,
                cp=self.cp,
                restart=lambda: self._on_reset(False),
                wall=self.wall,
                clock_steps=self.station.clock_steps,
            )
            self.firmware.register(self.cp.handlers)
        return self.firmware

    async def run(self) -> int:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        if self.install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop_event.set)
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        if not cfg.configured:
            return await self._run_not_configured()
        self.notifier.status("starting")
        # The hardware first: its outputs go to the safe state (contactors open) before
        # anything else, and a board that cannot be set up is the only line in the log.
        hw = self._hardware or build_hardware(cfg)
        try:
            self.store = store = self._open_store()
        except StorageError as exc:
            log.error("storage: %s", exc)
            await close_hardware(hw)
            return os.EX_CONFIG  # a state we cannot trust: do not restart-loop on it
        except BaseException:
            await close_hardware(hw)
            raise
        try:
            # the pseudonymisation key lives next to the database (the state directory)
            privacy.configure(cfg.storage.path.parent,
                              reveal_id_tags=cfg.security.reveal_id_tags)
        except OSError as exc:
            log.error("storage.path: cannot read or create the pseudonymisation key: %s", exc)
            store.close()
            return os.EX_CONFIG
        try:
            keys = self._keys(store)
            for secret in (cfg.central_system.password, keys.get("AuthorizationKey")):
                if secret:
                    register_secret(secret)  # never in a log line, whatever logs it
            if cfg.hardware.driver == "sim":
                _restore_sim_registers(hw, store)
            self.station = station = Station(
                cfg=cfg, store=store, hw=hw, policy=V16Policy(keys), wall=self.wall
            )
            # checkpoints (and the fsync of the log restart after one) only between sessions
            store.may_checkpoint = lambda: all(c.tx is None for c in station.connectors.values())
            validator = Validator()  # one for the link and the outbox: each schema compiled once
            self.cp = cp = ChargePoint(
                cfg=cfg,
                store=store,
                events=store,
                station=station,
                keys=keys,
                validator=validator,
                wall=self.wall,
                on_reset=self._on_reset,
                monotonic=self.monotonic,
                sleep=self.sleep,
            )
            station.attach(cp)
            self.seclog = SecurityLog(store=store, cp=cp, keys=keys, wall=self.wall,
                                      monotonic=self.monotonic, sleep=self.sleep)
            security.attach(self.seclog.record)
            security_event(SecurityEventType.STARTUP_OF_THE_DEVICE, f"ocppd {__version__} started")
            cp.load_plugins = lambda: load_data_transfer_plugins(cp)
            # STATUS= follows events (connection, registration, connector statuses): no timer
            cp.on_change.append(lambda: self.notifier.status(self.status_line()))
            self._wire_on_demand_features(cp, store)
            self.security_profile = switch = SecurityProfileSwitch(
                keys=keys,
                store=store,
                base_profile=cfg.central_system.security_profile,
                settings_for=lambda profile: self.link_settings(keys, profile),
                on_event=cp.security_event,
            )

            self.client_certs = client_certs = ClientCertificates(
                cfg=cfg, store=store, keys=keys, cp=cp, wall=self.wall,
                roots=self._central_system_roots, profile=lambda: switch.current,
                on_changed=lambda: cp.link.update(self.link_settings(keys)))
            client_certs.register(cp.handlers)
            cp.request_csr = client_certs.request_soon
            # security changes on trial (ocpp/v16/trial.py): confirmed by a connection, undone
            # when they cannot connect
            self.root_trial = RootTrial(
                store=store, on_changed=lambda: cp.link.update(self.link_settings(keys)))
            trials = [switch.trial, client_certs.trial, self.root_trial.trial]

            async def on_connected() -> None:
                for trial in trials:
                    trial.connected()
                await cp.on_connected()

            def on_connect_failed(reason: str) -> None:
                if any([trial.connect_failed(reason) for trial in trials]):
                    cp.link.update(self.link_settings(keys))  # back to the previous settings

            cp.link = Link(
                self.link_settings(keys),
                handler=cp.handle,
                validator=validator,
                on_connected=on_connected,
                on_disconnected=cp.on_disconnected,
                on_connect_failed=on_connect_failed,
            )
            keys.on_change.append(lambda name, value: self._key_changed(keys, name))
            if store.get_setting(RESUME_AFTER_RESTART_KEY) is not None:
                store.delete_setting(RESUME_AFTER_RESTART_KEY)
                station.resume_open_transactions = True
            self._ensure_dir("control.socket", cfg.control.socket.parent)
            api = ControlApiImpl(self)
            self._wire_events(api)
            self.control = ControlServer(api, cfg.control.socket, mode=cfg.control.mode)
            await self.control.start()
            if cfg.web.enabled:
                from ocppd.web import WebServer

                self.web = WebServer(cfg.web, api)
                await self.web.start()
            await station.start()
            if self.smart is not None:
                self.smart.apply()
        except BaseException:
            if self.station is None:
                await close_hardware(hw)  # otherwise the station's close releases it
            await self._teardown(stop_reason=None)
            raise
        # Everything allocated so far lives as long as the daemon: keep it out of the cyclic
        # garbage collector's scans (less time per collection on the hot paths).
        gc.freeze()
        self.notifier.ready()
        self.notifier.status(self.status_line())
        assert self.seclog is not None
        tasks: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(cp.run()),
            asyncio.ensure_future(self.seclog.run()),
            asyncio.ensure_future(client_certs.run()),
        ]
        tasks.append(asyncio.ensure_future(self._warm_up_after_boot(cp, keys)))
        interval = watchdog_interval_s()
        if interval is not None:
            tasks.append(asyncio.ensure_future(run_watchdog(self.notifier, interval)))
        log.info(
            "ocppd %s running: %d connector(s), driver %s, central system %s",
            __version__,
            len(cfg.connectors),
            cfg.hardware.driver,
            cfg.central_system.url,
        )
        try:
            await self.stop_event.wait()
        finally:
            self.notifier.stopping()
            self.notifier.status("stopping")
            reason = None if cfg.system.power_loss == "resume" else StopReason.REBOOT
            if self.reset_hard is not None:
                reason = None  # the reset already stopped the transactions
            elif _take_keep_sessions_marker():
                # A package upgrade restarts us: the car keeps its session. Transactions stay
                # open, as after a power cut with power_loss = "resume", and the next start
                # resumes those whose EV is still plugged in (the others stop, PowerLoss).
                log.info("stopping for a restart: charging sessions stay open and resume")
                reason = None
                store.set_setting(RESUME_AFTER_RESTART_KEY, self.wall().isoformat())
            await self._teardown(stop_reason=reason, tasks=tasks)
        if self.reset_hard:
            self._reboot()
        return self.exit_code

    async def _warm_up_after_boot(self, cp: ChargePoint, keys: Keys) -> None:
        """First calls as fast as later ones: see ocppd/warmup.py."""
        accepted = asyncio.Event()
        cp.on_accepted.append(accepted.set)
        await accepted.wait()
        cp.on_accepted.remove(accepted.set)

        def plugins() -> None:
            load, cp.load_plugins = cp.load_plugins, None  # the first DataTransfer's scan
            if load is not None:
                load()
        await warm_up(cp.validator, load_plugins=plugins, others=(lambda: keys.lookup(None),))

    async def _run_not_configured(self) -> int:
        """The shipped configuration: no identity, no Central System. Stay up (no restart
        loop), say what to do in ``systemctl status``, and start nothing of a charger."""
        message = not_configured_message(self.cfg)
        log.warning("%s", message)
        self.notifier.ready()
        self.notifier.status(message)
        tasks: list[asyncio.Future[Any]] = []
        interval = watchdog_interval_s()
        if interval is not None:
            tasks.append(asyncio.ensure_future(run_watchdog(self.notifier, interval)))
        try:
            await self.stop_event.wait()
        finally:
            self.notifier.stopping()
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
        return 0

    async def _teardown(
        self, *, stop_reason: StopReason | None, tasks: list[asyncio.Future[Any]] | None = None
    ) -> None:
        deadline = asyncio.get_running_loop().time() + SHUTDOWN_BUDGET_S
        if self.firmware is not None:
            with contextlib.suppress(Exception):
                await self.firmware.close()
        if self.smart is not None:
            self.smart.close()
        if self.station is not None:
            with contextlib.suppress(Exception):
                await within(
                    self.station.close(stop_transactions=stop_reason), timeout=2.0
                )
        if self.cp is not None and self.cp.link is not None:
            remaining = deadline - asyncio.get_running_loop().time() - 1.0
            if remaining > 0:
                with contextlib.suppress(Exception):
                    await self.cp.flush(timeout_s=min(1.5, remaining))
        if self.cp is not None and self.cp.link is not None:
            # Close the link before cancelling its task, so the drop is ours (not logged as a
            # lost connection) and the Central System sees a clean WebSocket close.
            with contextlib.suppress(Exception):
                await self.cp.close()
        for t in tasks or []:
            t.cancel()
        for t in tasks or []:
            with contextlib.suppress(BaseException):
                await t
        if self.web is not None:
            with contextlib.suppress(Exception):
                await self.web.stop()
        if self.bus is not None:
            await self.bus.close()
        if self.control is not None:
            with contextlib.suppress(Exception):
                await self.control.stop()
        if self.seclog is not None:
            security.detach()  # later events wait in memory for the next recorder
        if self.store is not None:
            self.store.close()

    # --- events -----------------------------------------------------------------------------------

    def _key_changed(self, keys: Keys, name: str) -> None:
        if name == "AuthorizationKey":
            register_secret(keys.get(name))
            security_event(SecurityEventType.RECONFIGURATION_OF_SECURITY_PARAMETERS,
                           "AuthorizationKey changed")
        if name in ("AuthorizationKey", "SecurityProfile", "WebSocketPingInterval"):
            assert self.cp is not None
            self.cp.link.update(self.link_settings(keys))
            if name in ("AuthorizationKey", "SecurityProfile"):
                self.cp.request_reconnect(f"{name} changed")

    def _on_reset(self, hard: bool) -> None:
        security_event(SecurityEventType.RESET_OR_REBOOT,
                       "hard reset: reboot" if hard else "soft reset: service restart")
        self.reset_hard = hard
        # Soft: exit with the code the unit restarts on; Hard: reboot after a clean shutdown.
        self.exit_code = 0 if hard else self.cfg.system.soft_reset_exit_code
        self.stop_event.set()

    def _reboot(self) -> None:
        cmd = self.cfg.system.reboot_command
        log.warning("hard reset: running %s", " ".join(cmd))
        try:
            subprocess.run(cmd, check=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            log.error("hard reset: reboot command failed: %s", exc)
            self.exit_code = self.cfg.system.soft_reset_exit_code

    def reload(self) -> None:
        path = self.cfg.source or config.DEFAULT_PATH
        try:
            new = config.load(path)
        except ConfigError as exc:
            log.error("reload: configuration not changed:\n%s", exc)
            return
        self.notifier.reloading()
        setup_logging(new.logging.level, log_frames=new.logging.log_frames)
        changed = [
            f.name
            for f in new.__dataclass_fields__.values()
            if f.name not in ("logging", "source")
            and getattr(new, f.name) != getattr(self.cfg, f.name)
        ]
        if changed:
            log.warning("reload: changes to %s take effect after a restart", ", ".join(changed))
        log.info("reload: log level %s", new.logging.level)
        self.notifier.ready()

    def status_line(self) -> str:
        assert self.station is not None and self.cp is not None
        n = len(self.station.connectors)
        charging = sum(1 for c in self.station.connectors.values() if c.tx is not None)
        connected = self.cp.link is not None and self.cp.link.connected
        state = "connected to" if connected else "connecting to"
        reg = "" if self.cp.registration.value == "accepted" else f" ({self.cp.registration.value})"
        return f"{state} {self.cfg.central_system.url}{reg}; {n} connectors, {charging} charging"


class ControlApiImpl(InstallerActions):
    """What ocppctl can see and do, on top of the daemon's parts."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    @property
    def _store(self) -> Store:
        assert self.d.store is not None
        return self.d.store

    @property
    def _config(self) -> Config:
        return self.d.cfg

    @property
    def _station(self) -> Station:
        assert self.d.station is not None
        return self.d.station

    @property
    def _cp(self) -> ChargePoint:
        assert self.d.cp is not None
        return self.d.cp

    async def status(self) -> dict[str, Any]:
        cp, st, cfg = self._cp, self._station, self.d.cfg
        await st.refresh_readings()  # live power and energy, not the last periodic sample
        stats = cp.link.stats
        connectors = []
        for c in st.connectors.values():
            view = c.as_dict()
            status, fault = st.status_of(c.id)
            view["status"] = mapping.STATUS[status]
            view["error"] = mapping.ERROR_CODE[fault] if fault else "NoError"
            view["limits"] = limit_reasons(c, st.charger_limit_a, cfg.hardware.max_current_a)
            connectors.append(view)
        since = getattr(stats, "connected_since", None)
        return {
            "charge_point_id": cfg.charge_point.id,
            "version": __version__,
            "driver": cfg.hardware.driver,
            "connection": {
                "state": "connected" if cp.link.connected else "connecting",
                "url": cfg.central_system.url,
                "registration": cp.registration.value,
                "since": since.isoformat() if isinstance(since, datetime) else since,
                "last_error": getattr(stats, "last_error", None),
            },
            "outbox": self.d.store.tx_events_count() if self.d.store else 0,
            "storage_error": st.storage_error,
            "outgoing_invalid": getattr(stats, "outgoing_invalid", 0),
            "connectors": connectors,
        }

    async def swipe(self, id_tag: str, connector_id: int | None) -> str:
        try:
            return await self._station.swipe(id_tag, connector_id)
        except StationRefused as exc:
            raise Refused(str(exc)) from None

    def _sim(self) -> Any:
        try:
            return self._station.sim_control()
        except StationRefused as exc:
            raise Refused(str(exc)) from None

    def _check(self, connector_id: int) -> None:
        if connector_id not in self._station.connectors:
            raise Refused(f"no connector {connector_id}")

    def plug(self, connector_id: int) -> None:
        self._check(connector_id)
        self._sim().plug(connector_id)

    def unplug(self, connector_id: int) -> None:
        self._check(connector_id)
        self._sim().unplug(connector_id)

    def ev_state(self, connector_id: int, state: str) -> None:
        self._check(connector_id)
        try:
            pilot = PilotState(state.upper())
        except ValueError:
            raise Refused(f"no pilot state {state!r}; use A to F") from None
        self._sim().set_ev_state(connector_id, pilot)

    def transactions(self, limit: int) -> list[dict[str, Any]]:
        assert self.d.store is not None
        out = []
        for tx in self.d.store.recent_transactions(limit):
            energy = None if tx.meter_stop_wh is None else tx.meter_stop_wh - tx.meter_start_wh
            out.append(
                {
                    "local_id": tx.local_id,
                    "transaction_id": tx.remote_id,
                    "connector_id": tx.connector_id,
                    "id_tag": tx.id_tag,
                    "start": tx.started_at.isoformat(),
                    "stop": tx.stopped_at.isoformat() if tx.stopped_at else None,
                    "meter_start_wh": tx.meter_start_wh,
                    "meter_stop_wh": tx.meter_stop_wh,
                    "energy_wh": energy,
                    "reason": tx.stop_reason,
                }
            )
        return out

    def config_get(self, keys: list[str] | None) -> dict[str, Any]:
        found, unknown = self._cp.keys.lookup(keys)
        entries = [{"key": d.name, "value": v, "readonly": d.access == "R"} for d, v in found]
        return {"keys": entries, "unknown": unknown}

    def config_set(self, key: str, value: str) -> str:
        result = self._cp.keys.change(key, value)
        self._station.retime()
        return result.value


def run(cfg: Config) -> int:
    daemon = Daemon(cfg)
    return asyncio.run(daemon.run())
