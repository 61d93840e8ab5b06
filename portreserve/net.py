"""Binding ports, checking that they are free, and finding who holds them.

Ports are (number, "tcp"|"udp") tuples (config.Port is one).  Imports only the
standard library's basics: portrelease uses it.
"""

from __future__ import annotations

# _socket is the C module behind socket.  portrelease uses this module, and
# `import socket` alone costs it 5 ms (it builds enum classes at import).
import _socket as socket
import errno
import os

_TYPES = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}


def has_ipv6() -> bool:
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
    except OSError:
        return False
    return True


def bind_port(port: tuple[int, str], ipv6: bool, reuseaddr: bool = False) -> socket.socket:
    """A socket bound to the port on every address: [::] dual-stack, IPv4 only
    where the kernel has no IPv6.  Raises OSError."""
    number, proto = port
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    sock = socket.socket(family, _TYPES[proto] | socket.SOCK_CLOEXEC)
    try:
        if reuseaddr:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if ipv6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", number))
        else:
            sock.bind(("0.0.0.0", number))
    except BaseException:
        sock.close()
        raise
    return sock


def bindable(port: tuple[int, str], ipv6: bool) -> bool:
    """Could a fresh server bind this port now, IPv4 and IPv6?

    TCP is tried with SO_REUSEADDR like every server does (a listener still
    conflicts; lingering TIME_WAIT does not); UDP without, since with it two
    sockets may share a port.
    """
    try:
        bind_port(port, ipv6, reuseaddr=port[1] == "tcp").close()
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, errno.EACCES):
            return False
        raise
    return True


def udp_ports_in_use() -> set[int]:
    """Local ports of every bound UDP socket (IPv4 and IPv6), from /proc.

    A way to tell whether a UDP port is free without binding it: a probe that
    binds while systemd binds the same port makes systemd fail the socket unit
    (systemd sets SO_REUSEADDR, a probe of a free-port check must not)."""
    found: set[int] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    local = line.split(None, 2)[1]
                    found.add(int(local.rsplit(":", 1)[1], 16))
        except (OSError, IndexError, ValueError):
            continue
    return found


def socket_inodes(ports: list[tuple[int, str]]) -> dict[str, tuple[int, str]]:
    """Inodes of the sockets bound to these local ports (any address): {inode: port}."""
    wanted = {(number, proto) for number, proto in ports}
    found: dict[str, tuple[int, str]] = {}
    for proto in sorted({p for _n, p in wanted}):
        for table in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
            try:
                with open(table) as f:
                    lines = f.read().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) <= 9:
                    continue
                port = (int(fields[1].rsplit(":", 1)[1], 16), proto)
                # TCP: only listeners and bound sockets hold the port for binding.
                if port in wanted and not (proto == "tcp" and fields[3] not in ("0A", "07")) and fields[9] != "0":
                    found[fields[9]] = port
    return found


def who_holds_many(ports: list[tuple[int, str]]) -> dict[tuple[int, str], list[tuple[int, str]]]:
    """For each port, (pid, command) of the processes with a socket bound to
    it, as far as /proc lets us see: one pass over /proc for all of them."""
    inodes = {f"socket:[{inode}]": port for inode, port in socket_inodes(ports).items()}
    found: dict[tuple[int, str], list[tuple[int, str]]] = {port: [] for port in ports}
    if not inodes:
        return found
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry.name}/fd")
        except OSError:
            continue
        seen: set[tuple[int, str]] = set()
        for fd in fds:
            try:
                port = inodes.get(os.readlink(f"/proc/{entry.name}/fd/{fd}"))
            except OSError:
                continue
            if port is not None and port not in seen:
                seen.add(port)
                try:
                    with open(f"/proc/{entry.name}/comm") as f:
                        found[port].append((int(entry.name), f.read().strip()))
                except OSError:
                    pass
    return found


def describe(holders: list[tuple[int, str]]) -> str:
    if not holders:
        return "held by an unknown process"
    return "held by " + ", ".join(f"{comm} (pid {pid})" for pid, comm in holders)


def describe_holders(port: tuple[int, str]) -> str:
    return describe(who_holds_many([port])[port])


def describe_many(ports: list[tuple[int, str]]) -> dict[tuple[int, str], str]:
    return {port: describe(holders) for port, holders in who_holds_many(ports).items()}


def port_text(port: tuple[int, str]) -> str:
    return f"{port[0]}/{port[1]}"
