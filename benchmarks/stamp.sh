#!/bin/bash
# stamp.sh GROUP INDEX CMD...: run CMD; write "start end status" (realtime,
# microseconds: bash's $EPOCHREALTIME, no fork) to /results/burst/GROUP-INDEX.
# Both groups of the boot burst run through it, so both are timed alike.
mkdir -p /results/burst
out=/results/burst/$1-$2
shift 2
t0=$EPOCHREALTIME
"$@"
rc=$?
t1=$EPOCHREALTIME
echo "$t0 $t1 $rc" > "$out"
exit "$rc"
