#!/bin/bash
# Boot driver (tests/test_boot_inputs.py): names and sizes at the limits.  The
# test substitutes @LONGEST@, @LOW@, @HIGH@ and @SPACED@.  Each scenario_*
# function is one behaviour; its checks are recorded as SCENARIO.CHECK and
# tests/test_boot_inputs.py has one test per scenario.
#
# Configuration (tests/test_boot_inputs.py stages it): $LONGEST, the longest
# name that makes a unit name, with $LOW-$HIGH/tcp (800 ports); $SPACED, a
# name with leading and trailing blanks, with 21000/udp; a 255-byte name
# (21001/tcp) and a name that is not UTF-8 (21002/tcp), both refused.
# shellcheck source=tests/guest/lib.sh
source /usr/local/lib/boot-tests/lib.sh
set -u

LONGEST='@LONGEST@' LOW=@LOW@ HIGH=@HIGH@ SPACED='@SPACED@'
LONG_UNIT="portreserve@$LONGEST.target"
SPACED_UNIT='portreserve@\x20spaced\x20name\x20.target'
MAP=/run/systemd/generator/portreserve.map

# At boot: all 800 sockets of the longest name active and listening, every
# unit loaded, the holder started; the refused names reserve nothing.
scenario_s1_limits_at_boot() {
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

# Releasing: stopping the grouping unit frees its ports; portrelease takes the
# name with its blanks.
scenario_s2_release_at_limits() {
    check stop_frees stop_frees
    check release_spaced release_spaced
}
stop_frees() {
    systemctl stop "$LONG_UNIT" && eventually portcheck free "$LOW/tcp" "$HIGH/tcp"
}
release_spaced() {
    portrelease -- "$SPACED" && portcheck free 21000/udp
}

SCENARIOS=(
    s1_limits_at_boot
    s2_release_at_limits
)
run_scenarios "${SCENARIOS[@]}"
