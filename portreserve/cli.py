"""portreserve: the holder daemon, and the admin's view of the reservations."""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import __version__, paths, rundirs, sd, systemd_units, units
from .config import SERVICES_FILE, load_config, load_services, unprivileged_port_start

log = logging.getLogger("portreserve")

DESCRIPTION = """\
Hold reserved ports until their service asks for them with portrelease.

Without a command, run the holder.  Under systemd, portreserve.service runs it
with the sockets of the units portreserve-generator made from /usr/lib/portreserve/
and /etc/portreserve/ (one file per service; each line a service name from
/etc/services or a port number or range, optionally /tcp or /udp).  Without
systemd it reads those files itself, binds every port, creates the control
socket /run/portreserve/socket and goes to the background.  Either way it exits
once it holds nothing.

User mode (--user, the default for non-root users): reservations from
$XDG_CONFIG_HOME/portreserve/ over portreserve/ in each of $XDG_CONFIG_DIRS, the
control socket in $XDG_RUNTIME_DIR/portreserve/, units of `systemctl --user`.
"""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    # Options shared by the holder and the subcommands; the holder's are also
    # accepted without a command, as the original took them.
    scope = argparse.ArgumentParser(add_help=False)
    group = scope.add_mutually_exclusive_group()
    group.add_argument("--user", dest="user", action="store_true", default=None, help="the user's reservations")
    group.add_argument("--system", dest="user", action="store_false", help="the system's reservations")
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config-dir", action="append", type=Path, help="configuration directory (repeatable, later wins)"
    )
    config.add_argument("--services", type=Path, default=SERVICES_FILE, help="services(5) file (default /etc/services)")
    config.add_argument("--socket", type=Path, help="control socket path")
    holder = argparse.ArgumentParser(add_help=False)
    holder.add_argument("-d", "--debug", action="store_true", help="stay in the foreground, log debug output to stderr")

    common = [scope, config, holder]
    parser = argparse.ArgumentParser(
        prog="portreserve",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=common,
    )
    parser.add_argument("--version", action="version", version=f"portreserve {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("hold", parents=common, help="run the holder (the default)")
    status = sub.add_parser("status", parents=[scope, config], help="show every name, its ports and their state")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser(
        "reload",
        parents=[scope],
        help="after adding files: daemon-reload, reserve the new names, let the holder adopt them",
    )
    sub.add_parser(
        "step-aside",
        parents=[scope],
        help="(used by portreserve-step-aside.service) let a running holder make way for new sockets",
    )
    args = parser.parse_args(argv)
    if args.user is None:
        args.user = rundirs.default_user_scope()
    return args


def setup_logging(debug: bool, managed: bool) -> None:
    handler = sd.journal_handler("portreserve") if managed and not debug else None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("portreserve: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.INFO)


def daemonize() -> int | None:
    """Fork to the background once the ports are held; the parent returns the
    exit status to use, the child None."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        ok = os.read(read_end, 1) == b"1"
        os.close(read_end)
        return 0 if ok else 1
    os.close(read_end)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.write(write_end, b"1")
    os.close(write_end)
    return None


def run_holder(args: argparse.Namespace) -> int:
    from . import holder as holder_mod

    fds = sd.listen_fds_with_names()
    managed = bool(fds)
    pidfile = (args.socket.parent if args.socket else paths.control_socket(args.user).parent) / "holder.pid"
    if managed:
        # First thing: a grouping unit's ExecStop= asks the holder to drop its
        # copies only while this file exists.
        write_pidfile(pidfile)
    setup_logging(args.debug, managed)
    holder_mod.install_signal_handlers()
    try:
        if managed:
            holder = holder_mod.holder_from_systemd(fds)
        else:
            dirs = args.config_dir or paths.config_dirs(args.user)
            lowest = unprivileged_port_start() if args.user and os.geteuid() != 0 else 1
            config = load_config(dirs, load_services(args.services), lowest)
            for error in config.errors:
                log.warning("%s", error)
            holder = holder_mod.holder_standalone(config, args.socket or paths.control_socket(args.user))
    except holder_mod.Shutdown:
        remove(pidfile)
        return 0
    except OSError as e:
        log.error("cannot start: %s", e)
        remove(pidfile)
        return 1
    for entry in holder.held:
        log.debug("holding %s for %s", entry.port, ", ".join(entry.owners))
    if not managed and not args.debug:
        status = daemonize()
        if status is not None:
            os._exit(status)  # the child owns the sockets now
    try:
        # Inside the try: a SIGTERM that arrives as soon as READY=1 is out
        # (a stop right after the start) is a clean stop, not a traceback.
        if not managed:
            write_pidfile(pidfile)
        sd.notify("READY=1")
        holder.notify_status()
        holder.run()
    except holder_mod.Shutdown as e:
        log.info("stopping on %s", e)
    else:
        if managed:
            # Holding nothing: take the control socket down too, so that a later
            # portrelease finds nothing to talk to instead of starting us again
            # for nothing (and again, until the start limit fails the units).
            # Starting portreserve.service brings it back (Wants=).
            systemd_units.systemctl(args.user, "stop", "--no-block", units.CONTROL_UNIT)
    finally:
        holder.close()
        remove(pidfile)
        if not managed and holder.control is not None:
            remove(args.socket or paths.control_socket(args.user))
    return 0


def write_pidfile(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(f"{os.getpid()}\n")
        tmp.replace(path)
    except OSError as e:
        log.warning("cannot write %s: %s", path, e)


def remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


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
        remove(pidfile)  # stale: the holder was killed
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
        state = systemd_units.show(args.user, [units.HOLDER_UNIT], ["ActiveState"])
        if state.get(units.HOLDER_UNIT, {}).get("ActiveState") not in ("active", "deactivating", "reloading"):
            break
        time.sleep(0.01)
    # Queued now, this start job waits for the new sockets (it is ordered after them).
    systemd_units.systemctl(args.user, "start", "--no-block", units.HOLDER_UNIT)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "status":
        from .status import run_status

        return run_status(args)
    if args.command == "step-aside":
        return run_step_aside(args)
    if args.command == "reload":
        from .status import run_reload

        return run_reload(args)
    return run_holder(args)
