"""Log lines: to the journal when systemd runs us, to stderr otherwise.

Not the logging module: it alone is 2.5 MB of the holder's 15 MB budget.  The
journal is written through systemd-python's sendv(), which is what
systemd.journal.send() calls (importing systemd.journal would import logging).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

ERR, WARNING, INFO, DEBUG = 3, 4, 6, 7
IDENTIFIER = "portreserve"

_threshold = INFO
_sendv: Callable[..., None] | None = None


def setup(debug: bool = False, journal: bool = False) -> None:
    """debug: print debug lines too; journal: write to the journal if we can."""
    global _threshold, _sendv
    _threshold = DEBUG if debug else INFO
    _sendv = None
    if journal and os.path.exists("/run/systemd/journal/socket"):
        try:
            from systemd._journal import sendv
        except ImportError:
            return
        _sendv = sendv


def log(priority: int, message: str, **fields: object) -> None:
    if priority > _threshold:
        return
    if _sendv is not None:
        extra = [f"{key}={value}" for key, value in fields.items()]
        try:
            _sendv(f"MESSAGE={message}", f"PRIORITY={priority}", f"SYSLOG_IDENTIFIER={IDENTIFIER}", *extra)
            return
        except OSError:
            pass
    try:
        print(f"{IDENTIFIER}: {message}", file=sys.stderr, flush=True)
    except OSError:
        pass


def error(message: str, **fields: object) -> None:
    log(ERR, message, **fields)


def warning(message: str, **fields: object) -> None:
    log(WARNING, message, **fields)


def info(message: str, **fields: object) -> None:
    log(INFO, message, **fields)


def debug(message: str, **fields: object) -> None:
    log(DEBUG, message, **fields)
