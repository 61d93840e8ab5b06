#!/bin/bash
# Boot driver (tests/test_boot.py, the realistic boot): a realistic
# configuration with early rivals, consumers of every kind and every way of
# releasing.  Each scenario_* function is one behaviour; its checks are
# recorded as SCENARIO.CHECK and tests/test_boot.py has one test per scenario.
#
# Configuration (tests/test_boot.py stages it): cups ipp, slapd ldaps, dovecot
# imaps+pop3s, legacy 1112 (/etc overrides 1111 of /usr/lib), masked (1113,
# masked by /dev/null), spamd 783/tcp+udp, nis 600-603/udp, shared1 700+701/tcp,
# shared2 700+702/tcp (shared2.dpkg-old 703/tcp is ignored), webuser 8443/tcp.
# shellcheck source=tests/guest/lib.sh
source /usr/local/lib/boot-tests/lib.sh
set -u

# Reserved at boot and not released by any consumer at boot.
HELD_AT_BOOT=(783/tcp 783/udp 1112/tcp 1112/udp 600/udp 601/udp 602/udp 603/udp 700/tcp 701/tcp 702/tcp)
NIS=(600/udp 601/udp 602/udp 603/udp)

# Right after boot every listed port is held, IPv4 and IPv6; overridden,
# masked and ignored entries are not.
scenario_s1_held_at_boot() {
    check listed_ports_held held_eventually "${HELD_AT_BOOT[@]}"
    check others_not_reserved portcheck free 1111/tcp 1111/udp 1113/tcp 703/tcp
    check list_sockets_shows_exactly_them list_sockets_shows_exactly_them
    check holder_active eventually state_is portreserve.service active
    check holder_status_text holder_status_text
    check status_json status_json
}
list_sockets_shows_exactly_them() {
    local out port
    out=$(systemctl list-sockets --all --no-legend --plain)
    echo "$out"
    for port in 783 1112 600 603 700 702; do
        grep -q "\[::\]:$port " <<<"$out" || { echo "no socket for $port"; return 1; }
    done
    ! grep -q ":1111 \|:1113 \|:703 " <<<"$out"
}
status_json() {  # tests/test_boot.py reads it
    portreserve status --json > /results/status.json
}
holder_status_text() {
    systemctl show -P StatusText portreserve.service | grep "Holding"
}

# The early rivals (shaped like Debian's rpcbind and rpc-statd, which start
# before sockets.target) never got a reserved port.
scenario_s2_early_rivals_get_nothing() {
    check rivals_bound_nothing rivals_bound_nothing
    check rpcbind_ran state_is rpcbind.service active
}
rivals_bound_nothing() {
    cat /results/rival-rpcbind.txt /results/rival-statd.txt &&
        [ ! -s /results/rival-rpcbind.txt ] && [ ! -s /results/rival-statd.txt ]
}

# Consumers released their names at boot and bound on the first try.
scenario_s3_consumers_release_and_bind_at_first_try() {
    check started_at_first_try started_at_first_try cups-test dovecot-test slapd-test
    check their_ports_bound portcheck bound 631/tcp 993/tcp 995/tcp 636/tcp 636/udp
    check others_still_held portcheck bound "${HELD_AT_BOOT[@]}"
    check consumer_as_other_user started_later webuser-test
    check non_root_told_why non_root_told_why
    check consumer_started_later started_later spamd-test
    check released_name_group_stopped eventually state_is portreserve@spamd.target inactive
}
started_at_first_try() {
    local unit restarts
    for unit in "$@"; do
        systemctl is-active "$unit" || return 1
        restarts=$(systemctl show -P NRestarts "$unit")
        [ "$restarts" = 0 ] || { echo "$unit restarted $restarts times"; return 1; }
    done
}
started_later() {
    systemctl start "$1" && systemctl is-active "$1"
}
non_root_told_why() {
    local out
    out=$(setpriv --reuid=nobody --regid=nogroup --clear-groups env -u XDG_RUNTIME_DIR portrelease legacy 2>&1)
    echo "$out"
    grep -q "only root may release" <<<"$out"
}

# A connection to a reserved TCP port fails at once; the units stay active.
scenario_s4_connections_to_reserved_ports_fail_at_once() {
    check refused portcheck refused 700/tcp 1112/tcp
    check units_stay_active systemctl is-active portreserve-700-tcp.socket portreserve-1112-tcp.socket \
        portreserve.service
}

