"""Reading /etc/portreserve and /etc/services.

The generator imports this at every boot and every daemon-reload, before
systemd loads any unit: it imports nothing but os and stat (no pathlib, enum,
re or collections: together they cost the generator more than its work).

Nothing in here raises for bad input, and no input costs more than linear time
and bounded memory: problems are collected as ConfigError values, so that one
bad line or file never costs the other reservations.
"""

from __future__ import annotations

import os
import stat

from . import names
from .paths import SERVICES_FILE, SYSTEM_CONFIG_DIRS

# Host-wide settings (dropins.read_settings), in each configuration directory
# (later ones win); the original ignores the file, its name having a '.'.
SETTINGS_FILE = "portreserve.conf"

# Without importing typing (or collections.abc) at run time: mypy and ruff take
# any `if TYPE_CHECKING:` as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    Dirs = Iterable[str | os.PathLike[str]]


# A range line may name at most this many ports: a typo like 1-65535 should not
# turn into 131070 socket units.
MAX_RANGE = 4096
# Reserved sockets (port and protocol) of one host, all names together.  Boot
# time grows faster than linearly with them: systemd 252 binds every socket in
# a helper forked from PID 1, which grows with every unit.  Measured
# (benchmarks/socket_cap.py, README "Configuration"): sockets.target after
# 4.7 s with 1000 sockets, 17 s with 2000, 87 s with 4000 - by then every
# socket unit is close to its 90 s start timeout.  2048 keeps a boot well
# inside it.  (The holder receives them all in one exec: 17 bytes each in
# $LISTEN_FDNAMES, which fails with 203/EXEC beyond 128 KiB, about 7700.)
MAX_SOCKETS = 2048
# Bytes read from one configuration file, and from /etc/services (Debian's is
# 13 KiB).  1 MiB is 100 000 lines of 'NNNNN/tcp', far beyond the host cap; a
# file of 1 MiB of bad lines still costs the generator about 3 s.
MAX_FILE_SIZE = 1 << 20
MAX_SERVICES_SIZE = 4 << 20
# Problems listed one by one per file; beyond that one line counts the rest
# (2 million bad lines would take 500 MB as messages).
MAX_PROBLEMS_PER_FILE = 1000
# Characters of an entry or a name quoted in a message.
MAX_QUOTE = 60
UNIT_NAME_MAX = 255  # systemd's UNIT_NAME_MAX - 1 for the NUL

TCP = "tcp"
UDP = "udp"


# Value types are plain str and tuple subclasses rather than enums,
# dataclasses or NamedTuples: the generator runs at every boot and
# daemon-reload, and enum, dataclasses and typing would cost it more in
# imports than it spends on its work.  Tuples compare and hash by value, so a
# Port equals the plain (number, "tcp") tuples portrelease and the holder use.


