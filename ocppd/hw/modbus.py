"""Modbus energy meters: one bus owner per RS-485 line or TCP gateway, meters as register maps.

This is the only module that imports pymodbus. ``ModbusBus`` owns one client (RTU or TCP) and
serialises every request on it with an asyncio.Lock, so several meters (different unit ids) and
an EVSE controller board (hw/evsewb.py, which also writes) can share one RS-485 line.
``ModbusMeter`` reads the registers its map names and checks them: a reading is either plausible
or a MeterError, never a made-up number.

After a failure the bus drops its client and builds a new one on the next request, so a meter
that was unplugged, or a TCP gateway that restarted, is picked up again without a restart.
Only transitions are logged (a meter went away / came back), not every failed poll.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from ocppd.config import BusConfig
from ocppd.errors import MeterError
from ocppd.hw.base import MeterReading
from ocppd.hw.metermap import MeterMap, Register
from ocppd.tasks import within

log = logging.getLogger(__name__)

# --- pymodbus version compat (Debian 12: 3.0, Debian 13: 3.8, pip: 3.16) -------------------------
# Everything that differs between versions lives here and nowhere else:
#  - the unit keyword: ``slave=`` until 3.9, ``device_id=`` from 3.10;
#  - the RTU framer: a class in 3.0 (pymodbus.framer.rtu_framer), ``FramerType.RTU`` from 3.7;
#  - ``close()``: a coroutine in some 3.0 builds, plain in later ones;
#  - ``count`` is keyword-only from 3.7 (always passed by keyword here);
#  - 3.0 calls ``logging.basicConfig()`` when imported (pymodbus.constants): a stderr handler on
#    the root logger, so under systemd every log line reached the journal twice. The daemon's
#    logging is ocppd.systemd.setup_logging's alone: what the import adds is taken back.
_root_log = logging.getLogger()
_root_before = (list(_root_log.handlers), _root_log.level)
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient  # noqa: E402
from pymodbus.exceptions import ModbusException  # noqa: E402

for _h in [h for h in _root_log.handlers if h not in _root_before[0]]:
    _root_log.removeHandler(_h)
_root_log.setLevel(_root_before[1])

try:
    from pymodbus.framer import FramerType  # >= 3.7

    _RTU_FRAMER: Any = FramerType.RTU
except ImportError:  # pragma: no cover - pymodbus 3.0 .. 3.6
    from pymodbus.framer.rtu_framer import ModbusRtuFramer

    _RTU_FRAMER = ModbusRtuFramer

_UNIT_KW: dict[Any, str] = {}


def _unit_kwargs(method: Callable[..., Any], unit: int) -> dict[str, int]:
    func = getattr(method, "__func__", method)
    name = _UNIT_KW.get(func)
    if name is None:
        params = inspect.signature(method).parameters
        name = next((n for n in ("device_id", "slave", "unit") if n in params), "slave")
        _UNIT_KW[func] = name
    return {name: unit}


async def _close_client(client: Any) -> None:
    result = client.close()
    if inspect.isawaitable(result):
        await result


def _make_client(cfg: BusConfig) -> Any:
    # retries=0: the bus reports a failure at once; the caller's next poll is the retry.
    if cfg.type == "tcp":
        return AsyncModbusTcpClient(cfg.host or "", port=cfg.tcp_port, timeout=cfg.timeout_s,
                                    retries=0)
    return AsyncModbusSerialClient(cfg.port or "", framer=_RTU_FRAMER, baudrate=cfg.baudrate,
                                   bytesize=8, parity=cfg.parity, stopbits=cfg.stopbits,
                                   timeout=cfg.timeout_s, retries=0)


# --- end of compat --------------------------------------------------------------------------------

_FUNCTIONS: dict[int, str] = {3: "read_holding_registers", 4: "read_input_registers"}

# Plausibility limits: a value outside these is a wiring, map or meter fault, not a reading.
MAX_VOLTAGE_V = 1000.0
MAX_CURRENT_A = 1000.0
MAX_POWER_W = 1_000_000.0
MAX_ENERGY_WH = 1e12  # 1 TWh: no charge point register gets there
FREQUENCY_RANGE_HZ = (40.0, 70.0)
MAX_POWER_FACTOR = 1.0001


class ModbusBus:
    """One RS-485 line or TCP endpoint; the single owner of its pymodbus client."""

    def __init__(self, cfg: BusConfig, *, name: str = "bus") -> None:
        self.cfg = cfg
        self.name = name
        self._lock = asyncio.Lock()
        self._client: Any = None

    @property
    def where(self) -> str:
        if self.cfg.type == "tcp":
            return f"{self.cfg.host}:{self.cfg.tcp_port}"
        return str(self.cfg.port)

    async def read(self, unit: int, requests: list[tuple[int, int, int]]) -> list[list[int]]:
        """Read (function, address, count) blocks from one unit, back to back, holding the bus.

        Raises MeterError on any failure (no answer, exception response, broken connection).
        """
        async with self._lock:
            client = await self._connected()
            out: list[list[int]] = []
            for function, address, count in requests:
                out.append(await self._request(client, unit, function, address, count))
            return out

    async def write(self, unit: int, address: int, values: list[int]) -> None:
        """Write holding registers (function 16) on one unit, holding the bus.

        Raises MeterError (a HardwareError) on any failure, as ``read`` does.
        """
        async with self._lock:
            client = await self._connected()
            what = f"modbus {self.where} unit {unit} fc16 @0x{address:04X}"
            method = client.write_registers
            try:
                rr = await within(
                    method(address, list(values), **_unit_kwargs(method, unit)),
                    self.cfg.timeout_s * 2 + 1.0)
            except (TimeoutError, ModbusException, OSError) as exc:
                await self._drop()
                raise MeterError(f"{what}: no answer ({type(exc).__name__}: {exc})") from None
            if rr is None or rr.isError():
                code = getattr(rr, "exception_code", None)
                if not hasattr(rr, "exception_code"):
                    await self._drop()
                raise MeterError(f"{what}: error response (exception code {code})")

    async def _connected(self) -> Any:
        if self._client is not None and getattr(self._client, "connected", True):
            return self._client
        await self._drop()
        client = _make_client(self.cfg)
        try:
            ok = await within(client.connect(), self.cfg.timeout_s + 1.0)
        except (TimeoutError, ModbusException, OSError) as exc:
            await _close_client(client)
            raise MeterError(f"modbus {self.where}: cannot connect: {exc}") from None
        if ok is False:
            await _close_client(client)
            raise MeterError(f"modbus {self.where}: cannot connect")
        self._client = client
        return client

    async def _request(self, client: Any, unit: int, function: int, address: int,
                       count: int) -> list[int]:
        what = f"modbus {self.where} unit {unit} fc{function} @0x{address:04X}"
        method = getattr(client, _FUNCTIONS[function])
        try:
            # A second, outer timeout: a pymodbus bug must not hang the bus for good.
            rr = await within(
                method(address, count=count, **_unit_kwargs(method, unit)),
                self.cfg.timeout_s * 2 + 1.0)
        except (TimeoutError, ModbusException, OSError) as exc:
            await self._drop()  # reconnect on the next request
            raise MeterError(f"{what}: no answer ({type(exc).__name__}: {exc})") from None
        if rr is None or rr.isError():
            code = getattr(rr, "exception_code", None)
            if not hasattr(rr, "exception_code"):
                await self._drop()  # not a Modbus exception response: the link is in doubt
            raise MeterError(f"{what}: error response (exception code {code})")
        regs = list(getattr(rr, "registers", []) or [])
        if len(regs) < count:
            raise MeterError(f"{what}: short answer ({len(regs)} of {count} registers)")
        return regs[:count]

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await _close_client(client)
            except Exception:  # noqa: BLE001 - closing a broken client must not mask the error
                log.debug("modbus %s: error while closing client", self.where, exc_info=True)

    async def close(self) -> None:
        async with self._lock:
            await self._drop()


class ModbusMeter:
    """An energy meter on a ModbusBus, described by a register map. Implements hw.base.Meter."""

    def __init__(self, bus: ModbusBus, meter_map: MeterMap, *, unit_id: int = 1,
                 name: str = "meter", clock: Callable[[], float] = time.monotonic) -> None:
        self.bus = bus
        self.map = meter_map
        self.unit_id = unit_id
        self.name = name
        self._clock = clock
        self._last_energy_wh: float | None = None
        self._available: bool | None = None  # None: not read yet

    async def read(self) -> MeterReading:
        try:
            reading = await self._read()
        except MeterError as exc:
            if self._available is not False:
                log.warning("meter %s (%s): unavailable: %s", self.name, self.map.name, exc)
            self._available = False
            raise MeterError(f"meter {self.name}: {exc}") from None
        if self._available is False:
            log.warning("meter %s (%s): answering again", self.name, self.map.name)
        self._available = True
        return reading

    async def _read(self) -> MeterReading:
        regs = list(self.map.registers.items())
        blocks = await self.bus.read(self.unit_id,
                                     [(r.function, r.address, r.count) for _, r in regs])
        values: dict[str, float] = {}
        for (qty, reg), words in zip(regs, blocks, strict=True):
            values[qty] = self._check(qty, reg, reg.decode(words))
        energy_wh = values["energy_import_wh"]
        if self._last_energy_wh is not None and energy_wh < self._last_energy_wh:
            # Never report a smaller register value (OCPP: the register is monotonic).
            raise MeterError(f"import energy went backwards: {energy_wh:.0f} Wh after "
                             f"{self._last_energy_wh:.0f} Wh")
        self._last_energy_wh = energy_wh
        currents = tuple(values[q] for q in ("current_l1_a", "current_l2_a", "current_l3_a")
                         if q in values)
        voltages = tuple(values[q] for q in ("voltage_l1_v", "voltage_l2_v", "voltage_l3_v")
                         if q in values)
        return MeterReading(
            energy_import_wh=energy_wh,
            power_w=values.get("power_w"),
            current_a=currents or None,
            voltage_v=voltages or None,
            frequency_hz=values.get("frequency_hz"),
            energy_export_wh=values.get("energy_export_wh"),
            power_factor=values.get("power_factor"),
        )

    def _check(self, qty: str, reg: Register, value: float | None) -> float:
        where = f"{qty} @0x{reg.address:04X}"
        if value is None or not math.isfinite(value):
            raise MeterError(f"{where}: meter says 'not available' (NaN sentinel)")
        ok = True
        if qty.startswith("energy"):
            ok = 0.0 <= value <= MAX_ENERGY_WH
        elif qty.startswith("voltage"):
            ok = 0.0 <= value <= MAX_VOLTAGE_V
        elif qty.startswith("current"):
            ok = abs(value) <= MAX_CURRENT_A
        elif qty == "power_w":
            ok = abs(value) <= MAX_POWER_W
        elif qty == "frequency_hz":
            # 0 Hz: some meters report it with no voltage present; anything else must be mains.
            ok = value == 0.0 or FREQUENCY_RANGE_HZ[0] <= value <= FREQUENCY_RANGE_HZ[1]
        elif qty == "power_factor":
            ok = abs(value) <= MAX_POWER_FACTOR
        if not ok:
            raise MeterError(f"{where}: implausible value {value:g}")
        return value

    async def close(self) -> None:
        """The bus is shared: its owner closes it, not the meter."""

