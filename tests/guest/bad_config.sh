#!/bin/bash
# Boot driver (tests/test_boot.py, the bad-configuration boot): broken files,
# a port taken before its socket unit starts, daemon-reload and
# `portreserve reload` after releases.  Each scenario_* function is one
# behaviour; its checks are recorded as SCENARIO.CHECK and tests/test_boot.py
# has one test per scenario (plus the log messages, which it reads from the
# journal, /dev/kmsg and the console that the harness collects).
#
# Configuration: good imaps; bad ipp + 1301/udp among broken lines; adir/ (a
# directory); "my-printer:x y" 1300/tcp; taken 1200+1201/tcp, where
# squatter.service binds 1200/tcp first; unreadable (a dangling link).
# shellcheck source=tests/guest/lib.sh
source /usr/local/lib/boot-tests/lib.sh
set -u

# Bad configuration costs nothing else: the boot completes, the good
# reservations (and the good lines of a bad file) hold.
scenario_s10_bad_configuration_costs_nothing_else() {
    check booted systemctl is-active boot-test.target sockets.target basic.target
    check good_held held_eventually 993/tcp 631/tcp 1301/udp 1300/tcp 1201/tcp
    check bad_not_held portcheck free 1302/tcp
    check escaped_name_released escaped_name_released
}
escaped_name_released() {
    portrelease "my-printer:x y" && portcheck free 1300/tcp
}

# A port taken at boot: only its own unit fails (one unit per port), and says
# why.  PID 1 may log the failure before journald runs, so tests/test_boot.py
# looks for the message in the console and /dev/kmsg as well.
scenario_s11_a_port_taken_at_boot_fails_only_its_unit() {
    check only_that_unit_failed only_that_unit_failed
    check unit_failed_to_bind unit_failed_to_bind
    check others_held portcheck bound 1201/tcp 993/tcp
    check status_names_the_squatter status_names_the_squatter
}
only_that_unit_failed() {
    local out
    out=$(systemctl --failed --no-legend --plain)
    echo "$out"
    [ "$(wc -l <<<"$out")" = 1 ] && grep -q "^portreserve-1200-tcp.socket " <<<"$out"
}
unit_failed_to_bind() {
    local state
    state=$(unit_state portreserve-1200-tcp.socket | tr "\n" " ")
    [ "$state" = "failed resources " ] || { echo "portreserve-1200-tcp.socket: $state"; return 1; }
}
status_names_the_squatter() {
    portreserve status | tee /dev/stderr | grep "1200/tcp" | grep failed | grep portcheck
}

# daemon-reload after a release neither reserves the released port again nor
# disturbs its service; a new file plus `portreserve reload` reserves it.
scenario_s12_reload_keeps_releases_and_adds_new_names() {
    check consumer_started systemctl start good-test
    local pid
    pid=$(systemctl show -P MainPID good-test)
    check daemon_reload systemctl daemon-reload
    check consumer_undisturbed still_released "$pid"
    echo 1400/tcp > /etc/portreserve/newname
    check portreserve_reload portreserve reload
    check new_port_held held_eventually 1400/tcp
    check released_stays_released still_released "$pid"
    check released_group_stays_stopped state_is portreserve@good.target inactive
    check new_port_refused portcheck refused 1400/tcp
    check new_name_released new_name_released
}
still_released() {  # MAIN-PID: good-test still runs as MAIN-PID and has 993/tcp
    local pid
    pid=$(systemctl show -P MainPID good-test)
    [ "$pid" = "$1" ] || { echo "good-test was $1, is $pid"; return 1; }
    systemctl is-active good-test && state_is portreserve-993-tcp.socket inactive
}
new_name_released() {
    portrelease newname && portcheck free 1400/tcp
}

SCENARIOS=(
    s10_bad_configuration_costs_nothing_else
    s11_a_port_taken_at_boot_fails_only_its_unit
    s12_reload_keeps_releases_and_adds_new_names
)
run_scenarios "${SCENARIOS[@]}"
