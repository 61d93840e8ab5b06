"""systemd's unit files as systemd 252 reads them, for the generator's drop-ins.

What the generator must know of the units installed beside it, without talking
to the manager (a generator must not): the unit search path
(src/shared/path-lookup.c), which names exist, are masked or aliased, each
unit's drop-in directories in systemd's order (src/shared/dropin.c), the
assignments of a unit file as config_parse() reads them, and the ports a
socket unit binds (socket_address_parse()).  Each rule was measured against a
booted systemd 252: the drop-in boot's s18 is the oracle (docs/design.md F17).

Generator path: imports os, stat and config only (pwd only when $HOME is
unset, for a user manager), lists each unit directory once.
"""

from __future__ import annotations

import os
import stat

from .config import UNIT_NAME_MAX, read_regular_file

# Not typing.TYPE_CHECKING, and no pathlib: the generator imports this module
# at every boot (tests/test_generator_imports.py holds it to its allow-list).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    StrPath = str | os.PathLike[str]

_UNIT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\")
_GENERATOR_DIRS = ("/systemd/generator", "/systemd/generator.early", "/systemd/generator.late")


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
        self._files: dict[str, tuple[str, str] | None] = {}

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

    def _file(self, unit: str) -> tuple[str, str] | None:
        """(path, 'present' or 'masked') of the file that defines the unit: the
        first usable one (systemd skips a dangling symlink).  Looked up once
        per unit: state(), listen_ports() and dropin_replaced() all ask."""
        if unit not in self._files:
            found = None
            for directory in self.index().get(unit, ()):
                path = os.path.join(directory, unit)
                masked = _masked(path)
                if masked is not None:
                    found = path, "masked" if masked else "present"
                    break
            self._files[unit] = found
        return self._files[unit]

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
        found = self._file(unit)
        if found is None and (template := template_of(unit)):
            found = self._file(template)
        return None if found is None else found[1]

    def dropin_replaced(self, unit: str, dropin: str) -> str | None:
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
                    if f"{variant}.d" in self.entries(directory) and dropin in self.entries(
                        os.path.join(directory, f"{variant}.d")
                    ):
                        masked = _masked(os.path.join(directory, f"{variant}.d", dropin))
                        if masked is not None:
                            return "masked" if masked else "replaced"
        return None


def read_head(path: StrPath) -> bytes | None:
    """A regular file's first config.MAX_FILE_SIZE bytes (read as the reservation
    files are: never opening a device or a FIFO); None if it is anything else."""
    try:
        return read_regular_file(path)[0]
    except OSError:
        return None
