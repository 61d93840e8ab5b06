"""`portreserve status`: every name, its ports and their state.

Exit status of `status` (also in portreserve(8)): 0 every port is held or was
released as intended; 1 a reservation failed (or the state could not be read);
3 the configuration changed since the generator last ran (or a name was never
started since): `portreserve reload` loads it.  2 is argparse's usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable

from . import names, net, paths, protocol, spawn
from .config import Config, gather
from .names import Port

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PENDING = 0, 1, 2, 3
RELOAD_COMMAND = "portreserve reload"
# Unit types a cgroup path component can end in: the unit that owns a process.
UNIT_SUFFIXES = (".service", ".scope", ".socket", ".mount", ".swap")


@dataclasses.dataclass
class Holder:
    """A process that has the port bound (someone else than the reservation)."""

    pid: int
    process: str
    unit: str | None


@dataclasses.dataclass
class PortState:
    name: str
    port: Port
    state: str  # held, released, failed, pending, or systemd's transitional states
    unit: str | None = None
    since: float | None = None  # seconds since the epoch
    detail: str = ""
    taken_by: list[Holder] = dataclasses.field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "port": self.port[0],
            "proto": self.port[1],
            "state": self.state,
            "unit": self.unit,
            "since": iso_time(self.since),
            "detail": self.detail,
            "taken_by": [dataclasses.asdict(h) for h in self.taken_by],
        }


@dataclasses.dataclass
class Report:
    scope: str
    mode: str
    ports: list[PortState]
    empty: list[str]  # names whose file has no valid entry
    pending: list[str]  # names added or changed since the generator ran
    # name -> (units, how, reason): who runs portrelease for it (dropins.py);
    # how: "automatic" (the generated drop-in), "manual", or None (nothing)
    released_by: dict[str, tuple[tuple[str, ...], str | None, str]] = dataclasses.field(default_factory=dict)

    def exit_status(self) -> int:
        if any(p.state == "failed" for p in self.ports):
            return EXIT_FAILED
        if self.pending or any(p.state == "pending" for p in self.ports):
            return EXIT_PENDING
        return EXIT_OK


def iso_time(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds))


# -- who has a port -------------------------------------------------------------


def unit_of_cgroup(text: str) -> str | None:
    """The unit that owns a process, from its /proc/PID/cgroup: the innermost
    component of the cgroup-v2 path that names a unit (slices do not own)."""
    for line in text.splitlines():
        if line.startswith("0::"):
            for part in reversed(line[3:].split("/")):
                if part.endswith(UNIT_SUFFIXES):
                    return part  # a unit name keeps its \x escapes
    return None


def unit_of_pid(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return unit_of_cgroup(f.read())
    except OSError:
        return None


def describe(taken_by: list[Holder]) -> str:
    if not taken_by:
        return "an unknown process"
    return ", ".join(f"{h.process} (pid {h.pid}{', ' + h.unit if h.unit else ''})" for h in taken_by)


def looked_at(shown: dict[str, dict[str, str]], port: Port) -> bool:
    """Whether socket_state() asks who has the port: its unit is loaded, and
    failed or inactive (as `systemctl show` said)."""
    props = shown.get(names.socket_unit(*port), {})
    return props.get("LoadState") == "loaded" and props.get("ActiveState") in ("failed", "inactive")


def in_use(ports: Iterable[Port]) -> dict[Port, list[Holder]]:
    """Who has each of these ports bound now; a port free now is not in it.
    One bind probe per port, then one pass over /proc for all the bound ones
    (not one pass per port)."""
    ipv6 = net.has_ipv6()
    busy = [p for p in dict.fromkeys(ports) if not net.bindable(p, ipv6)]
    pids = net.who_holds_many(busy) if busy else {}
    return {p: [Holder(pid, comm, unit_of_pid(pid)) for pid, comm in pids[p]] for p in busy}


# -- the configuration as the generator sees it ---------------------------------


def load(args: argparse.Namespace) -> Config:
    return gather(args.config_dir or paths.config_dirs(args.user), args.services, args.user)


def generator_dir(args: argparse.Namespace) -> str:
    """Where the generator wrote its map (--generator-dir, else the manager's)."""
    return getattr(args, "generator_dir", None) or paths.generator_dir(args.user)


def loaded_map(args: argparse.Namespace) -> dict[str, list[Port]]:
    """The generator's map.  PID 1 removes it at every daemon-reload until the
    generator has written it again (docs/design.md F18), and answers no call
    until the reload is over: a missing map is read again after PID 1 has
    answered (a few times, for reloads in a row), not taken at once for
    "nothing loaded"."""
    for attempt in range(3):
        found = names.read_map(generator_dir(args))
        if found is not None:
            return found
        if attempt == 2:
            break
        try:
            spawn.show(args.user, [names.HOLDER_UNIT], ["Id"])
        except spawn.CommandError:
            break  # the show that follows says what is wrong
    return {}


# -- state under systemd ----------------------------------------------------------

SHOWN = [
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "ActiveEnterTimestamp",
    "InactiveEnterTimestamp",
    "StateChangeTimestamp",
]


def show(user: bool, units: list[str]) -> dict[str, dict[str, str]]:
    """One `systemctl show` for every unit, timestamps as seconds since the epoch."""
    return spawn.show(user, units, SHOWN, "--timestamp=unix")


def timestamp(value: str | None) -> float | None:
    """'@1764652621' (--timestamp=unix) to seconds; None for 'never'."""
    if not value or not value.startswith("@"):
        return None
    try:
        seconds = float(value[1:])
    except ValueError:
        return None
    return seconds or None


def systemd_report(args: argparse.Namespace, scope: str) -> Report:
    loaded = loaded_map(args)
    config = load(args)
    wanted = config.ports_by_name()
    # What the generator would write now against what it wrote last.
    pending = sorted(n for n in wanted.keys() | loaded.keys() if wanted.get(n) != loaded.get(n))

    units = [names.socket_unit(*p) for ps in loaded.values() for p in ps]
    groups = [names.group_unit(n) for n in loaded]
    try:
        shown = show(args.user, list(dict.fromkeys(units + groups)))
    except spawn.CommandError as e:
        raise StatusError(str(e)) from None

    ports: list[PortState] = []
    taken = in_use(p for name in loaded for p in loaded[name] if looked_at(shown, p))
    for name in sorted(loaded.keys() | wanted.keys()):
        for port in loaded.get(name, []):
            ports.append(socket_state(name, port, shown, taken))
        for port in wanted.get(name, []):
            if port not in loaded.get(name, []):
                ports.append(PortState(name, port, "pending", detail=f"not loaded yet: {RELOAD_COMMAND}"))
    ports.sort(key=lambda p: (p.name, p.port))
    empty = sorted(n for n, ps in wanted.items() if not ps)
    return Report(scope, "systemd", ports, empty, pending, released_by(args, config))


def released_by(args: argparse.Namespace, config: Config) -> dict[str, tuple[tuple[str, ...], str | None, str]]:
    """Which unit releases each name, as the generator decides it."""
    from . import dropins, units

    planner = dropins.Planner(units.Scope(user=args.user), config.settings)
    found = {}
    for r in config.reservations:
        release = planner.release_of(r.name, r.source, r.notes, r.ports)
        found[r.name] = (release.units, release.how, release.reason)
    return found


def socket_state(name: str, port: Port, shown: dict[str, dict[str, str]], taken: dict[Port, list[Holder]]) -> PortState:
    """taken: who has the ports looked_at() chose, bound now (in_use())."""
    unit = names.socket_unit(*port)
    props = shown.get(unit, {})
    # The name's grouping unit: started at boot or by a reload even when this
    # socket then failed (and was reset) or was stopped before it listened.
    group_started = timestamp(shown.get(names.group_unit(name), {}).get("ActiveEnterTimestamp")) is not None
    active = props.get("ActiveState", "unknown")
    entered = timestamp(props.get("ActiveEnterTimestamp"))
    # A unit that failed to start never left "active": it has no
    # InactiveEnterTimestamp, but its last state change is when it failed.
    left = timestamp(props.get("InactiveEnterTimestamp")) or timestamp(props.get("StateChangeTimestamp"))
    state = PortState(name, port, active, unit)
    if props.get("LoadState", "not-found") != "loaded":
        state.state, state.detail = "pending", f"unit not loaded: {RELOAD_COMMAND}"
    elif active == "active":
        state.state, state.since = "held", entered
    elif active == "failed":
        state.state, state.since = "failed", left
        holders = taken.get(port)
        state.taken_by = holders or []
        why = f"taken by {describe(holders)}" if holders is not None else "port is free now"
        state.detail = f"{props.get('Result', 'failed')}; {why}"
    elif active == "inactive" and entered is None and not group_started:
        # Loaded by a daemon-reload but never started since boot.
        state.state, state.since = "pending", left
        state.detail = f"never started: {RELOAD_COMMAND}"
        holders = taken.get(port)
        if holders is not None:
            state.taken_by = holders
            state.detail += f"; in use by {describe(holders)}"
    elif active == "inactive":
        state.state, state.since = "released", left
        if entered is None:
            state.detail = "never held"
        holders = taken.get(port)
        if holders is not None:
            state.taken_by = holders
            state.detail = ", ".join(filter(None, [state.detail, f"in use by {describe(holders)}"]))
    return state


# -- state of a standalone holder -------------------------------------------------


def standalone_report(args: argparse.Namespace, scope: str) -> Report:
    config = load(args)
    try:
        held = protocol.request(args.socket or paths.control_socket(args.user), protocol.STATUS, 2.0).ports
    except (OSError, TimeoutError):
        held = {}
    ports: list[PortState] = []
    taken = in_use(p for ps in config.ports_by_name().values() for p in ps if p not in held)
    for reservation in config.reservations:
        for p in reservation.ports:
            port = (p.number, str(p.proto))
            if port in held:  # the holder answers per port (protocol.HELD): a port is held for every name of it
                ports.append(PortState(reservation.name, port, "held"))
            else:
                state = PortState(reservation.name, port, "released")
                holders = taken.get(port)
                if holders is not None:
                    state.taken_by, state.detail = holders, f"in use by {describe(holders)}"
                ports.append(state)
    empty = sorted(r.name for r in config.reservations if not r.ports)
    return Report(scope, "standalone", ports, empty, [])


class StatusError(Exception):
    pass


# -- output ------------------------------------------------------------------------


def format_time(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else "-"


def render_text(report: Report) -> str:
    lines = [f"Scope: {report.scope} ({report.mode})"]
    rows = [
        (p.name, net.port_text(p.port), p.state, format_time(p.since), ": ".join(filter(None, [p.unit, p.detail])))
        for p in report.ports
    ]
    rows += [(n, "-", "-", "-", "no valid entries") for n in report.empty]
    if not rows:
        lines.append("No reservations.")
    else:
        header = ("NAME", "PORT", "STATE", "SINCE", "UNIT / DETAIL")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
        for row in [header, *rows]:
            lines.append("  ".join(f"{c:<{w}}" for c, w in zip(row, widths, strict=False)) + "  " + row[4])
            lines[-1] = lines[-1].rstrip()
    failed = [p for p in report.ports if p.state == "failed"]
    if failed:
        lines.append(f"{len(failed)} port(s) failed: see journalctl -u {failed[0].unit}")
    if report.released_by:
        lines.append("")
        lines.append("Released by:")
        width = max(len(n) for n in report.released_by)
        for name, (units_, how, reason) in sorted(report.released_by.items()):
            if how is None:
                lines.append(f"  {name:<{width}}  nothing ({reason}): its ports stay reserved")
            elif how == "manual":
                lines.append(f"  {name:<{width}}  by hand ({reason})")
            else:
                lines.append(f"  {name:<{width}}  {' '.join(units_)} (automatic: generated drop-in)")
    waiting = report.pending or sorted({p.name for p in report.ports if p.state == "pending"})
    if waiting:
        lines.append(f"Changed since the last load: {' '.join(waiting)}. Run `{RELOAD_COMMAND}` to load them.")
    return "\n".join(lines) + "\n"


def render_json(report: Report, style: str) -> str:
    document = {
        "scope": report.scope,
        "mode": report.mode,
        "exit_status": report.exit_status(),
        "ports": [p.as_json() for p in report.ports],
        "empty": report.empty,
        "pending": report.pending,
        "reload_command": RELOAD_COMMAND if report.pending else None,
        "released_by": {
            name: {"units": list(units_), "how": how, "reason": reason}
            for name, (units_, how, reason) in sorted(report.released_by.items())
        },
    }
    if style == "short":
        return json.dumps(document, separators=(",", ":")) + "\n"
    return json.dumps(document, indent=2) + "\n"


def page(text: str, no_pager: bool) -> None:
    """Through a pager when a person reads a long text on a terminal, as systemctl does."""
    pager = os.environ.get("SYSTEMD_PAGER", os.environ.get("PAGER", "less"))
    rows = os.get_terminal_size().lines if sys.stdout.isatty() else 0
    if no_pager or not rows or text.count("\n") < rows or pager in ("", "cat"):
        sys.stdout.write(text)
        return
    env = dict(os.environ, LESS=os.environ.get("SYSTEMD_LESS", "FRSXMK"))
    try:
        subprocess.run(pager, shell=True, input=text, text=True, env=env, check=False)
    except OSError:
        sys.stdout.write(text)


def run_status(args: argparse.Namespace) -> int:
    scope = "user" if args.user else "system"
    try:
        if args.socket is None and paths.manager_runs(args.user):
            report = systemd_report(args, scope)
        else:
            report = standalone_report(args, scope)
    except StatusError as e:
        if not args.quiet:
            print(f"portreserve: {e}", file=sys.stderr)
        return EXIT_FAILED
    if args.quiet:
        pass
    elif args.json:
        sys.stdout.write(render_json(report, args.json))
    else:
        page(render_text(report), args.no_pager)
    return report.exit_status()
