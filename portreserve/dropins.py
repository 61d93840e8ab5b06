"""Zero-step opt-in: the generator gives NAME.service its portrelease.

For every reservation name whose unit exists (NAME.service or NAME.socket in
the unit search path, or the units ``# portreserve: unit=`` lines in the
reservation file name), the generator writes ``UNIT.d/portreserve.conf`` into
its output directory::

    [Service]
    ExecStartPre=-+/usr/sbin/portrelease --system -- NAME

A socket unit gets the same line in ``[Socket]``: systemd binds a
socket-activated service's ports itself, when the socket unit starts
(sockets.target, after the reservation's sockets), and runs the socket's
ExecStartPre= before it binds.  Without it, the reservation would make the
consumer's socket fail at every boot.

``+``: as root even with User= (only root may release system reservations);
``-``: never fails the unit.  The drop-in adds no dependency at all: ordering
or Conflicts= against the reservation's units in the boot transaction can drop
the reservation itself (docs/design.md, F15).

Turning it off, none of which the original portreserve reads differently:

* per name, a comment line in the reservation file (the original ignores
  '#' comments): ``# portreserve: release=manual``;
* host-wide, ``AutoRelease=no`` in ``portreserve.conf`` in a configuration
  directory (a name with a '.' is never a reservation name, so the original
  ignores the file);
* per unit, the systemd way: a drop-in of the same file name in
  /etc/systemd/system/UNIT.d/ replaces the generator's, and a symlink to
  /dev/null there masks it.

Generator path: imports os and stat only, reads each unit directory once.
"""

from __future__ import annotations

import os
import stat

from .config import DIRECTIVE_MARK, ConfigError, Notes, Reservation, directive_lines
from .units import GENERATOR, Scope

# Not typing.TYPE_CHECKING, and no pathlib: the generator imports this module
# at every boot (tests/test_generator_imports.py holds it to its allow-list).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    StrPath = str | os.PathLike[str]
    Log = Callable[[int, str], None]

# The file name of the drop-in: the name the README's hand-written drop-in
# always had, so a host that followed it keeps exactly one release per start
# (an /etc drop-in of the same name replaces the generator's).  It also sorts
# after "override.conf" (systemctl edit), so an admin's `ExecStartPre=` reset
# there does not drop the release.
DROPIN = "portreserve.conf"
# Host-wide settings, in each configuration directory (later ones win).
SETTINGS_FILE = "portreserve.conf"
DIRECTIVE = DIRECTIVE_MARK.decode()
AUTOMATIC, MANUAL = "automatic", "manual"

UNIT_NAME_MAX = 255
_UNIT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\")
# Our own units never get a drop-in: a holder releasing before it starts, or a
# grouping unit releasing itself, would undo the reservation.
OWN_PREFIX = "portreserve"
_GENERATOR_DIRS = ("/systemd/generator", "/systemd/generator.early", "/systemd/generator.late")

LOG_WARNING = 4


# -- the unit search path, as systemd 252 builds it (src/shared/path-lookup.c) --


def _split_path(value: str) -> list[str]:
    return [os.path.abspath(p) for p in value.split(":") if p]


def _home(environ: Mapping[str, str]) -> str | None:
    home = environ.get("HOME")
    if home:
        return home
    try:  # as systemd's get_home_dir(); only when $HOME is unset
        import pwd

        return pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError):
        return None


def system_search_path() -> list[str]:
    # Debian's build (SYSTEM_DATA_UNIT_DIR=/lib/systemd/system); elsewhere /lib
    # is /usr/lib or absent, and looking there costs nothing.
    return [
        "/etc/systemd/system.control",
        "/run/systemd/system.control",
        "/run/systemd/transient",
        "/run/systemd/generator.early",
        "/etc/systemd/system",
        "/etc/systemd/system.attached",
        "/run/systemd/system",
        "/run/systemd/system.attached",
        "/run/systemd/generator",
        "/usr/local/lib/systemd/system",
        "/lib/systemd/system",
        "/usr/lib/systemd/system",
        "/run/systemd/generator.late",
    ]


