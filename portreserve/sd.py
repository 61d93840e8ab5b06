"""The only module that imports systemd-python.

Everything is imported lazily: portrelease never needs it, and the holder only
when systemd started it.
"""

from __future__ import annotations

import logging
import os
import socket


def listen_fds_with_names() -> dict[int, str]:
    """The fds systemd passed, with their FileDescriptorName=; {} when none.

    Unsets $LISTEN_* so that children never see them.
    """
    if "LISTEN_FDS" not in os.environ:
        return {}
    from systemd import daemon

    fds: dict[int, str] = daemon.listen_fds_with_names(unset_environment=True)
    return fds


def notify(state: str, fds: list[int] | None = None) -> bool:
    """sd_notify(3); False and no effect without $NOTIFY_SOCKET."""
    if "NOTIFY_SOCKET" not in os.environ:
        return False
    from systemd import daemon

    ok: bool = daemon.notify(state, fds=fds or [])
    return ok


def journal_handler(identifier: str) -> logging.Handler | None:
    """A journal log handler when journald is reachable, else None."""
    if not os.path.exists("/run/systemd/journal/socket"):
        return None
    try:
        from systemd import journal
    except ImportError:
        return None
    handler: logging.Handler = journal.JournalHandler(SYSLOG_IDENTIFIER=identifier)
    return handler


def booted() -> bool:
    """sd_booted(3), without loading libsystemd."""
    return os.path.isdir("/run/systemd/system")


__all__ = ["booted", "journal_handler", "listen_fds_with_names", "notify", "socket"]
