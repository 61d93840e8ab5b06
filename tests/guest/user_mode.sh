#!/bin/bash
# Boot driver (tests/test_boot.py, the user-mode boot): reservations of a user
# manager (user@UID.service), and a user without one running the holder
# herself.  Each scenario_* function is one behaviour; its checks are recorded
# as SCENARIO.CHECK and tests/test_boot.py has one test per scenario.
#
# Configuration: /etc/xdg/portreserve/site 9000/tcp (a site default), dev
# 7000/tcp there, overridden by the skeleton's ~/.config/portreserve/dev
# (8080/tcp, 5173 both protocols, 631/tcp: privileged, refused);
# ~/.config/systemd/user/web.service consumes dev.
# shellcheck source=tests/guest/lib.sh
source /usr/local/lib/boot-tests/lib.sh
set -u

DEV=(8080/tcp 5173/tcp 5173/udp)

as_user() {
    runuser -u tester -- env XDG_RUNTIME_DIR="/run/user/$(id -u tester)" "$@"
}
as_solo() {
    runuser -u solo -- env XDG_RUNTIME_DIR=/tmp/solo-run "$@"
}

# user_held_eventually PORT...: the user's socket units become active, then
# the ports are held (a probe while systemd binds would be a rival).
user_held_eventually() {
    local spec
    for spec in "$@"; do
        eventually as_user systemctl --user is-active --quiet "portreserve-${spec/\//-}.socket" ||
            { echo "portreserve-${spec/\//-}.socket of tester not active"; return 1; }
    done
    eventually portcheck bound "$@"
}

# A user manager reserves the user's ports (site defaults, the user's own
# files overriding them), refuses privileged ones with a message naming file
# and line, and releases them for the user's services.
scenario_s13_user_manager_reserves_and_releases() {
    useradd --create-home --shell /bin/bash tester
    systemctl start "user@$(id -u tester).service"
    check manager_running systemctl is-active "user@$(id -u tester).service"
    check held user_held_eventually "${DEV[@]}" 9000/tcp
    check overridden_not_held portcheck free 7000/tcp
    check holder_running as_user systemctl --user is-active portreserve.service
    check privileged_port_refused_with_file_and_line privileged_port_refused_with_file_and_line
    check status_says_user_scope status_says "Scope: user (systemd)" as_user
    check consumer_started consumer_started
    check consumer_ports_bound portcheck bound "${DEV[@]}"
    check others_held portcheck bound 9000/tcp
    check release_all release_all_frees as_user 9000/tcp
    check no_failed no_failed_user_units
    check system_holder_never_ran state_is portreserve.service inactive
}
privileged_port_refused_with_file_and_line() {
    journalctl -b --no-pager -o cat | grep -F \
        "/home/tester/.config/portreserve/dev:3: '631/tcp' is below net.ipv4.ip_unprivileged_port_start"
}
status_says() {  # LINE AS-WHOM: `portreserve status` run by AS-WHOM has LINE
    local line=$1; shift
    "$@" portreserve status | tee /dev/stderr | grep -x "$line"
}
consumer_started() {
    as_user systemctl --user start web.service && as_user systemctl --user is-active web.service
}
release_all_frees() {  # AS-WHOM PORT...: portrelease '*' as AS-WHOM frees the ports
    local who=$1; shift
    "$who" portrelease '*' && portcheck free "$@"
}
no_failed_user_units() {
    local out
    out=$(as_user systemctl --user --failed --no-legend --plain)
    echo "$out"
    [ -z "$out" ]
}

# A user without a user manager runs the holder herself (standalone): it
# holds, answers on a socket only she can use, releases, and exits when it
# holds nothing.
scenario_s14_standalone_user_holder() {
    useradd --create-home --shell /bin/bash solo
    mkdir -p /home/solo/.config/portreserve /tmp/solo-run
    echo 8090/tcp > /home/solo/.config/portreserve/web
    echo 8091/udp > /home/solo/.config/portreserve/dns
    chown -R solo: /home/solo/.config /tmp/solo-run
    check hold hold_standalone
    check held portcheck bound 8090/tcp 8091/udp
    check status_says_standalone status_says "Scope: user (standalone)" as_solo
    check socket_mode_0600 socket_mode_0600
    check release_one release_one
    check release_all release_all_frees as_solo 8091/udp
    check holder_exits eventually standalone_holder_gone
}
hold_standalone() {
    as_solo portreserve hold && [ -S /tmp/solo-run/portreserve/socket ]
}
socket_mode_0600() {
    local mode
    mode=$(stat -c %a /tmp/solo-run/portreserve/socket)
    [ "$mode" = 600 ] || { echo "mode $mode"; return 1; }
}
release_one() {
    as_solo portrelease web && portcheck free 8090/tcp && portcheck bound 8091/udp
}
standalone_holder_gone() {
    ! pgrep -u solo -f "portreserve hold"
}

SCENARIOS=(
    s13_user_manager_reserves_and_releases
    s14_standalone_user_holder
)
run_scenarios "${SCENARIOS[@]}"