def user_search_path(environ: Mapping[str, str]) -> list[str]:
    home = _home(environ)
    # An empty $XDG_CONFIG_HOME counts as set, as in systemd ("/systemd/user").
    config_home = environ.get("XDG_CONFIG_HOME", f"{home}/.config" if home else None)
    data_home = environ.get("XDG_DATA_HOME", f"{home}/.local/share" if home else None)
    config_dirs = environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
    data_dirs = environ.get("XDG_DATA_DIRS", "/usr/local/share:/usr/share").split(":")
    runtime = environ.get("XDG_RUNTIME_DIR") or None

    def under(base: str | None, *subdirs: str) -> list[str]:
        return [f"{base}/systemd/{s}" for s in subdirs] if base is not None else []

    found = [
        *under(config_home, "user.control"),
        *under(runtime, "user.control", "transient", "generator.early"),
        *under(config_home, "user"),
        *(f"{d}/systemd/user" for d in config_dirs if d),
        "/etc/systemd/user",
        *under(runtime, "user"),
        "/run/systemd/user",
        *under(runtime, "generator"),
        *under(data_home, "user"),
        *(f"{d}/systemd/user" for d in data_dirs if d),
        "/usr/local/lib/systemd/user",
        "/usr/local/share/systemd/user",
        "/usr/lib/systemd/user",
        "/usr/share/systemd/user",
        *under(runtime, "generator.late"),
    ]
    return [os.path.abspath(p) for p in found]


def unit_search_path(user: bool, environ: Mapping[str, str] | None = None) -> list[str]:
    """What `systemd-analyze [--user] unit-paths` prints: $SYSTEMD_UNIT_PATH if
    set (with the defaults appended when it ends in ':'), else the defaults."""
    environ = os.environ if environ is None else environ
    defaults = user_search_path(environ) if user else system_search_path()
    override = environ.get("SYSTEMD_UNIT_PATH")
    if override is None:
        paths = defaults
    else:
        paths = _split_path(override) + (defaults if override.endswith(":") else [])
    return list(dict.fromkeys(paths))


def is_generator_dir(path: str) -> bool:
    return path.endswith(_GENERATOR_DIRS)


# -- units ----------------------------------------------------------------------


# The unit types that can release a reservation before they bind: a service
# (its program binds) and a socket (systemd binds, after ExecStartPre=).
RELEASING_TYPES = (".service", ".socket")
# Every unit type (systemd.unit(5)): a name without one of these is a service.
UNIT_TYPES = (
    ".service", ".socket", ".target", ".device", ".mount", ".automount",
    ".swap", ".path", ".timer", ".slice", ".scope",
)  # fmt: skip


def valid_unit_name(unit: str) -> bool:
    """systemd's unit_name_is_valid() for services and sockets:
    PREFIX[@INSTANCE].service or .socket."""
    if len(unit) > UNIT_NAME_MAX or not unit.endswith(RELEASING_TYPES):
        return False
    stem = unit[: unit.rindex(".")]
    prefix, at, instance = stem.partition("@")
    return bool(prefix) and _UNIT_CHARS.issuperset(prefix) and _UNIT_CHARS.issuperset(instance.replace("@", ""))


def is_template(unit: str) -> bool:
    return unit.partition("@")[2].startswith(".")


def template_of(unit: str) -> str | None:
    """foo@.service for an instance foo@bar.service, None for anything else."""
    prefix, at, rest = unit.partition("@")
    return f"{prefix}@{rest[rest.rindex('.') :]}" if at and "." in rest and not is_template(unit) else None


# Every Listen*= setting (systemd.socket(5)): an empty assignment of any of
# them resets them all.  Only ListenStream= (TCP) and ListenDatagram= (UDP)
# bind a port of ours.
_LISTEN_KEYS = frozenset(
    {
        "ListenStream", "ListenDatagram", "ListenSequentialPacket", "ListenFIFO",
        "ListenSpecial", "ListenNetlink", "ListenMessageQueue", "ListenUSBFunction",
    }
)  # fmt: skip
_LISTEN_PROTOS = {"ListenStream": "tcp", "ListenDatagram": "udp"}
# SocketProtocol= values that make ListenStream= SCTP and ListenDatagram= UDP-Lite.
_OTHER_PROTOCOLS = frozenset({"sctp", "udplite"})
# systemd's WHITESPACE: what strstrip() and the line reader treat as blanks.
_BLANKS = " \t\n\r"
_HEX = frozenset("0123456789abcdefABCDEF")


