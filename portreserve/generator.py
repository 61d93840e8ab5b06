"""portreserve-generator (systemd.generator(7)): the reservation files to one
.socket unit per port and protocol, one portreserve@NAME.target per name and
its sockets.target.wants link, the map portreserve.map (names.format_map), and
the consumers' drop-ins (dropins.py).

Runs at every boot and every daemon-reload, before units load, in parallel with
other generators: standard library only, no talking to other processes, never
a non-zero exit for bad configuration.
"""

from __future__ import annotations

import os
import sys

from . import names, paths, units
from .config import WARNING, Config, gather, printable
from .paths import SERVICES_FILE

LOG_ERR, LOG_WARNING = 3, 4
# Problems logged one by one; beyond that one line counts the rest (a file of
# 100 000 bad lines must not flood the kernel log at every boot).
MAX_LOGGED = 100
# Characters of one message; the kernel log takes records of up to 1024 bytes.
MAX_LOG_LINE = 900
MAX_KMSG_BYTES = 1000
TMP_NAME = ".portreserve-generator.tmp"


class Logger:
    """Log to the kernel log when systemd runs us, to stderr when a person
    does.  Never raises: whatever the message holds (bytes of a file name that
    are not UTF-8, anything), logging must not cost the boot."""

    def __init__(self) -> None:
        self.prefix = f"{units.GENERATOR}[{os.getpid()}]: "
        self.kmsg: int | None = None
        if os.environ.get("SYSTEMD_EXEC_PID") == str(os.getpid()):
            try:
                self.kmsg = os.open("/dev/kmsg", os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY)
            except OSError:
                self.kmsg = None

    def __call__(self, level: int, message: str) -> None:
        try:
            text = printable(message)
            if len(text) > MAX_LOG_LINE:
                text = text[:MAX_LOG_LINE] + "..."
            if self.kmsg is not None:
                line = f"<{level}>{self.prefix}{text}".encode("utf-8", "backslashreplace")
                if len(line) > MAX_KMSG_BYTES:  # the kernel refuses longer records (EINVAL)
                    line = line[: MAX_KMSG_BYTES - 4].decode("utf-8", "ignore").encode() + b"..."
                os.write(self.kmsg, line + b"\n")
            else:
                os.write(2, f"{units.GENERATOR}: {text}\n".encode("utf-8", "backslashreplace"))
        except Exception:
            pass


def report(config: Config, log: Logger, limit: int = MAX_LOGGED) -> None:
    for error in config.errors[:limit]:
        log(LOG_WARNING if error.severity == WARNING else LOG_ERR, str(error))
    if len(config.errors) > limit:
        log(LOG_ERR, f"{len(config.errors) - limit} more problems not shown; see `portreserve check`")


def generate(config: Config, scope: units.Scope) -> tuple[dict[str, str], dict[str, str]]:
    """Return (files, symlinks) relative to the output directory; the map first.

    Every name config accepted gets a grouping unit and a line in the map
    (config refuses the names that could not round-trip through both).
    """
    files: dict[str, str] = {}
    links: dict[str, str] = {}
    # Which name owns which ports, for the holder and portrelease; written
    # before the units, so that no socket is ever without its owners.
    files[names.MAP_FILE] = names.format_map(list(config.ports_by_name().items()))
    for reservation in config.reservations:
        group = names.group_unit(reservation.name)
        files[group] = units.render_group_unit(reservation, scope)
        links[f"sockets.target.wants/{group}"] = f"../{group}"
    for port, owners in config.owners().items():
        files[units.socket_unit(port)] = units.render_socket_unit(port, owners, scope)
    return files, links


