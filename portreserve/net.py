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


def socket_inodes(port: tuple[int, str]) -> set[str]:
    """Inodes of the sockets bound to this local port (any address)."""
    number, proto = port
    inodes: set[str] = set()
    for table in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) == number:
                # TCP: only listeners and bound sockets hold the port for binding.
                if proto == "tcp" and fields[3] not in ("0A", "07"):
                    continue
                inodes.add(fields[9])
    return inodes


def who_holds(port: tuple[int, str]) -> list[tuple[int, str]]:
    """(pid, command) of processes with a socket bound to the port, as far as
    /proc lets us see."""
    targets = {f"socket:[{i}]" for i in socket_inodes(port) if i != "0"}
    found: list[tuple[int, str]] = []
    if not targets:
        return found
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry.name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry.name}/fd/{fd}") in targets:
                    with open(f"/proc/{entry.name}/comm") as f:
                        found.append((int(entry.name), f.read().strip()))
                    break
            except OSError:
                continue
    return found


def describe_holders(port: tuple[int, str]) -> str:
    holders = who_holds(port)
    if not holders:
        return "held by an unknown process"
    return "held by " + ", ".join(f"{comm} (pid {pid})" for pid, comm in holders)


def port_text(port: tuple[int, str]) -> str:
    return f"{port[0]}/{port[1]}"