def _ip_port(text: str) -> int | None:
    """systemd's parse_ip_port(): strtoul() with base 0 (0x hex, leading-0
    octal, an optional '+'), nothing else around it, 1 to 65535."""
    digits = text[1:] if text.startswith("+") else text
    if digits[:2] in ("0x", "0X"):
        base, digits = 16, digits[2:]
        ok = bool(digits) and _HEX.issuperset(digits)
    elif digits.startswith("0"):
        base = 8
        ok = set(digits) <= set("01234567")
    else:
        base = 10
        ok = digits.isascii() and digits.isdigit()
    significant = digits.lstrip("0")
    if not ok or len(significant) > 6:  # more is out of range in any base (and int() of it may refuse)
        return None
    number = int(significant or "0", base)
    return number if 0 < number < 65536 else None


def _ifname_valid(name: str) -> bool:
    """systemd's ifname_valid_full() with alternative names: printable ASCII
    but ':', '/' and '%', at most 127 bytes, not '.' or '..'."""
    return 0 < len(name) < 128 and name not in (".", "..") and all(32 < ord(c) < 127 and c not in ":/%" for c in name)


def _ipv4_valid(text: str) -> bool:
    """inet_pton(AF_INET): four decimal numbers up to 255, no leading zeros."""
    parts = text.split(".")
    return len(parts) == 4 and all(
        p.isascii() and p.isdigit() and len(p) <= 3 and int(p) < 256 and (p == "0" or not p.startswith("0"))
        for p in parts
    )


def _ipv6_plausible(text: str) -> bool:
    """Shaped like an IPv6 address (not inet_pton's full check: only a unit
    systemd refuses could tell the difference, and it binds nothing)."""
    return ":" in text and all(c in _HEX or c in ":." for c in text)


def _listen_port(value: str) -> int | None:
    """The port of a Listen*= value once its specifiers are expanded, as
    systemd 252's socket_address_parse() reads it: PORT, IPV4:PORT[%IFACE],
    [IPV6]:PORT[%IFACE] (systemd.socket(5)); None for a path, an abstract
    socket, vsock, and anything systemd refuses."""
    if value.startswith(("/", "@", "vsock:")):
        return None
    port = _ip_port(value)
    if port is not None or "#" in value:
        return port
    address, percent, interface = value.partition("%")
    if percent and not _ifname_valid(interface):
        return None
    host, colon, number = address.rpartition(":")
    if not colon:
        return None
    if host.startswith("["):
        # [IPV6]:PORT; "[fe80::1%eth0]:25" is refused (the interface goes last).
        if not (host.endswith("]") and _ipv6_plausible(host[1:-1])):
            return None
    elif not _ipv4_valid(host):
        # Unbracketed: IPV4:PORT only ("::25" is an IPv6 address without a port).
        return None
    return _ip_port(number)


def _expand_specifiers(value: str, instance: str) -> str:
    """'%%' is '%', '%i' and '%I' the instance; any other specifier stands for
    text that is no port (a hostname, a path), which '\\0' keeps from parsing."""
    out, i = [], 0
    while i < len(value):
        char = value[i]
        if char == "%" and i + 1 < len(value):
            spec = value[i + 1]
            out.append("%" if spec == "%" else instance if spec in "iI" else "\0")
            i += 2
            continue
        out.append("\0" if char == "%" else char)  # a lone '%' at the end: refused
        i += 1
    return "".join(out)


def _lines(text: str) -> list[str]:
    """The lines of a unit file as systemd's read_line() ends them: at a '\\n',
    a '\\r', a pair of the two ('\\r\\n' or '\\n\\r') or a NUL."""
    if "\r" not in text and "\0" not in text:
        return text.split("\n")
    lines, start, i = [], 0, 0
    while i < len(text):
        char = text[i]
        if char in "\n\r\0":
            lines.append(text[start:i])
            pair = char != "\0" and text[i + 1 : i + 2] in ("\n", "\r") and text[i + 1] != char
            i += 2 if pair else 1
            start = i
        else:
            i += 1
    lines.append(text[start:])
    return lines


