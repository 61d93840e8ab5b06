"""The control socket protocol, shared by the holder and portrelease.

The original's datagram protocol: a request is one datagram holding a bare
service name, or '*' for everything, exactly as the file is named (no
stripping: a name may begin or end with a blank).  Extensions: a sender that
has an address (portrelease autobinds one) gets one datagram back, and the
request '.status' (a name with a '.' can never be a config file) asks what is
held.

An answer is text lines.  The first is 'OK', 'ERR reason', or 'RETRY' (the
holder is going away: ask again, the next one answers).  After 'OK', one line
per port that was not simply freed, 'PORT/PROTO OUTCOME', then up to
MAX_FREE_LINES lines for freed ports, then '+N' when N more were freed:

    free     a fresh socket can bind it now, IPv4 and IPv6
    in-use   released earlier, and bound by someone since (its service)
    taken    never reserved: another process had it before the reservation
    busy     still held after the holder's deadline (what holds it is for
             the client to find out: it may see more of /proc than we do)
    held     (answers to '.status') held by the holder
"""

from __future__ import annotations

# _socket is the C module behind socket: see net.py.
import _socket as socket
import os
import struct

from . import names, net
from .names import Port

ALL = "*"
STATUS = ".status"
MAX_REQUEST = 1024  # longer than any file name (255 bytes) with room to spare
MAX_REPLY = 1 << 20
MAX_FREE_LINES = 512  # an answer to '*' must fit in one datagram

FREE, IN_USE, TAKEN, BUSY, HELD = "free", "in-use", "taken", "busy", "held"
OUTCOMES = (FREE, IN_USE, TAKEN, BUSY, HELD)

_UCRED = struct.Struct("3i")

# Plain classes and tuples rather than dataclasses: portrelease imports this
# module, and importing dataclasses alone costs it several milliseconds.


class Credentials:
    __slots__ = ("pid", "uid", "gid")

    def __init__(self, pid: int, uid: int, gid: int) -> None:
        self.pid, self.uid, self.gid = pid, uid, gid


class Reply:
    __slots__ = ("status", "error", "ports", "more")

    def __init__(self, status: str, error: str = "", ports: dict[Port, str] | None = None, more: int = 0) -> None:
        self.status = status  # OK, ERR, RETRY
        self.error = error
        self.ports: dict[Port, str] = ports if ports is not None else {}
        self.more = more  # freed ports not listed

    @property
    def ok(self) -> bool:
        return self.status == "OK"

    @classmethod
    def refused(cls, reason: str) -> Reply:
        return cls("ERR", reason)

    @classmethod
    def retry(cls) -> Reply:
        return cls("RETRY")

    @classmethod
    def held(cls, ports: list[Port]) -> Reply:
        return cls("OK", ports=dict.fromkeys(ports, HELD))

    @classmethod
    def outcomes(cls, outcomes: dict[Port, str]) -> Reply:
        return cls("OK", ports=outcomes)

    def encode(self) -> bytes:
        if self.status == "ERR":
            return f"ERR {self.error}\n".encode("utf-8", "surrogateescape")
        lines = [self.status]
        free: list[str] = []
        for port, outcome in sorted(self.ports.items()):
            (free if outcome == FREE else lines).append(f"{net.port_text(port)} {outcome}")
        lines += free[:MAX_FREE_LINES]
        more = self.more + max(0, len(free) - MAX_FREE_LINES)
        if more:
            lines.append(f"+{more}")
        return ("\n".join(lines) + "\n").encode()

    @classmethod
    def decode(cls, data: bytes) -> Reply:
        lines = data.decode("utf-8", "surrogateescape").splitlines()
        if not lines:
            return cls("ERR", "empty reply")
        head = lines[0]
        if head.startswith("ERR"):
            return cls("ERR", head[3:].strip())
        if head not in ("OK", "RETRY"):
            return cls("ERR", f"unexpected reply '{head[:80]}'")
        reply = cls(head)
        for line in lines[1:]:
            if line.startswith("+") and line[1:].isdigit():
                reply.more += int(line[1:])
                continue
            spec, _, outcome = line.partition(" ")
            port = names.parse_port_text(spec)
            if port is not None and outcome in OUTCOMES:
                reply.ports[port] = outcome
        return reply


def parse_request(data: bytes) -> str | None:
    """The name a request asks for; None for a malformed one.  Names are file
    names: never empty, never with '/' or NUL."""
    if not data or b"/" in data or b"\0" in data:
        return None
    return data.decode("utf-8", "surrogateescape")


def enable_credentials(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)


def receive(sock: socket.socket) -> tuple[bytes, Credentials | None, str | None, bool]:
    """One datagram: (data, sender credentials, sender address, truncated)."""
    data, ancdata, flags, address = sock.recvmsg(MAX_REQUEST, socket.CMSG_SPACE(_UCRED.size))
    creds = None
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= _UCRED.size:
            creds = Credentials(*_UCRED.unpack_from(payload))
    truncated = bool(flags & socket.MSG_TRUNC)
    return data, creds, address or None, truncated


def authorized(creds: Credentials | None) -> bool:
    """Root's requests, and the holder's own user's (user mode)."""
    return creds is not None and creds.uid in (0, os.geteuid())


def client_socket() -> socket.socket:
    """A datagram socket with an autobound abstract address, so the holder
    can answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    sock.bind("")
    return sock


def request(path: str | os.PathLike[str], text: str, timeout: float) -> Reply:
    """Send one request and wait for the answer.

    Raises FileNotFoundError or ConnectionRefusedError when no holder listens,
    TimeoutError when it does not answer in time.
    """
    sock = client_socket()
    try:
        sock.settimeout(timeout)
        sock.sendto(text.encode("utf-8", "surrogateescape"), os.fspath(path))
        return Reply.decode(sock.recv(MAX_REPLY))
    finally:
        sock.close()
