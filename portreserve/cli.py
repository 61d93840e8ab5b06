"""The `portreserve` command line: parses it and hands over to the command.

No command (or `hold`) runs the holder, holder.main; `status`, `reload`,
`check` and `step-aside` run status.py, reload.py, check.py and stepaside.py.
Each module is imported only when its command runs: under systemd the holder
lives as long as there is something to hold, and every module it imports stays
in its memory (logging, dataclasses, pathlib and typing together would double
it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__, paths

DESCRIPTION = """\
Hold reserved ports until their service asks for them with portrelease.

Without a command, run the holder.  Under systemd, portreserve.service runs it
with the sockets of the units portreserve-generator made from /usr/lib/portreserve/
and /etc/portreserve/ (one file per service; each line a service name from
/etc/services or a port number or range, optionally /tcp or /udp).  Without
systemd it reads those files itself, binds every port, creates the control
socket /run/portreserve/socket and goes to the background.  Either way it exits
once it holds nothing.

User mode (--user, the default for a non-root user with $XDG_RUNTIME_DIR set):
reservations from
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
    config.add_argument("--config-dir", action="append", help="configuration directory (repeatable, later wins)")
    config.add_argument("--services", default=paths.SERVICES_FILE, help="services(5) file (default %(default)s)")
    config.add_argument("--socket", help="control socket path")
    config.add_argument(
        "--generator-dir", help="under systemd: where the generator wrote its map (default: the manager's)"
    )
    holder = argparse.ArgumentParser(add_help=False)
    holder.add_argument("-d", "--debug", action="store_true", help="stay in the foreground, log debug output to stderr")
    holder.add_argument(
        "--manager-socket", help="under systemd: the service manager's private D-Bus socket (default: the manager's)"
    )

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
    status = sub.add_parser(
        "status",
        parents=[scope, config],
        help="show every name, its ports and their state (exit 0 all as intended, 1 failed, 3 reload pending)",
    )
    status.add_argument(
        "--json", nargs="?", const="pretty", choices=["short", "pretty"], help="machine-readable output (pretty)"
    )
    status.add_argument("--no-pager", action="store_true", help="do not pipe the output into a pager")
    status.add_argument("-q", "--quiet", action="store_true", help="print nothing: only the exit status tells")
    sub.add_parser(
        "reload",
        parents=[scope],
        help="after adding files: daemon-reload, reserve the new names, let the holder adopt them",
    )
    check = sub.add_parser(
        "check",
        parents=[scope],
        help="report every problem in the configuration as FILE:LINE: message (exit 1 if any)",
        description="Read the configuration as portreserve-generator does (the same code) and print "
        "every problem as FILE:LINE: message (FILE: when it concerns the whole file).  "
        "Exit status 1 when there is any problem, 0 otherwise.",
    )
    check.add_argument(
        "--config-dir",
        action="append",
        metavar="DIR",
        help="read this directory instead of the defaults (repeatable, later wins)",
    )
    check.add_argument(
        "--services-file", metavar="FILE", default=paths.SERVICES_FILE, help="services(5) file (default %(default)s)"
    )
    check.add_argument("--json", action="store_true", help="a JSON list of {file, line, message, severity}")
    sub.add_parser(
        "step-aside",
        parents=[scope],
        help="(used by portreserve-step-aside.service) let a running holder make way for new sockets",
    )
    args = parser.parse_args(argv)
    if args.user is None:
        args.user = paths.default_user_scope()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "status":
        from . import status

        return status.run_status(args)
    if args.command == "reload":
        from . import reload

        return reload.run_reload(args)
    if args.command == "check":
        from . import check

        return check.run_check(args)
    if args.command == "step-aside":
        from . import stepaside

        return stepaside.run_step_aside(args)
    from . import holder

    return holder.main(
        user=args.user,
        debug=args.debug,
        control_path=args.socket,
        config_dirs=args.config_dir,
        services_file=args.services,
        generator_dir=args.generator_dir,
        manager_socket=args.manager_socket,
    )
