"""portreserve-step-aside.service: let a running holder make way for new sockets."""

from __future__ import annotations

import argparse
import os
import select
import signal
import time
from pathlib import Path

from . import paths, spawn, units


def is_holder(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(arg.endswith(b"portreserve") for arg in cmdline[:3]) and b"hold" in cmdline


def run_step_aside(args: argparse.Namespace) -> int:
    """Make a running holder exit so that new socket units can start (systemd
    refuses while their service runs), then have it started again after them."""
    pidfile = paths.holder_pidfile(args.user)
    try:
        pid = int(pidfile.read_text())
    except (OSError, ValueError):
        return 0
    if not is_holder(pid):
        pidfile.unlink(missing_ok=True)  # stale: the holder was killed
        return 0
    try:
        pidfd = os.pidfd_open(pid)
        os.kill(pid, signal.SIGTERM)  # exits 0: not a stop job, nothing propagates
    except ProcessLookupError:
        return 0
    select.select([pidfd], [], [], 10)
    os.close(pidfd)
    # Wait until systemd has seen it go: the sockets' start jobs run next.
    for _ in range(200):
        state = spawn.show(args.user, [units.HOLDER_UNIT], ["ActiveState"]) or {}
        if state.get(units.HOLDER_UNIT, {}).get("ActiveState") not in ("active", "deactivating", "reloading"):
            break
        time.sleep(0.01)
    # Queued now, this start job waits for the new sockets (it is ordered after them).
    spawn.systemctl(args.user, "start", "--no-block", units.HOLDER_UNIT)
    return 0
