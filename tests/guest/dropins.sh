#!/bin/bash
# Boot driver (tests/test_boot_dropins.py): zero-step opt-in.  Consumers with
# no portrelease of their own start at boot and get their port, because the
# generator gave their unit a drop-in (portreserve/dropins.py).  Each
# scenario_* function is one behaviour; its checks are recorded as
# SCENARIO.CHECK and tests/test_boot_dropins.py has one test per scenario.
#
# The first scenario is the control: if portrelease by hand does not free a
# reserved port, no drop-in can, and what the later scenarios see means
# nothing (their tests fail pointing at it).
#
# Configuration (tests/test_boot_dropins.py stages it): control 1511/tcp;
# plain 1501/tcp+udp (plain.service); asuser 1502 (asuser.service, User=nobody);
# selfrelease 1503 (calls portrelease itself); optout 1504 (release=manual);
# ldap 1505 (unit=slapd.service); masked1 1506 (drop-in masked in /etc);
# a hostile name 1507 (unit=oddprinter); ldap2 1508 (an alias of
# slapd2.service); web@1509 (a template instance); later 1510 (its unit is
# written by scenario s12).  rpcbind.service, an early rival, tried all of
# 1501-1510 first.  argv.service runs /usr/local/bin/argdump on names quoted by
# portreserve.dropins.exec_quote.  /etc/skel gives users dev 8081/tcp and
# dev.service, a user service that binds it.
# shellcheck source=tests/guest/lib.sh
source /usr/local/lib/boot-tests/lib.sh
set -u

G=/run/systemd/generator

dropins() {
    systemctl show -P DropInPaths "$@"
}
# has_dropin UNIT PATH: PATH is one of UNIT's drop-ins.
has_dropin() {
    dropins "$1" | tr ' ' '\n' | grep -x "$2"
}
# no_dropin_of_ours UNIT: none of UNIT's drop-ins is portreserve's.
no_dropin_of_ours() {
    local out
    out=$(dropins "$1")
    echo "$out"
    ! grep -q portreserve <<<"$out"
}
started_at_first_try() {
    systemctl is-active "$1" || return 1
    local restarts
    restarts=$(systemctl show -P NRestarts "$1")
    [ "$restarts" = 0 ] || { echo "$1 restarted $restarts times"; return 1; }
}
started_later() {
    systemctl start "$1" && systemctl is-active "$1"
}
# as_user USER CMD...: CMD as USER, talking to USER's manager.
as_user() {
    local user=$1; shift
    runuser -u "$user" -- env XDG_RUNTIME_DIR="/run/user/$(id -u "$user")" "$@"
}
# user_held_eventually USER PORT...: USER's socket units become active, then
# the ports are held (a probe while systemd binds would be a rival).
user_held_eventually() {
    local user=$1 spec; shift
    for spec in "$@"; do
        eventually as_user "$user" systemctl --user is-active --quiet "portreserve-${spec/\//-}.socket" ||
            { echo "portreserve-${spec/\//-}.socket of $user not active"; return 1; }
    done
    eventually portcheck bound "$@"
}

# Control: portrelease by hand frees a reserved port.
scenario_s1_control_portrelease_by_hand_frees_a_port() {
    check frees_a_reserved_port release_by_hand
}
release_by_hand() {
    portcheck bound 1511/tcp && portrelease control && portcheck free 1511/tcp
}

# The early rival (DefaultDependencies=no, like Debian's rpcbind) tried every
# consumer's port before any consumer started and got none: so a consumer that
# binds its port proves the release happened.
scenario_s2_early_rival_gets_nothing() {
    check bound_nothing rival_bound_nothing
}
rival_bound_nothing() {
    cat /results/rival.txt && [ ! -s /results/rival.txt ]
}

# A consumer with nothing of its own: the generator's drop-in runs
# portrelease --system -- plain (errors ignored) before it.  It started at boot
# and bound its ports at the first try; the name's grouping unit is stopped.
scenario_s3_consumer_without_anything_of_its_own() {
    check started_at_first_try started_at_first_try plain.service
    check has_dropin has_dropin plain.service "$G/plain.service.d/portreserve.conf"
    check releases_its_name plain_releases_its_name
    check ports_bound portcheck bound 1501/tcp 1501/udp
    check name_released state_is portreserve@plain.target inactive
}
plain_releases_its_name() {
    systemctl show -P ExecStartPre plain.service | tee /dev/stderr |
        grep -F "argv[]=/usr/sbin/portrelease --system -- plain ;" | grep -F "ignore_errors=yes"
}

