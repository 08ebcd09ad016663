"""Energy meter register maps: TOML data files, not code.

A map names, for each quantity ocppd reads, the Modbus function code, the register address
(0-based protocol address), the data type, the word order and a scale that turns the raw number
into the SI-ish unit in the quantity's name (``energy_import_wh`` in Wh, ``power_w`` in W, ...).
Built-in maps live in ``ocppd/hw/meters/*.toml``; ``[meters.NAME] model`` is either such a name
(without ``.toml``) or a path to an installer's own file, so a new meter needs no code.

File layout::

    name = "Eastron SDM630"
    source = ["where the register facts come from"]
    phases = 3

    [defaults]            # applied to every register unless it says otherwise
    function = 4          # 3 = holding registers, 4 = input registers
    type = "float32"      # float32 int16 uint16 int32 uint32 int64 uint64
    word_order = "big"    # "big": high word first; "little": low word first
    scale = 1.0           # value = raw * scale
    nan = "auto"          # raw value meaning "not available": an integer, "auto" or "none"

    [registers]
    energy_import_wh = { address = 0x0048, scale = 1000.0 }   # kWh -> Wh

``nan = "auto"`` means: all ones for unsigned types, the largest positive value for signed
ones (the convention of ABB and others); float32 NaN/inf are always refused.
"""

from __future__ import annotations

import math
import struct
import tomllib  # Python >= 3.11 (Debian 12)
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ocppd.errors import ConfigError

MAPS_DIR = Path(__file__).parent / "meters"


class DataType(StrEnum):
    FLOAT32 = "float32"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"

    @property
    def words(self) -> int:
        return {"16": 1, "32": 2, "64": 4}[self.value[-2:]]

    @property
    def signed(self) -> bool:
        return self.value.startswith(("int", "float"))


class WordOrder(StrEnum):
    BIG = "big"  # high word first (Eastron, ABB)
    LITTLE = "little"  # low word first (Carlo Gavazzi "INT32 LSW first")


# Quantities a map may define; anything else in [registers] is a typo and refused.
PHASE_QUANTITIES = ("current_l1_a", "current_l2_a", "current_l3_a",
                    "voltage_l1_v", "voltage_l2_v", "voltage_l3_v")
QUANTITIES = ("energy_import_wh", "energy_export_wh", "power_w", "frequency_hz",
              "power_factor", *PHASE_QUANTITIES)


