"""OCPP 1.6 Firmware Management: UpdateFirmware and GetDiagnostics, with the Security
Whitepaper's SignedUpdateFirmware and GetLog.

(Above 400 lines: one service for the four commands, which share the persisted firmware job,
its phases and the status notifications; the transfers themselves live in transfers.py.)

Rules followed, with the spec section where they live:
- UpdateFirmware (§5.19): the .conf (empty) goes out at once; the download starts at
  ``retrieveDate``; FirmwareStatusNotification (§4.5, §7.25) reports Downloading, Downloaded,
  Installing, then Installed or DownloadFailed / InstallationFailed, each once per request.
  Download failures are retried ``retries`` times in all, ``retryInterval`` s apart.
- Installation never interrupts a transaction: it waits until every connector is idle, then
  (RECOMMENDED by §5.19) sets the idle connectors Unavailable so no session starts during it,
  and gives them back afterwards (also after a failed install: libocpp PR #1058).
- Installed is sent after the restart into the new firmware, on the next accepted
  BootNotification (§5.19 good practice; ev-server #2305). The job's phase is persisted so a
  restart never yields a duplicated or missing final status (SAP simulator #459): a restart
  before installation started is reported as DownloadFailed (downloads are not resumed); one
  during the install command as Installed if the reported firmware version changed, otherwise
  InstallationFailed.
- GetDiagnostics (§5.8): answers the archive's file name at once, then uploads it and reports
  Uploading, then Uploaded or UploadFailed (§4.4, §7.24), with the same retry rules.
- Idle (§7.25, §7.24) is only what TriggerMessage reports while nothing happens.

Security (Security Whitepaper ed. 3; issue "a charger nobody can take over"):
- UpdateFirmware images carry no signature, and the install command runs as root: they are
  refused (InstallationFailed, nothing downloaded) unless the installer set
  ``security.allow_unsigned_firmware``; then every install is a WARNING and a security event.
  Signed images come with SignedUpdateFirmware (signed_firmware.py).
- http:// and ftp:// give neither server authentication nor integrity: refused for firmware
  (DownloadFailed) unless ``security.allow_insecure_firmware_download``.
- https:// and ftps:// verify the server's certificate chain and host name against the CA the
  OCPP link trusts (``central_system.ca_file``; ``security.transfer_ca_file`` when set; the
  system store otherwise), TLS 1.2 or newer (whitepaper: TLS 1.2 minimum). ftplib's FTP_TLS
  verifies nothing by default: it gets that same context.
- The downloaded file is mode 0600 in a 0700 directory, and is only handed to the install
  command after the checks above; it is never executed by ocppd itself.
- Credentials in a location (``ftp://user:password@host/``) never reach a log line or the
  persisted job: only ``privacy.redact_url(location)`` is logged and stored.

- GetLog (Security Whitepaper): DiagnosticsLog is the GetDiagnostics archive, SecurityLog the
  security log as text; LogStatusNotification with the requestId.

Transfers (HTTP(S), FTP(S), retries) live in transfers.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import shutil
import tarfile
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from ocppd import __version__, pki, privacy
from ocppd.config import Config
from ocppd.ocpp.rpc import Reply
from ocppd.ocpp.v16 import FIRMWARE_JOB_KEY, mapping
from ocppd.ocpp.v16.certificates import trusted_roots
from ocppd.ocpp.v16.transfers import CHUNK_BYTES, RetryPolicy, download, tls_context, upload
from ocppd.ports import StationApi
from ocppd.privacy import redact_url
from ocppd.security import SecurityEventType, security_event
from ocppd.storage import Store
from ocppd.tasks import TaskSet, wait_event, within
from ocppd.wallclock import ClockSteps

log = logging.getLogger("ocppd.firmware")

JOB_KEY = FIRMWARE_JOB_KEY  # the persisted UpdateFirmware job (JSON), see Phase
JOURNAL_TIMEOUT_S = 30.0
IDLE_RECHECK_S = 5.0
FLUSH_BEFORE_INSTALL_S = 10.0  # queued transaction messages, before Installing


class FirmwareStatus(StrEnum):
    """OCPP 1.6 §7.25 FirmwareStatus; the last three only in SignedFirmwareStatusNotification
    (Security Whitepaper FirmwareStatusEnumType)."""

    DOWNLOADED = "Downloaded"
    DOWNLOAD_FAILED = "DownloadFailed"
    DOWNLOADING = "Downloading"
    IDLE = "Idle"
    INSTALLATION_FAILED = "InstallationFailed"
    INSTALLING = "Installing"
    INSTALLED = "Installed"
    SIGNATURE_VERIFIED = "SignatureVerified"
    INVALID_SIGNATURE = "InvalidSignature"
    INSTALL_SCHEDULED = "InstallScheduled"


#: statuses that end an update: once one is said, a new request cancels nothing
FINAL_STATUSES = frozenset({FirmwareStatus.DOWNLOAD_FAILED, FirmwareStatus.INSTALLATION_FAILED,
                            FirmwareStatus.INVALID_SIGNATURE})

#: what FirmwareStatusNotification (unsigned) may carry, OCPP 1.6 §7.25
PLAIN_STATUSES = frozenset(FirmwareStatus) - {
    FirmwareStatus.SIGNATURE_VERIFIED, FirmwareStatus.INVALID_SIGNATURE,
    FirmwareStatus.INSTALL_SCHEDULED}


class DiagnosticsStatus(StrEnum):
    """OCPP 1.6 §7.24 DiagnosticsStatus."""

    IDLE = "Idle"
    UPLOADED = "Uploaded"
    UPLOAD_FAILED = "UploadFailed"
    UPLOADING = "Uploading"


class Phase(StrEnum):
    """Where an UpdateFirmware job is; persisted so a restart can tell what happened."""

    IDLE = "idle"
    WAITING = "waiting"  # for retrieveDate
    DOWNLOADING = "downloading"
    AWAITING_IDLE = "awaiting_idle"  # downloaded; transactions still running
    INSTALLING = "installing"  # the install command runs
    INSTALLED = "installed"  # the command succeeded; restarting into the new firmware


# --- the service ----------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def _scrub_file(path: Path, id_tags: set[str]) -> None:
    text = path.read_text(errors="replace")
    clean = privacy.scrub_known(privacy.scrub(text), id_tags)
    if clean != text:
        path.write_text(clean)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text) or "file"


class FirmwareService:
    """The Firmware Management profile, plugged into a ChargePoint with ``register()``."""

    def __init__(self, *, cfg: Config, store: Store, station: StationApi, cp: Any,
                 restart: Callable[[], None], wall: Callable[[], datetime],
                 install_timeout_s: float = 900.0, journal_unit: str = "ocppd",
                 clock_steps: ClockSteps | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.station = station
        self.cp = cp
        self.restart = restart
        self.wall = wall
        # retrieveDate and installDate are wall-clock instants: the waits follow the clock
        # when it is set (ocppd/wallclock.py)
        self._clock = clock_steps or ClockSteps(wall)
        self.install_timeout_s = install_timeout_s
        self.journal_unit = journal_unit
        self.phase = Phase.IDLE
        self._inherited = self._load()  # a job a previous run left: its outcome is reported
        self._update: asyncio.Task[None] | None = None
        self._update_over = False  # the update task has said its final status
        self._diag: asyncio.Task[None] | None = None
        self._getlog: asyncio.Task[None] | None = None
        self._tasks = TaskSet(log, "firmware")
        self._tx_ended = asyncio.Event()
        self.cp.firmware_status = FirmwareStatus.IDLE.value
        self.cp.diagnostics_status = DiagnosticsStatus.IDLE.value

    def register(self, handlers: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]) -> None:
        handlers["UpdateFirmware"] = self._on_update_firmware
        handlers["SignedUpdateFirmware"] = self._on_signed_update_firmware
        handlers["GetDiagnostics"] = self._on_get_diagnostics
        handlers["GetLog"] = self._on_get_log
        self.cp.on_accepted.append(self._on_accepted)
        self.station.on_tx_ended.append(lambda cid, tx: self._tx_ended.set())
        if getattr(self.cp, "online", False):
            self._on_accepted()  # registered late: the boot was already accepted

    async def close(self) -> None:
        await self._tasks.cancel_all()

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        return self._tasks.spawn(coro)

    # --- persisted job ----------------------------------------------------------------------------

    def _load(self) -> dict[str, Any] | None:
        raw = self.store.get_setting(JOB_KEY)
        if raw is None:
            return None
        try:
            job = json.loads(raw)
            Phase(job["phase"])
            return dict(job)
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable firmware job state %r ignored", raw)
            self.store.delete_setting(JOB_KEY)
            return None

    def _save(self, job: dict[str, Any], phase: Phase) -> None:
        job["phase"] = phase.value
        self.phase = phase
        self.store.set_setting(JOB_KEY, json.dumps(job))

    def _forget(self) -> None:
        self.phase = Phase.IDLE
        self.store.delete_setting(JOB_KEY)

    # --- statuses ---------------------------------------------------------------------------------

    async def _firmware(self, status: FirmwareStatus,
                        job: dict[str, Any] | None = None) -> bool:
        """Report ``status``: SignedFirmwareStatusNotification for a SignedUpdateFirmware job
        (with its requestId), FirmwareStatusNotification otherwise."""
        request_id = None if job is None else job.get("request_id")
        if status in FINAL_STATUSES:
            self._update_over = True  # before the send: its answer may take a while
        if status in PLAIN_STATUSES:  # what a triggered FirmwareStatusNotification reports
            self.cp.firmware_status = status.value
            self.cp.firmware_request_id = request_id
        log.info("firmware status %s", status.value)
        if request_id is None:
            conf = await self.cp.send("FirmwareStatusNotification", {"status": status.value})
        else:
            conf = await self.cp.send("SignedFirmwareStatusNotification",
                                      {"status": status.value, "requestId": request_id})
        return conf is not None

    async def _diagnostics(self, status: DiagnosticsStatus) -> None:
        self.cp.diagnostics_status = status.value
        log.info("diagnostics status %s", status.value)
        await self.cp.send("DiagnosticsStatusNotification", {"status": status.value})

    # --- UpdateFirmware (§5.19) -------------------------------------------------------------------

    async def _on_update_firmware(self, p: dict[str, Any]) -> Reply:
        location = p["location"]
        retrieve_at = mapping.parse_iso(p["retrieveDate"])
        policy = RetryPolicy.from_request(p)

        async def start() -> None:
            refused = self._refusal(location)
            if refused is not None:  # the update in progress, if any, goes on
                await self._firmware(refused)
                self.cp.firmware_status = FirmwareStatus.IDLE.value
                return
            job = self._new_job(location)
            await self._start(job, self._run_update(job, location, retrieve_at, policy))

        return Reply({}, then=start)

    # --- SignedUpdateFirmware (Security Whitepaper, secure firmware update) ----------------------

    async def _on_signed_update_firmware(self, p: dict[str, Any]) -> dict[str, Any] | Reply:
        """The signing certificate is checked before answering (InvalidCertificate), the
        signature over the image after the download and before anything is installed
        (SignatureVerified or InvalidSignature). The transport may be plain: the signature, not
        the server, vouches for the image."""
        fw, request_id = p["firmware"], int(p["requestId"])
        location = fw["location"]
        try:
            chain = pki.load_pem_chain(fw["signingCertificate"])
            pki.verify_chain(chain, trusted_roots(self.store, "manufacturer_root"), self.wall())
        except pki.CertificateError as exc:
            log.error("SignedUpdateFirmware %d (%s) refused: signing certificate: %s",
                      request_id, redact_url(location), exc)
            security_event(SecurityEventType.INVALID_FIRMWARE_SIGNING_CERTIFICATE, str(exc))
            return {"status": "InvalidCertificate"}
        if self.phase in (Phase.INSTALLING, Phase.INSTALLED):
            return {"status": "Rejected"}  # an installation cannot be cancelled
        busy = self._update is not None and not self._update.done() and not self._update_over
        retrieve_at = mapping.parse_iso(fw["retrieveDateTime"])
        install_at = mapping.parse_iso(fw["installDateTime"]) if fw.get("installDateTime") \
            else None
        policy = RetryPolicy.from_request(p)
        job = self._new_job(location, request_id=request_id)

        async def verify(path: Path) -> bool:
            try:
                await asyncio.to_thread(pki.verify_file_signature, path, fw["signature"],
                                        chain[0])
            except pki.SignatureError as exc:
                log.error("firmware %s: %s; not installed", path.name, exc)
                security_event(SecurityEventType.INVALID_FIRMWARE_SIGNATURE,
                               f"request {request_id}: {path.name}: {exc}")
                await self._firmware(FirmwareStatus.INVALID_SIGNATURE, job)
                return False
            log.info("firmware %s: signature verified", path.name)
            await self._firmware(FirmwareStatus.SIGNATURE_VERIFIED, job)
            delay_s = 0.0 if install_at is None else (install_at - self.wall()).total_seconds()
            if install_at is not None and delay_s > 0:
                await self._firmware(FirmwareStatus.INSTALL_SCHEDULED, job)
                await self._clock.sleep_until(install_at)
            return True

        async def start() -> None:
            await self._start(job, self._update_steps(job, location, retrieve_at, policy, verify))

        # Whitepaper: a new request cancels the one in progress, said with AcceptedCanceled
        return Reply({"status": "AcceptedCanceled" if busy else "Accepted"}, then=start)

    def _new_job(self, location: str, **extra: Any) -> dict[str, Any]:
        # the persisted job never holds the location's credentials
        return {"location": redact_url(location),
                "previous_version": self.cfg.charge_point.firmware_version, "blocked": [],
                **extra}

    async def _start(self, job: dict[str, Any], run: Coroutine[Any, Any, None]) -> None:
        shown = job["location"]
        if self.phase in (Phase.INSTALLING, Phase.INSTALLED):
            log.warning("firmware update %s ignored: an installation is under way", shown)
            run.close()
            return
        if self._update is not None and not self._update.done():
            log.warning("firmware update %s replaces the update in progress", shown)
            self._update.cancel()
            with contextlib.suppress(BaseException):
                await self._update
        self._inherited = None  # a new request supersedes what a previous run left
        log.info("firmware update from %s", shown)
        self._update_over = False
        self._update = self._spawn(run)

    def _refusal(self, location: str) -> FirmwareStatus | None:
        """Why an UpdateFirmware (unsigned) request is not even downloaded; None: go ahead."""
        sec, shown = self.cfg.security, redact_url(location)
        if not sec.allow_unsigned_firmware:
            log.error("UpdateFirmware %s refused: the image has no signature and"
                      " security.allow_unsigned_firmware is false (signed firmware comes with"
                      " SignedUpdateFirmware)", shown)
            security_event(SecurityEventType.INVALID_FIRMWARE_SIGNATURE,
                           f"unsigned firmware refused: {shown}")
            return FirmwareStatus.INSTALLATION_FAILED
        scheme = urlsplit(location).scheme.lower()
        if scheme in ("http", "ftp") and not sec.allow_insecure_firmware_download:
            log.error("UpdateFirmware %s refused: %s:// neither authenticates the server nor"
                      " protects the image (use https:// or ftps://, or set"
                      " security.allow_insecure_firmware_download)", shown, scheme)
            return FirmwareStatus.DOWNLOAD_FAILED
        return None

    async def _run_update(self, job: dict[str, Any], location: str, retrieve_at: datetime,
                          policy: RetryPolicy) -> None:
        # Cancelled (shutdown, or replaced by a newer request): the persisted phase stays, so
        # after a restart the outcome is still reported; a replacing job overwrites it.
        await self._update_steps(job, location, retrieve_at, policy, self._accept_unsigned)

    async def _accept_unsigned(self, path: Path) -> bool:
        """The installer allowed unsigned images (checked in ``_refusal``): said every time."""
        digest = await asyncio.to_thread(_sha256, path)
        log.warning("installing UNSIGNED firmware %s (sha256 %s): allowed by"
                    " security.allow_unsigned_firmware", path.name, digest)
        security_event(SecurityEventType.INVALID_FIRMWARE_SIGNATURE,
                       f"unsigned firmware installed (allowed by configuration): {path.name}"
                       f" sha256 {digest}")
        return True

    async def _update_steps(self, job: dict[str, Any], location: str, retrieve_at: datetime,
                            policy: RetryPolicy,
                            verify: Callable[[Path], Awaitable[bool]]) -> None:
        """Download, ``verify``, wait for idle, install. ``location`` may hold credentials: it
        is used for the transfer only; logs and the job show ``job["location"]``."""
        shown = job["location"]
        self._save(job, Phase.WAITING)
        delay_s = (retrieve_at - self.wall()).total_seconds()
        if delay_s > 0:
            log.info("firmware %s: download at %s (in %.0f s)", shown,
                     mapping.iso(retrieve_at), delay_s)
            await self._clock.sleep_until(retrieve_at)
        self._save(job, Phase.DOWNLOADING)
        await self._firmware(FirmwareStatus.DOWNLOADING, job)
        path = await self._download(location, policy)
        if path is None:
            self._forget()
            await self._firmware(FirmwareStatus.DOWNLOAD_FAILED, job)
            self.cp.firmware_status = FirmwareStatus.IDLE.value
            return
        self._save(job, Phase.AWAITING_IDLE)
        await self._firmware(FirmwareStatus.DOWNLOADED, job)
        # Nothing downloaded reaches the install command before it passed ``verify``.
        if not await verify(path):
            path.unlink(missing_ok=True)
            self._forget()
            self.cp.firmware_status = FirmwareStatus.IDLE.value
            return
        await self._wait_idle()
        # §5.19: RECOMMENDED: no new session may start while the firmware is installed
        job["blocked"] = self._block()
        self._save(job, Phase.INSTALLING)
        await self._firmware(FirmwareStatus.INSTALLING, job)
        installed = await self._install(path)
        path.unlink(missing_ok=True)  # a Pi's storage is small; the image is not needed again
        if not installed:
            self._unblock(job["blocked"])
            self._forget()
            await self._firmware(FirmwareStatus.INSTALLATION_FAILED, job)
            self.cp.firmware_status = FirmwareStatus.IDLE.value
            return
        self._save(job, Phase.INSTALLED)
        log.warning("firmware %s installed; restarting into it", path.name)
        self.restart()

    async def _download(self, location: str, policy: RetryPolicy) -> Path | None:
        directory = self.cfg.system.firmware_dir
        name = _safe_name(PurePosixPath(unquote(urlsplit(location).path)).name or "firmware.bin")

        async def fetch() -> int:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.chmod(0o700)  # images wait here for root's install command: ours only
            return await download(location, directory / name, tls_context(self.cfg))

        size = await policy.run(f"firmware download {redact_url(location)}", fetch)
        if size is None:
            return None
        log.info("firmware %s downloaded: %d bytes", name, size)
        return directory / name

    def _busy(self) -> bool:
        return any(c.tx is not None or c.stopping for c in self.station.connectors.values())

    async def _wait_idle(self) -> None:
        if self._busy():
            log.info("firmware installation deferred until the transactions end")
            while self._busy():
                self._tx_ended.clear()
                await wait_event(self._tx_ended, IDLE_RECHECK_S)
        # the Central System learns that the sessions ended before it hears of the installation,
        # also when the last one ended just before (its StopTransaction may still be queued);
        # bounded: an offline link does not hold the installation up
        await self.cp.flush(FLUSH_BEFORE_INSTALL_S)
        log.info("all connectors idle: installing the firmware")

    def _block(self) -> list[int]:
        blocked = []
        for c in self.station.connectors.values():
            if c.operative and c.scheduled_operative is None:
                self.station.change_availability(c.id, False)
                blocked.append(c.id)
        return blocked

    def _unblock(self, blocked: list[int]) -> None:
        for cid in blocked:
            if cid in self.station.connectors:
                self.station.change_availability(cid, True)

    async def _install(self, path: Path) -> bool:
        cmd = [*self.cfg.system.firmware_install_command, str(path)]
        log.info("installing firmware: %s", " ".join(cmd))
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT)
        except OSError as exc:
            log.error("firmware install command could not start: %s", exc)
            return False
        try:
            out, _ = await within(proc.communicate(), self.install_timeout_s)
        except (TimeoutError, asyncio.CancelledError) as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.error("firmware install command timed out after %.0f s", self.install_timeout_s)
            return False
        tail = out.decode(errors="replace").strip()[-2000:]
        if proc.returncode != 0:
            log.error("firmware install command failed (exit %s): %s", proc.returncode, tail)
            return False
        log.info("firmware install command succeeded%s", f": {tail}" if tail else "")
        return True

    # --- after a restart --------------------------------------------------------------------------

    def _on_accepted(self) -> None:
        if self._inherited is not None:
            self._spawn(self._report_inherited())

    async def _report_inherited(self) -> None:
        job = self._inherited
        if job is None:
            return
        self._inherited = None  # one report in flight at a time
        phase = Phase(job["phase"])
        now_version = self.cfg.charge_point.firmware_version
        if phase is Phase.INSTALLED or (
                phase is Phase.INSTALLING and now_version != job.get("previous_version")):
            final = FirmwareStatus.INSTALLED
            log.info("running firmware %s (was %s)", now_version, job.get("previous_version"))
            security_event(SecurityEventType.FIRMWARE_UPDATED,
                           f"firmware {job.get('previous_version')} -> {now_version}")
        elif phase is Phase.INSTALLING:
            final = FirmwareStatus.INSTALLATION_FAILED
            log.error("the firmware installation was interrupted by a restart; still %s",
                      now_version)
        else:
            final = FirmwareStatus.DOWNLOAD_FAILED
            log.warning("the firmware update %s was interrupted by a restart (%s)",
                        job.get("location"), phase.value)
        self._unblock(job.get("blocked", []))
        if await self._firmware(final, job):
            if self._inherited is None and self.phase is Phase.IDLE:
                self.store.delete_setting(JOB_KEY)
        else:
            self._inherited = job  # not delivered: again on the next accepted boot
        self.cp.firmware_status = FirmwareStatus.IDLE.value

    # --- GetDiagnostics (§5.8) --------------------------------------------------------------------

    async def _on_get_diagnostics(self, p: dict[str, Any]) -> Reply:
        start = mapping.parse_iso(p["startTime"]) if p.get("startTime") else None
        stop = mapping.parse_iso(p["stopTime"]) if p.get("stopTime") else None
        stamp = self.wall().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"diagnostics-{_safe_name(self.cfg.charge_point.id)}-{stamp}.tar.gz"
        policy = RetryPolicy.from_request(p)

        async def begin() -> None:
            if self._diag is not None and not self._diag.done():
                log.warning("GetDiagnostics replaces the upload in progress")
                self._diag.cancel()
                with contextlib.suppress(BaseException):
                    await self._diag
            self._diag = self._spawn(self._run_diagnostics(p["location"], name, start, stop,
                                                           policy))

        return Reply({"fileName": name}, then=begin)

    async def _run_diagnostics(self, location: str, name: str, start: datetime | None,
                               stop: datetime | None, policy: RetryPolicy) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="ocppd-diag-"))
        try:
            archive = workdir / name
            await self._collect(archive, workdir, start, stop)
            await self._diagnostics(DiagnosticsStatus.UPLOADING)

            async def send() -> bool:
                await upload(location, archive, name, tls_context(self.cfg))
                return True

            if await policy.run(f"diagnostics upload to {redact_url(location)}", send):
                log.info("diagnostics %s uploaded (%d bytes)", name, archive.stat().st_size)
                await self._diagnostics(DiagnosticsStatus.UPLOADED)
            else:
                await self._diagnostics(DiagnosticsStatus.UPLOAD_FAILED)
        finally:
            self.cp.diagnostics_status = DiagnosticsStatus.IDLE.value
            shutil.rmtree(workdir, ignore_errors=True)

    # --- GetLog (Security Whitepaper: DiagnosticsLog and SecurityLog) ----------------------------

    async def _on_get_log(self, p: dict[str, Any]) -> Reply:
        """DiagnosticsLog: the GetDiagnostics archive; SecurityLog: the security log as text.
        Both for [oldestTimestamp, latestTimestamp], scrubbed; LogStatusNotification reports
        Uploading, then Uploaded or UploadFailure, with the requestId. A new request cancels
        the one in progress (AcceptedCanceled)."""
        spec, request_id = p["log"], int(p["requestId"])
        security_log = p["logType"] == "SecurityLog"
        oldest, latest = spec.get("oldestTimestamp"), spec.get("latestTimestamp")
        start = mapping.parse_iso(oldest) if oldest else None
        stop = mapping.parse_iso(latest) if latest else None
        stamp = self.wall().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        cp_id = _safe_name(self.cfg.charge_point.id)
        name = (f"securitylog-{cp_id}-{stamp}.log" if security_log
                else f"diagnostics-{cp_id}-{stamp}.tar.gz")
        policy = RetryPolicy.from_request(p)
        busy = self._getlog is not None and not self._getlog.done()

        async def begin() -> None:
            if self._getlog is not None and not self._getlog.done():
                log.warning("GetLog %d replaces the upload in progress", request_id)
                self._getlog.cancel()
                with contextlib.suppress(BaseException):
                    await self._getlog
            self._getlog = self._spawn(self._run_log(
                spec["remoteLocation"], name, request_id, security_log, start, stop, policy))

        return Reply({"status": "AcceptedCanceled" if busy else "Accepted", "filename": name},
                     then=begin)

    async def _run_log(self, location: str, name: str, request_id: int, security_log: bool,
                       start: datetime | None, stop: datetime | None,
                       policy: RetryPolicy) -> None:
        async def status(value: str) -> None:
            log.info("log upload %d: %s", request_id, value)
            # a triggered LogStatusNotification reports Uploading while it lasts, then Idle
            self.cp.log_status, self.cp.log_request_id = (
                ("Uploading", request_id) if value == "Uploading" else ("Idle", None))
            await self.cp.send("LogStatusNotification", {"status": value, "requestId": request_id})

        workdir = Path(tempfile.mkdtemp(prefix="ocppd-log-"))
        try:
            path = workdir / name
            if security_log:
                path.write_text(self._security_log_text(start, stop))
            else:
                await self._collect(path, workdir, start, stop)
            await status("Uploading")

            async def send() -> bool:
                await upload(location, path, name, tls_context(self.cfg))
                return True

            if await policy.run(f"log upload to {redact_url(location)}", send):
                await status("Uploaded")
            else:
                await status("UploadFailure")
        finally:
            self.cp.log_status, self.cp.log_request_id = "Idle", None
            shutil.rmtree(workdir, ignore_errors=True)

    def _security_log_text(self, start: datetime | None, stop: datetime | None) -> str:
        lines = [privacy.scrub(f"{mapping.iso(e.at)} {e.kind} {e.tech_info or ''}".rstrip())
                 + "\n" for e in self.store.seclog_entries(start, stop)]
        return "".join(lines) or "(no security events in the window)\n"

    async def _collect(self, archive: Path, workdir: Path, start: datetime | None,
                       stop: datetime | None) -> None:
        """journal.log, events.log, security.log and state.json of the window, in one .tar.gz.

        Everything goes out through ``privacy.scrub``: URL credentials redacted, idTags as
        pseudonyms (unless security.reveal_id_tags); also the journal, which may hold lines
        written before this rule existed.
        """
        journal = workdir / "journal.log"
        await self._journal(journal, start, stop)
        await asyncio.to_thread(_scrub_file, journal, self.store.id_tags_seen())
        events = workdir / "events.log"
        lines = [privacy.scrub(f"{mapping.iso(at)} {kind} {detail}") + "\n"
                 for at, kind, detail in self.store.events(start, stop)]
        events.write_text("".join(lines) or "(no events in the window)\n")
        state = workdir / "state.json"
        snapshot = json.loads(json.dumps(self._snapshot(start, stop), default=str))
        state.write_text(json.dumps(privacy.scrub_tree(snapshot), indent=2))
        seclog = workdir / "security.log"
        seclog.write_text(self._security_log_text(start, stop))

        def pack() -> None:
            with tarfile.open(archive, "w:gz") as tar:
                for f in (state, events, seclog, journal):
                    tar.add(f, arcname=f.name)

        await asyncio.to_thread(pack)

    async def _journal(self, dest: Path, start: datetime | None, stop: datetime | None) -> None:
        """The unit's journal for the window; a note instead when there is no journal."""
        def when(at: datetime) -> str:
            return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

        cmd = ["journalctl", "-u", self.journal_unit, "-o", "short-iso", "--no-pager", "-q"]
        if start is not None:
            cmd += ["--since", when(start)]
        if stop is not None:
            cmd += ["--until", when(stop + timedelta(seconds=1))]
        with dest.open("wb") as out:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                    stderr=asyncio.subprocess.DEVNULL)
            except OSError as exc:
                out.write(f"(no journal: {exc})\n".encode())
                return
            try:
                code = await within(proc.wait(), JOURNAL_TIMEOUT_S)
            except (TimeoutError, asyncio.CancelledError):
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise
            if code != 0:
                out.write(f"(journalctl exited with {code})\n".encode())

    def _snapshot(self, start: datetime | None, stop: datetime | None) -> dict[str, Any]:
        cp, out = self.cp, dict[str, Any]()
        out["collected_at"] = mapping.iso(self.wall())
        out["window"] = {"start": start and mapping.iso(start), "stop": stop and mapping.iso(stop)}
        out["charge_point_id"] = self.cfg.charge_point.id
        out["version"] = __version__
        out["firmware_version"] = self.cfg.charge_point.firmware_version
        out["firmware_status"] = cp.firmware_status
        parts: dict[str, Callable[[], Any]] = {
            "registration": lambda: cp.registration.value,
            "connected": lambda: cp.link.connected,
            "configuration": lambda: {d.name: v for d, v in cp.keys.readable()},
            "connectors": self.station.connector_views,
            "storage": self.store.diagnostics,
        }
        for key, read in parts.items():
            try:
                out[key] = read()
            except Exception as exc:  # noqa: BLE001 - a snapshot shows what it can
                out[key] = f"unavailable: {exc}"
        return out
