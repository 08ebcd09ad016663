"""Configuration: /etc/ocppd.toml -> frozen dataclasses.

(Above 400 lines: mostly the schema, one dataclass per section, declarations only.)

The dataclasses below are the schema. Each field's metadata may carry a range (``lo``/``hi``), a
set of allowed ``choices``, a ``secret`` flag (never printed) and a ``doc`` line. The loader walks
the TOML document against them and collects every problem as one line naming the file and the
key path, so an installer sees all mistakes at once. Unknown keys are errors: a typo must not
pass silently. etc/ocppd.toml documents every key; tests/test_config.py checks it stays in step.
"""

# No ``from __future__ import annotations``: the loader reads each field's type from the class
# itself, which saves evaluating every annotation string at each start.
import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ocppd import __version__
from ocppd.errors import ConfigError

DEFAULT_PATH = Path("/etc/ocppd.toml")

# Directories the package owns: the unit's StateDirectory= and RuntimeDirectory= create them at
# every start (and tmpfiles.d at boot). Whether they exist right now says whether the service
# ran, not whether a configuration is valid, so the check does not ask for them.
PACKAGE_DIRS = (Path("/var/lib/ocppd"), Path("/run/ocppd"))

# The keys an installer must set before the charger is one. The shipped file leaves both out:
# the daemon then idles in a "not configured" state instead of connecting anywhere.
IDENTITY_KEYS = ("charge_point.id", "central_system.url")


def _f(default: Any = dataclasses.MISSING, **meta: Any) -> Any:
    if isinstance(default, list | dict):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata=meta)
    return field(default=default, metadata=meta)


# --- sections -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargePointConfig:
    """[charge_point]: who this charger is (BootNotification)."""

    id: str = _f(max_len=48, doc="charge point identity, the last path segment of the URL")
    vendor: str = _f("ocppd", max_len=20)
    model: str = _f("ocppd", max_len=20)
    serial_number: str | None = _f(None, max_len=25)
    firmware_version: str = _f(__version__, max_len=50)


