"""`make demo`: boot a throwaway systemd with portreserve installed and show it at work.

Nothing on the host changes: the boot runs in its own mount, PID and network
namespaces on a tmpfs overlay of /, and is torn down afterwards (tests/boot.py).
Needs root (namespaces, mounts).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from boot import BootError, boot  # noqa: E402
from scenarios import GUEST, guest_tools, rpcbind_rival  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

FILES: dict[str, str | bytes | tuple[str | bytes, int]] = {
    **guest_tools(),  # portcheck
    "/usr/lib/portreserve/cups": "ipp\n",
    "/etc/portreserve/slapd": "ldaps\n",
    "/etc/portreserve/dovecot": "imaps\npop3s\n",
    "/etc/portreserve/nis": "600-603/udp\n",
    "/etc/portreserve/spamd": "spamd\n",
    # an early RPC service that would grab reserved ports, like rpcbind does
    "/etc/systemd/system/rpcbind.service": rpcbind_rival("631/tcp 636/tcp 636/udp 993/tcp 600/udp", "/run/rival.txt"),
    # a daemon that binds 783/tcp before the reservation's socket starts
    "/etc/systemd/system/early-daemon.service": textwrap.dedent(
        """\
        [Unit]
        Description=a daemon that takes 783/tcp before portreserve
        DefaultDependencies=no
        Before=portreserve-783-tcp.socket sockets.target
        [Service]
        Type=notify
        NotifyAccess=all
        ExecStart=/usr/local/bin/portcheck serve 783/tcp
        """
    ),
    "/etc/systemd/system/cups.service": textwrap.dedent(
        """\
        [Unit]
        Description=cups stand-in
        [Service]
        Type=notify
        NotifyAccess=all
        ExecStartPre=/usr/sbin/portrelease -v cups
        ExecStart=/usr/local/bin/portcheck serve 631/tcp
        """
    ),
}
LINKS = {
    "/etc/systemd/system/sysinit.target.wants/rpcbind.service": "/etc/systemd/system/rpcbind.service",
    "/etc/systemd/system/sysinit.target.wants/early-daemon.service": "/etc/systemd/system/early-daemon.service",
}

# What the guest shows: every command printed exactly as it can be typed (or
# pasted) into a root shell, then run with its output indented below it.
DRIVER = (GUEST / "demo.sh").read_text()


def main() -> int:
    if os.geteuid() != 0:
        print("make demo needs root: it boots systemd in its own namespaces and mounts.", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="portreserve-demo-") as scratch:
        work = Path(scratch)
        dest = work / "dest"
        subprocess.run(["make", "-s", "-C", str(REPO), "install", f"DESTDIR={dest}", "PREFIX=/usr"], check=True)
        try:
            # The harness's own progress lines are not part of the demo.
            with contextlib.redirect_stdout(io.StringIO()):
                result = boot(work / "boot", files=FILES, symlinks=LINKS, install=dest, driver=DRIVER, timeout=90)
        except BootError as e:
            print(f"the demo boot failed: {e}", file=sys.stderr)
            return 1
        print(result.read("demo.txt").strip("\n"))
        print(f"(booted in {result.boot_seconds:.2f} s, everything torn down after {result.total_seconds:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