def unit_assignments(data: bytes) -> list[tuple[str, str, str]] | None:
    """(section, key, value) of every assignment in a unit file, in order, as
    systemd 252's config_parse() reads it: a UTF-8 byte order mark at the start
    is dropped; lines end as _lines() says; a line whose first non-blank is '#' or
    ';' is a comment, also in the middle of a continuation; a line ending in an
    unescaped backslash goes on in the next one, the backslash turned into a
    blank; keys and values lose their blanks at both ends; lines outside a
    section or without '=' count for nothing.  None for a section header
    without its ']', for which systemd refuses the whole unit."""
    text = data.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    found: list[tuple[str, str, str]] = []
    section: str | None = None
    continued: str | None = None
    for raw in _lines(text):
        if raw.lstrip(_BLANKS).startswith(("#", ";")):
            continue
        line = raw if continued is None else continued + raw
        # An odd run of backslashes at the end: the last one is not escaped.
        if (len(line) - len(line.rstrip("\\"))) % 2:
            continued = line[:-1] + " "
            continue
        continued = None
        line = line.strip(_BLANKS)
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if not line.endswith("]"):
                return None
            section = line[1:-1]
            continue
        key, eq, value = line.partition("=")
        if section is not None and eq:
            found.append((section, key.strip(_BLANKS), value.strip(_BLANKS)))
    return found


def dropin_names(unit: str) -> list[str]:
    """The names whose NAME.d directories hold a unit's drop-ins, within one
    directory of the search path: the unit's, its template's and its
    template's '-' prefixes', its own '-' prefixes' (src/shared/dropin.c)."""
    template = template_of(unit)
    return list(
        dict.fromkeys(
            [unit, *([template, *unit_name_prefixes(template)] if template else []), *unit_name_prefixes(unit)]
        )
    )


def unit_name_prefixes(unit: str) -> list[str]:
    """The '-' prefix names whose drop-ins also apply (systemd.unit(5)):
    foo-bar-baz.socket -> foo-bar-.socket, foo-.socket (foo-bar@x.socket ->
    foo-.socket), most specific first.  As src/shared/dropin.c walks them: a
    trailing dash is chopped once per step ('a--b' gives 'a--' only)."""
    stem, _dot, suffix = unit.rpartition(".")
    prefix = stem.partition("@")[0]
    found = []
    chopped = False
    while (dash := prefix.rfind("-")) >= 0:
        if dash == len(prefix) - 1:
            if chopped:
                break
            chopped, prefix = True, prefix[:-1]
            continue
        prefix = prefix[: dash + 1]
        found.append(f"{prefix}.{suffix}")
        chopped = False
    return found