# systemctl stop of the grouping unit frees exactly that name's ports; start
# reserves them again, as often as one likes.
scenario_s5_stopping_the_group_frees_exactly_its_name() {
    check stop systemctl stop portreserve@nis.target
    check its_ports_freed portcheck free "${NIS[@]}"
    check others_held portcheck bound 1112/tcp 1112/udp 700/tcp 701/tcp 702/tcp
    # The grouping unit starts before its sockets (so that its stop waits for
    # theirs): reserve waits for them.
    check start_reserves_again reserve nis "${NIS[@]}"
    check six_times_no_start_limit six_times_no_start_limit
}
six_times_no_start_limit() {
    local _
    for _ in 1 2 3 4 5 6; do
        portrelease nis && reserve nis "${NIS[@]}" || return 1
    done
    no_failed_units
}

# A port in two files: releasing either name frees it; the other name's other
# ports stay held until it is released too.
scenario_s6_a_port_in_two_files_is_freed_by_either() {
    check release_first portrelease shared1
    check first_freed portcheck free 700/tcp 701/tcp
    check other_name_kept portcheck bound 702/tcp
    check release_second portrelease -v shared2
    check second_freed portcheck free 702/tcp
}

# The holder killed: its ports stay reserved (systemd keeps its copies), and a
# later portrelease starts a new holder, which releases.
scenario_s7_killed_holder_keeps_ports_and_release_works() {
    check kill systemctl kill --signal=SIGKILL portreserve.service
    check dead eventually holder_not_active
    check still_held portcheck bound 1112/tcp 1112/udp 600/udp
    check release portrelease legacy
    check freed portcheck free 1112/tcp 1112/udp
    check other_name_still_held portcheck bound "${NIS[@]}"
    check new_holder_runs systemctl is-active portreserve.service
}

holder_not_active() {
    ! state_is portreserve.service active
}

# Release everything: the holder exits 0, nothing failed, nothing restarts.
scenario_s8_release_all_ends_the_holder_cleanly() {
    check release_all portrelease '*'
    check all_free portcheck free "${NIS[@]}" 700/tcp 1112/tcp
    check every_unit_stopped eventually no_active_reservation_units
    check holder_exited_cleanly eventually holder_exited_cleanly
    check no_failed no_failed_units
    local invocation
    invocation=$(systemctl show -P InvocationID portreserve.service)
    sleep 3
    check still_no_failed_later no_failed_units
    check holder_not_restarted holder_not_restarted "$invocation"
    check quiet_when_nothing_to_release quiet_when_nothing_to_release
}
no_active_reservation_units() {
    local active
    active=$(systemctl list-units --no-legend --plain --state=active "portreserve@*" "portreserve-*.socket")
    [ -z "$active" ] || { echo "still active: $active"; return 1; }
}
holder_exited_cleanly() {
    local state
    state=$(unit_state portreserve.service | tr "\n" " ")
    [ "$state" = "inactive success " ] || { echo "portreserve.service: $state"; return 1; }
}
holder_not_restarted() {
    local now
    now=$(systemctl show -P InvocationID portreserve.service)
    [ "$now" = "$1" ] || { echo "invocation $1 then $now"; return 1; }
    state_is portreserve.service inactive && state_is portreserve.socket active
}
quiet_when_nothing_to_release() {
    local out
    out=$(portrelease cups nosuchname 2>&1) && [ -z "$out" ]
}

# Consumers that Require= or Want= the holder restart normally afterwards.
scenario_s9_consumers_restart_after_everything_was_released() {
    check restart_requires_holder restarted slapd-test
    check restart_wants_holder restarted spamd-test cups-test
    check holder_exited_cleanly eventually holder_exited_cleanly
    check no_failed no_failed_units
}
restarted() {
    systemctl restart "$@" && systemctl is-active "$@"
}

SCENARIOS=(
    s1_held_at_boot
    s2_early_rivals_get_nothing
    s3_consumers_release_and_bind_at_first_try
    s4_connections_to_reserved_ports_fail_at_once
    s5_stopping_the_group_frees_exactly_its_name
    s6_a_port_in_two_files_is_freed_by_either
    s7_killed_holder_keeps_ports_and_release_works
    s8_release_all_ends_the_holder_cleanly
    s9_consumers_restart_after_everything_was_released
)
run_scenarios "${SCENARIOS[@]}"
systemctl list-units --all --no-pager 'portreserve*' > /results/units.txt 2>&1
