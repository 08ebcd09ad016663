"""Sessions for the station shell: a card shown (swipe), remote start and stop, stops, the
plug lock. Each decides what only the shell can know (authorization, which connector) and
hands the rest to the core as an event."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ocppd.core.auth import same_tag
from ocppd.core.evse import Fault
from ocppd.core.model import StopReason
from ocppd.core.session.state import (
    Authorized,
    LockMoved,
    StopRequested,
    WaitCancelled,
)
from ocppd.errors import HardwareError
from ocppd.ports import Refused, SessionHook
from ocppd.privacy import tag

if TYPE_CHECKING:  # the type of ``self`` in the methods below
    from ocppd.shell.host import Host, Job

log = logging.getLogger("ocppd.station")


class SessionsMixin:
    async def swipe(self: Host, id_tag: str, connector_id: int | None) -> str:
        """A card was presented (reader or ocppctl). Returns what happened, in words."""
        id_tag = id_tag.strip()
        if not 1 <= len(id_tag) <= 20:
            raise Refused("an idTag has 1 to 20 characters")
        # Stopping: the same idTag needs no Authorize (§3.4, §4.1)
        running = [c for c in self.connectors.values() if c.tx is not None]
        if connector_id is not None:
            running = [c for c in running if c.id == connector_id]
        for c in running:
            assert c.tx is not None
            if same_tag(c.tx.id_tag, id_tag):
                await self.stop_transaction(c.id, StopReason.LOCAL, stop_id_tag=id_tag)
                return f"stopped transaction on connector {c.id}"
        for c in self.connectors.values():  # cancel a waiting authorization with the same card
            if (
                c.waiting is not None
                and same_tag(c.waiting.id_tag, id_tag)
                and connector_id in (None, c.id)
            ):
                self._step(WaitCancelled(connector_id=c.id))
                return f"cancelled the waiting session on connector {c.id}"
        ok, cred = await self._auth.authorize(id_tag)
        parent = cred.parent_id_tag if cred else None
        # TC_069: another card with the same parentIdTag stops the session, whether the card
        # came with a connector (ocppctl --connector) or from a reader that names none. A stop
        # wins over starting a second session elsewhere.
        for c in running:
            tx = self.state.connector(c.id).tx
            if ok and tx is not None and tx.parent_id_tag is not None and same_tag(
                parent, tx.parent_id_tag
            ):
                await self.stop_transaction(c.id, StopReason.LOCAL, stop_id_tag=id_tag)
                return f"stopped transaction on connector {c.id} (same parent id)"
        # A transaction begun without an idTag (a begin point without authorization: never
        # in OCPP 1.6) takes the first card that is accepted.
        unclaimed = [c for c in running if c.tx is not None and c.tx.id_tag is None]
        if ok and unclaimed:
            cid = unclaimed[0].id
            for job in self._step(Authorized(connector_id=cid, id_tag=id_tag,
                                             parent_id_tag=parent, reservation_id=None)):
                await job
            return f"authorized the transaction on connector {cid}"
        if connector_id is not None and running:
            raise Refused(f"connector {connector_id} is busy with another card")
        if not ok:
            raise Refused("the card is not authorized")  # no idTag: this text is logged
        if connector_id is not None:
            cid = self._connector(connector_id).id
            if not self.usable(cid) or not self.reserved_for(cid, id_tag, parent):
                raise Refused(f"connector {cid} is not available")
        else:
            picked = self.pick_free(id_tag, parent)
            if picked is None:
                raise Refused("no connector is available")
            cid = picked
        return await self._begin_session(cid, id_tag, parent)

    async def _begin_session(
        self: Host, cid: int, id_tag: str, parent: str | None, on_start: SessionHook | None = None
    ) -> str:
        if not self.usable(cid):  # taken while the idTag was being authorized
            raise Refused(f"connector {cid} is not available")
        hold = self.state.connector(cid).hold
        self._on_start[cid] = on_start
        jobs = self._step(Authorized(
            connector_id=cid, id_tag=id_tag, parent_id_tag=parent,
            reservation_id=hold.reservation_id if hold is not None else None))
        for job in jobs:  # the lock, then the start it lets begin
            await job
        c = self.state.connector(cid)
        if c.waiting is not None and c.waiting.id_tag == id_tag:
            timeout_s = max(1, self.policy.connection_timeout_s)
            return f"authorized; plug in on connector {cid} within {timeout_s} s"
        if c.tx is None and Fault.LOCK_FAILURE in c.faults:  # OCTT TC_024
            raise Refused(f"connector {cid}: the plug could not be locked, no transaction")
        return f"started a transaction on connector {cid}"

    def remote_start(
        self: Host, id_tag: str, connector_id: int | None, *, on_start: SessionHook | None = None
    ) -> int | None:
        """Pick the connector for RemoteStartTransaction; None means Rejected.

        ``on_start`` runs when the transaction is recorded, before the contactor may close.
        """
        if connector_id is not None:
            if not self.usable(connector_id) or not self.reserved_for(connector_id, id_tag, None):
                return None
            cid = connector_id
        else:
            picked = self.pick_free(id_tag, None)
            if picked is None:
                return None
            cid = picked
        self._spawn(self._remote_start(cid, id_tag, on_start), name="ocppd-remote-start")
        return cid

    async def _remote_start(
        self: Host, cid: int, id_tag: str, on_start: SessionHook | None
    ) -> None:
        parent = None
        if self.policy.authorize_remote_tx:  # §5.11: behave like a local start
            ok, cred = await self._auth.authorize(id_tag)
            if not ok:
                log.info("remote start for %s refused by authorization", tag(id_tag))
                return
            parent = cred.parent_id_tag if cred else None
        if self.usable(cid):
            try:
                await self._begin_session(cid, id_tag, parent, on_start)
            except Refused as exc:
                log.warning("remote start on connector %d: %s", cid, exc)

    def remote_stop(self: Host, remote_id: str) -> bool:
        for c in self.connectors.values():
            if c.tx is not None and c.tx.remote_id == remote_id:
                # the contactor opens and the stop is durable before the command is answered
                self._step_soon(StopRequested(connector_id=c.id, reason=StopReason.REMOTE))
                return True
        return False

    async def stop_all(self: Host, reason: StopReason) -> None:
        for cid, c in self.state.connectors.items():
            if c.tx is not None:
                await self.stop_transaction(cid, reason)

    async def stop_transaction(
        self: Host,
        connector_id: int,
        reason: StopReason,
        *,
        stop_id_tag: str | None = None,
        force: bool = False,
    ) -> bool:
        """Stop the connector's transaction; ``force``: leave the lock alone. False: none."""
        self._connector(connector_id)
        if self.state.connector(connector_id).tx is None:
            return False
        jobs = self._step(StopRequested(connector_id=connector_id, reason=reason,
                                        stop_id_tag=stop_id_tag, unlock=not force))
        for job in jobs:
            await job
        return bool(jobs)

    async def unlock(self: Host, connector_id: int) -> str:
        """UnlockConnector (§5.18): 'unlocked', 'failed' or 'not_supported'."""
        c = self.connectors.get(connector_id)
        if c is None or c.cfg.cable == "fixed" or not self.hw.board.has_lock(connector_id):
            return "not_supported"
        if c.tx is not None:
            await self.stop_transaction(c.id, StopReason.UNLOCK_COMMAND, force=True)
        ok = await self._move_lock(c.id, locked=False)
        return "unlocked" if ok else "failed"

    async def _move_lock(self: Host, cid: int, *, locked: bool) -> bool:
        """A lock move the shell makes itself (UnlockConnector, a start it could not record)."""
        ok, jobs = await self._lock_move(cid, locked)
        for job in jobs:
            self._spawn(self._logged(job))
        return ok

    async def _lock_move(self: Host, cid: int, locked: bool) -> tuple[bool, list[Job]]:
        """Every lock move goes through here and its outcome goes to the core, which lets a
        session begin and the contactor close only on a plug confirmed locked and sets
        ConnectorLockFailure. Returns the outcome and the jobs it led to (a start)."""
        try:
            ok = await self.hw.board.lock(cid, locked)
        except HardwareError as exc:  # a failed move, still reported: the core decides
            log.error("connector %d: lock actuator: %s", cid, exc)
            ok = False
        if not ok:
            self._live[cid].fault_details[Fault.LOCK_FAILURE] = (
                "lock failed" if locked else "unlock failed")
        if ok and Fault.LOCK_FAILURE in self.state.connector(cid).faults:
            log.info("connector %d: lock fault cleared", cid)
        return ok, self._step(LockMoved(connector_id=cid, locked=locked, ok=ok))

    async def _lock_job(self: Host, cid: int, locked: bool) -> None:
        """A lock move the core asked for (MoveLock): before a session begins, for a running
        one (resumed after a restart, or whose EV came back), or released after one. Its
        outcome always goes back to the core, which decides what follows (machine.py)."""
        if not locked:
            await self._move_lock(cid, locked=False)
            return
        async with self._lock:  # not in the middle of recording a start or a stop
            ok, jobs = await self._lock_move(cid, True)
        if not ok:
            # OCPP 1.6 §4.9: a fault during a transaction makes the connector Faulted; it does
            # not end the transaction by itself. A running session is kept without energy and
            # ends the usual ways; the EV leaving clears the fault, its return retries. Before
            # a start, no transaction begins (OCTT TC_024).
            running = self.state.connector(cid).tx is not None
            log.warning("connector %d: the plug could not be locked; %s", cid,
                        "session suspended" if running else "no transaction")
        for job in jobs:  # the start the lock let begin: outside the lock, which it takes
            await job