# A consumer with User=nobody: the drop-in's '+' runs portrelease as root.
scenario_s4_consumer_running_as_another_user() {
    check started_as_nobody started_as_nobody
}
started_as_nobody() {
    systemctl is-active asuser.service &&
        [ "$(ps -o user= -p "$(systemctl show -P MainPID asuser.service)")" = nobody ]
}

# A consumer that calls portrelease itself too: both calls run, the second is
# a no-op, and it starts.
scenario_s5_consumer_calling_portrelease_itself() {
    check started_after_two_releases started_after_two_releases
}
started_after_two_releases() {
    systemctl is-active selfrelease.service &&
        [ "$(systemctl show -P ExecStartPre selfrelease.service | grep -o "argv\[\]=/usr/sbin/portrelease" | wc -l)" = 2 ]
}

# Opted out in its reservation file (release=manual): no drop-in, the port
# stays reserved and the consumer cannot start until portrelease by hand.
scenario_s6_opted_out_in_the_reservation_file() {
    check no_dropin no_dropin_of_ours optout.service
    check held portcheck bound 1504/tcp
    check cannot_start_unreleased optout_cannot_start_unreleased
    check starts_after_release_by_hand optout_starts_after_release_by_hand
}
optout_cannot_start_unreleased() {
    state_is portreserve-1504-tcp.socket active && ! systemctl start optout.service
}
optout_starts_after_release_by_hand() {
    portrelease optout && systemctl start optout.service
}

# Mapped to another unit name (unit=slapd.service in the file ldap): the
# drop-in is slapd.service's, and releases the file's name.
scenario_s7_mapped_to_another_unit_name() {
    check started systemctl is-active slapd.service
    check has_dropin has_dropin slapd.service "$G/slapd.service.d/portreserve.conf"
    check releases_the_file_name slapd_releases_ldap
}
slapd_releases_ldap() {
    systemctl show -P ExecStartPre slapd.service | grep -F -- "--system -- ldap ;"
}

# Opted out per unit, the systemd way (the drop-in masked in /etc): systemd
# ignores the generator's drop-in and the port stays reserved.
scenario_s8_dropin_masked_per_unit() {
    check no_release masked_runs_no_portrelease
    check held portcheck bound 1506/tcp
}
masked_runs_no_portrelease() {
    local out
    out=$(systemctl show -P ExecStartPre masked1.service)
    echo "$out"
    ! grep -q portrelease <<<"$out"
}

# A name that needs every kind of quoting, mapped to oddprinter.service:
# systemd hands portrelease exactly the file name, whose group is then stopped.
scenario_s9_hostile_name() {
    check started_and_released hostile_started_and_released
}
hostile_started_and_released() {
    local files=(/etc/portreserve/*odd*)
    systemctl is-active oddprinter.service &&
        state_is "portreserve@$(systemd-escape "${files[0]##*/}").target" inactive
}

# The name is an alias of the unit (ldap2.service -> slapd2.service).
scenario_s10_alias() {
    check started alias_started
}
alias_started() {
    systemctl is-active slapd2.service && dropins slapd2.service
}

# A template instance (web@1509.service, reservation web@1509).
scenario_s11_template_instance() {
    check started systemctl is-active web@1509.service
}

# A unit installed after boot: its port stays held, daemon-reload brings its
# drop-in, and it starts.
scenario_s12_unit_installed_after_boot() {
    sed 's|serve .*|serve 1510/tcp|' /etc/systemd/system/plain.service > /etc/systemd/system/later.service
    check held portcheck bound 1510/tcp
    check daemon_reload systemctl daemon-reload
    check has_dropin has_dropin later.service "$G/later.service.d/portreserve.conf"
    check starts started_later later.service
}

# argv.service ran its commands at boot; tests/test_boot_dropins.py compares
# what each got (/results/argv) with the name it quoted.
scenario_s13_exec_quote_oracle_ran() {
    check ran systemctl is-active argv.service
}

scenario_s14_no_system_unit_failed() {
    check no_failed no_failed_units
}

# A user manager: the user generator gives the user's dev.service a drop-in
# that runs portrelease --user, and the service gets its port.
scenario_s15_user_manager_gets_drop_ins() {
    useradd --create-home --shell /bin/bash tester
    systemctl start "user@$(id -u tester).service"
    check held user_held_eventually tester 8081/tcp
    check has_dropin user_has_dropin
    check releases_its_name user_releases_its_name
    check consumer_started user_consumer_started
    check no_failed user_no_failed
}
user_has_dropin() {
    as_user tester systemctl --user show -P DropInPaths dev.service | tee /dev/stderr |
        grep -F "/run/user/$(id -u tester)/systemd/generator/dev.service.d/portreserve.conf"
}
user_releases_its_name() {
    as_user tester systemctl --user show -P ExecStartPre dev.service | tee /dev/stderr |
        grep -F -- "portrelease --user -- dev ;"
}
user_consumer_started() {
    as_user tester systemctl --user start dev.service && as_user tester systemctl --user is-active dev.service
}
user_no_failed() {
    local out
    out=$(as_user tester systemctl --user --failed --no-legend --plain)
    echo "$out"
    [ -z "$out" ]
}

