#!/bin/bash
# The guest side of `make demo` (tests/demo.py): shows portreserve at work in a
# fresh boot.  Every command is printed exactly as it can be typed (or pasted)
# into a root shell, then run with its output indented below it; tests/demo.py
# prints /results/demo.txt.
#
# Configuration (tests/demo.py stages it): cups ipp (in /usr/lib), slapd
# ldaps, dovecot imaps+pop3s, nis 600-603/udp, spamd; an rpcbind-like rival
# that tries some of those ports early (/run/rival.txt), early-daemon.service
# that binds 783/tcp (spamd) first, and cups.service, which releases cups.
set -u
exec > /results/demo.txt 2>&1
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin SYSTEMD_PAGER=cat

say() { echo; echo "## $*"; }
# run COMMAND: print COMMAND as typed, run it, indent its output, and note a
# non-zero exit status.
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
