"""portrelease: give a reserved port to the service that asks for it."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import net, paths, protocol, systemd_units, units
from .config import Port

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
ACTIVE_STATES = ("active", "activating", "reloading", "deactivating")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="portrelease",
        description=(
            "Release the ports that portreserve holds for the named services (the file "
            "names in /etc/portreserve/), or for every service with '*'.  Returns once a "
            "fresh process can bind every one of those ports, IPv4 and IPv6.  Nothing "
            "reserved, or nothing running, is a quiet success.  Typical use, in the "
            "service's unit: ExecStartPre=-/usr/sbin/portrelease NAME"
        ),
        epilog=(
            "Run as root it acts on the system's reservations; run by another user, on that "
            "user's own (systemctl --user, $XDG_CONFIG_HOME/portreserve/).  Exit status: 0 "
            "released or nothing to release, 1 a port could not be freed in time or the "
            "holder refused, 2 usage error."
        ),
    )
    parser.add_argument("names", nargs="+", metavar="NAME", help="service name, or '*' for all")
    parser.add_argument("-v", "--verbose", action="store_true", help="say what happened")
    parser.add_argument(
        "-t", "--timeout", type=float, default=5.0, help="seconds to wait for the ports to become free (default 5)"
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--user", dest="user", action="store_true", default=None, help="act on the user's reservations")
    scope.add_argument("--system", dest="user", action="store_false", help="act on the system's reservations")
    parser.add_argument("--socket", type=Path, help="talk to the holder on this control socket (standalone holder)")
    parser.add_argument(
        "--holder-only", action="store_true", help="only tell the holder to drop its copies (used by the units)"
    )
    parser.add_argument(
        "--escaped", action="store_true", help="the names are escaped as in unit names (systemd-escape, %%i)"
    )
    args = parser.parse_args(argv)
    if args.escaped:
        args.names = [units.unescape(n) for n in args.names]
    if args.user is None:
        args.user = os.geteuid() != 0
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    return args


class Release:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.user: bool = args.user
        self.control = args.socket or paths.control_socket(self.user)

    def say(self, message: str) -> None:
        if self.args.verbose:
            print(message)

    def fail(self, message: str) -> int:
        print(f"portrelease: {message}", file=sys.stderr)
        return EXIT_FAILED

    def ask_holder(self, name: str) -> tuple[list[Port] | None, str | None]:
        """(ports the holder released, error); (None, None) when no holder runs."""
        try:
            reply = protocol.request(self.control, name, self.args.timeout)
        except (FileNotFoundError, ConnectionRefusedError):
            return None, None
        except PermissionError:
            return None, f"permission denied on {self.control} (run as root, or use --user)"
        except TimeoutError:
            return None, f"the holder on {self.control} did not answer within {self.args.timeout:g} s"
        except OSError as e:
            return None, f"cannot reach the holder on {self.control}: {e.strerror}"
        if not reply.ok:
            return None, f"the holder refused '{name}': {reply.error}"
        return list(reply.ports), None

    def holder_only(self) -> int:
        status = EXIT_OK
        for name in self.args.names:
            ports, error = self.ask_holder(name)
            if error:
                status = self.fail(error)
            elif ports:
                self.say(f"{name}: holder dropped {' '.join(map(str, ports))}")
        return status

    def standalone(self) -> int:
        ports: dict[Port, str] = {}
        for name in self.args.names:
            released, error = self.ask_holder(name)
            if error:
                return self.fail(error)
            if released is None:
                self.say(f"{name}: no holder running on {self.control}, nothing to release")
                continue
            if not released:
                self.say(f"{name}: nothing reserved")
            for port in released:
                ports.setdefault(port, name)
        return self.wait(ports)

    def under_systemd(self, groups: dict[str, Path]) -> int:
        chosen: dict[str, list[str]] = {}  # group unit -> its socket units
        for name in self.args.names:
            if name == protocol.ALL:
                found = list(groups)
            else:
                unit = units.group_unit(name)
                found = [unit] if unit in groups else []
            if not found:
                self.say(f"{name}: nothing reserved")
            for unit in found:
                chosen[unit] = systemd_units.sockets_of_group(groups[unit])
        every = list(dict.fromkeys([*chosen, *(s for socks in chosen.values() for s in socks)]))
        # Act only on what is active: a port whose reservation was released
        # earlier may be in use by its service right now, and that is no reason
        # to wait.
        shown = systemd_units.show(self.user, every, ["ActiveState"])
        active = [u for u in every if shown.get(u, {}).get("ActiveState") in ACTIVE_STATES]
        ports: dict[Port, str] = {}
        for group, sockets in chosen.items():
            name = units.name_of_group_unit(group) or group
            for port in systemd_units.ports_of(s for s in sockets if s in active):
                ports.setdefault(port, name)
        if not active:
            self.say("nothing reserved any more")
            return EXIT_OK
        # One call, explicit units: systemctl waits for every job it queued
        # (stop propagation through PartOf= alone would not be waited for).
        # The groups' ExecStop= make the holder drop its copies.
        result = systemd_units.systemctl(self.user, "stop", "--", *active)
        if result.returncode != 0:
            return self.fail(f"systemctl stop failed: {result.stderr.strip()}")
        return self.wait(ports)

    def wait(self, ports: dict[Port, str]) -> int:
        """Return once every port can be bound by a fresh process."""
        ipv6 = net.has_ipv6()
        deadline = time.monotonic() + self.args.timeout
        busy = list(ports)
        delay = 0.0005
        while True:
            busy = [p for p in busy if not net.bindable(p, ipv6)]
            if not busy or time.monotonic() >= deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        for port in busy:
            self.fail(
                f"{port} ({ports[port]}) is still in use after {self.args.timeout:g} s: {net.describe_holders(port)}"
            )
        if busy:
            return EXIT_FAILED
        if ports:
            self.say("released " + " ".join(f"{p} ({n})" for p, n in ports.items()))
        return EXIT_OK

    def run(self) -> int:
        if self.args.holder_only:
            return self.holder_only()
        if self.args.socket is None:
            groups = systemd_units.group_files(paths.generator_dir(self.user))
            if groups:
                return self.under_systemd(groups)
        return self.standalone()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return Release(args).run()
    except KeyboardInterrupt:
        return 130
