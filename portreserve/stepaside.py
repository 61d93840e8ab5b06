"""portreserve-step-aside.service: let a running holder make way for new sockets.

systemd refuses to start a socket unit while the service it activates runs
("Socket service portreserve.service already active, refusing"), and a
running holder could not receive a new socket anyway.  Every grouping unit
and every reservation socket Wants= portreserve-step-aside.service, and every
reservation socket is ordered After= it, so this runs before new sockets
start: it asks the service manager in what state the holder is, and if it is
anything but dead it makes it exit (SIGTERM to its main process: it exits 0,
so nothing propagates to units that Require= it, unlike a stop job), waits
until the manager has seen it go, and queues its start again, which the
manager runs after the new sockets.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import time

from . import names, spawn

DEAD = ("inactive", "failed")
WAIT_SECONDS = 30.0


def holder_state(user: bool) -> tuple[str, int]:
    props = spawn.show(user, [names.HOLDER_UNIT], ["ActiveState", "MainPID"]).get(names.HOLDER_UNIT, {})
    try:
        pid = int(props.get("MainPID", "0"))
    except ValueError:
        pid = 0
    return props.get("ActiveState", "inactive"), pid


def run_step_aside(args: argparse.Namespace) -> int:
    try:
        return step_aside(args.user)
    except spawn.CommandError as e:
        print(f"portreserve step-aside: {e}", flush=True)
        return 1


def step_aside(user: bool) -> int:
    """Until the manager says the holder is dead: SIGTERM each main process
    it reports once it is running.  An activating holder is left to finish
    starting first (killed before READY=1, a Type=notify service fails with
    'protocol'); it announces READY as soon as it has adopted its sockets."""
    deadline = time.monotonic() + WAIT_SECONDS
    signalled: set[int] = set()
    was_running = False
    while True:
        state, pid = holder_state(user)
        if state in DEAD:
            break
        was_running = True
        if state == "active" and pid > 0 and pid not in signalled:
            signalled.add(pid)
            terminate(pid)
        if time.monotonic() >= deadline:
            print(f"portreserve: {names.HOLDER_UNIT} did not exit, new reservations may not start", flush=True)
            return 1
        time.sleep(0.02)
    if was_running:
        # Queued now, this start waits for the new sockets (they are ordered
        # before their service).  A holder that was not running is started
        # by the transaction that started us (the grouping unit Wants= it).
        spawn.systemctl(user, "start", "--no-block", names.HOLDER_UNIT)
    return 0


def terminate(pid: int) -> None:
    """SIGTERM through a pidfd (no pid reuse race) and wait for the exit."""
    try:
        pidfd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        select.select([pidfd], [], [], WAIT_SECONDS)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)
