"""portreserve-generator: /etc/portreserve/* to .socket units (systemd.generator(7)).

Runs at every boot and every daemon-reload, before units load, in parallel with
other generators: standard library only, no talking to other processes, never
a non-zero exit for bad configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from . import units
from .config import Config, Services, load_config, load_services, unprivileged_port_start
from .paths import config_dirs

Log = Callable[[int, str], None]

LOG_ERR, LOG_WARNING, LOG_INFO = 3, 4, 6


def make_logger() -> Log:
    """Log to the kernel log when systemd runs us, to stderr when a person does."""
    prog = units.GENERATOR
    if os.environ.get("SYSTEMD_EXEC_PID") == str(os.getpid()):
        try:
            kmsg = open("/dev/kmsg", "w", buffering=1)  # noqa: SIM115 - lives as long as the process
        except OSError:
            kmsg = None
        if kmsg is not None:

            def log_kmsg(level: int, message: str) -> None:
                try:
                    kmsg.write(f"<{level}>{prog}[{os.getpid()}]: {message}\n")
                except OSError:
                    pass

            return log_kmsg

    def log_stderr(level: int, message: str) -> None:
        print(f"{prog}: {message}", file=sys.stderr)

    return log_stderr


def generate(config: Config, scope: units.Scope, log: Log) -> tuple[dict[str, str], dict[str, str]]:
    """Return (files, symlinks) relative to the output directory."""
    files: dict[str, str] = {}
    links: dict[str, str] = {}
    usable = []
    for reservation in config.reservations:
        group = units.group_unit(reservation.name)
        if len(group) > units.UNIT_NAME_MAX:
            log(LOG_ERR, f"{reservation.source}: file name too long for a unit name, ignoring file")
            continue
        usable.append(reservation)
        files[group] = units.render_group_unit(reservation, scope)
        links[f"sockets.target.wants/{group}"] = f"../{group}"

    for port, owners in Config(reservations=usable).owners().items():
        name = units.fdname([o.name for o in owners])
        while len(name) > units.FDNAME_MAX and len(owners) > 1:
            # Pathological: so many long names share one port that systemd would
            # refuse the FileDescriptorName=.  Keep the first owners that fit.
            dropped = owners[-1]
            owners = owners[:-1]
            log(LOG_ERR, f"{dropped.source}: too many names share {port}, '{dropped.name}' will not release it")
            name = units.fdname([o.name for o in owners])
        files[units.socket_unit(port)] = units.render_socket_unit(port, owners, scope)
    return files, links


def write_tree(outdir: Path, files: dict[str, str], links: dict[str, str]) -> None:
    for rel, text in files.items():
        path = outdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write whole: systemd may read the directory while another generator runs.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".#")
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    for rel, target in links.items():
        path = outdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(target, path)
        except FileExistsError:
            pass


def run(
    outdir: Path | None,
    scope: units.Scope,
    dirs: list[Path],
    services: Services,
    log: Log,
    out: Callable[[str], None] = print,
) -> int:
    # A user manager cannot bind privileged ports (root's own manager can).
    lowest = unprivileged_port_start() if scope.user and os.geteuid() != 0 else 1
    config = load_config(dirs, services, lowest)
    for error in config.errors:
        log(LOG_WARNING, str(error))
    files, links = generate(config, scope, log)
    if outdir is None:
        for rel, text in files.items():
            out(f"# {rel}\n{text}")
        for rel, target in links.items():
            out(f"# {rel} -> {target}\n")
        return 0
    try:
        write_tree(outdir, files, links)
    except OSError as e:
        # Nothing sensible left to do; whatever was written stays (whole files).
        log(LOG_ERR, f"failed to write units to {outdir}: {e}")
        return 1
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=units.GENERATOR,
        description=(
            "systemd generator: turn the port reservations in /usr/lib/portreserve/ and "
            "/etc/portreserve/ (user managers: the XDG config directories) into .socket "
            "units held by portreserve.service.  systemd runs it with three output "
            "directories; run it by hand with --print to see what it would generate."
        ),
    )
    parser.add_argument("dirs", nargs="*", type=Path, help="normal-dir [early-dir late-dir], as systemd passes them")
    parser.add_argument("--print", action="store_true", help="print the units instead of writing them")
    parser.add_argument("--user", action="store_true", default=None, help="generate for a user manager")
    parser.add_argument("--config-dir", action="append", type=Path, help="read this directory (repeatable, later wins)")
    parser.add_argument("--services", type=Path, default=Path("/etc/services"), help="services(5) file for names")
    parser.add_argument("--sbindir", default="/usr/sbin", help="where portrelease is installed")
    args = parser.parse_args(argv)
    if not args.print and len(args.dirs) not in (1, 3):
        parser.error("expected an output directory (or three, as systemd passes them), or --print")
    return args


def main(argv: list[str] | None = None, sbindir: str | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    log = make_logger()
    user = args.user if args.user is not None else os.environ.get("SYSTEMD_SCOPE") == "user"
    scope = units.Scope(user=user, sbindir=sbindir or args.sbindir)
    try:
        dirs = args.config_dir or config_dirs(user)
    except Exception as e:  # pyxdg missing or broken: still generate nothing, quietly
        log(LOG_ERR, f"cannot determine configuration directories: {e}")
        return 0
    outdir = None if args.print else args.dirs[0]
    return run(outdir, scope, dirs, load_services(args.services), log)
