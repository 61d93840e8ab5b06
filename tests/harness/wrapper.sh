#!/bin/bash
# Run by boot-driver.service in the guest (tests/boot.py installs it beside the
# test's driver): runs the driver and always records its exit status, its
# output and the journal, then /results/done, which the host waits for.  A
# failing oneshot never runs its ExecStartPost= (docs/design.md, "The test
# harness"), so everything happens in this one script.
date +%s.%N > /results/.driver-start
# Run as an executable: the shebang picks the interpreter (bash runs it itself
# when there is none).
"${BASH_SOURCE[0]%/*}/driver" 2>&1 | tee /results/driver.log
rc=${PIPESTATUS[0]}
echo "$rc" > /results/driver.rc
echo "boot-harness: driver exited with $rc"
journalctl --sync 2>/dev/null || true
journalctl -b --no-pager -o short-monotonic > /results/journal.txt 2>&1
touch /results/done
exit "$rc"