def write_tree(outdir: str, files: dict[str, str], links: dict[str, str]) -> None:
    # Relative to open directories (dir_fd): no path lookup per file.
    dirs: dict[str, int] = {}

    def directory_of(rel: str) -> tuple[int, str]:
        slash = rel.rfind("/")
        parent = rel[:slash] if slash >= 0 else ""
        fd = dirs.get(parent)
        if fd is None:
            path = os.path.join(outdir, parent)
            os.makedirs(path, exist_ok=True)
            fd = dirs[parent] = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return fd, rel[slash + 1 :]

    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        for rel, text in files.items():
            dir_fd, name = directory_of(rel)
            # Write whole (temporary file, then rename): systemd reads whatever
            # a generator left, also when it died half-way.  One short
            # temporary name: a unit name may already be 255 bytes, the
            # longest file name.
            fd = os.open(TMP_NAME, flags, 0o644, dir_fd=dir_fd)
            try:
                data = memoryview(text.encode("utf-8", "backslashreplace"))
                while data:
                    data = data[os.write(fd, data) :]
            finally:
                os.close(fd)
            os.rename(TMP_NAME, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        for rel, target in links.items():
            dir_fd, name = directory_of(rel)
            try:
                os.symlink(target, name, dir_fd=dir_fd)
            except FileExistsError:
                pass
    finally:
        for fd in dirs.values():
            os.close(fd)


def run(
    outdir: str | None,
    scope: units.Scope,
    config: Config,
    log: Logger,
) -> int:
    # Zero-step opt-in: NAME.service (and NAME.socket when it binds one of the
    # name's ports) gets a drop-in that releases NAME (dropins.py).
    from . import dropins

    dropin_files, dropin_errors = dropins.generate(config.reservations, scope, config.settings)
    config.errors.extend(dropin_errors)
    report(config, log)
    files, links = generate(config, scope)
    files.update(dropin_files)
    if outdir is None:
        stdout = sys.stdout
        for rel, text in files.items():
            stdout.write(f"# {rel}\n{text}\n")
        for rel, target in links.items():
            stdout.write(f"# {rel} -> {target}\n\n")
        # A checker: non-zero when anything was not as asked.
        return 1 if config.errors else 0
    try:
        write_tree(outdir, files, links)
    except OSError as e:
        # Nothing sensible left to do; whatever was written stays (whole files,
        # the map first).
        log(LOG_ERR, f"failed to write units to {outdir}: {e}")
        return 1
    return 0


class Args:
    """The command line (argparse's Namespace, without argparse on the boot path)."""

    dirs: list[str]
    print: bool = False
    user: bool | None = None
    config_dir: list[str] | None = None
    services: str = SERVICES_FILE
    sbindir: str = "/usr/sbin"


def parse_args(argv: list[str]) -> Args:
    if len(argv) in (1, 3) and not any(a.startswith("-") for a in argv):
        # How systemd runs us, at every boot and daemon-reload: no argparse
        # (with the re module it pulls in, 9 ms).
        args = Args()
        args.dirs = list(argv)
        return args
    import argparse

    parser = argparse.ArgumentParser(
        prog=units.GENERATOR,
        description=(
            "systemd generator: turn the port reservations in /usr/lib/portreserve/ and "
            "/etc/portreserve/ (user managers: the XDG config directories) into .socket "
            "units held by portreserve.service.  systemd runs it with three output "
            "directories; run it by hand with --print to see what it would generate "
            "(exit status 1 when the configuration has problems, as portreserve check)."
        ),
    )
    parser.add_argument("dirs", nargs="*", help="normal-dir [early-dir late-dir], as systemd passes them")
    parser.add_argument("--print", action="store_true", help="print the units instead of writing them")
    parser.add_argument("--user", action="store_true", default=None, help="generate for a user manager")
    parser.add_argument(
        "--config-dir", action="append", metavar="DIR", help="read this directory (repeatable, later wins)"
    )
    parser.add_argument(
        "--services",
        "--services-file",
        metavar="FILE",
        default=SERVICES_FILE,
        help="services(5) file for names (default %(default)s)",
    )
    parser.add_argument("--sbindir", metavar="DIR", default="/usr/sbin", help="where portrelease is installed")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"{units.GENERATOR} {__version__}")
    parsed: Args = parser.parse_args(argv, namespace=Args())
    if not parsed.print and len(parsed.dirs) not in (1, 3):
        parser.error("expected an output directory (or three, as systemd passes them), or --print")
    return parsed


def main(argv: list[str] | None = None, sbindir: str | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    log = Logger()
    try:
        user = args.user if args.user is not None else os.environ.get("SYSTEMD_SCOPE") == "user"
        scope = units.Scope(user=user, sbindir=sbindir or args.sbindir)
        try:
            dirs = args.config_dir or paths.config_dirs(user)
        except Exception as e:  # pyxdg missing or broken: still generate nothing, quietly
            log(LOG_ERR, f"cannot determine configuration directories: {e}")
            return 0
        config = gather(dirs, args.services, user, required=bool(args.config_dir))
        return run(None if args.print else args.dirs[0], scope, config, log)
    except Exception as e:
        # A bug of ours, not the configuration: say so, and let the boot go on
        # with whatever was written (whole files, the map first).
        log(LOG_ERR, f"internal error: {type(e).__name__}: {e}")
        return 1