@dataclass(frozen=True, slots=True, kw_only=True)
class CentralSystemConfig:
    """[central_system]: where the Central System is and how to reach it securely."""

    url: str = _f(doc="ws:// or wss:// base URL; the charge point id is appended")
    security_profile: int = _f(0, lo=0, hi=3)
    password: str | None = _f(None, secret=True, doc="initial AuthorizationKey (profiles 1, 2)")
    ca_file: Path | None = _f(None)
    client_cert_file: Path | None = _f(None)
    client_key_file: Path | None = _f(None)
    insecure_skip_tls_verify: bool = _f(False)
    reconnect_min_s: float = _f(1.0, lo=0.1, hi=3600)
    reconnect_max_s: float = _f(300.0, lo=1, hi=86400)
    stable_after_s: float = _f(60.0, lo=1, hi=86400)
    response_timeout_s: float = _f(30.0, lo=1, hi=600)
    max_frame_bytes: int = _f(1_048_576, lo=1024, hi=64 * 1_048_576)
    boot_notification_on_reconnect: bool = _f(False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactorConfig:
    """[connectors.contactor]: the relays that switch power to the EV, with optional feedback."""

    pins: list[int] = _f(doc="GPIO (BCM) of each relay driving this connector's contactor")
    active_high: bool = _f(True)
    feedback_pin: int | None = _f(None)
    feedback_active_high: bool = _f(True)
    feedback_delay_ms: int = _f(100, lo=10, hi=2000)


@dataclass(frozen=True, slots=True, kw_only=True)
class LockConfig:
    """[connectors.lock]: the socket's cable lock (solenoid or motor)."""

    lock_pin: int = _f()
    unlock_pin: int | None = _f(None, doc="motor locks: the reverse direction; absent = solenoid")
    active_high: bool = _f(True)
    pulse_ms: int = _f(300, lo=10, hi=5000)
    feedback_pin: int | None = _f(None)
    feedback_active_high: bool = _f(True)


@dataclass(frozen=True, slots=True, kw_only=True)
class PilotConfig:
    """[connectors.pilot]: control-pilot PWM output and the ADC that senses it."""

    pwm: str = _f("sysfs", choices=("sysfs", "gpio"))
    pwm_pin: int = _f(18, doc="GPIO for pwm = 'gpio'")
    pwm_chip: int = _f(0, lo=0, hi=15)
    pwm_channel: int = _f(0, lo=0, hi=15)
    pwm_inverted: bool = _f(False)
    adc: str = _f("mcp3008", choices=("mcp3008", "mcp3004"))
    adc_channel: int = _f(0, lo=0, hi=7)
    adc_select_pin: int = _f(8)
    pp_adc_channel: int | None = _f(None, lo=0, hi=7, doc="proximity pilot, for cable rating")
    adc_vref_v: float = _f(3.3, lo=1.0, hi=5.5)
    # Front-end scaling: pilot volts = (adc volts - offset) * gain.
    adc_offset_v: float = _f(1.65)
    adc_gain: float = _f(7.27)
    debounce_ms: int = _f(50, lo=0, hi=2000)
    sample_interval_ms: int = _f(20, lo=1, hi=1000)


@dataclass(frozen=True, slots=True, kw_only=True)
class InputConfig:
    """A digital input (RCD trip, emergency stop): its pin and active level."""

    pin: int = _f()
    active_high: bool = _f(True)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectorConfig:
    """[[connectors]]: one charging outlet, numbered from 1 in file order."""

    max_current_a: float = _f(32.0, lo=6, hi=80)
    phases: int = _f(3, choices=(1, 3))
    cable: str = _f("socket", choices=("socket", "fixed"))
    meter: str | None = _f(None, doc="name of a [meters.NAME] table")
    contactor: ContactorConfig | None = _f(None)
    lock: LockConfig | None = _f(None)
    pilot: PilotConfig | None = _f(None)
    rcd: InputConfig | None = _f(None)


@dataclass(frozen=True, slots=True, kw_only=True)
class BusConfig:
    """[buses.NAME]: a Modbus RTU port or TCP gateway shared by meters."""

    type: str = _f(choices=("rtu", "tcp"))
    port: str | None = _f(None, doc="rtu: serial device")
    baudrate: int = _f(9600, choices=(1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200))
    parity: str = _f("N", choices=("N", "E", "O"))
    stopbits: int = _f(1, choices=(1, 2))
    host: str | None = _f(None, doc="tcp: meter or gateway address")
    tcp_port: int = _f(502, lo=1, hi=65535)
    timeout_s: float = _f(1.0, lo=0.05, hi=30)


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterConfig:
    """[meters.NAME]: an energy meter on a bus, read through a register map."""

    model: str = _f(doc="register map: a file in ocppd/hw/meters or a path to one")
    bus: str = _f(doc="name of a [buses.NAME] table")
    unit_id: int = _f(1, lo=1, hi=247)


@dataclass(frozen=True, slots=True, kw_only=True)
class RfidConfig:
    """[[rfid]]: a card reader on a serial port."""

    type: str = _f(choices=("rdm6300", "pn532"))
    port: str = _f()
    baudrate: int | None = _f(None)
    debounce_s: float = _f(2.0, lo=0, hi=60)
    id_format: str = _f("uid", choices=("uid", "full"), doc="rdm6300: 8-char tag or all 10")


@dataclass(frozen=True, slots=True, kw_only=True)
class LedConfig:
    """[hardware.leds]: the status LEDs (ready, charging, fault)."""

    ready_pin: int | None = _f(None)
    charging_pin: int | None = _f(None)
    fault_pin: int | None = _f(None)
    active_high: bool = _f(True)


@dataclass(frozen=True, slots=True, kw_only=True)
class HardwareConfig:
    """[hardware]: real board or simulator, and board-wide inputs."""

    driver: str = _f("sim", doc="a board driver: sim, gpio, evse_wb or an installed plugin")
    nominal_voltage_v: float = _f(230.0, lo=100, hi=480)
    max_current_a: float | None = _f(
        None, lo=6, hi=1000, doc="site/breaker limit for the whole charger, A per phase"
    )
    emergency_stop: InputConfig | None = _f(None)
    leds: LedConfig | None = _f(None)
    # [hardware.DRIVER]: the driver's own settings, parsed by ocppd.hw.drivers.parse_options.
    options: Any = _f(None, internal=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimConfig:
    """[sim]: the built-in simulator: the EV, its battery, the meter, the speed of time."""

    ev_max_current_a: float = _f(32.0, lo=6, hi=80)
    ev_phases: int = _f(3, choices=(1, 3))
    battery_capacity_wh: float = _f(40_000.0, lo=100, hi=250_000)
    initial_soc_pct: float = _f(50.0, lo=0, hi=100)
    target_soc_pct: float = _f(100.0, lo=1, hi=100)
    time_factor: float = _f(1.0, lo=0.01, hi=10_000, doc="energy flows this many times faster")
    # A used meter, not a new one: a Central System that sees a register at 0 may take the
    # values for session energy (Home Assistant does). 1 GWh is far beyond any EVSE meter.
    meter_start_wh: float = _f(
        2_500_000.0, lo=0, hi=1e9, doc="the simulated meter's register at the first start, Wh"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageConfig:
    """[storage]: the SQLite state file and the outbox limits."""

    path: Path = _f(Path("/var/lib/ocppd/ocppd.db"))
    move_aside_corrupt: bool = _f(False)
    outbox_max_messages: int = _f(50_000, lo=100, hi=10_000_000)
    stop_txn_data_max_samples: int = _f(1000, lo=2, hi=100_000)


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlConfig:
    """[control]: the Unix socket ocppctl talks to."""

    socket: Path = _f(Path("/run/ocppd/control.sock"))
    mode: int = _f(0o660, lo=0, hi=0o777)


# "The local network": loopback, the private IPv4 ranges (RFC 1918), link-local (RFC 3927,
# RFC 4291) and IPv6 unique local addresses (RFC 4193). Nothing routable from the Internet.
LOCAL_NETWORKS = [
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
    "::1/128", "fc00::/7", "fe80::/10",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class WebConfig:
    """[web]: the installer's web page (off unless enabled)."""

    enabled: bool = _f(False)
    listen: str = _f("0.0.0.0", doc="address to listen on; '::' for IPv6 too")
    port: int = _f(8080, lo=1, hi=65535)
    allow_from: list[str] = _f(LOCAL_NETWORKS, doc="client networks (CIDR) that may connect")
    password_file: Path = _f(Path("/var/lib/ocppd/web-password"),
                             doc="scrypt hash, written by ocppd --set-web-password")
    session_timeout_s: float = _f(900.0, lo=60, hi=86400, doc="idle time before logging out")
    cert_file: Path | None = _f(None, doc="TLS certificate (PEM); with key_file: HTTPS only")
    key_file: Path | None = _f(None)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingConfig:
    """[logging]: log level and OCPP frame logging."""

    level: str = _f("info", choices=("debug", "info", "warning", "error"))
    log_frames: bool = _f(False, doc="log every OCPP frame at debug level")


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemConfig:
    """[system]: resets, reboots, power-loss policy and firmware installation."""

    power_loss: str = _f("stop", choices=("stop", "resume"))
    soft_reset_exit_code: int = _f(75, lo=1, hi=254, doc="systemd restarts on this exit code")
    reboot_command: list[str] = _f(["/usr/bin/systemctl", "reboot"])
    firmware_install_command: list[str] = _f(["/usr/lib/ocppd/install-firmware"])
    firmware_dir: Path = _f(Path("/var/lib/ocppd/firmware"))
    set_clock_from_central_system: bool = _f(True, doc="timestamps follow currentTime")
    min_status_duration_s: float = _f(0.0, lo=0, hi=3600, doc="manufacturer minimum, added")


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityConfig:
    """[security]: firmware trust, file-transfer TLS, personal data, the security log."""

    allow_unsigned_firmware: bool = _f(False, doc="install UpdateFirmware images (no signature)")
    allow_insecure_firmware_download: bool = _f(False, doc="http:// and ftp:// for UpdateFirmware")
    transfer_ca_file: Path | None = _f(None, doc="CA for HTTPS/FTPS file servers")
    reveal_id_tags: bool = _f(False, doc="idTags in clear in logs and exports")
    security_log_max_entries: int = _f(10_000, lo=100, hi=1_000_000)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole /etc/ocppd.toml, validated."""

    charge_point: ChargePointConfig
    central_system: CentralSystemConfig
    connectors: list[ConnectorConfig] = _f([], doc="one [[connectors]] table each, numbered 1..N")
    hardware: HardwareConfig = _f(HardwareConfig())
    sim: SimConfig = _f(SimConfig())
    buses: dict[str, BusConfig] = _f({})
    meters: dict[str, MeterConfig] = _f({})
    rfid: list[RfidConfig] = _f([])
    storage: StorageConfig = _f(StorageConfig())
    control: ControlConfig = _f(ControlConfig())
    web: WebConfig = _f(WebConfig())
    logging: LoggingConfig = _f(LoggingConfig())
    system: SystemConfig = _f(SystemConfig())
    security: SecurityConfig = _f(SecurityConfig())
    ocpp: dict[str, str | int | bool | float] = _f({}, doc="initial OCPP configuration keys")
    source: Path | None = _f(None, internal=True)
    # False while the installer has set neither of IDENTITY_KEYS (the shipped file).
    configured: bool = _f(True, internal=True)


# --- loading ------------------------------------------------------------------------------------


def load(path: Path = DEFAULT_PATH) -> Config:
    """Read and validate ``path``. Raises ConfigError with one line per problem."""
    try:
        raw = path.read_bytes()
    except PermissionError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}{_who_may_read(path)}"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: TOML syntax error: {exc}"]) from None
    return from_dict(data, source=path)


def _who_may_read(path: Path) -> str:
    """A hint for a file the caller may not read: as installed, root and group ocppd may."""
    import grp

    try:
        group = grp.getgrgid(path.stat().st_gid).gr_name
    except (OSError, KeyError):
        return " (run it as root: sudo ocppd --check-config)"
    return f" (readable by root and group {group} only: use sudo, or join group {group})"


# Stand-ins for IDENTITY_KEYS in a configuration that does not have them yet; never used to
# connect (the daemon does not start a charger while ``configured`` is false).
_UNCONFIGURED = {"charge_point": {"id": "-"}, "central_system": {"url": "ws://unconfigured.invalid"}}


def _fill_identity(data: dict[str, Any]) -> bool:
    """True (and placeholders filled in) when none of IDENTITY_KEYS is set."""
    tables = [data.get(t) for t in _UNCONFIGURED]
    if any(t is not None and not isinstance(t, dict) for t in tables):
        return False  # reported as a type error by the loader
    if any(key in (data.get(t) or {}) for t, keys in _UNCONFIGURED.items() for key in keys):
        return False  # one set, the other missing: "required key is missing" names it
    for table, keys in _UNCONFIGURED.items():
        data[table] = {**(data.get(table) or {}), **keys}
    return True


def from_dict(data: dict[str, Any], *, source: Path | None = None) -> Config:
    problems: list[str] = []
    where = str(source) if source else "<config>"
    data, driver_table = _split_driver_table(dict(data))
    unconfigured = _fill_identity(data)
    value = _convert(Config, data, "", problems, where)
    if not problems:
        assert isinstance(value, Config)
        value = dataclasses.replace(value, source=source, configured=not unconfigured)
        _cross_checks(value, problems, where)
    # The driver's own table, by the driver's own schema (ocppd.hw.drivers), reported together
    # with the rest; its checks across tables need the rest to be valid first.
    hw = data.get("hardware")
    name = hw.get("driver", "sim") if isinstance(hw, dict) else "sim"
    if isinstance(name, str):
        from ocppd.hw import drivers

        valid = value if not problems and isinstance(value, Config) else None
        options = drivers.parse_options(name, driver_table, valid, problems, where)
        if valid is not None and not problems:
            hardware = dataclasses.replace(valid.hardware, options=options)
            value = dataclasses.replace(valid, hardware=hardware)
    if problems:
        raise ConfigError(problems)
    assert isinstance(value, Config)
    return value


def _split_driver_table(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Take ``[hardware.DRIVER]`` out of [hardware]: its keys belong to the driver's schema."""
    hw = data.get("hardware")
    if not isinstance(hw, dict):
        return data, None
    name = hw.get("driver", "sim")
    own_keys = {f.name for f in dataclasses.fields(HardwareConfig)}
    if not isinstance(name, str) or name in own_keys or not isinstance(hw.get(name), dict):
        return data, None
    rest = {k: v for k, v in hw.items() if k != name}
    return {**data, "hardware": rest}, hw[name]


def _cross_checks(cfg: Config, problems: list[str], where: str) -> None:
    def bad(key: str, msg: str) -> None:
        problems.append(f"{where}: {key}: {msg}")

    url = urlsplit(cfg.central_system.url)
    profile = cfg.central_system.security_profile
    if url.scheme not in ("ws", "wss") or not url.hostname:
        bad(
            "central_system.url",
            f"must be ws://host[:port]/path or wss://..., got {url.geturl()!r}",
        )
    elif profile >= 2 and url.scheme != "wss":
        bad("central_system.url", f"security_profile {profile} needs a wss:// URL")
    elif profile < 2 and url.scheme != "ws":
        bad("central_system.url", f"security_profile {profile} uses ws://; use 2 or 3 for wss://")
    if profile in (1, 2) and not cfg.central_system.password:
        bad("central_system.password", f"security_profile {profile} needs a password")
    if profile == 3 and not (
        cfg.central_system.client_cert_file and cfg.central_system.client_key_file
    ):
        bad(
            "central_system.client_cert_file",
            "security_profile 3 needs client_cert_file and client_key_file",
        )
    pw = cfg.central_system.password
    if pw is not None and not 16 <= len(pw.encode()) <= 40:
        bad("central_system.password", "must be 16 to 40 bytes (OCPP AuthorizationKey)")
    for key in ("ca_file", "client_cert_file", "client_key_file"):
        p = getattr(cfg.central_system, key)
        if p is not None and not p.is_file():
            bad(f"central_system.{key}", f"no such file: {p}")
    p = cfg.security.transfer_ca_file
    if p is not None and not p.is_file():
        bad("security.transfer_ca_file", f"no such file: {p}")
    if cfg.central_system.reconnect_min_s > cfg.central_system.reconnect_max_s:
        bad("central_system.reconnect_min_s", "is larger than reconnect_max_s")
    if not cfg.connectors:
        bad("connectors", "at least one [[connectors]] table is required")
    for i, conn in enumerate(cfg.connectors):
        key = f"connectors[{i + 1}]"
        if conn.meter is not None and conn.meter not in cfg.meters:
            bad(f"{key}.meter", f"no [meters.{conn.meter}] table")
        if cfg.hardware.driver == "gpio":
            if conn.contactor is None:
                bad(f"{key}.contactor", "required with hardware.driver = 'gpio'")
            if conn.pilot is None:
                bad(f"{key}.pilot", "required with hardware.driver = 'gpio'")
            if conn.meter is None:
                bad(f"{key}.meter", "required with hardware.driver = 'gpio'")
        if conn.cable == "fixed" and conn.lock is not None:
            bad(f"{key}.lock", "a fixed cable has no lock")
    for name, meter in cfg.meters.items():
        if meter.bus not in cfg.buses:
            bad(f"meters.{name}.bus", f"no [buses.{meter.bus}] table")
    for name, bus in cfg.buses.items():
        if bus.type == "rtu" and not bus.port:
            bad(f"buses.{name}.port", "required for type = 'rtu'")
        if bus.type == "tcp" and not bus.host:
            bad(f"buses.{name}.host", "required for type = 'tcp'")
    if not cfg.system.reboot_command:
        bad("system.reboot_command", "must not be empty")
    if len(str(cfg.control.socket).encode()) > 107:  # sockaddr_un.sun_path holds 108 bytes
        bad("control.socket", "path longer than 107 bytes (a Unix socket limit)")
    for key, path in (("control.socket", cfg.control.socket), ("storage.path", cfg.storage.path)):
        problem = _directory_problem(path.parent)
        if problem:
            bad(key, problem)
    _check_web(cfg.web, bad)


def _directory_problem(directory: Path) -> str | None:
    """Why the daemon could not use ``directory``; None when it can or the package makes it."""
    if any(directory == d or d in directory.parents for d in PACKAGE_DIRS):
        return None  # created at start (the daemon makes subdirectories of them itself)
    try:
        if directory.is_dir():
            return None
        directory.stat()
    except PermissionError:
        return f"directory {directory}: permission denied (run the check with sudo)"
    except OSError:
        pass
    return f"directory {directory} does not exist"


def _check_web(web: WebConfig, bad: Any) -> None:
    import ipaddress

    for i, net in enumerate(web.allow_from):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            bad(f"web.allow_from[{i}]", f"not a network in CIDR notation: {net!r}")
    try:
        ipaddress.ip_address(web.listen)
    except ValueError:
        bad("web.listen", f"not an IP address: {web.listen!r}")
    if (web.cert_file is None) != (web.key_file is None):
        bad("web.cert_file" if web.cert_file is None else "web.key_file",
            "cert_file and key_file go together")
    for key, path in (("web.cert_file", web.cert_file), ("web.key_file", web.key_file)):
        if web.enabled and path is not None and not path.is_file():
            bad(key, f"{path} does not exist")


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _describe(tp: Any) -> str:
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    if tp is Path:
        return "a path string"
    origin = typing.get_origin(tp)
    if origin is list:
        return "an array"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


def _convert(tp: Any, value: Any, key: str, problems: list[str], where: str) -> Any:  # noqa: C901
    """Convert one TOML value to ``tp``; on failure append a problem and return None."""

    def bad(msg: str) -> None:
        problems.append(f"{where}: {key or '<top level>'}: {msg}")

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _convert(args[0], value, key, problems, where)
        for arg in args:  # scalar unions (the [ocpp] table): first type that matches exactly
            if arg is bool and isinstance(value, bool):
                return value
            if arg is not bool and isinstance(value, arg) and not isinstance(value, bool):
                return value
        bad(f"must be one of {', '.join(_describe(a) for a in args)}")
        return None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            bad(f"must be {_describe(tp)}, got {type(value).__name__}")
            return None
        kwargs: dict[str, Any] = {}
        fields = {f.name: f for f in dataclasses.fields(tp) if not f.metadata.get("internal")}
        for name in value:
            if name not in fields:
                close = [n for n in fields if n.lower() == name.lower() or n.startswith(name[:4])]
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"{where}: {_join(key, name)}: unknown key{hint}")
        for name, f in fields.items():
            sub = _join(key, name)
            if name not in value:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    problems.append(f"{where}: {sub}: required key is missing")
                continue
            converted = _convert(f.type, value[name], sub, problems, where)
            if converted is not None:
                _check_meta(f.metadata, converted, sub, problems, where)
                kwargs[name] = converted
        try:
            return tp(**kwargs)  # type: ignore[operator]
        except TypeError:
            return None  # a required key was missing; already reported
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            bad(f"must be an array, got {type(value).__name__}")
            return None
        items = [
            _convert(item_tp, v, f"{key}[{i + 1}]", problems, where) for i, v in enumerate(value)
        ]
        return items if all(i is not None for i in items) else None
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            bad(f"must be a table, got {type(value).__name__}")
            return None
        out = {k: _convert(val_tp, v, _join(key, k), problems, where) for k, v in value.items()}
        return out if all(v is not None for v in out.values()) else None
    if tp is Path:
        if not isinstance(value, str) or not value:
            bad("must be a non-empty path string")
            return None
        return Path(value)
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        bad(f"must be a number, got {_show(value)}")
        return None
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        bad(f"must be an integer, got {_show(value)}")
        return None
    if tp is bool:
        if isinstance(value, bool):
            return value
        bad(f"must be true or false, got {_show(value)}")
        return None
    if tp is str:
        if isinstance(value, str):
            return value
        bad(f"must be a string, got {_show(value)}")
        return None
    raise TypeError(f"config schema: unsupported type {tp!r} at {key}")  # pragma: no cover


def _check_meta(meta: Any, value: Any, key: str, problems: list[str], where: str) -> None:
    shown = "<secret>" if meta.get("secret") else _show(value)
    if "choices" in meta and value not in meta["choices"]:
        choices = ", ".join(repr(c) for c in meta["choices"])
        problems.append(f"{where}: {key}: must be one of {choices}, got {shown}")
    if "lo" in meta and isinstance(value, int | float) and value < meta["lo"]:
        problems.append(f"{where}: {key}: must be at least {meta['lo']}, got {shown}")
    if "hi" in meta and isinstance(value, int | float) and value > meta["hi"]:
        problems.append(f"{where}: {key}: must be at most {meta['hi']}, got {shown}")
    if "max_len" in meta and isinstance(value, str):
        if len(value) > meta["max_len"]:
            problems.append(
                f"{where}: {key}: at most {meta['max_len']} characters, got {len(value)}"
            )
        if not value:
            problems.append(f"{where}: {key}: must not be empty")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
