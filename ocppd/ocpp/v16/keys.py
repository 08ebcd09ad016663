"""OCPP 1.6 configuration keys (§9, the Security whitepaper §7) and vendor keys.

(Above 400 lines: the table of every key, declarations only.)

Every standard key is here with its access (R, RW, or W for AuthorizationKey), type, validation
and default; values set by the Central System or ocppctl are persisted in the store under
``ocpp.<Key>``. Initial values come from the [ocpp] table of /etc/ocppd.toml, then from the
defaults below. Behaviour lives where the keys are read (``V16Policy`` for the station, the
adapter for the link-level keys), so each key does something, not just stores a value.

Vendor keys start with ``Ocppd`` so a Central System can tell them from the standard ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from ocppd.core.auth import AuthPolicy
from ocppd.core.session.state import TxPoint, TxPoints, when_all
from ocppd.storage import Store


class ChangeResult(StrEnum):
    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    REBOOT_REQUIRED = "RebootRequired"
    NOT_SUPPORTED = "NotSupported"


# Measurands the meters can provide (§7.31). ChangeConfiguration with anything else is Rejected
# (§3.16.4; libocpp #485).
SUPPORTED_MEASURANDS = (
    "Energy.Active.Import.Register",
    "Energy.Active.Export.Register",
    "Power.Active.Import",
    "Current.Import",
    "Current.Offered",
    "Voltage",
    "Frequency",
    "Power.Factor",
    "Temperature",
    "SoC",
)
_PHASES = ("L1", "L2", "L3", "N", "L1-N", "L2-N", "L3-N", "L1-L2", "L2-L3", "L3-L1")
FEATURE_PROFILES = (
    "Core",
    "FirmwareManagement",
    "LocalAuthListManagement",
    "Reservation",
    "SmartCharging",
    "RemoteTrigger",
)
_ROTATIONS = {"NotApplicable", "Unknown", "RST", "RTS", "SRT", "STR", "TRS", "TSR"}
MEASURAND_LIST_MAX = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyDef:
    """One configuration key: type, access, default, range."""

    name: str
    kind: str  # bool, int, csl (comma-separated list), str
    access: str  # R, RW, W
    default: str
    lo: int | None = None
    hi: int | None = None
    check: Callable[[str], bool] | None = None  # extra validation of the text value
    reboot: bool = False  # change takes effect after a restart / reconnect
    secret: bool = False


def _measurands(value: str) -> bool:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if len(items) > MEASURAND_LIST_MAX:
        return False
    for item in items:
        base, _, phase = item.rpartition(".")
        if item in SUPPORTED_MEASURANDS:
            continue
        # §9.1.17: a measurand may be combined with a phase, e.g. "Voltage.L1"
        if not (base in SUPPORTED_MEASURANDS and phase in _PHASES):
            return False
    return True


def _rotation(value: str) -> bool:
    for item in (v.strip() for v in value.split(",") if v.strip()):
        m = re.fullmatch(r"(\d+)\.(\w+)", item)
        if not m or m.group(2) not in _ROTATIONS:
            return False
    return True


def _hex_key(value: str) -> bool:
    # Security whitepaper §7: AuthorizationKey, 16..20 bytes; Central Systems send it as text.
    return 16 <= len(value.encode()) <= 40


def standard_keys(*, connectors: int) -> list[KeyDef]:
    K = KeyDef
    n = str(connectors)
    rotation_default = ",".join(f"{i}.Unknown" for i in range(connectors + 1))
    meas = _measurands
    return [
        # --- Core (§9.1) ---
        K(name="AllowOfflineTxForUnknownId", kind="bool", access="RW", default="false"),
        K(name="AuthorizationCacheEnabled", kind="bool", access="RW", default="true"),
        K(name="AuthorizeRemoteTxRequests", kind="bool", access="RW", default="true"),
        K(name="BlinkRepeat", kind="int", access="RW", default="3", lo=0, hi=100),
        K(name="ClockAlignedDataInterval", kind="int", access="RW", default="0", lo=0, hi=86400),
        K(name="ConnectionTimeOut", kind="int", access="RW", default="60", lo=1, hi=3600),
        K(
            name="ConnectorPhaseRotation",
            kind="csl",
            access="RW",
            default=rotation_default,
            check=_rotation,
        ),
        K(
            name="ConnectorPhaseRotationMaxLength",
            kind="int",
            access="R",
            default=str(connectors + 1),
        ),
        K(name="GetConfigurationMaxKeys", kind="int", access="R", default="100"),
        K(name="HeartbeatInterval", kind="int", access="RW", default="300", lo=0, hi=86400),
        K(name="LightIntensity", kind="int", access="RW", default="100", lo=0, hi=100),
        K(name="LocalAuthorizeOffline", kind="bool", access="RW", default="true"),
        K(name="LocalPreAuthorize", kind="bool", access="RW", default="false"),
        K(name="MaxEnergyOnInvalidId", kind="int", access="RW", default="0", lo=0, hi=10_000_000),
        K(
            name="MeterValuesAlignedData",
            kind="csl",
            access="RW",
            default="Energy.Active.Import.Register",
            check=meas,
        ),
        K(
            name="MeterValuesAlignedDataMaxLength",
            kind="int",
            access="R",
            default=str(MEASURAND_LIST_MAX),
        ),
        K(
            name="MeterValuesSampledData",
            kind="csl",
            access="RW",
            default="Energy.Active.Import.Register,Power.Active.Import,Current.Import,Voltage",
            check=meas,
        ),
        K(
            name="MeterValuesSampledDataMaxLength",
            kind="int",
            access="R",
            default=str(MEASURAND_LIST_MAX),
        ),
        K(name="MeterValueSampleInterval", kind="int", access="RW", default="60", lo=0, hi=86400),
        K(name="MinimumStatusDuration", kind="int", access="RW", default="0", lo=0, hi=3600),
        K(name="NumberOfConnectors", kind="int", access="R", default=n),
        K(name="ResetRetries", kind="int", access="RW", default="1", lo=0, hi=10),
        K(name="StopTransactionOnEVSideDisconnect", kind="bool", access="RW", default="true"),
        K(name="StopTransactionOnInvalidId", kind="bool", access="RW", default="true"),
        K(name="StopTxnAlignedData", kind="csl", access="RW", default="", check=meas),
        K(
            name="StopTxnAlignedDataMaxLength",
            kind="int",
            access="R",
            default=str(MEASURAND_LIST_MAX),
        ),
        K(
            name="StopTxnSampledData",
            kind="csl",
            access="RW",
            default="Energy.Active.Import.Register",
            check=meas,
        ),
        K(
            name="StopTxnSampledDataMaxLength",
            kind="int",
            access="R",
            default=str(MEASURAND_LIST_MAX),
        ),
        K(
            name="SupportedFeatureProfiles",
            kind="csl",
            access="R",
            default=",".join(FEATURE_PROFILES),
        ),
        K(
            name="SupportedFeatureProfilesMaxLength",
            kind="int",
            access="R",
            default=str(len(FEATURE_PROFILES)),
        ),
        K(name="TransactionMessageAttempts", kind="int", access="RW", default="3", lo=1, hi=100),
        K(
            name="TransactionMessageRetryInterval",
            kind="int",
            access="RW",
            default="60",
            lo=1,
            hi=86400,
        ),
        K(name="UnlockConnectorOnEVSideDisconnect", kind="bool", access="RW", default="true"),
        # Negative values are Rejected; 0 disables pings. Applies at once (Link.update).
        K(
            name="WebSocketPingInterval",
            kind="int",
            access="RW",
            default="60",
            lo=0,
            hi=86400,
        ),
        # --- Local Auth List Management (§9.2) ---
        K(name="LocalAuthListEnabled", kind="bool", access="RW", default="true"),
        K(name="LocalAuthListMaxLength", kind="int", access="R", default="10000"),
        K(name="SendLocalListMaxLength", kind="int", access="R", default="1000"),
        # --- Reservation (§9.3) ---
        K(name="ReserveConnectorZeroSupported", kind="bool", access="R", default="true"),
        # --- Smart Charging (§9.4) ---
        K(name="ChargeProfileMaxStackLevel", kind="int", access="R", default="10"),
        K(
            name="ChargingScheduleAllowedChargingRateUnit",
            kind="csl",
            access="R",
            default="Current,Power",
        ),
        K(name="ChargingScheduleMaxPeriods", kind="int", access="R", default="24"),
        K(name="ConnectorSwitch3to1PhaseSupported", kind="bool", access="R", default="false"),
        K(name="MaxChargingProfilesInstalled", kind="int", access="R", default="20"),
        # --- Firmware Management (referenced by the Security whitepaper; not in 1.6 §9) ---
        K(
            name="SupportedFileTransferProtocols",
            kind="csl",
            access="R",
            default="FTP,FTPS,HTTP,HTTPS",
        ),
        # --- Security whitepaper §7 ---
        K(
            name="AuthorizationKey",
            kind="str",
            access="W",
            default="",
            check=_hex_key,
            secret=True,
        ),  # applied at once: the link reconnects with it (TC_073)
        K(name="CpoName", kind="str", access="RW", default=""),
        # applied at once: the link reconnects with it (profile_switch.py, TC_083)
        K(name="SecurityProfile", kind="int", access="RW", default="0", lo=0, hi=3),
        K(name="AdditionalRootCertificateCheck", kind="bool", access="R", default="false"),
        K(name="CertificateSignedMaxChainSize", kind="int", access="R", default="10000"),
        K(name="CertificateStoreMaxLength", kind="int", access="R", default="20"),
        # --- vendor keys ---
        K(
            name="OcppdAuthorizationCacheMaxEntries",
            kind="int",
            access="RW",
            default="1000",
            lo=1,
            hi=100_000,
        ),
        K(
            name="OcppdSupportedMeasurands",
            kind="csl",
            access="R",
            default=",".join(SUPPORTED_MEASURANDS),
        ),
        K(name="OcppdBootNotificationOnReconnect", kind="bool", access="RW", default="false"),
    ]


def _normalise(d: KeyDef, value: str) -> str | None:
    """The canonical text of ``value`` for key ``d``, or None if it is not valid."""
    value = value.strip()
    if d.kind == "bool":
        low = value.lower()
        return low if low in ("true", "false") else None
    if d.kind == "int":
        if not re.fullmatch(r"[+-]?\d{1,12}", value):
            return None
        number = int(value)
        if (d.lo is not None and number < d.lo) or (d.hi is not None and number > d.hi):
            return None
        return str(number)
    if d.kind == "csl":
        value = ",".join(v.strip() for v in value.split(",") if v.strip())
    if len(value) > 500:  # CiString500 (GetConfiguration value)
        return None
    if d.check is not None and not d.check(value):
        return None
    return value


def initial_problems(defs: list[KeyDef], initial: Mapping[str, object]) -> list[str]:
    """What Keys() would refuse in the [ocpp] table, one line per key, without a store: the
    configuration check runs this before the daemon ever opens its database."""
    by_name = {d.name.lower(): d for d in defs}
    problems = []
    for name, raw in initial.items():
        known = by_name.get(name.lower())
        if known is None:
            problems.append(f"ocpp.{name}: not an OCPP 1.6 key")
            continue
        text = str(raw).lower() if isinstance(raw, bool) else str(raw)
        if _normalise(known, text) is None:
            problems.append(f"ocpp.{name}: invalid value {raw!r}")
    return problems


class Keys:
    """The live key table, backed by the store."""

    PREFIX = "ocpp."

    def __init__(self, store: Store, defs: list[KeyDef], initial: Mapping[str, object]) -> None:
        self._store = store
        self._defs = {d.name.lower(): d for d in defs}
        self._values: dict[str, str] = {}
        self.on_change: list[Callable[[str, str], None]] = []
        # key name -> a check run before a valid value is stored; it returns REJECTED to refuse
        # it (e.g. SecurityProfile without its prerequisites), or None
        self.guards: dict[str, Callable[[str], ChangeResult | None]] = {}
        persisted = store.settings(self.PREFIX)
        for d in defs:
            stored = persisted.get(self.PREFIX + d.name)
            self._values[d.name] = stored if stored is not None else d.default
        for name, raw in initial.items():
            known = self._defs.get(name.lower())
            if known is None:
                raise KeyError(name)
            text = str(raw).lower() if isinstance(raw, bool) else str(raw)
            value = _normalise(known, text)
            if value is None:
                raise ValueError(f"{name}: invalid value {raw!r}")
            if self.PREFIX + known.name not in persisted:  # a value set by the Central System wins
                self._values[known.name] = value

    def definition(self, name: str) -> KeyDef | None:
        return self._defs.get(name.lower())

    def defs(self) -> list[KeyDef]:
        return list(self._defs.values())

    def get(self, name: str) -> str:
        d = self._defs[name.lower()]
        return self._values[d.name]

    def get_bool(self, name: str) -> bool:
        return self.get(name) == "true"

    def get_int(self, name: str) -> int:
        return int(self.get(name))

    def get_list(self, name: str) -> list[str]:
        return [v for v in self.get(name).split(",") if v]

    def change(self, name: str, value: str) -> ChangeResult:
        """ChangeConfiguration (§5.3): NotSupported for unknown keys, Rejected for read-only keys
        and invalid values (a read-only key is supported, so not NotSupported)."""
        d = self._defs.get(name.lower())
        if d is None:
            return ChangeResult.NOT_SUPPORTED
        if d.access == "R":
            return ChangeResult.REJECTED
        canonical = _normalise(d, value)
        if canonical is None:
            return ChangeResult.REJECTED
        if d.name == "SecurityProfile" and int(canonical) < self.get_int("SecurityProfile"):
            return ChangeResult.REJECTED  # whitepaper: the profile may only be raised
        guard = self.guards.get(d.name)
        if guard is not None and guard(canonical) is ChangeResult.REJECTED:
            return ChangeResult.REJECTED
        self._set(d, canonical)
        return ChangeResult.REBOOT_REQUIRED if d.reboot else ChangeResult.ACCEPTED

    def restore(self, name: str, value: str) -> None:
        """Set a key back to an earlier value without the checks of ``change`` (a SecurityProfile
        that failed to connect falls back to the previous one, a lower value)."""
        d = self._defs[name.lower()]
        canonical = _normalise(d, value)
        if canonical is None:
            raise ValueError(f"{name}: invalid value {value!r}")
        self._set(d, canonical)

    def _set(self, d: KeyDef, canonical: str) -> None:
        self._store.set_setting(self.PREFIX + d.name, canonical)
        self._values[d.name] = canonical
        for hook in self.on_change:
            hook(d.name, canonical)

    def lookup(self, names: list[str] | None) -> tuple[list[tuple[KeyDef, str]], list[str]]:
        """GetConfiguration (§5.8): the readable keys asked for (all when ``names`` is empty),
        and the names that are unknown. Write-only keys count as unknown (OCPP-J §6.2.2)."""
        if not names:
            return self.readable(), []
        found, unknown = [], []
        for name in names:
            d = self._defs.get(name.lower())
            if d is None or d.access == "W":
                unknown.append(name)
            else:
                found.append((d, self._values[d.name]))
        return found, unknown

    def readable(self) -> list[tuple[KeyDef, str]]:
        """Keys GetConfiguration reports; write-only keys are never returned (OCPP-J §6.2.2)."""
        return [(d, self._values[d.name]) for d in self._defs.values() if d.access != "W"]


class V16Policy:
    """The station's Policy, read live from the OCPP 1.6 keys."""

    def __init__(self, keys: Keys) -> None:
        self.k = keys

    @property
    def connection_timeout_s(self) -> int:
        return self.k.get_int("ConnectionTimeOut")

    @property
    def tx_points(self) -> TxPoints:
        """OCPP 1.6 fixes where a transaction begins: an accepted idTag and a connected EV,
        either first (§4.1, §9.1.6). It ends on unplug if StopTransactionOnEVSideDisconnect
        (§9.1.30) and on a refused idTag if StopTransactionOnInvalidId (§9.1.29)."""
        end = set()
        if self.k.get_bool("StopTransactionOnEVSideDisconnect"):
            end.add(TxPoint.EV_CONNECTED)
        if self.k.get_bool("StopTransactionOnInvalidId"):
            end.add(TxPoint.AUTHORIZED)
        return TxPoints(begin=frozenset({when_all(TxPoint.AUTHORIZED, TxPoint.EV_CONNECTED)}),
                        end=frozenset(end))

    @property
    def unlock_on_ev_disconnect(self) -> bool:
        return self.k.get_bool("UnlockConnectorOnEVSideDisconnect")

    @property
    def meter_sample_interval_s(self) -> int:
        return self.k.get_int("MeterValueSampleInterval")

    @property
    def clock_aligned_interval_s(self) -> int:
        return self.k.get_int("ClockAlignedDataInterval")

    @property
    def max_energy_on_invalid_id_wh(self) -> int | None:
        return self.k.get_int("MaxEnergyOnInvalidId")

    @property
    def authorize_remote_tx(self) -> bool:
        return self.k.get_bool("AuthorizeRemoteTxRequests")

    @property
    def auth(self) -> AuthPolicy:
        return AuthPolicy(
            local_pre_authorize=self.k.get_bool("LocalPreAuthorize"),
            local_authorize_offline=self.k.get_bool("LocalAuthorizeOffline"),
            allow_offline_tx_for_unknown_id=self.k.get_bool("AllowOfflineTxForUnknownId"),
            local_list_enabled=self.k.get_bool("LocalAuthListEnabled"),
            cache_enabled=self.k.get_bool("AuthorizationCacheEnabled"),
        )

    @property
    def auth_cache_max_entries(self) -> int:
        return self.k.get_int("OcppdAuthorizationCacheMaxEntries")