class Proto(str):
    """'tcp' or 'udp'; Proto('sctp') raises ValueError, like the enum it was."""

    __slots__ = ()
    TCP: Proto
    UDP: Proto

    def __new__(cls, value: str) -> Proto:
        member = _PROTOS.get(value)
        if member is None:
            raise ValueError(f"{value!r} is not a valid Proto")
        return member

    @property
    def value(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"Proto.{str.__str__(self).upper()}"


_PROTOS: dict[str, Proto] = {}
for _value in (TCP, UDP):
    _PROTOS[_value] = str.__new__(Proto, _value)
Proto.TCP = _PROTOS[TCP]
Proto.UDP = _PROTOS[UDP]
BOTH = (Proto.TCP, Proto.UDP)


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


def printable(text: str) -> str:
    """Text safe for a log line, a terminal and a unit file: bytes that are not
    UTF-8 (surrogate escapes) and control characters become \\xNN."""
    if text.isprintable() and text.isascii():
        return text
    out = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code < 0xE000:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def quote(text: str) -> str:
    """An entry or name in a message: printable, and at most MAX_QUOTE characters."""
    if len(text) > MAX_QUOTE:
        text = f"{text[: MAX_QUOTE - 20]}...({len(text)} characters)"
    return f"'{printable(text)}'"


ERROR = "error"
WARNING = "warning"


class ConfigError(tuple[str, int | None, str, str]):
    """One problem in the configuration: file, line (None: the whole file),
    what, and how bad ("error": something was not reserved; "warning": all
    that was asked for is reserved, but something is off)."""

    __slots__ = ()

    def __new__(
        cls, path: str | os.PathLike[str], line: int | None, message: str, severity: str = ERROR
    ) -> ConfigError:
        return super().__new__(cls, (os.fspath(path), line, message, severity))

    @property
    def path(self) -> str:
        return self[0]

    @property
    def line(self) -> int | None:
        return self[1]

    @property
    def message(self) -> str:
        return self[2]

    @property
    def severity(self) -> str:
        return self[3]

    def __str__(self) -> str:
        where = printable(self.path) if self.line is None else f"{printable(self.path)}:{self.line}"
        return f"{where}: {self.message}"


# Marks a comment line that may carry settings for the generator's drop-ins
# ("# portreserve: unit=slapd", dropins.py); the original reads it as a comment.
DIRECTIVE_MARK = b"portreserve:"

Notes = tuple[tuple[int, bytes], ...]


def directive_lines(data: bytes) -> Notes:
    """(line number, line) of every comment line that mentions DIRECTIVE_MARK:
    kept from the one read of the file, so that the ports and the drop-in
    settings come from the same version of it."""
    if DIRECTIVE_MARK not in data:
        return ()
    return tuple(
        (n, line)
        for n, line in enumerate(data.split(b"\n"), start=1)
        if DIRECTIVE_MARK in line and line.lstrip().startswith(b"#")
    )


class Reservation(tuple[str, tuple[Port, ...], str, Notes]):
    """All ports one config file (one service name) asks to hold, and the
    file's directive lines (directive_lines)."""

    __slots__ = ()

    def __new__(
        cls, name: str, ports: tuple[Port, ...], source: str | os.PathLike[str], notes: Notes = ()
    ) -> Reservation:
        return super().__new__(cls, (name, ports, os.fspath(source), notes))

    @property
    def name(self) -> str:
        return self[0]

    @property
    def ports(self) -> tuple[Port, ...]:
        return self[1]

    @property
    def source(self) -> str:
        return self[2]

    @property
    def notes(self) -> Notes:
        return self[3]


class Config:
    def __init__(self, reservations: list[Reservation] | None = None, errors: list[ConfigError] | None = None) -> None:
        self.reservations: list[Reservation] = reservations if reservations is not None else []
        self.errors: list[ConfigError] = errors if errors is not None else []
        # SETTINGS_FILE of each directory that lists one, lowest priority first.
        self.settings: list[str] = []

    def ports_by_name(self) -> dict[str, list[tuple[int, str]]]:
        """{name: its ports as plain (number, "tcp"|"udp") tuples}, as the map
        has them (names.Port): what the holder and portrelease work with."""
        return {r.name: [(p.number, str(p.proto)) for p in r.ports] for r in self.reservations}

    def owners(self) -> dict[Port, list[Reservation]]:
        """Every reserved port with the reservations that list it, in port order."""
        result: dict[Port, list[Reservation]] = {}
        for reservation in self.reservations:
            for port in reservation.ports:
                if port in result:
                    result[port].append(reservation)
                else:
                    result[port] = [reservation]
        return dict(sorted(result.items()))


Services = dict[str, dict[Proto, int]]


class UnreadableServices(dict[str, dict[Proto, int]]):
    """No services(5) file: no name resolves, and every line that names a
    service says why rather than calling the name unknown."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__()
        self.path = path
        self.reason = reason


# Above every port, and what a number of more digits than any port has reads
# as: int() refuses strings over 4300 digits (ValueError since Python 3.11),
# and no port needs more than 5.
TOO_BIG = 1 << 20


def number_of(text: str) -> int | None:
    """The value of a string of ASCII digits (TOO_BIG for anything over 6
    significant digits), None for anything else."""
    if not (text.isdigit() and text.isascii()):
        return None
    significant = text.lstrip("0")
    return int(significant or "0") if len(significant) <= 6 else TOO_BIG


def parse_services(text: str) -> Services:
    """Parse services(5): ``name port/proto [aliases...] [# comment]``.

    The first entry for a name and protocol wins, as with getservbyname(3).
    Port numbers are kept as they are (up to TOO_BIG) and checked where used.
    """
    services: Services = {}
    for raw in text.splitlines():
        fields = raw.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        number_text, _, proto = fields[1].partition("/")
        number = number_of(number_text)
        if number is None:
            continue
        member = _PROTOS.get(proto)
        for name in (fields[0], *fields[2:]):
            ports = services.get(name)
            if ports is None:
                ports = services[name] = {}  # {}: known, but not for tcp or udp (ddp, sctp)
            if member is not None and member not in ports:
                ports[member] = number
    return services


def read_services(path: str | os.PathLike[str] = SERVICES_FILE) -> tuple[Services, list[ConfigError]]:
    """services(5), read directly and once: getservbyname() rescans the file per
    call and may go through NSS (sssd, LDAP), which a generator must never do."""
    path = os.fspath(path)
    try:
        data, truncated = read_regular_file(path, MAX_SERVICES_SIZE)
    except OSError as e:
        reason = f"cannot read: {e.strerror or e}"
        message = f"{reason}; only port numbers can be reserved, no service names"
        # A warning: each line that names a service is an error of its own.
        return UnreadableServices(path, reason), [ConfigError(path, None, message, WARNING)]
    errors = []
    if truncated:
        errors.append(
            ConfigError(
                path, None, f"larger than {MAX_SERVICES_SIZE} bytes: names defined after that are not known", WARNING
            )
        )
    return parse_services(data.decode("utf-8", "replace")), errors


def load_services(path: str | os.PathLike[str] = SERVICES_FILE) -> Services:
    """services(5); an empty table when it cannot be read."""
    return read_services(path)[0]


def parse_entry(entry: str, services: Services) -> tuple[list[Port], str | None]:
    """Turn one config entry into ports, or an error message.

    SERVICE, PORT, LOW-HIGH, each optionally followed by /tcp or /udp.
    """
    spec, slash, proto_text = entry.partition("/")
    protos: tuple[Proto, ...] = BOTH
    if slash:
        member = _PROTOS.get(proto_text.lower())
        if member is None:
            return [], f"unknown protocol {quote(proto_text)} (expected tcp or udp)"
        protos = (member,)

    if spec.isdigit() or ("-" in spec and spec.replace("-", "").isdigit()) or spec.strip("-") == "":
        if spec == "":
            return [], "empty service name"
        parts = spec.split("-")
        bounds = [number_of(p) for p in parts]
        if len(bounds) > 2 or None in bounds:
            return [], f"malformed port or range {quote(spec)} (expected PORT or LOW-HIGH)"
        low, high = bounds[0] or 0, bounds[-1] or 0
        for number, text in ((low, parts[0]), (high, parts[-1])):
            if not 1 <= number <= 65535:
                shown = quote(text) if number == TOO_BIG else str(number)
                return [], f"port {shown} out of range (1-65535)"
        if low > high:
            return [], f"range {quote(spec)} is reversed"
        if high - low + 1 > MAX_RANGE:
            return [], f"range {quote(spec)} spans more than {MAX_RANGE} ports"
        return [Port(n, p) for n in range(low, high + 1) for p in protos], None

    defined = services.get(spec)
    if defined is None:
        if isinstance(services, UnreadableServices):
            return [], f"cannot look up service {quote(spec)}: {services.path}: {services.reason}"
        return [], f"unknown service {quote(spec)} (not in /etc/services)"
    if not defined:
        return [], f"service {quote(spec)} is in /etc/services only for protocols other than tcp and udp"
    for proto in protos:
        defined_number = defined.get(proto)
        if defined_number is not None and not 1 <= defined_number <= 65535:
            shown = "a number too long" if defined_number == TOO_BIG else str(defined_number)
            return [], f"service {quote(spec)} has port {shown} for {proto} in /etc/services: out of range (1-65535)"
    if slash:
        if protos[0] not in defined:
            return [], f"service {quote(spec)} is not defined for {protos[0]} in /etc/services"
        return [Port(defined[protos[0]], protos[0])], None
    # No suffix: every protocol the name is defined for.
    return [Port(defined[p], p) for p in protos if p in defined], None


UNPRIVILEGED_PORT_START = "/proc/sys/net/ipv4/ip_unprivileged_port_start"


def unprivileged_port_start() -> int:
    """The lowest port an unprivileged process (a user manager) may bind."""
    try:
        with open(UNPRIVILEGED_PORT_START, "rb") as f:
            return int(f.read(32))
    except (OSError, ValueError):
        return 1024


class Budget:
    """The sockets of the whole host, against MAX_SOCKETS."""

    def __init__(self, limit: int = MAX_SOCKETS) -> None:
        self.limit = limit
        self.taken: set[Port] = set()


def parse_file(
    path: str | os.PathLike[str],
    data: bytes,
    services: Services,
    lowest: int = 1,
    budget: Budget | None = None,
) -> tuple[list[Port], list[ConfigError]]:
    path = os.fspath(path)
    ports: list[Port] = []
    seen: set[Port] = set()
    errors: list[ConfigError] = []
    unlisted = 0
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        message: str | None
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line, message = "", "not valid UTF-8"
        else:
            # Real files carry CRLF line ends, trailing blanks and tabs.
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            message = None
        found: list[Port] = []
        if message is None and len(line.split(None, 1)) > 1:
            message = f"expected one entry per line, got {quote(line)}"
        if message is None:
            found, message = parse_entry(line, services)
        if message is None and lowest > 1 and any(p.number < lowest for p in found):
            found = []
            message = (
                f"{quote(line)} is below net.ipv4.ip_unprivileged_port_start ({lowest}): a user manager cannot bind it"
            )
        if message is None and budget is not None:
            new = [p for p in found if p not in budget.taken]
            if len(budget.taken) + len(new) > budget.limit:
                total = len(budget.taken) + len(new)
                found = []
                message = (
                    f"would make {total} reserved sockets (port and protocol) on this host, "
                    f"more than the limit of {budget.limit}"
                )
            else:
                budget.taken.update(new)
        if message is not None:
            if len(errors) < MAX_PROBLEMS_PER_FILE:
                errors.append(ConfigError(path, lineno, message + ", ignoring line"))
            else:
                unlisted += 1
            continue
        for port in found:
            if port not in seen:
                seen.add(port)
                ports.append(port)
    if unlisted:
        errors.append(ConfigError(path, None, f"{unlisted} more lines ignored for problems not listed"))
    return ports, errors


def is_config_name(name: str) -> bool:
    # The original's rule: names with '.' or '~' are backups, package-manager
    # leftovers (.rpmnew, .dpkg-old) or editor files.  Hidden files too.
    return bool(name) and "." not in name and "~" not in name


def name_problem(name: str) -> str | None:
    """Why a file name cannot be a reservation name, or None.

    A name must survive unchanged as a unit name (escaped), in the generator's
    map, in the control protocol (UTF-8 text) and on portrelease's command
    line: so it must be UTF-8 without control characters, and short enough
    for a unit name.  Blanks, also leading and trailing ones, are fine.
    """
    if not (name.isascii() and name.isprintable()):
        for char in name:
            code = ord(char)
            if 0xD800 <= code < 0xE000:  # bytes that are not UTF-8, as os.listdir() escapes them
                return "file name is not valid UTF-8"
            if code < 0x20 or 0x7F <= code < 0xA0:
                return "file name contains control characters"
    if name == "*":
        return "'*' stands for every name in portrelease"
    unit = names.group_unit(name)
    if len(unit) > UNIT_NAME_MAX:
        return f"file name too long: its unit name would be {len(unit)} characters (at most {UNIT_NAME_MAX})"
    return None


def config_files(dirs: Dirs, required: bool = False) -> tuple[dict[str, str], list[str], list[ConfigError]]:
    """The file to read for every name: later directories override earlier ones;
    and the SETTINGS_FILE of each directory that has one, in directory order.

    A file that is a symlink to /dev/null masks the name.  required: a
    directory that does not exist is a problem (it was given explicitly).
    """
    chosen: dict[str, tuple[str, bool]] = {}
    settings: list[str] = []
    errors: list[ConfigError] = []
    for entry in dirs:
        directory = os.fspath(entry)
        try:
            # scandir: whether an entry is a symlink comes with the listing.
            with os.scandir(directory) as listing:
                found = [(e.name, e.path, e.is_symlink()) for e in listing]
        except FileNotFoundError:
            if required:
                errors.append(ConfigError(directory, None, "no such directory"))
            continue
        except OSError as e:
            errors.append(ConfigError(directory, None, f"cannot list directory: {e.strerror or e}"))
            continue
        for name, path, link in found:
            if is_config_name(name):
                chosen[name] = (path, link)
            elif name == SETTINGS_FILE:
                settings.append(path)
    result: dict[str, str] = {}
    for name in sorted(chosen):
        path, link = chosen[name]
        if link and os.path.realpath(path) == "/dev/null":
            continue
        problem = name_problem(name)
        if problem is not None:
            errors.append(ConfigError(path, None, f"{problem}, ignoring file"))
            continue
        result[name] = path
    return result, settings, errors


def read_regular_file(path: str | os.PathLike[str], limit: int = MAX_FILE_SIZE) -> tuple[bytes, bool]:
    """(up to limit bytes, whether there was more).  Raises OSError."""
    # A FIFO or device here would hang or flood the generator, and opening
    # some devices acts (a watchdog starts counting): insist on a regular file
    # before opening it, and open without blocking all the same.
    status = os.stat(path)
    mode = status.st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(21, "is a directory")
    if not stat.S_ISREG(mode):
        raise OSError(0, "not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        # os.read() of about the file's size: a buffered read(limit) would
        # allocate (and the kernel map) the whole limit for every 10-byte file.
        want = min(status.st_size, limit) + 1
        chunks = []
        total = 0
        while total <= limit:
            asked = max(want - total, 65536) if total else want
            chunk = os.read(fd, asked)
            chunks.append(chunk)
            total += len(chunk)
            if len(chunk) < asked:  # end of file (a regular file reads short only there)
                break
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        os.close(fd)
    return data[:limit], len(data) > limit


def read_config_file(path: str) -> tuple[bytes, list[ConfigError]]:
    """The file's lines, up to MAX_FILE_SIZE bytes, and what went wrong."""
    try:
        data, truncated = read_regular_file(path)
    except IsADirectoryError:
        return b"", [ConfigError(path, None, "is a directory, ignoring")]
    except OSError as e:
        return b"", [ConfigError(path, None, f"cannot read: {e.strerror or e}, ignoring")]
    if not truncated:
        return data, []
    # Only whole lines: half of '6310' would reserve port 63.
    data = data[: data.rfind(b"\n") + 1]
    line = data.count(b"\n") + 1
    return data, [ConfigError(path, line, f"file larger than {MAX_FILE_SIZE} bytes, ignoring the rest of it")]


def load_config(
    dirs: Dirs = SYSTEM_CONFIG_DIRS,
    services: Services | None = None,
    lowest: int = 1,
    required: bool = False,
    max_sockets: int = MAX_SOCKETS,
) -> Config:
    """Every reservation in dirs; lowest: the lowest port that may be reserved
    (for a user manager, net.ipv4.ip_unprivileged_port_start); required: the
    directories were named explicitly and must exist."""
    files, settings, errors = config_files(dirs, required)
    config = Config(errors=errors)
    config.settings = settings
    if services is None:
        services = load_services()
    budget = Budget(max_sockets)
    for name, path in files.items():
        data, file_errors = read_config_file(path)
        ports, line_errors = parse_file(path, data, services, lowest, budget)
        if file_errors and file_errors[0].line is None:
            config.errors.extend(file_errors)
            continue
        config.errors.extend(line_errors)
        config.errors.extend(file_errors)
        config.reservations.append(Reservation(name, tuple(ports), path, directive_lines(data)))
    return config


def gather(
    dirs: Dirs,
    services_file: str | os.PathLike[str] = SERVICES_FILE,
    user: bool = False,
    required: bool = False,
) -> Config:
    """The configuration as the generator sees it, every problem included: what
    the generator turns into units, `portreserve check` and `status` show, and a
    holder without systemd binds."""
    # A user manager cannot bind privileged ports (root's own manager can).
    lowest = unprivileged_port_start() if user and os.geteuid() != 0 else 1
    services, service_errors = read_services(services_file)
    config = load_config(dirs, services, lowest, required)
    config.errors[:0] = service_errors
    return config
