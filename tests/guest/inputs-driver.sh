#!/bin/bash
# Driver of tests/test_boot_inputs.py (names and sizes at the limits).  The test
# substitutes @LONGEST@, @LOW@, @HIGH@ and @SPACED@.  Each check of a scenario
# records "ok" or "FAIL" and its output in /results/checks/SCENARIO.NAME, and
# /results/scenarios/SCENARIO says that the scenario ran to its end.
set -u
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /results/checks
LONGEST='@LONGEST@' LOW=@LOW@ HIGH=@HIGH@ SPACED='@SPACED@'
LONG_UNIT="portreserve@$LONGEST.target"
SPACED_UNIT='portreserve@\x20spaced\x20name\x20.target'
MAP=/run/systemd/generator/portreserve.map

check() {
    local name=${SCENARIO:+$SCENARIO.}$1 out
    shift
    if out=$("$@" 2>&1); then
        printf 'ok\n%s\n' "$out" >"/results/checks/$name"
    else
        printf 'FAIL (exit %s)\n%s\n' "$?" "$out" >"/results/checks/$name"
    fi
}
eventually() {
    for _ in $(seq 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
    "$@"
}
units_load() {  # every portreserve unit loaded (none bad-setting, not-found, error)
    local bad
    bad=$(systemctl list-units --all --plain --no-legend 'portreserve*' | awk '$2 != "loaded"')
    echo "$bad"
    [ -z "$bad" ]
}
count_is() {  # count_is N COMMAND...: the command prints N lines
    local n
    n=$("${@:2}" | wc -l)
    echo "$n"
    [ "$n" = "$1" ]
}
holder_started() {  # systemd started the holder, and not into 203/EXEC
    systemctl show -p ActiveState -p Result -p ExecMainStatus -p ExecMainStartTimestampMonotonic portreserve.service
    [ "$(systemctl show -P ExecMainStartTimestampMonotonic portreserve.service)" != 0 ] &&
        [ "$(systemctl show -P ExecMainStatus portreserve.service)" != 203 ]
}
no_exec_failure() {
    ! journalctl -b --no-pager -o cat | grep -E 'Argument list too long|203/EXEC|File name too long'
}
map_names() {
    grep -c . "$MAP"
    grep -qx '\\x20spaced\\x20name\\x20 21000/udp' "$MAP" && grep -q "^$LONGEST $LOW/tcp" "$MAP"
}

scenario_limits_at_boot() {
    check units_load units_load
    check long_group_active systemctl is-active "$LONG_UNIT"
    check sockets_active count_is 800 systemctl list-units --state=active --plain --no-legend 'portreserve-20*-tcp.socket'
    check sockets_listening count_is 800 ss -Hltn "sport >= :$LOW and sport <= :$HIGH"
    check held portcheck bound "$LOW/tcp" "$HIGH/tcp" 21000/udp
    check refused_names_not_held portcheck free 21001/tcp 21002/tcp
    check spaced_group_active systemctl is-active "$SPACED_UNIT"
    check holder_started holder_started
    check no_exec_failure no_exec_failure
    check map_names map_names
}

# Releasing: stopping the grouping unit frees its ports; portrelease takes the
# name with its blanks.
stop_frees() {
    systemctl stop "$LONG_UNIT" && eventually portcheck free "$LOW/tcp" "$HIGH/tcp"
}
release_spaced() {
    portrelease -- "$SPACED" && portcheck free 21000/udp
}
scenario_release_at_limits() {
    check stop_frees stop_frees
    check release_spaced release_spaced
}

SCENARIOS=(
    limits_at_boot
    release_at_limits
)
mkdir -p /results/scenarios
for SCENARIO in "${SCENARIOS[@]}"; do
    export SCENARIO
    "scenario_$SCENARIO"
    echo "returned $?" >"/results/scenarios/$SCENARIO"
done
