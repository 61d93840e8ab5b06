"""portrelease: give a reserved port to the service that asks for it.

It runs in ExecStartPre= of every consumer, so it is lean on purpose: it
imports socket and import-free helpers only (argparse only to print help or a
usage error; no subprocess, pathlib or dataclasses), and under systemd it needs
one round trip to the holder and one systemctl call.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

from . import names, net, protocol, rundirs, spawn

# Not typing.TYPE_CHECKING: importing typing would cost several milliseconds
# (mypy treats any name TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
ACTIVE_STATES = ("active", "activating", "reloading", "deactivating")
ALL_UNIT = "portreserve.target"  # units.ALL_UNIT, without importing units
ALL_SOCKETS_UNIT = "portreserve-sockets.target"  # units.ALL_SOCKETS_UNIT

Port = tuple[int, str]

DESCRIPTION = (
    "Release the ports that portreserve holds for the named services (the file names in "
    "/etc/portreserve/), or for every service with '*'.  Returns once a fresh process can bind "
    "every one of those ports, IPv4 and IPv6.  Nothing reserved, or nothing running, is a quiet "
    "success.  Typical use, in the service's unit: ExecStartPre=-/usr/sbin/portrelease NAME"
)
EPILOG = (
    "Run as root it acts on the system's reservations; run by another user who has a session "
    "($XDG_RUNTIME_DIR set), on that user's own (systemctl --user, $XDG_CONFIG_HOME/portreserve/). "
    "A system service with User= must run it as root: ExecStartPre=+/usr/sbin/portrelease NAME. "
    "Exit status: 0 released or nothing to release, 1 a port could not be freed in time or the "
    "holder refused, 2 usage error."
)


class Options:
    """What the command line asks for (the attributes of argparse's Namespace)."""

    names: list[str]
    verbose: bool = False
    timeout: float = 5.0
    user: bool | None = None
    socket: str | None = None
    holder_only: bool = False
    escaped: bool = False


def build_parser() -> argparse.ArgumentParser:
    import argparse  # only for --help and usage errors

    parser = argparse.ArgumentParser(prog="portrelease", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("names", nargs="+", metavar="NAME", help="service name, or '*' for all")
    parser.add_argument("-v", "--verbose", action="store_true", help="say what happened")
    parser.add_argument(
        "-t", "--timeout", type=float, default=5.0, help="seconds to wait for the ports to become free (default 5)"
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--user", dest="user", action="store_true", default=None, help="act on the user's reservations")
    scope.add_argument("--system", dest="user", action="store_false", help="act on the system's reservations")
    parser.add_argument("--socket", help="talk to the holder on this control socket (standalone holder)")
    parser.add_argument(
        "--holder-only", action="store_true", help="only tell the holder to drop its copies (used by the units)"
    )
    parser.add_argument(
        "--escaped", action="store_true", help="the names are escaped as in unit names (systemd-escape, %%i)"
    )
    return parser


def parse_fast(argv: Sequence[str]) -> Options | None:
    """The common command lines without argparse; None for anything else
    (help, errors, unusual spellings), which argparse then handles."""
    opts = Options()
    opts.names = []
    scopes = 0
    args = iter(argv)
    for arg in args:
        if arg == "--":
            opts.names += list(args)
        elif arg in ("-v", "--verbose"):
            opts.verbose = True
        elif arg in ("-t", "--timeout", "--socket") or arg.startswith(("--timeout=", "--socket=")):
            key, eq, value = arg.partition("=")
            if not eq:
                value = next(args, "")
            if key == "--socket":
                opts.socket = value or None
                continue
            try:
                opts.timeout = float(value)
            except ValueError:
                return None
        elif arg in ("--user", "--system"):
            opts.user = arg == "--user"
            scopes += 1
        elif arg == "--holder-only":
            opts.holder_only = True
        elif arg == "--escaped":
            opts.escaped = True
        elif arg.startswith("-") and arg != "-":
            return None
        else:
            opts.names.append(arg)
    if not opts.names or scopes > 1 or opts.socket is None and any(a.startswith("--socket") for a in argv):
        return None
    return opts


def parse_args(argv: Sequence[str]) -> Options:
    opts = parse_fast(argv)
    if opts is None:
        opts = build_parser().parse_args(argv, namespace=Options())  # exits on --help and errors
    if opts.timeout <= 0:
        build_parser().error("--timeout must be positive")
    if opts.escaped:
        opts.names = [names.unescape(n) for n in opts.names]
    if opts.user is None:
        opts.user = rundirs.default_user_scope()
    return opts


class Release:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.user = bool(opts.user)
        self.control = opts.socket or rundirs.control_socket(self.user)

    def say(self, message: str) -> None:
        if self.opts.verbose:
            print(message)

    def fail(self, message: str) -> int:
        print(f"portrelease: {message}", file=sys.stderr)
        return EXIT_FAILED

    def systemctl(self, *args: str, capture: bool = False) -> tuple[int, str]:
        return spawn.systemctl(self.user, *args, capture=capture)

    def ask_holder(self, name: str) -> tuple[dict[Port, list[str]] | None, str | None]:
        """(ports the holder released, with their owners, error); (None, None)
        when no holder runs."""
        try:
            reply = protocol.request(self.control, name, self.opts.timeout)
        except (FileNotFoundError, ConnectionRefusedError):
            return None, None
        except PermissionError:
            return None, (
                f"permission denied on {self.control}: only root may release system reservations "
                "(in a unit with User=, use ExecStartPre=+/usr/sbin/portrelease NAME; "
                "for your own reservations, --user)"
            )
        except TimeoutError:
            return None, f"the holder on {self.control} did not answer within {self.opts.timeout:g} s"
        except OSError as e:
            return None, f"cannot reach the holder on {self.control}: {e.strerror}"
        if not reply.ok:
            return None, f"the holder refused '{name}': {reply.error}"
        return reply.ports, None

    def holder_only(self) -> int:
        status = EXIT_OK
        for name in self.opts.names:
            ports, error = self.ask_holder(name)
            if error:
                status = self.fail(error)
            elif ports:
                self.say(f"{name}: holder dropped {' '.join(map(net.port_text, ports))}")
        return status

    def standalone(self) -> int:
        released: dict[Port, str] = {}
        for name in self.opts.names:
            ports, error = self.ask_holder(name)
            if error:
                return self.fail(error)
            if ports is None:
                self.say(f"{name}: no holder running on {self.control}, nothing to release")
                continue
            if not ports:
                self.say(f"{name}: nothing reserved")
            for port in ports:
                released.setdefault(port, name)
        return self.wait(released)

    def under_systemd(self, generator_dir: str, groups: set[str]) -> int:
        requested = []
        for name in self.opts.names:
            if name == protocol.ALL or names.group_unit(name) in groups:
                requested.append(name)
            else:
                self.say(f"{name}: nothing reserved")
        if not requested:
            return EXIT_OK
        # The holder drops its copies first, and says which ports it had: the
        # ones whose socket units are active.
        released: dict[Port, str] = {}
        to_stop: dict[str, None] = {}
        reached = False
        for name in requested:
            ports, error = self.ask_holder(name)
            if error:
                return self.fail(error)
            if ports is None:
                continue
            reached = True
            for port, owners in ports.items():
                released.setdefault(port, name if name != protocol.ALL else ",".join(map(names.unescape, owners)))
                to_stop[names.socket_unit(*port)] = None
                for owner in owners if name == protocol.ALL else [names.escape(name)]:
                    to_stop[f"{names.GROUP_PREFIX}{owner}{names.GROUP_SUFFIX}"] = None
        if not reached:
            return self.from_units(generator_dir, requested, groups)
        if not to_stop:
            self.say(f"{' '.join(requested)}: nothing reserved any more")
            return EXIT_OK
        if protocol.ALL in requested:
            # Everything: one unit instead of thousands of D-Bus calls.  The
            # sockets first (all are PartOf= it), the grouping units once the
            # ports are free: their ExecStop= cost PID 1 a fork each.
            status, _ = self.systemctl("stop", "--no-block", ALL_SOCKETS_UNIT)
            if status != 0:
                return self.fail(f"systemctl stop failed (exit status {status})")
            result = self.wait(released)
            # Not waited for: with thousands of grouping units PID 1 is busy
            # for seconds forking their ExecStop=, and would answer late.
            spawn.start(["systemctl", *(["--user"] if self.user else []), "--no-block", "stop", ALL_UNIT])
            return result
        # Then systemd closes its own copies.  --no-block: what counts is that
        # the ports can be bound, which wait() checks, and the grouping units'
        # ExecStop= need not be waited for.
        status, _ = self.systemctl("stop", "--no-block", "--", *to_stop)
        if status != 0:
            return self.fail(f"systemctl stop failed (exit status {status})")
        return self.wait(released)

    def from_units(self, generator_dir: str, requested: list[str], groups: set[str]) -> int:
        """No holder to ask (it crashed and its control socket is gone, or it
        was never started): stop whatever of these units is active."""
        chosen = sorted(groups) if protocol.ALL in requested else [names.group_unit(n) for n in requested]
        units: dict[str, None] = {}
        for group in chosen:
            units[group] = None
            units.update(dict.fromkeys(names.sockets_of_group(os.path.join(generator_dir, group))))
        shown = spawn.show(self.user, list(units), ["ActiveState"])
        if shown is None:
            return self.fail("systemctl show failed")
        active = [unit for unit, props in shown.items() if props.get("ActiveState") in ACTIVE_STATES]
        if not active:
            self.say(f"{' '.join(requested)}: nothing reserved any more")
            return EXIT_OK
        status, _ = self.systemctl("stop", "--", *active)
        if status != 0:
            return self.fail(f"systemctl stop failed (exit status {status})")
        ports = {p: "" for u in active if (p := names.port_of_socket_unit(u))}
        return self.wait(ports)

    def wait(self, ports: dict[Port, str]) -> int:
        """Return once every port can be bound by a fresh process."""
        ipv6 = net.has_ipv6()
        deadline = time.monotonic() + self.opts.timeout
        busy = list(ports)
        while True:
            busy = [p for p in busy if not net.bindable(p, ipv6)]
            if not busy or time.monotonic() >= deadline:
                break
            # A bind attempt costs microseconds: poll often rather than back
            # off, the port usually frees within milliseconds of systemctl.
            time.sleep(0.001)
        for port in busy:
            owner = f" ({ports[port]})" if ports[port] else ""
            self.fail(
                f"{net.port_text(port)}{owner} is still in use after {self.opts.timeout:g} s: "
                f"{net.describe_holders(port)}"
            )
        if busy:
            return EXIT_FAILED
        if ports:
            self.say("released " + " ".join(f"{net.port_text(p)} ({n})" for p, n in ports.items()))
        return EXIT_OK

    def run(self) -> int:
        if self.opts.holder_only:
            return self.holder_only()
        if self.opts.socket is None:
            generator_dir = rundirs.generator_dir(self.user)
            try:
                entries = os.listdir(generator_dir)
            except OSError:
                entries = []
            # A prefix test, not name_of_group_unit(): no unescaping of every
            # entry of a directory that may hold thousands of units.
            groups = {e for e in entries if names.is_group_unit(e)}
            if groups:
                return self.under_systemd(generator_dir, groups)
        return self.standalone()


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return Release(opts).run()
    except KeyboardInterrupt:
        return 130
