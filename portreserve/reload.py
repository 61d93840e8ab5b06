"""`portreserve reload`: after adding reservation files, without a reboot.

daemon-reload (the generator writes the new units), then start the names that
were never active since boot; names released since stay released.  It says per
name what happened; exit status 0, or 1 when a new name could not be reserved
(or systemctl failed).  The states come from the same reading as `portreserve
status` (status.py).
"""

from __future__ import annotations

import argparse
import sys

from . import names, net, spawn
from .status import EXIT_FAILED, EXIT_OK, in_use, loaded_map, looked_at, show, socket_state, timestamp


def run_reload(args: argparse.Namespace) -> int:
    try:
        return reload(args)
    except spawn.CommandError as e:
        print(f"portreserve: {e}", file=sys.stderr)
        return EXIT_FAILED


def reload(args: argparse.Namespace) -> int:
    """daemon-reload, then start the reservations that were never active since
    boot; released ones stay released.  Says per name what happened."""
    spawn.systemctl(args.user, "daemon-reload")
    loaded = loaded_map(args)
    groups = {n: names.group_unit(n) for n in loaded}
    units = {n: [groups[n], *(names.socket_unit(*p) for p in loaded[n])] for n in loaded}
    before = show(args.user, list(dict.fromkeys(u for us in units.values() for u in us)))

    def ever_active(unit: str) -> bool:
        return timestamp(before.get(unit, {}).get("ActiveEnterTimestamp")) is not None

    # New: none of the name's units was ever active since boot.  A name
    # released since (its units inactive again) stays released.
    empty = [n for n in sorted(loaded) if not loaded[n]]
    new = [n for n in loaded if loaded[n] and not any(map(ever_active, units[n]))]
    error = ""
    sockets = [names.socket_unit(*p) for n in new for p in loaded[n]]
    if new:
        # The groups with their sockets, in one call: systemctl waits for them
        # all.  Its own messages ("Job for ... failed") are kept for the case
        # where the units' states below do not say why.
        try:
            spawn.systemctl(args.user, "start", "--", *(groups[n] for n in new), *sockets, stderr=True)
        except spawn.CommandError as e:
            error = e.detail or str(e)
    after = show(args.user, [*(groups[n] for n in new), *sockets])
    result = EXIT_OK
    kept = [n for n in sorted(loaded) if n not in new and loaded[n]]
    taken = in_use(p for n in kept for p in loaded[n] if looked_at(before, p))
    states = {n: [socket_state(n, p, before, taken) for p in loaded[n]] for n in kept}
    active = [n for n in kept if any(s.state == "held" for s in states[n])]
    failed = [n for n in kept if n not in active and any(s.state == "failed" for s in states[n])]
    if active:
        print(f"already reserved: {' '.join(active)}")
    released = [n for n in kept if n not in active and n not in failed]
    if released:
        print(f"released earlier, left released: {' '.join(released)}")
    for name in failed:
        why = "; ".join(f"{net.port_text(s.port)} {s.detail}" for s in states[name] if s.state == "failed")
        print(f"{name}: failed earlier, left alone: {why} (retry: systemctl restart {groups[name]})")
    for name in empty:
        print(f"{name}: nothing to reserve (no valid entries)")
    taken_after = in_use(p for n in new for p in loaded[n] if looked_at(after, p))
    for name in sorted(new):
        ports = " ".join(map(net.port_text, loaded[name]))
        problems = []
        for port in loaded[name]:
            state = socket_state(name, port, after, taken_after)
            if state.state != "held":
                problems.append(f"{net.port_text(port)} {state.state}" + (f" ({state.detail})" if state.detail else ""))
        if problems:
            result = EXIT_FAILED
            print(f"{name}: failed: {'; '.join(problems)}")
        else:
            print(f"{name}: reserved {ports}")
    if result != EXIT_OK and error:
        print(error, file=sys.stderr)
    return result
