"""Unit and fd names: escaping and parsing.

Imports nothing: portrelease runs in the start path of every consumer service,
and each import costs it milliseconds.
"""

GROUP_PREFIX = "portreserve@"
GROUP_SUFFIX = ".service"
SOCKET_PREFIX = "portreserve-"
SOCKET_SUFFIX = ".socket"
PROTOCOLS = ("tcp", "udp")

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.")
_HEX = frozenset("0123456789abcdefABCDEF")


def escape(name: str) -> str:
    """Escape like ``systemd-escape``: anything outside [A-Za-z0-9:_.] and a
    leading '.' become \\xNN per UTF-8 byte."""
    if _SAFE.issuperset(name) and not name.startswith("."):
        return name  # the common case, and the generator escapes thousands of names
    out = []
    for i, byte in enumerate(name.encode("utf-8", "surrogateescape")):
        char = chr(byte)
        if char in _SAFE and not (i == 0 and char == "."):
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def unescape(text: str) -> str:
    raw = bytearray()
    data = text.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(data):
        chunk = data[i : i + 4]
        if len(chunk) == 4 and chunk[:2] == b"\\x" and all(chr(c) in _HEX for c in chunk[2:]):
            raw.append(int(chunk[2:], 16))
            i += 4
        else:
            raw.append(data[i])
            i += 1
    return raw.decode("utf-8", "surrogateescape")


def socket_unit(number: int, proto: str) -> str:
    return f"{SOCKET_PREFIX}{number}-{proto}{SOCKET_SUFFIX}"


def port_of_socket_unit(unit: str) -> tuple[int, str] | None:
    """(number, proto) of a reservation socket unit, None for any other name."""
    if not (unit.startswith(SOCKET_PREFIX) and unit.endswith(SOCKET_SUFFIX)):
        return None
    number, _, proto = unit[len(SOCKET_PREFIX) : -len(SOCKET_SUFFIX)].partition("-")
    if not (number.isdigit() and number.isascii() and proto in PROTOCOLS and 0 < int(number) < 65536):
        return None
    return int(number), proto


def group_unit(name: str) -> str:
    return f"{GROUP_PREFIX}{escape(name)}{GROUP_SUFFIX}"


def is_group_unit(unit: str) -> bool:
    return unit.startswith(GROUP_PREFIX) and unit.endswith(GROUP_SUFFIX)


def name_of_group_unit(unit: str) -> str | None:
    return unescape(unit[len(GROUP_PREFIX) : -len(GROUP_SUFFIX)]) if is_group_unit(unit) else None


def fdname_escape(name: str) -> str:
    # FileDescriptorName= refuses ':' (the separator of $LISTEN_FDNAMES) and
    # control characters; systemd-escape keeps ':', so escape it as well.
    return escape(name).replace(":", "\\x3a")


def fdname(owners: list[str]) -> str:
    """The owners of one socket, as the holder will see them in LISTEN_FDNAMES."""
    return ",".join(fdname_escape(o) for o in owners)


def owners_of_fdname(text: str) -> list[str]:
    return [unescape(part) for part in text.split(",") if part]


def parse_port_text(text: str) -> tuple[int, str] | None:
    number, _, proto = text.partition("/")
    if number.isdigit() and number.isascii() and proto in PROTOCOLS:
        return int(number), proto
    return None


def sockets_of_group(path: str) -> list[str]:
    """The socket units a generated grouping unit Wants=."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError:
        return []
    found: list[str] = []
    for line in text.splitlines():
        if line.startswith("Wants="):
            found += [u for u in line[len("Wants=") :].split() if port_of_socket_unit(u)]
    return found
