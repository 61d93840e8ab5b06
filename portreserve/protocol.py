"""The control socket protocol, shared by the holder and portrelease.

The original's datagram protocol: a request is one datagram holding a bare
service name, or '*' for everything.  Extensions: a sender that has an address
(portrelease autobinds one) gets one datagram back, and the request '.status'
(a name with a '.' can never be a config file) asks what is held.

Answers are text lines: the first is 'OK' or 'ERR reason'; then one line per
port, 'PORT/PROTO NAME[,NAME...]' with the names escaped as in unit names.
"""

from __future__ import annotations

# _socket is the C module behind socket: see net.py.
import _socket as socket
import os
import struct

from . import names

ALL = "*"
STATUS = ".status"
MAX_REQUEST = 1024  # longer than any file name (255 bytes) with room to spare
MAX_REPLY = 1 << 20
CONTROL_FDNAME = names.CONTROL_FDNAME

_UCRED = struct.Struct("3i")

# Plain classes and tuples rather than dataclasses: portrelease imports this
# module, and importing dataclasses alone costs it several milliseconds.
PortKey = tuple[int, str]


class Credentials:
    __slots__ = ("pid", "uid", "gid")

    def __init__(self, pid: int, uid: int, gid: int) -> None:
        self.pid, self.uid, self.gid = pid, uid, gid


class Reply:
    __slots__ = ("ok", "error", "ports")

    def __init__(self, ok: bool, error: str, ports: dict[PortKey, list[str]]) -> None:
        self.ok, self.error, self.ports = ok, error, ports

    def encode(self) -> bytes:
        head = "OK" if self.ok else f"ERR {self.error}"
        lines = [head] + [f"{n}/{p} {','.join(owners)}" for (n, p), owners in self.ports.items()]
        return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")

    @classmethod
    def decode(cls, data: bytes) -> Reply:
        lines = data.decode("utf-8", "surrogateescape").splitlines()
        if not lines:
            return cls(False, "empty reply", {})
        ok = lines[0] == "OK"
        error = "" if ok else lines[0].removeprefix("ERR").strip()
        ports: dict[PortKey, list[str]] = {}
        for line in lines[1:]:
            spec, _, owners = line.partition(" ")
            port = names.parse_port_text(spec)
            if port is not None:
                ports[port] = owners.split(",") if owners else []
        return cls(ok, error, ports)


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


def request(path: str | os.PathLike[str], text: str, timeout: float) -> Reply:
    """Send one request and wait for the answer.

    Raises FileNotFoundError or ConnectionRefusedError when no holder listens,
    TimeoutError when it does not answer in time.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind("")  # autobind an abstract address, so the holder can answer
        sock.settimeout(timeout)
        sock.sendto(text.encode("utf-8", "surrogateescape"), os.fspath(path))
        return Reply.decode(sock.recv(MAX_REPLY))
    finally:
        sock.close()
