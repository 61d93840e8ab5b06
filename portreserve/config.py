"""Reading /etc/portreserve and /etc/services.

Pure standard library: the generator imports this at every boot and every
daemon-reload.  Nothing in here raises for bad input; problems are collected as
ConfigError values so that one bad line never costs the other reservations.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Iterable
from pathlib import Path

SYSTEM_CONFIG_DIRS = (Path("/usr/lib/portreserve"), Path("/etc/portreserve"))
SERVICES_FILE = Path("/etc/services")

# A range line may name at most this many ports: a typo like 1-65535 should not
# turn into 131070 socket units.
MAX_RANGE = 4096


class Proto(enum.StrEnum):
    TCP = "tcp"
    UDP = "udp"


# Value types are tuple subclasses rather than dataclasses or NamedTuples:
# the generator runs at every boot and daemon-reload, and dataclasses and
# typing would add 8 ms of imports to it.  Being tuples they compare and hash
# by value, and a Port equals the plain (number, "tcp") tuples portrelease uses.


class Port(tuple[int, Proto]):
    __slots__ = ()

    def __new__(cls, number: int, proto: Proto) -> Port:
        return super().__new__(cls, (number, proto))

    @property
    def number(self) -> int:
        return self[0]

    @property
    def proto(self) -> Proto:
        return self[1]

    def __str__(self) -> str:
        return f"{self[0]}/{self[1]}"

    def __repr__(self) -> str:
        return f"Port({self[0]}, {self[1]!r})"


class ConfigError(tuple[Path, int | None, str]):
    """One problem in the configuration: file, line (None: the whole file), what."""

    __slots__ = ()

    def __new__(cls, path: Path, line: int | None, message: str) -> ConfigError:
        return super().__new__(cls, (path, line, message))

    @property
    def path(self) -> Path:
        return self[0]

    @property
    def line(self) -> int | None:
        return self[1]

    @property
    def message(self) -> str:
        return self[2]

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.message}"


class Reservation(tuple[str, tuple[Port, ...], Path]):
    """All ports one config file (one service name) asks to hold."""

    __slots__ = ()

    def __new__(cls, name: str, ports: tuple[Port, ...], source: Path) -> Reservation:
        return super().__new__(cls, (name, ports, source))

    @property
    def name(self) -> str:
        return self[0]

    @property
    def ports(self) -> tuple[Port, ...]:
        return self[1]

    @property
    def source(self) -> Path:
        return self[2]


class Config:
    def __init__(self, reservations: list[Reservation] | None = None, errors: list[ConfigError] | None = None) -> None:
        self.reservations: list[Reservation] = reservations if reservations is not None else []
        self.errors: list[ConfigError] = errors if errors is not None else []

    def owners(self) -> dict[Port, list[Reservation]]:
        """Every reserved port with the reservations that list it, in port order."""
        result: dict[Port, list[Reservation]] = {}
        for reservation in self.reservations:
            for port in reservation.ports:
                result.setdefault(port, []).append(reservation)
        return dict(sorted(result.items()))


Services = dict[str, dict[Proto, int]]


def parse_services(text: str) -> Services:
    """Parse services(5): ``name port/proto [aliases...] [# comment]``.

    The first entry for a name and protocol wins, as with getservbyname(3).
    """
    services: Services = {}
    for raw in text.splitlines():
        fields = raw.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        number, _, proto = fields[1].partition("/")
        if not number.isdigit():
            continue
        for name in (fields[0], *fields[2:]):
            ports = services.setdefault(name, {})  # {}: known, but not for tcp or udp (ddp, sctp)
            if proto in ("tcp", "udp"):
                ports.setdefault(Proto(proto), int(number))
    return services


def load_services(path: Path = SERVICES_FILE) -> Services:
    # Read the file directly, once: getservbyname() rescans it per call and may
    # go through NSS (sssd, LDAP), which a generator must never do.
    try:
        return parse_services(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return {}


def parse_range(spec: str) -> tuple[int, int] | None:
    low, dash, high = spec.partition("-")
    if dash and low.isdigit() and high.isdigit() and low.isascii() and high.isascii():
        return int(low), int(high)
    return None


def parse_entry(entry: str, services: Services) -> tuple[list[Port], str | None]:
    """Turn one config entry into ports, or an error message.

    SERVICE, PORT, LOW-HIGH, each optionally followed by /tcp or /udp.
    """
    spec, slash, proto_text = entry.partition("/")
    protos: tuple[Proto, ...]
    if slash:
        try:
            protos = (Proto(proto_text.lower()),)
        except ValueError:
            return [], f"unknown protocol '{proto_text}' (expected tcp or udp)"
    else:
        protos = (Proto.TCP, Proto.UDP)

    bounds = parse_range(spec) or ((int(spec), int(spec)) if spec.isdigit() and spec.isascii() else None)
    if bounds:
        low, high = bounds
        for number in (low, high):
            if not 1 <= number <= 65535:
                return [], f"port {number} out of range (1-65535)"
        if low > high:
            return [], f"range {spec} is reversed"
        if high - low + 1 > MAX_RANGE:
            return [], f"range {spec} spans more than {MAX_RANGE} ports"
        return [Port(n, p) for n in range(low, high + 1) for p in protos], None

    if not spec:
        return [], "empty service name"
    defined = services.get(spec)
    if defined is None:
        return [], f"unknown service '{spec}' (not in /etc/services)"
    if not defined:
        return [], f"service '{spec}' is in /etc/services only for protocols other than tcp and udp"
    if slash:
        if protos[0] not in defined:
            return [], f"service '{spec}' is not defined for {protos[0]} in /etc/services"
        return [Port(defined[protos[0]], protos[0])], None
    # No suffix: every protocol the name is defined for.
    return [Port(defined[p], p) for p in protos if p in defined], None


UNPRIVILEGED_PORT_START = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")


def unprivileged_port_start() -> int:
    """The lowest port an unprivileged process (a user manager) may bind."""
    try:
        return int(UNPRIVILEGED_PORT_START.read_text())
    except (OSError, ValueError):
        return 1024


def parse_file(path: Path, data: bytes, services: Services, lowest: int = 1) -> tuple[list[Port], list[ConfigError]]:
    ports: list[Port] = []
    errors: list[ConfigError] = []
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            errors.append(ConfigError(path, lineno, "not valid UTF-8, ignoring line"))
            continue
        # Real files carry CRLF line ends, trailing blanks and tabs.
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if len(line.split()) > 1:
            errors.append(ConfigError(path, lineno, f"expected one entry per line, got '{line}'"))
            continue
        found, message = parse_entry(line, services)
        if not message and any(p.number < lowest for p in found):
            found, message = (
                [],
                (f"'{line}' is below net.ipv4.ip_unprivileged_port_start ({lowest}): a user manager cannot bind it"),
            )
        if message:
            errors.append(ConfigError(path, lineno, message + ", ignoring line"))
        for port in found:
            if port not in ports:
                ports.append(port)
    return ports, errors


def is_config_name(name: str) -> bool:
    # The original's rule: names with '.' or '~' are backups, package-manager
    # leftovers (.rpmnew, .dpkg-old) or editor files.  Hidden files too.
    return bool(name) and "." not in name and "~" not in name


def config_files(dirs: Iterable[Path]) -> tuple[dict[str, Path], list[ConfigError]]:
    """The file to read for every name: later directories override earlier ones.

    A file that is a symlink to /dev/null masks the name.
    """
    chosen: dict[str, Path] = {}
    errors: list[ConfigError] = []
    for directory in dirs:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            continue
        except OSError as e:
            errors.append(ConfigError(directory, None, f"cannot list directory: {e.strerror}"))
            continue
        for name in names:
            if is_config_name(name):
                chosen[name] = directory / name
    masked = [name for name, path in chosen.items() if os.path.islink(path) and os.path.realpath(path) == "/dev/null"]
    for name in masked:
        del chosen[name]
    return dict(sorted(chosen.items())), errors


def read_regular_file(path: Path) -> bytes:
    # A FIFO or device here would hang or flood the generator: open without
    # blocking and insist on a regular file before reading.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(21, "is a directory")
        if not stat.S_ISREG(mode):
            raise OSError(0, "not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def load_config(dirs: Iterable[Path] = SYSTEM_CONFIG_DIRS, services: Services | None = None, lowest: int = 1) -> Config:
    """Every reservation in dirs; lowest: the lowest port that may be reserved
    (for a user manager, net.ipv4.ip_unprivileged_port_start)."""
    files, errors = config_files(dirs)
    config = Config(errors=errors)
    if services is None:
        services = load_services()
    for name, path in files.items():
        try:
            data = read_regular_file(path)
        except IsADirectoryError:
            config.errors.append(ConfigError(path, None, "is a directory, ignoring"))
            continue
        except OSError as e:
            config.errors.append(ConfigError(path, None, f"cannot read: {e.strerror}, ignoring"))
            continue
        ports, line_errors = parse_file(path, data, services, lowest)
        config.errors.extend(line_errors)
        config.reservations.append(Reservation(name, tuple(ports), path))
    return config