def _masked(path: str) -> bool | None:
    """True: masked (a symlink to /dev/null, an empty file: systemd's
    null_or_empty()); False: a unit file; None: no usable file (dangling)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return True
    if stat.S_ISREG(st.st_mode):
        return st.st_size == 0
    return None


class UnitPath:
    """The unit search path, each directory listed once."""

    def __init__(self, search_path: Sequence[str]) -> None:
        self.search_path = list(search_path)
        # The drop-ins that take precedence over the generator's are those in
        # the directories before its normal one (/etc, /run and the control
        # directories); without one in the path (tests), every directory.
        normal = [d for d in self.search_path if d.endswith("/systemd/generator")]
        self.normal_generator = normal[0] if normal else None
        self._index: dict[str, list[str]] | None = None
        self._entries: dict[str, set[str]] = {}
        self._aliases: dict[str, dict[str, list[str]]] = {}  # by unit type

    def entries(self, directory: str) -> set[str]:
        found = self._entries.get(directory)
        if found is None:
            try:
                found = set(os.listdir(directory))
            except OSError:
                found = set()
            self._entries[directory] = found
        return found

    def index(self) -> dict[str, list[str]]:
        """{file name: the directories that have it, in priority order}; other
        generators' output is left out (they run beside us, in any order)."""
        if self._index is None:
            self._index = {}
            for directory in self.search_path:
                if not is_generator_dir(directory):
                    for entry in self.entries(directory):
                        self._index.setdefault(entry, []).append(directory)
        return self._index

    def _lookup(self, unit: str) -> str | None:
        """'present', 'masked' or None, from the first directory that has a
        usable file (systemd skips a dangling symlink)."""
        found = self._file(unit)
        return None if found is None else found[1]

    def _file(self, unit: str) -> tuple[str, str] | None:
        """(path, 'present' or 'masked') of the file that defines the unit."""
        for directory in self.index().get(unit, ()):
            path = os.path.join(directory, unit)
            masked = _masked(path)
            if masked is not None:
                return path, "masked" if masked else "present"
        return None

    def aliases(self, unit: str) -> list[str]:
        """The other names of a unit: symlinks in the unit path, of its type,
        whose target has the unit's name (systemd loads their drop-ins too)."""
        kind = unit[unit.rfind(".") :]
        if kind not in self._aliases:
            found: dict[str, list[str]] = {}
            for name, directories in self.index().items():
                if not name.endswith(kind) or name.startswith("."):
                    continue
                path = os.path.join(directories[0], name)
                if os.path.islink(path):
                    target = os.path.basename(os.path.realpath(path))
                    if target != name and target.endswith(kind):
                        found.setdefault(target, []).append(name)
            self._aliases[kind] = found
        return self._aliases[kind].get(unit, [])

    def primary_name(self, unit: str) -> str:
        """The name systemd loads a unit under: an alias (a symlink in the unit
        path) is the unit its link points to."""
        found = self._file(unit)
        if found is None or not os.path.islink(found[0]):
            return unit
        target = os.path.basename(os.path.realpath(found[0]))
        return target if target.rpartition(".")[2] == unit.rpartition(".")[2] else unit

    def dropin_dirs(self, unit: str, generators: bool = False) -> list[str]:
        """The drop-in directories of a unit in the order systemd 252 reads them
        (src/shared/dropin.c): for each directory of the search path, UNIT.d,
        its template's, its '-' prefixes'; then the same for each of its
        aliases; then TYPE.d (socket.d: every socket) in each directory.  Other
        generators' directories only with generators=True.  Only those that
        exist; the first of a file name hides the same name in later ones."""
        primary = self.primary_name(unit)
        names = [primary, *(a for a in [unit, *self.aliases(primary)] if a != primary)]
        found: list[str] = []
        search = [d for d in self.search_path if generators or not is_generator_dir(d)]
        for name in names:
            for directory in search:
                for variant in dropin_names(name):
                    if f"{variant}.d" in self.entries(directory):
                        found.append(os.path.join(directory, f"{variant}.d"))
        kind = unit.rpartition(".")[2]
        found += [os.path.join(d, f"{kind}.d") for d in search if f"{kind}.d" in self.entries(d)]
        return list(dict.fromkeys(found))

    def fragments(self, unit: str) -> list[str]:
        """The unit's file (its template's for an instance), then its drop-ins
        (*.conf of dropin_dirs(), hidden files left out), in the order systemd
        applies them: sorted by file name, a name taken from the first
        directory that has it."""
        template = template_of(unit)
        found = self._file(unit) or (self._file(template) if template else None)
        if found is None or found[1] != "present":
            return []
        confs: dict[str, str] = {}
        for dropin_dir in self.dropin_dirs(unit):
            for entry in self.entries(dropin_dir):
                if entry.endswith(".conf") and not entry.startswith("."):
                    confs.setdefault(entry, os.path.join(dropin_dir, entry))
        return [found[0], *(confs[name] for name in sorted(confs))]

    def listen_ports(self, unit: str) -> set[tuple[int, str]]:
        """The ports a socket unit binds (ListenStream= TCP, ListenDatagram= UDP,
        by number, IPv4 or IPv6 address:port), from its file and drop-ins as
        systemd 252 reads them (unit_assignments()): an empty assignment of
        any Listen*= resets them all; specifiers expanded (%i and %I are the
        instance); SocketProtocol=sctp or udplite binds no TCP or UDP port; a
        file systemd refuses binds nothing.  What cannot be read counts as no
        port."""
        instance = unit.partition("@")[2].rpartition(".")[0]
        ports: set[tuple[int, str]] = set()
        protocol = ""
        for path in self.fragments(unit):
            assignments = unit_assignments(read_head(path) or b"")
            if assignments is None:
                return set()
            for section, key, value in assignments:
                if section != "Socket":
                    continue
                if key == "SocketProtocol" and value in _OTHER_PROTOCOLS:
                    protocol = value  # anything else is refused, and nothing resets it (measured)
                elif key in _LISTEN_KEYS and not value:
                    ports.clear()
                elif key in _LISTEN_PROTOS:
                    number = _listen_port(_expand_specifiers(value, instance))
                    if number is not None:
                        ports.add((number, _LISTEN_PROTOS[key]))
        return set() if protocol in _OTHER_PROTOCOLS else ports

    def state(self, unit: str) -> str | None:
        """'present', 'masked', or None when the unit does not exist.  An instance
        (foo@bar.service) exists when its own file or its template's does."""
        found = self._lookup(unit)
        if found is None and (template := template_of(unit)):
            found = self._lookup(template)
        return found

    def dropin_replaced(self, unit: str) -> str | None:
        """'masked' or 'replaced' when a portreserve.conf hides ours: one in a
        drop-in directory that systemd reads before the generator's UNIT.d
        (in /etc or /run: UNIT.d, its template's, a '-' prefix's; for an
        alias, also any of the unit it names)."""
        primary = self.primary_name(unit)
        for name in dict.fromkeys([primary, unit]):
            for directory in self.search_path:
                if name == unit and directory == self.normal_generator:
                    return None  # ours comes next: what follows cannot hide it
                for variant in dropin_names(name):
                    if f"{variant}.d" in self.entries(directory) and DROPIN in self.entries(
                        os.path.join(directory, f"{variant}.d")
                    ):
                        masked = _masked(os.path.join(directory, f"{variant}.d", DROPIN))
                        if masked is not None:
                            return "masked" if masked else "replaced"
        return None


