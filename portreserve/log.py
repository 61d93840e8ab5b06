"""Log lines: to the journal when systemd runs us, to stderr otherwise.

Not the logging module: it alone is 2.5 MB of the holder's memory.  The
journal is written with its native protocol (one datagram of KEY=value
fields on /run/systemd/journal/socket, see systemd.journal-fields(7) and
sd_journal_sendv(3)), sent with MSG_DONTWAIT: when journald cannot take a
line at once, the line is dropped and counted rather than waited for
(docs/design.md, "Never block"); the count goes out with the next line that
does.
"""

from __future__ import annotations

import os
import socket
import struct
import sys

ERR, WARNING, INFO, DEBUG = 3, 4, 6, 7
IDENTIFIER = "portreserve"
JOURNAL_SOCKET = "/run/systemd/journal/socket"
MAX_MESSAGE = 4096  # a line longer than this is cut: hostile input must not flood the log

_threshold = INFO
_journal: socket.socket | None = None
_dropped = 0


def setup(debug: bool = False, journal: bool = False) -> None:
    """debug: print debug lines too; journal: write to the journal if there is one."""
    global _threshold, _journal
    _threshold = DEBUG if debug else INFO
    _journal = None
    if journal and os.path.exists(JOURNAL_SOCKET):
        _journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)


def _field(key: str, value: str) -> bytes:
    data = value.encode("utf-8", "backslashreplace")
    if b"\n" in data:
        return key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return key.encode() + b"=" + data + b"\n"


def log(priority: int, message: str, **fields: object) -> None:
    global _dropped
    if priority > _threshold:
        return
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "..."
    if _journal is not None:
        if _dropped:
            message += f" ({_dropped} earlier log line(s) dropped: the journal was busy)"
        datagram = b"".join(
            [
                _field("MESSAGE", message),
                _field("PRIORITY", str(priority)),
                _field("SYSLOG_IDENTIFIER", IDENTIFIER),
                *(_field(key, str(value)) for key, value in fields.items()),
            ]
        )
        try:
            _journal.sendto(datagram, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL, JOURNAL_SOCKET)
            _dropped = 0
            return
        except (BlockingIOError, InterruptedError):
            _dropped += 1
            return
        except OSError:
            pass  # no journald (any more): stderr below
    try:
        print(f"{IDENTIFIER}: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def error(message: str, **fields: object) -> None:
    log(ERR, message, **fields)


def warning(message: str, **fields: object) -> None:
    log(WARNING, message, **fields)


def info(message: str, **fields: object) -> None:
    log(INFO, message, **fields)


def debug(message: str, **fields: object) -> None:
    log(DEBUG, message, **fields)
