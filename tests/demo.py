"""`make demo`: boot a throwaway systemd with portreserve installed and show it at work.

Nothing on the host changes: the boot runs in its own mount, PID and network
namespaces on a tmpfs overlay of /, and is torn down afterwards (tests/boot.py).
Needs root (namespaces, mounts).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from boot import BootError, boot  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

FILES: dict[str, str | bytes | tuple[str | bytes, int]] = {
    "/usr/local/bin/portcheck": ((REPO / "tests" / "guest" / "portcheck").read_text(), 0o755),
    "/usr/lib/portreserve/cups": "ipp\n",
    "/etc/portreserve/slapd": "ldaps\n",
    "/etc/portreserve/dovecot": "imaps\npop3s\n",
    "/etc/portreserve/nis": "600-603/udp\n",
    # an early RPC service that would grab reserved ports, like rpcbind does
    "/etc/systemd/system/rpcbind.service": textwrap.dedent(
        """\
        [Unit]
        Description=rpcbind stand-in grabbing ports early
        DefaultDependencies=no
        After=systemd-tmpfiles-setup.service
        [Service]
        Type=oneshot
        RemainAfterExit=yes
        ExecStart=/bin/sh -c '/usr/local/bin/portcheck rival 631/tcp 636/tcp 636/udp 993/tcp 600/udp > /run/rival.txt'
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
LINKS = {"/etc/systemd/system/sysinit.target.wants/rpcbind.service": "/etc/systemd/system/rpcbind.service"}

DRIVER = r"""#!/bin/bash
exec > /results/demo.txt 2>&1
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
show() { echo; echo "# $*"; "$@"; }
echo "== A fresh boot of systemd $(systemctl --version | head -1 | cut -d' ' -f2) with portreserve installed"
show ls /usr/lib/portreserve /etc/portreserve
show cat /etc/portreserve/dovecot
show systemctl list-sockets --no-pager 'portreserve*'
show portreserve status
echo; echo "# what an early rpcbind-like service managed to bind (nothing):"
cat /run/rival.txt; echo "(end of list)"
show systemctl status --no-pager --lines=0 portreserve.service
echo; echo "== cups starts: ExecStartPre=/usr/sbin/portrelease -v cups"
show systemctl start cups.service
show journalctl -b --no-pager -o cat -u cups.service -u 'portreserve@cups.target'
show portreserve status
echo; echo "== an admin releases one name with systemctl"
show systemctl stop portreserve@nis.target
show portcheck free 600/udp 601/udp 602/udp 603/udp && echo "600-603/udp are free"
echo; echo "== release everything"
show portrelease -v '*'
sleep 0.5
show systemctl status --no-pager --lines=3 portreserve.service
show systemctl --failed --no-pager
"""


def main() -> int:
    if os.geteuid() != 0:
        print("make demo needs root: it boots systemd in its own namespaces and mounts.", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="portreserve-demo-") as scratch:
        work = Path(scratch)
        dest = work / "dest"
        subprocess.run(["make", "-s", "-C", str(REPO), "install", f"DESTDIR={dest}", "PREFIX=/usr"], check=True)
        try:
            result = boot(work / "boot", files=FILES, symlinks=LINKS, install=dest, driver=DRIVER, timeout=90)
        except BootError as e:
            print(f"the demo boot failed: {e}", file=sys.stderr)
            return 1
        print(result.read("demo.txt"))
        print(f"(booted in {result.boot_seconds:.2f} s, everything torn down after {result.total_seconds:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