# -- configuration ------------------------------------------------------------------


def read_head(path: StrPath, limit: int = 1 << 20) -> bytes | None:
    """A regular file's first `limit` bytes; None if it is anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        # One read for the file as it is now (plus one byte to see growth).
        return os.read(fd, min(st.st_size + 1, limit))
    except OSError:
        return None
    finally:
        os.close(fd)


class Directives:
    """What the `# portreserve:` comment lines of one reservation file say."""

    def __init__(self) -> None:
        self.units: list[str] = []
        self.manual = False


def parse_directives(path: StrPath, notes: Notes) -> tuple[Directives, list[ConfigError]]:
    """Lines ``# portreserve: KEY=VALUE...`` (the original reads them as
    comments), as config.directive_lines kept them.  Keys: unit=UNIT[.service|.socket]
    (repeatable), release=auto|manual.  A comment that merely starts with
    "portreserve:" and holds no '=' is prose."""
    path = os.fspath(path)
    found = Directives()
    errors: list[ConfigError] = []
    for lineno, raw in notes:
        text = raw.strip()
        if not text.startswith(b"#"):
            continue
        text = text[1:].strip()
        if not text.startswith(DIRECTIVE_MARK):
            continue
        words = text[len(DIRECTIVE) :].decode("utf-8", "replace").split()
        if not any("=" in w for w in words):
            continue

        def bad(message: str) -> None:
            errors.append(ConfigError(path, lineno, f"{message}, ignoring"))  # noqa: B023 - used at once

        for word in words:
            key, eq, value = word.partition("=")
            if key == "unit" and eq:
                unit = value if value.endswith(UNIT_TYPES) else f"{value}.service"
                if not valid_unit_name(unit):
                    bad(f"'{comment_text(value)}' is not a service or socket unit name")
                elif is_template(unit):
                    bad(f"'{value}' is a template: name an instance (foo@bar.service)")
                elif unit.startswith(OWN_PREFIX):
                    bad(f"'{value}' is one of portreserve's own units")
                elif unit not in found.units:
                    found.units.append(unit)
            elif key == "release" and value in ("auto", "automatic", "manual"):
                found.manual = value == "manual"
            elif key == "release":
                bad(f"release={comment_text(value)}: expected release=auto or release=manual")
            else:
                bad(f"unknown setting '{comment_text(word)}' (expected unit=UNIT or release=auto|manual)")
    return found, errors


_BOOLEANS = {"1": True, "yes": True, "y": True, "true": True, "t": True, "on": True}
_BOOLEANS.update({"0": False, "no": False, "n": False, "false": False, "f": False, "off": False})


def read_settings(config_dirs: Iterable[StrPath]) -> tuple[bool, list[ConfigError]]:
    """AutoRelease= from portreserve.conf in each configuration directory (later
    ones win; a symlink to /dev/null or an empty file says nothing)."""
    auto = True
    errors: list[ConfigError] = []
    for directory in config_dirs:
        path = os.path.join(os.fspath(directory), SETTINGS_FILE)
        data = read_head(path)
        if data is None:
            continue
        for lineno, raw in enumerate(data.split(b"\n"), start=1):
            line = raw.decode("utf-8", "replace").strip()
            if not line or line[0] in "#;":
                continue
            key, eq, value = line.partition("=")
            key, value = key.strip(), value.strip()
            if key == "AutoRelease" and eq and value.lower() in _BOOLEANS:
                auto = _BOOLEANS[value.lower()]
            elif key == "AutoRelease" and eq:
                message = f"AutoRelease={comment_text(value)}: expected yes or no"
                errors.append(ConfigError(path, lineno, f"{message}, ignoring"))
            else:
                message = f"unknown setting '{comment_text(line)}' (expected AutoRelease=)"
                errors.append(ConfigError(path, lineno, f"{message}, ignoring"))
    return auto, errors


# -- who releases a name ------------------------------------------------------------


class Release:
    """The units that release one name, and how."""

    def __init__(self, units: Sequence[str], how: str | None, reason: str) -> None:
        self.units = tuple(units)  # with how=AUTOMATIC: the units that get the drop-in
        self.how = how  # AUTOMATIC, MANUAL, or None: nothing releases the name
        self.reason = reason


class Planner:
    """Decides, for each reservation, which units get a drop-in."""

    def __init__(self, scope: Scope, config_dirs: Iterable[StrPath], search_path: Sequence[str] | None = None) -> None:
        self.scope = scope
        self.units = UnitPath(unit_search_path(scope.user) if search_path is None else search_path)
        self.auto, self.errors = read_settings(config_dirs)

    def release_of(
        self, name: str, source: StrPath, notes: Notes | None = None, ports: Iterable[tuple[int, str]] = ()
    ) -> Release:
        """notes: the file's directive lines as config read them (None: read the
        file); ports: the name's ports, for NAME.socket (it releases the name
        only when it binds one of them itself)."""
        source = os.fspath(source)
        if notes is None:
            notes = directive_lines(read_head(source) or b"")
        directives, errors = parse_directives(source, notes)
        self.errors += errors
        if name == "*":  # portrelease '*' releases everything
            return Release((), None, "the name '*' means every name to portrelease")
        named = directives.units
        # A template (a file named foo@) would give every instance the drop-in.
        implicit = [f"{name}{t}" for t in RELEASING_TYPES]
        candidates = named or [u for u in implicit if valid_unit_name(u) and not is_template(u)]
        if not named and f"{name}.socket" in candidates:
            # A socket unit of the name releases it only when it binds one of
            # its ports (socket activation, F16): cups.socket, which listens
            # on a path, must not release ipp at sockets.target, long before
            # cups.service binds it.
            wanted = {(int(n), str(p)) for n, p in ports}
            if not wanted & self.units.listen_ports(f"{name}.socket"):
                candidates.remove(f"{name}.socket")
        candidates = [u for u in candidates if not u.startswith(OWN_PREFIX)]
        states = {u: self.units.state(u) for u in candidates}
        present = [u for u in candidates if states[u] == "present"]
        if directives.manual:
            return Release(present or named, MANUAL, f"release=manual in {comment_text(str(source))}")
        if not self.auto:
            return Release(present or named, MANUAL, f"AutoRelease=no in {SETTINGS_FILE}")
        if not present:
            if not candidates:
                shown = comment_text(name)
                return Release((), None, f"'{shown}' is not a unit name; name the unit with '# {DIRECTIVE} unit=UNIT'")
            masked = [u for u in candidates if states[u] == "masked"]
            what = f"{', '.join(masked)} masked" if masked else f"no {' or '.join(candidates)} in the unit search path"
            return Release((), None, what)
        # A drop-in of ours that /etc or /run masks or replaces is the admin's call.
        replaced = {u: self.units.dropin_replaced(u) for u in present}
        generated = [u for u in present if not replaced[u]]
        if not generated:
            how = " ".join(f"{u}.d/{DROPIN} {replaced[u]} in /etc or /run" for u in present)
            return Release(present, MANUAL, how)
        return Release(generated, AUTOMATIC, "drop-in " + " ".join(f"{u}.d/{DROPIN}" for u in generated))

    def plan(self, reservations: Iterable[Reservation]) -> dict[str, list[Reservation]]:
        """{unit: the reservations it releases} for every drop-in to write."""
        plan: dict[str, list[Reservation]] = {}
        index = self.units.index()
        for reservation in reservations:
            # The common case at a thousand names, quickly: no unit of that
            # name (nor an instance of one) and no directive in the file.
            if (
                not any(f"{reservation.name}{t}" in index for t in RELEASING_TYPES)
                and "@" not in reservation.name
                and not reservation.notes
            ):
                continue
            release = self.release_of(reservation.name, reservation.source, reservation.notes, reservation.ports)
            if release.how == AUTOMATIC:
                for unit in release.units:
                    plan.setdefault(unit, []).append(reservation)
        return plan


def releasing_unit(
    name: str,
    reservation_path: StrPath,
    scope: Scope,
    config_dirs: Iterable[StrPath] | None = None,
    search_path: Sequence[str] | None = None,
) -> tuple[str | None, str | None]:
    """(unit, how) for `portreserve status` and `portreserve check`: the unit
    that releases the name (several: separated by spaces), and AUTOMATIC (the
    generator's drop-in), MANUAL (the admin said so) or None (nothing does).
    For many names, use one Planner: it lists each unit directory once."""
    if config_dirs is None:
        from . import paths

        config_dirs = paths.config_dirs(scope.user)
    release = Planner(scope, config_dirs, search_path).release_of(name, reservation_path)
    return (" ".join(release.units) or None), release.how


# -- rendering ------------------------------------------------------------------------

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.,+=@/-")


def _escaped_char(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if char.isprintable():
        return char
    return "".join(f"\\x{b:02x}" for b in char.encode("utf-8", "surrogatepass"))


def exec_quote(arg: str) -> str:
    """One argument of an Exec line, so that systemd passes exactly `arg`.

    systemd expands specifiers ('%') in the whole line first, splits words with
    C unescaping inside and outside quotes, and then replaces '$VAR' in the
    arguments: '%' -> '%%', '$' -> '$$', '\\' and '"' backslashed, anything not
    printable (newlines, bytes that are not UTF-8) as \\xNN.  Plain words stay
    bare.  (A NUL cannot be in a file name.)"""
    if arg and _PLAIN.issuperset(arg):
        return arg
    out = ['"']
    for char in arg:
        if char == "%":
            out.append("%%")
        elif char == "$":
            out.append("$$")
        elif char in '"\\':
            out.append("\\" + char)
        else:
            out.append(_escaped_char(char))
    out.append('"')
    return "".join(out)


def comment_text(text: str) -> str:
    """Free text in a comment line: one line, no specifiers to worry about."""
    return "".join("\\\\" if c == "\\" else _escaped_char(c) for c in text)


def render_dropin(unit: str, reservations: Sequence[Reservation], scope: Scope) -> str:
    names = [r.name for r in reservations]
    sources = [comment_text(str(r.source)) for r in reservations]
    args = ["--user" if scope.user else "--system", "--", *names]
    etc = "~/.config/systemd/user" if scope.user else "/etc/systemd/system"
    return (
        f"# Automatically generated by {GENERATOR}\n"
        f"#\n"
        f"# {unit} releases its port reservations before it starts:\n"
        + "".join(f"#   {s}\n" for s in sources)
        + "# Turn it off for this unit with\n"
        f"#   ln -s /dev/null {etc}/{comment_text(unit)}.d/{DROPIN}\n"
        f"# or for a name with a line '# {DIRECTIVE} release=manual' in its file.\n"
        f"\n[{'Socket' if unit.endswith('.socket') else 'Service'}]\n"
        f"ExecStartPre=-+{exec_quote(scope.portrelease)} {' '.join(map(exec_quote, args))}\n"
    )


def generate(
    reservations: Iterable[Reservation], scope: Scope, config_dirs: Iterable[StrPath], log: Log
) -> dict[str, str]:
    """The drop-ins, as {path relative to the output directory: text}."""
    planner = Planner(scope, list(config_dirs))
    # A name without a valid port has nothing to release.
    plan = planner.plan(r for r in reservations if r.ports)
    for error in planner.errors:
        log(LOG_WARNING, str(error))
    return {f"{unit}.d/{DROPIN}": render_dropin(unit, owners, scope) for unit, owners in plan.items()}