@dataclass(frozen=True, slots=True, kw_only=True)
class Register:
    function: int
    address: int
    type: DataType
    word_order: WordOrder = WordOrder.BIG
    scale: float = 1.0
    nan: int | None = None  # raw (unsigned, all words) value meaning "not available"

    @property
    def count(self) -> int:
        return self.type.words

    def _raw(self, words: list[int]) -> int:
        if len(words) != self.count:
            raise ValueError(f"expected {self.count} registers, got {len(words)}")
        ordered = words if self.word_order is WordOrder.BIG else list(reversed(words))
        raw = 0
        for w in ordered:
            raw = (raw << 16) | (w & 0xFFFF)
        return raw

    def decode(self, words: list[int]) -> float | None:
        """Registers as read -> scaled value, or None for the NaN sentinel / float NaN."""
        raw = self._raw(words)
        if self.nan is not None and raw == self.nan:
            return None
        bits = 16 * self.count
        if self.type is DataType.FLOAT32:
            value = struct.unpack(">f", raw.to_bytes(4, "big"))[0]
            if not math.isfinite(value):
                return None
        elif self.type.signed and raw >= 1 << (bits - 1):
            value = raw - (1 << bits)
        else:
            value = raw
        return float(value) * self.scale

    def encode(self, value: float) -> list[int]:
        """Scaled value -> registers as the meter would send them (for simulators and tests)."""
        bits = 16 * self.count
        if self.type is DataType.FLOAT32:
            raw = int.from_bytes(struct.pack(">f", value / self.scale), "big")
        else:
            raw = round(value / self.scale) & ((1 << bits) - 1)
        words = [(raw >> (16 * i)) & 0xFFFF for i in reversed(range(self.count))]
        return words if self.word_order is WordOrder.BIG else list(reversed(words))

    def encode_nan(self) -> list[int]:
        bits = 16 * self.count
        raw = self.nan if self.nan is not None else 0x7FC00000  # float32 quiet NaN
        words = [(raw >> (16 * i)) & 0xFFFF for i in reversed(range(bits // 16))]
        return words if self.word_order is WordOrder.BIG else list(reversed(words))


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterMap:
    name: str
    source: tuple[str, ...]
    phases: int
    registers: dict[str, Register] = field(default_factory=dict)
    path: Path | None = None

    @property
    def currents(self) -> list[Register]:
        return [self.registers[q] for q in PHASE_QUANTITIES[:3] if q in self.registers]

    @property
    def voltages(self) -> list[Register]:
        return [self.registers[q] for q in PHASE_QUANTITIES[3:] if q in self.registers]


def available_models() -> list[str]:
    return sorted(p.stem for p in MAPS_DIR.glob("*.toml"))


def resolve(model: str) -> Path:
    """A built-in model name, or a path to a user's file."""
    if "/" in model or model.endswith(".toml"):
        return Path(model)
    return MAPS_DIR / f"{model}.toml"


def load_meter_map(model: str | Path) -> MeterMap:
    """Read and check one map. Raises ConfigError naming the file and the key on a problem."""
    path = model if isinstance(model, Path) else resolve(model)
    if not path.is_file():
        known = ", ".join(available_models())
        raise ConfigError(
            [f"meter model {str(model)!r}: no such map file {path} (built in: {known})"])
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read meter map: {exc}"]) from None
    problems: list[str] = []
    result = _parse(data, path, problems)
    if problems or result is None:
        raise ConfigError(problems)
    return result


def _parse(data: dict[str, Any], path: Path, problems: list[str]) -> MeterMap | None:
    def bad(key: str, msg: str) -> None:
        problems.append(f"{path}: {key}: {msg}")

    name = data.get("name")
    if not isinstance(name, str) or not name:
        bad("name", "required string")
    source = data.get("source", [])
    if isinstance(source, str):
        source = [source]
    if not source:
        bad("source", "say where the register facts come from (datasheet, project)")
    phases = data.get("phases", 3)
    if phases not in (1, 3):
        bad("phases", "must be 1 or 3")
    defaults = data.get("defaults", {})
    regs_raw = data.get("registers")
    if not isinstance(regs_raw, dict) or "energy_import_wh" not in regs_raw:
        bad("registers.energy_import_wh", "required: the import energy register")
        return None
    registers: dict[str, Register] = {}
    for qty, spec in regs_raw.items():
        key = f"registers.{qty}"
        if qty not in QUANTITIES:
            bad(key, f"unknown quantity (known: {', '.join(QUANTITIES)})")
            continue
        if not isinstance(spec, dict):
            bad(key, "must be a table with at least 'address'")
            continue
        reg = _register({**defaults, **spec}, key, bad)
        if reg is not None:
            registers[qty] = reg
    if problems:
        return None
    return MeterMap(name=str(name), source=tuple(source), phases=int(phases),
                    registers=registers, path=path)


def _register(spec: dict[str, Any], key: str, bad: Any) -> Register | None:
    unknown = set(spec) - {"function", "address", "type", "word_order", "scale", "nan"}
    if unknown:
        bad(key, f"unknown keys {sorted(unknown)}")
        return None
    try:
        dtype = DataType(spec.get("type", "float32"))
        order = WordOrder(spec.get("word_order", "big"))
    except ValueError as exc:
        bad(key, str(exc))
        return None
    function = spec.get("function", 4)
    address = spec.get("address")
    scale = spec.get("scale", 1.0)
    if function not in (3, 4):
        bad(f"{key}.function", "must be 3 (holding) or 4 (input)")
        return None
    if not isinstance(address, int) or not 0 <= address <= 0xFFFF:
        bad(f"{key}.address", "required, 0..65535")
        return None
    if not isinstance(scale, int | float) or scale == 0:
        bad(f"{key}.scale", "must be a non-zero number")
        return None
    nan_spec = spec.get("nan", "auto")
    bits = 16 * dtype.words
    nan: int | None
    if nan_spec == "none" or dtype is DataType.FLOAT32:
        nan = None  # float NaN/inf are refused by decode() anyway
    elif nan_spec == "auto":
        nan = (1 << (bits - 1)) - 1 if dtype.signed else (1 << bits) - 1
    elif isinstance(nan_spec, int) and 0 <= nan_spec < 1 << bits:
        nan = nan_spec
    else:
        bad(f"{key}.nan", "must be 'auto', 'none' or a raw unsigned integer")
        return None
    return Register(function=function, address=address, type=dtype, word_order=order,
                    scale=float(scale), nan=nan)
