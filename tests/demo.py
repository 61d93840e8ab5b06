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

REPO = Path(__file__).resolve().parent.parent

FILES: dict[str, str | bytes | tuple[str | bytes, int]] = {
    "/usr/local/bin/portcheck": ((REPO / "tests" / "guest" / "portcheck").read_text(), 0o755),
    "/usr/lib/portreserve/cups": "ipp\n",
    "/etc/portreserve/slapd": "ldaps\n",
    "/etc/portreserve/dovecot": "imaps\npop3s\n",
    "/etc/portreserve/nis": "600-603/udp\n",
    "/etc/portreserve/spamd": "spamd\n",
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

# Every command is printed exactly as it can be typed (or pasted) into a root
# shell, then run with its output indented below it.
DRIVER = r"""#!/bin/bash
exec > /results/demo.txt 2>&1
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin SYSTEMD_PAGER=cat
say() { echo; echo "## $*"; }
run() {
    echo "$1"
    local rc=0
    eval "$1" 2>&1 | sed 's/^/    /' || true
    rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || echo "    (exit status $rc)"
}
say "A fresh boot of systemd $(systemctl --version | head -1 | cut -d' ' -f2) with portreserve installed"
run 'ls /usr/lib/portreserve /etc/portreserve'
run 'cat /etc/portreserve/dovecot'
run "systemctl list-sockets --no-pager 'portreserve*'"
say "What an early rpcbind-like service managed to bind (nothing):"
run 'cat /run/rival.txt; echo "(end of list)"'
say "A daemon took 783/tcp (spamd) before boot reached portreserve:"
run 'portreserve status'
run 'systemctl --failed --no-pager'
run "portreserve status --json=short | python3 -c 'import json, sys
for p in json.load(sys.stdin)[\"ports\"]:
    p[\"state\"] == \"failed\" and print(p)'"
run 'portrelease -v -t 1 spamd'
run 'systemctl status --no-pager --lines=0 portreserve.service'
say "cups starts: its ExecStartPre=/usr/sbin/portrelease -v cups"
run 'systemctl start cups.service'
run "journalctl -b --no-pager -o cat -u cups.service"
run 'portreserve status'
say "An admin releases one name with systemctl"
run 'systemctl stop portreserve@nis.target'
run 'portcheck free 600/udp 601/udp 602/udp 603/udp && echo "600-603/udp are free"'
say "A new reservation without a reboot"
run 'echo 5353/udp > /etc/portreserve/mdns'
run 'portreserve status'
run 'portreserve reload'
say "Release everything"
run "portrelease -v '*'"
sleep 0.5
run 'systemctl status --no-pager --lines=3 portreserve.service'
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
