"""What the holder needs from the service manager's side of the fence:
sd_listen_fds() through systemd-python, and sd_notify() done by hand so that
it never blocks.

libsystemd's sd_notify() sends with a blocking sendmsg(): when PID 1 is busy
and the notify socket's queue is full it waits, and a holder that waits
answers nobody (docs/design.md, "Never block").  Here every message is sent
with MSG_DONTWAIT; one that cannot go out at once is kept and sent again by
flush(), and a newer STATUS= replaces an older one that never went out.
"""

from __future__ import annotations

import os
import socket


def listen_fds_with_names() -> dict[int, str]:
    """The fds systemd passed, with their FileDescriptorName=; {} when none.

    Unsets $LISTEN_* so that children never see them.
    """
    if "LISTEN_FDS" not in os.environ:
        return {}
    from systemd import daemon

    # libsystemd (252) splits $LISTEN_FDNAMES as a word list and drops every
    # backslash; systemd joins the names with ':' verbatim: take them from
    # the raw value.
    raw = os.environ.get("LISTEN_FDNAMES")
    fds: dict[int, str] = daemon.listen_fds_with_names(unset_environment=True)
    names = raw.split(":") if raw is not None else []
    if fds and len(names) == len(fds):
        fds = {fd: names[i] for i, fd in enumerate(sorted(fds))}
    return fds


_socket: socket.socket | None = None
_address = ""
_backlog: list[str] = []


def _notify_socket() -> socket.socket | None:
    global _socket, _address
    if _socket is None:
        path = os.environ.get("NOTIFY_SOCKET")
        if not path or path[0] not in "/@":
            return None
        _address = "\0" + path[1:] if path[0] == "@" else path
        _socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    return _socket


def notify(state: str) -> bool:
    """Send (or queue) one notification; False without $NOTIFY_SOCKET or
    when it had to be queued."""
    if _notify_socket() is None:
        return False
    if state.startswith("STATUS="):
        # Only the newest status matters.
        _backlog[:] = [m for m in _backlog if not m.startswith("STATUS=")]
    _backlog.append(state)
    return flush()


def flush() -> bool:
    """Send what is queued; True when nothing is left."""
    sock = _notify_socket()
    if sock is None:
        _backlog.clear()
        return False
    while _backlog:
        try:
            sock.sendto(_backlog[0].encode("utf-8", "replace"), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL, _address)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            _backlog.clear()  # the manager is gone: nobody to tell
            return False
        del _backlog[0]
    return True


def pending() -> bool:
    return bool(_backlog)


__all__ = ["flush", "listen_fds_with_names", "notify", "pending"]
