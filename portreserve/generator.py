"""portreserve-generator: /etc/portreserve/* to .socket units (systemd.generator(7)).

Runs at every boot and every daemon-reload, before units load, in parallel with
other generators: standard library only, no talking to other processes, never
a non-zero exit for bad configuration.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from . import dropins, names, units
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
        files[units.socket_unit(port)] = units.render_socket_unit(port, owners, scope)
    # Which name owns which ports, for the holder and portrelease.
    files[names.MAP_FILE] = names.format_map([(r.name, [(p.number, str(p.proto)) for p in r.ports]) for r in usable])
    return files, links


def write_tree(outdir: Path, files: dict[str, str], links: dict[str, str]) -> None:
    made: set[str] = set()

    def directory_of(rel: str) -> str:
        parent = os.path.dirname(os.path.join(outdir, rel))
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        return parent

    for rel, text in files.items():
        path = os.path.join(directory_of(rel), os.path.basename(rel))
        # Write whole (temporary file, then rename): systemd reads whatever a
        # generator left, also when it died half-way.
        tmp = f"{path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, text.encode("utf-8", "surrogateescape"))
        finally:
            os.close(fd)
        os.replace(tmp, path)
    for rel, target in links.items():
        try:
            os.symlink(target, os.path.join(directory_of(rel), os.path.basename(rel)))
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
    # Zero-step opt-in: NAME.service gets a drop-in that releases NAME (dropins.py).
    files.update(
        dropins.generate([r for r in config.reservations if units.group_unit(r.name) in files], scope, dirs, log)
    )
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


class Args:
    """The command line (argparse's Namespace, without argparse on the boot path)."""

    dirs: list[Path]
    print: bool = False
    user: bool | None = None
    config_dir: list[Path] | None = None
    services: Path = Path("/etc/services")
    sbindir: str = "/usr/sbin"


def parse_args(argv: list[str]) -> Args:
    if len(argv) in (1, 3) and not any(a.startswith("-") for a in argv):
        # How systemd runs us, at every boot and daemon-reload: no argparse
        # (with the re module it pulls in, 9 ms).
        args = Args()
        args.dirs = [Path(a) for a in argv]
        return args
    import argparse

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
    parsed: Args = parser.parse_args(argv, namespace=Args())
    if not parsed.print and len(parsed.dirs) not in (1, 3):
        parser.error("expected an output directory (or three, as systemd passes them), or --print")
    return parsed


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
