"""`portreserve status` and `portreserve reload`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from . import names, net, paths, protocol, spawn, units
from .config import Port, load_config, load_services


@dataclasses.dataclass
class PortState:
    port: Port
    state: str  # held, released, failed, ...
    detail: str = ""


def group_files(generator_dir: Path) -> dict[str, Path]:
    """Every grouping unit the generator wrote: {unit name: path}."""
    try:
        entries = os.listdir(generator_dir)
    except OSError:
        return {}
    return {n: generator_dir / n for n in sorted(entries) if names.is_group_unit(n)}


def systemd_state(user: bool) -> dict[str, list[PortState]] | None:
    groups = group_files(paths.generator_dir(user))
    if not groups:
        return None
    sockets = {g: names.sockets_of_group(str(p)) for g, p in groups.items()}
    every = list(groups) + sorted({s for socks in sockets.values() for s in socks})
    shown = spawn.show(user, every, ["ActiveState", "SubState", "Result"]) or {}
    by_name: dict[str, list[PortState]] = {}
    for group, socks in sockets.items():
        states = []
        for unit in socks:
            port = units.port_of_socket_unit(unit)
            assert port is not None
            props = shown.get(unit, {})
            active = props.get("ActiveState", "unknown")
            if active == "active":
                states.append(PortState(port, "held"))
            elif active == "failed":
                states.append(PortState(port, "failed", f"{unit}: {props.get('Result', '')}; " + taken_by(port)))
            elif active == "inactive":
                states.append(PortState(port, "released", in_use(port)))
            else:
                states.append(PortState(port, active))
        by_name[units.name_of_group_unit(group) or group] = states
    return by_name


def taken_by(port: Port) -> str:
    return net.describe_holders(port) if not net.bindable(port, net.has_ipv6()) else "port is free"


def in_use(port: Port) -> str:
    """For a released port: who uses it now, if anyone."""
    if net.bindable(port, net.has_ipv6()):
        return ""
    return "in use, " + net.describe_holders(port).removeprefix("held ")


def standalone_state(args: argparse.Namespace) -> dict[str, list[PortState]]:
    dirs = [Path(d) for d in args.config_dir] if args.config_dir else paths.config_dirs(args.user)
    config = load_config(dirs, load_services(Path(args.services)))
    try:
        held = protocol.request(args.socket or paths.control_socket(args.user), protocol.STATUS, 2.0).ports
    except (OSError, TimeoutError):
        held = {}
    held_by = {(p, units.unescape(n)) for p, owners in held.items() for n in owners}
    by_name: dict[str, list[PortState]] = {}
    for reservation in config.reservations:
        states = []
        for port in reservation.ports:
            if (port, reservation.name) in held_by:
                states.append(PortState(port, "held"))
            elif port in held:
                states.append(PortState(port, "held", "by another name's reservation"))
            else:
                states.append(PortState(port, "released", in_use(port)))
        by_name[reservation.name] = states
    return by_name


def run_status(args: argparse.Namespace) -> int:
    scope = "user" if args.user else "system"
    by_name = None if args.socket else systemd_state(args.user)
    mode = "systemd" if by_name is not None else "standalone"
    if by_name is None:
        by_name = standalone_state(args)
    if args.json:
        document = {
            "scope": scope,
            "mode": mode,
            "names": {
                n: [
                    {"port": s.port.number, "proto": str(s.port.proto), "state": s.state, "detail": s.detail}
                    for s in st
                ]
                for n, st in by_name.items()
            },
        }
        json.dump(document, sys.stdout, indent=2)
        print()
        return 0
    print(f"Scope: {scope} ({mode})")
    if not by_name:
        print("No reservations.")
        return 0
    width = max(4, *(len(n) for n in by_name))
    print(f"{'NAME':<{width}}  {'PORT':<11}  {'STATE':<8}  DETAIL")
    for name, states in by_name.items():
        if not states:
            print(f"{name:<{width}}  {'-':<11}  {'-':<8}  no valid entries")
        for s in states:
            print(f"{name:<{width}}  {str(s.port):<11}  {s.state:<8}  {s.detail}".rstrip())
    return 0


def run_reload(args: argparse.Namespace) -> int:
    """daemon-reload, then start the reservations that were never active since
    boot; released ones stay released.  (portreserve-step-aside.service makes a
    running holder make way and come back with the new sockets.)"""
    status, _ = spawn.systemctl(args.user, "daemon-reload")
    if status != 0:
        print("portreserve: daemon-reload failed", file=sys.stderr)
        return 1
    groups = list(group_files(paths.generator_dir(args.user)))
    shown = spawn.show(args.user, groups, ["ActiveState", "ActiveEnterTimestampMonotonic"]) or {}
    new = [g for g in groups if shown.get(g, {}).get("ActiveEnterTimestampMonotonic", "0") == "0"]
    if not new:
        return 0
    # The groups with their sockets, in one call: systemctl waits for them all.
    sockets = [s for g in new for s in names.sockets_of_group(str(paths.generator_dir(args.user) / g))]
    status, _ = spawn.systemctl(args.user, "start", "--", *new, *sockets)
    if status != 0:
        print(f"portreserve: starting {' '.join(new)} failed", file=sys.stderr)
    print("reserved " + " ".join(units.name_of_group_unit(g) or g for g in new))
    return 0 if status == 0 else 1


COMMANDS = {"status": run_status, "reload": run_reload}
