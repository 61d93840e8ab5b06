"""The only module that imports systemd-python (log.py aside, for the journal).

Everything is imported lazily: portrelease never needs it, and the holder only
when systemd started it.
"""

from __future__ import annotations

import os


def listen_fds_with_names() -> dict[int, str]:
    """The fds systemd passed, with their FileDescriptorName=; {} when none.

    Unsets $LISTEN_* so that children never see them.
    """
    if "LISTEN_FDS" not in os.environ:
        return {}
    from systemd import daemon

    # libsystemd (252) splits $LISTEN_FDNAMES as a word list and drops every
    # backslash, turning the escaped owner name my\x2dsvc into myx2dsvc.
    # systemd joins the names with ':' verbatim: take them from the raw value.
    raw = os.environ.get("LISTEN_FDNAMES")
    fds: dict[int, str] = daemon.listen_fds_with_names(unset_environment=True)
    names = raw.split(":") if raw is not None else []
    if fds and len(names) == len(fds):
        fds = {fd: names[i] for i, fd in enumerate(sorted(fds))}
    return fds


def notify(state: str, fds: list[int] | None = None) -> bool:
    """sd_notify(3); False and no effect without $NOTIFY_SOCKET."""
    if "NOTIFY_SOCKET" not in os.environ:
        return False
    from systemd import daemon

    ok: bool = daemon.notify(state, fds=fds or [])
    return ok


__all__ = ["listen_fds_with_names", "notify"]