# A user who turned drop-ins off (AutoRelease=no): reservations but no
# drop-in, so nothing releases the port.
scenario_s16_user_manager_with_auto_release_off() {
    useradd --create-home --shell /bin/bash tester2
    echo "AutoRelease=no" > /home/tester2/.config/portreserve/portreserve.conf
    sed -i 's/8081/8082/' /home/tester2/.config/portreserve/dev /home/tester2/.config/systemd/user/dev.service
    chown -R tester2: /home/tester2/.config
    systemctl start "user@$(id -u tester2).service"
    check held user_held_eventually tester2 8082/tcp
    check no_dropin user_off_no_dropin
    check still_held portcheck bound 8082/tcp
}
user_off_no_dropin() {
    local out
    out=$(as_user tester2 systemctl --user show -P DropInPaths dev.service)
    echo "$out"
    ! grep -q portreserve <<<"$out"
}

# Socket activation: systemd binds a consumer's ports itself when its socket
# unit starts (sockets.target, after sysinit.target), long after the
# reservation's.  The drop-in is the socket unit's (ExecStartPre= in
# [Socket]): imap.socket by its name, mail.socket named in the file pop3s.
# printer.socket listens on a path only (as cups.socket does): it is not what
# binds the port, so it gets no drop-in and the port stays reserved until
# printer.service, which binds it, starts.
scenario_s17_socket_activated_consumers() {
    check imap_listening state_is imap.socket active
    check imap_dropin has_dropin imap.socket "$G/imap.socket.d/portreserve.conf"
    check imap_released state_is portreserve@imap.target inactive
    check mail_listening state_is mail.socket active
    check mail_dropin has_dropin mail.socket "$G/mail.socket.d/portreserve.conf"
    check mail_released state_is portreserve@pop3s.target inactive
    check restart_is_quiet restart_socket_consumer
    check path_socket_active state_is printer.socket active
    check path_socket_no_dropin no_dropin_of_ours printer.socket
    check path_socket_port_held portcheck bound 1514/tcp
    check service_releases_it started_later printer.service
}
# A restart of the socket unit: its portrelease finds the ports free and
# asks nobody; it binds again.  (Only TCP can be probed: systemd sets
# SO_REUSEADDR on the UDP sockets it binds, so a probe would share the port.)
restart_socket_consumer() {
    systemctl restart mail.socket && state_is mail.socket active && portcheck bound 1513/tcp
}

# systemd is the oracle of how the generator reads socket units: for each
# unit listed in /etc/listen-oracle.list (units that nothing starts, staged by
# tests/test_boot_dropins.py), what `systemctl show` says it listens on, and
# what portreserve.unitpath.UnitPath.listen_ports() reads from the same files;
# the test compares them.
scenario_s18_listen_ports_oracle_ran() {
    check ran listen_oracle
}
listen_oracle() {
    local unit
    mkdir -p /results/listen
    while read -r unit; do
        systemctl show -p LoadState,Listen,SocketProtocol -- "$unit" > "/results/listen/$unit" || return 1
    done < /etc/listen-oracle.list
    python3 -I -c '
import json, sys
from portreserve.unitpath import UnitPath, unit_search_path
units = UnitPath(unit_search_path(False))
print(json.dumps({u: sorted(units.listen_ports(u)) for u in sys.stdin.read().split()}))
' < /etc/listen-oracle.list > /results/listen/ours.json
}

SCENARIOS=(
    s1_control_portrelease_by_hand_frees_a_port
    s2_early_rival_gets_nothing
    s3_consumer_without_anything_of_its_own
    s4_consumer_running_as_another_user
    s5_consumer_calling_portrelease_itself
    s6_opted_out_in_the_reservation_file
    s7_mapped_to_another_unit_name
    s8_dropin_masked_per_unit
    s9_hostile_name
    s10_alias
    s11_template_instance
    s12_unit_installed_after_boot
    s13_exec_quote_oracle_ran
    s14_no_system_unit_failed
    s15_user_manager_gets_drop_ins
    s16_user_manager_with_auto_release_off
    s17_socket_activated_consumers
    s18_listen_ports_oracle_ran
)
run_scenarios "${SCENARIOS[@]}"
