#!/bin/bash
# Boot driver (tests/test_status.py): `portreserve status` and `portreserve
# reload` under a real systemd: every state a port can be in, the exit codes,
# the table, a file added since the generator ran, and what reload says per
# name.  Each scenario_* function is one behaviour; its checks are recorded as
# SCENARIO.CHECK and tests/test_status.py has one test per scenario.  What
# `status --json` said, and the values to compare it with, are written to
# /results for tests/test_status.py to read.
#
# Configuration (tests/test_status.py stages it): held 1500/tcp; taken
# 1200/tcp+1201/tcp, where squatter.service holds 1200/tcp from early boot;
# gone 1600/udp, which consumer.service binds once it is released; empty (no
# valid entry).
# shellcheck source=tests/guest/lib.sh
source /usr/local/lib/boot-tests/lib.sh
set -u

# exits N CMD...: CMD exits with status N.
exits() {
    local want=$1 rc=0
    shift
    "$@" || rc=$?
    [ "$rc" = "$want" ] || { echo "$*: exit $rc, not $want"; return 1; }
}
# output_to FILE CMD...: CMD with its standard output in FILE, and its exit status.
output_to() {
    local file=$1
    shift
    "$@" > "$file"
}

# A port taken before its reservation: status exits 1 and names the port's
# state, and what holds it (process and unit), as it does for a released port.
scenario_s1_a_failed_port_is_reported_with_its_taker() {
    # The reservations' sockets, started here too: the states below are what
    # status must report, however the boot got there (test_boot.py checks that
    # the boot itself reserves them).  1200/tcp is taken: its socket fails.
    systemctl start portreserve-1500-tcp.socket portreserve-1201-tcp.socket portreserve-1600-udp.socket
    systemctl start portreserve-1200-tcp.socket
    portrelease gone
    systemctl start consumer.service
    check failed_exit_1 exits 1 output_to /results/status.txt portreserve status --no-pager
    portreserve status --json=short > /results/status1.json
    check table table_shows_every_state
    check quiet quiet_exits_1_saying_nothing
    # what status --json must have said (tests/test_status.py compares)
    systemctl show --timestamp=unix -P ActiveEnterTimestamp portreserve-1500-tcp.socket > /results/held-since.txt
    systemctl show -P MainPID squatter.service > /results/squatter-pid.txt
}
table_shows_every_state() {
    head -1 /results/status.txt | grep -x "Scope: system (systemd)" &&
        grep -E "^taken +1200/tcp +failed .*portcheck \(pid [0-9]+, squatter.service\)" /results/status.txt &&
        grep -E "^held +1500/tcp +held " /results/status.txt &&
        grep -E "^gone +1600/udp +released .*in use by portcheck \(pid [0-9]+, consumer.service\)" /results/status.txt &&
        grep -E "^empty +- +- +- +no valid entries" /results/status.txt
}
quiet_exits_1_saying_nothing() {
    local out rc=0
    out=$(portreserve status -q) || rc=$?
    echo "$out"
    [ -z "$out" ] && [ "$rc" = 1 ]
}

# The failed one released and cleared: everything as intended again, exit 0.
scenario_s2_all_as_intended_once_the_failure_is_cleared() {
    systemctl stop squatter.service
    portrelease taken
    systemctl reset-failed portreserve-1200-tcp.socket
    check all_as_intended portreserve status
}

# A file added since the generator ran: pending, exit 3, with the command
# that reserves it; daemon-reload alone loads it but starts nothing.
scenario_s3_a_file_added_since_the_generator_ran_is_pending() {
    echo 1700/tcp > /etc/portreserve/late
    check pending_exit_3 pending_exit_3
    portreserve status --json=short > /results/status-pending.json
    systemctl daemon-reload
    check pending_after_daemon_reload exits 3 output_to /dev/null portreserve status
}
pending_exit_3() {
    exits 3 output_to /results/status-pending.txt portreserve status &&
        grep -E "^late +1700/tcp +pending " /results/status-pending.txt &&
        grep "portreserve reload" /results/status-pending.txt
}

# reload: per name, once, truthfully; a port it could not take makes it exit 1.
scenario_s4_reload_says_what_it_did_per_name() {
    systemd-run --unit=late-squatter -p Type=notify -p NotifyAccess=all /usr/local/bin/portcheck serve 1701/tcp
    echo 1701/tcp > /etc/portreserve/late2
    check reload_failed_exit_1 exits 1 output_to /results/reload.txt portreserve reload
    check reload_says_what_happened reload_says_what_happened
    check reload_held_the_new_port portcheck bound 1700/tcp
}
reload_says_what_happened() {
    cat /results/reload.txt
    grep -x "late: reserved 1700/tcp" /results/reload.txt &&
        grep -E "^late2: failed: 1701/tcp failed .*portcheck \(pid [0-9]+, late-squatter.service\)" \
            /results/reload.txt &&
        grep -x "already reserved: held" /results/reload.txt &&
        grep -E "^released earlier, left released: .*gone" /results/reload.txt &&
        [ "$(grep -c "^late:" /results/reload.txt)" = 1 ] && [ "$(grep -c "^late2:" /results/reload.txt)" = 1 ]
}

# reload again: nothing new; the name that failed is named once, with why, and
# left alone; status still says it failed.
scenario_s5_reload_again_leaves_the_failed_name_alone() {
    check reload_again reload_again
    check status_after_reload exits 1 portreserve status
}
reload_again() {
    local out rc=0
    out=$(portreserve reload) || rc=$?
    echo "$out"
    local taken_by='1701/tcp resources; taken by portcheck \(pid [0-9]+, late-squatter.service\)'
    [ "$rc" = 0 ] &&
        grep -x "already reserved: held late" <<<"$out" &&
        grep -E "^late2: failed earlier, left alone: $taken_by \(retry: systemctl restart portreserve@late2.target\)$" \
            <<<"$out" &&
        [ "$(grep -c late2 <<<"$out")" = 1 ]
}

# No reservations at all on a systemd host: still systemd mode.
scenario_s6_no_reservations_is_still_systemd_mode() {
    rm -f /etc/portreserve/*
    systemctl daemon-reload
    check no_reservations no_reservations
}
no_reservations() {
    local out
    out=$(portreserve status)
    echo "$out"
    [ "$(echo "$out" | head -1)" = "Scope: system (systemd)" ] && grep -x "No reservations." <<<"$out"
}

SCENARIOS=(
    s1_a_failed_port_is_reported_with_its_taker
    s2_all_as_intended_once_the_failure_is_cleared
    s3_a_file_added_since_the_generator_ran_is_pending
    s4_reload_says_what_it_did_per_name
    s5_reload_again_leaves_the_failed_name_alone
    s6_no_reservations_is_still_systemd_mode
)
run_scenarios "${SCENARIOS[@]}"
