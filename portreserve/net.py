"""Binding ports, checking that they are free, and finding who holds them."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from .config import Port, Proto

_TYPES = {Proto.TCP: socket.SOCK_STREAM, Proto.UDP: socket.SOCK_DGRAM}


def has_ipv6() -> bool:
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
    except OSError:
        return False
    return True


def bind_port(port: Port, ipv6: bool, reuseaddr: bool = False) -> socket.socket:
    """A socket bound to the port on every address: [::] dual-stack, IPv4 only
    where the kernel has no IPv6.  Raises OSError."""
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    sock = socket.socket(family, _TYPES[port.proto] | socket.SOCK_CLOEXEC)
    try:
        if reuseaddr:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if ipv6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", port.number))
        else:
            sock.bind(("0.0.0.0", port.number))
    except BaseException:
        sock.close()
        raise
    return sock


def bindable(port: Port, ipv6: bool) -> bool:
    """Could a fresh server bind this port now, IPv4 and IPv6?

    TCP is tried with SO_REUSEADDR like every server does (a listener still
    conflicts; lingering TIME_WAIT does not); UDP without, since with it two
    sockets may share a port.
    """
    try:
        bind_port(port, ipv6, reuseaddr=port.proto is Proto.TCP).close()
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, errno.EACCES):
            return False
        raise
    return True


_PROC_NET = {
    Proto.TCP: ("/proc/net/tcp", "/proc/net/tcp6"),
    Proto.UDP: ("/proc/net/udp", "/proc/net/udp6"),
}


def socket_inodes(port: Port) -> set[str]:
    """Inodes of the sockets bound to this local port (any address)."""
    inodes: set[str] = set()
    for table in _PROC_NET[port.proto]:
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) == port.number:
                # TCP: only listeners and bound sockets hold the port for binding.
                if port.proto is Proto.TCP and fields[3] not in ("0A", "07"):
                    continue
                inodes.add(fields[9])
    return inodes


def who_holds(port: Port) -> list[tuple[int, str]]:
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
                    comm = Path(f"/proc/{entry.name}/comm").read_text().strip()
                    found.append((int(entry.name), comm))
                    break
            except OSError:
                continue
    return found


def describe_holders(port: Port) -> str:
    holders = who_holds(port)
    if not holders:
        return "held by an unknown process"
    return "held by " + ", ".join(f"{comm} (pid {pid})" for pid, comm in holders)
