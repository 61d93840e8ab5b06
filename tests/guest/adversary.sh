#!/bin/bash
# Boot driver: an adversary's attacks on the holder, portrelease and
# step-aside (issue 8 review).  Each scenario_* function is one behaviour; its
# checks (check, or repeat for the races) are recorded as SCENARIO.CHECK and
# tests/test_boot_adversary.py has one test per scenario.
#
# Names (tests/test_boot_adversary.py writes them):
#   a01..a40    2{4}0NN/tcp and /udp          (24001..24040)
#   b001..b200  25NNN/tcp, each with a consumer adv-burst@NNN.service at boot
#   m0001..m1000 30001..31000/tcp, written and reserved by scenario_thousand_and_all
#   hostile names (blanks, unicode, a tab, a backslash): 26001..26007/tcp
# Functions run through repeat and bash -c: shellcheck cannot see those calls,
# and the single-quoted commands expand in the inner shell on purpose.
# shellcheck disable=SC2016,SC2317
# shellcheck source=tests/guest/lib.sh
source /usr/local/lib/boot-tests/lib.sh
set -u

aport() { printf '240%02d' "$((10#${1#a}))"; }
# The grouping unit of any name, escaped as systemd does.
groupof() { echo "portreserve@$(systemd-escape -- "$1").target"; }

# reserve_name NAME PORT...: reserve() for any name (escaped unit name).
reserve_name() {
    local name=$1; shift
    systemctl start "$(groupof "$name")" || return 1
    held_eventually "$@" || { echo "'$name': $* not held after start"; return 1; }
}
holder_active() { [ "$(holder_state)" = active ]; }
holder_pid() { systemctl show -P MainPID portreserve.service; }
no_traceback() {
    ! journalctl -b -q --no-pager -u portreserve.service | grep -B2 -A40 'Traceback'
}
export -f aport groupof release_then_free reserve_name holder_active holder_pid no_traceback

# -- the boot itself ----------------------------------------------------------

scenario_boot_burst() {
    # 200 consumers started at boot, each ExecStartPre=portrelease bNNN (no '-':
    # a failed release fails the unit), each checking its port is free.
    burst_all_started() {
        local missing=() i unit
        for i in $(seq -w 1 200); do
            unit="adv-burst@$i.service"
            [ "$(systemctl show -P ActiveState "$unit")" = active ] || missing+=("$unit")
        done
        [ ${#missing[@]} = 0 ] && return 0
        echo "${#missing[@]} failed: ${missing[*]}"
        systemctl status --no-pager -n 8 "${missing[@]:0:3}"
        return 1
    }
    export -f burst_all_started
    check all_consumers_started burst_all_started
}

# -- names --------------------------------------------------------------------

scenario_hostile_names() {
    check held_released_reserved_again hostile_names_round_trip
    check no_failed no_failed_units_but_taken
}
# Each hostile name in turn: held since boot, released, reserved again.  Every
# name and step is tried whatever happened before; each failure names both.
hostile_names_round_trip() {
    local i=1 name port failed=0
    while IFS= read -r -d '' name; do
        port="2600$i/tcp"
        held_eventually "$port" || { echo "'$name': $port not held"; failed=1; }
        release_then_free "$name" "$port" || { echo "'$name': not released"; failed=1; }
        reserve_name "$name" "$port" || { echo "'$name': not reserved again"; failed=1; }
        i=$((i + 1))
    done < <(printf '%s\0' ' lead' 'sp ace' 'trail ' 'café' '日本語' '50% "q" $x' 'back\slash')
    return "$failed"
}

scenario_non_root() {
    # Not root, no session: the system's reservations, refused with a reason.
    check refused bash -c 'out=$(setpriv --reuid=65534 --regid=65534 --clear-groups portrelease a31 2>&1); rc=$?
        echo "rc=$rc $out"; [ $rc = 1 ] && grep -qi "root" <<<"$out"'
    check still_held portcheck bound 24031/tcp 24031/udp
    # Not root, --system explicitly, with a session directory: refused as well.
    check refused_system bash -c 'out=$(XDG_RUNTIME_DIR=/tmp setpriv --reuid=65534 --regid=65534 --clear-groups \
        portrelease --system a31 2>&1); rc=$?; echo "rc=$rc $out"; [ $rc = 1 ] && grep -qi "root" <<<"$out"'
    check still_held_after portcheck bound 24031/tcp 24031/udp
}

# -- the manager connection ---------------------------------------------------

scenario_daemon_reexec() {
    reserve a01 24001/tcp 24001/udp
    reserve a02 24002/tcp 24002/udp
    eventually holder_active
    local before
    before=$(holder_pid)
    systemctl daemon-reexec
    sleep 1
    check holder_survives bash -c "[ \"\$(holder_state)\" = active ] && [ \"\$(holder_pid)\" = $before ] ||
        { systemctl status --no-pager -n 30 portreserve.service; exit 1; }"
    check no_traceback no_traceback
    check release_after release_then_free a01 24001/tcp 24001/udp
    # A release in flight across a re-exec.
    portrelease a02 > /tmp/reexec.out 2>&1 & local p=$!
    systemctl daemon-reexec
    local rc=0
    wait "$p" || rc=$?
    check release_across bash -c "cat /tmp/reexec.out; [ $rc = 0 ] &&
        flock /run/probe.lock portcheck free 24002/tcp 24002/udp"
    systemctl reset-failed portreserve.service 2>/dev/null
}

scenario_reload_storm() {
    one_round() {
        reserve a07 24007/tcp 24007/udp || return 1
        reserve a08 24008/tcp 24008/udp || return 1
        (for _ in 1 2 3; do systemctl daemon-reload; done) & local r=$!
        # Each reload keeps PID 1 from running jobs: give the releases time,
        # this is about their truth, not their speed.
        portrelease -t 30 a07 || { wait "$r"; return 1; }
        portrelease -t 30 a08 || { wait "$r"; return 1; }
        flock /run/probe.lock portcheck free 24007/tcp 24007/udp 24008/tcp 24008/udp || { wait "$r"; return 1; }
        wait "$r"
        eventually bash -c '[ "$(systemctl show -P ActiveState portreserve-24007-tcp.socket)" = inactive ]'
    }
    export -f one_round
    repeat 2 true_and_consistent one_round
}

# -- admins acting on units -----------------------------------------------------

scenario_socket_unit_by_hand() {
    reserve a06 24006/tcp 24006/udp
    eventually holder_active
    check stop_start bash -c 'systemctl stop portreserve-24006-tcp.socket &&
        eventually portcheck free 24006/tcp && systemctl start portreserve-24006-tcp.socket &&
        held_eventually 24006/tcp'
    check restart bash -c 'systemctl restart portreserve-24006-udp.socket && held_eventually 24006/udp'
    check release release_then_free a06 24006/tcp 24006/udp
}

scenario_in_use_after_admin_stop() {
    # The admin releases by hand; the service starts and binds the port; a
    # later portrelease (here the name, then '*' of another scope) must say
    # "in use" at once, not wait for a port it dropped long ago.
    reserve a03 24003/tcp 24003/udp
    eventually holder_active
    systemctl stop "$(group a03)"
    eventually portcheck free 24003/tcp 24003/udp
    systemd-run -q --unit=a03-server --service-type=notify -p NotifyAccess=all portcheck serve 24003/tcp 24003/udp
    check answers bash -c 'portrelease -v -t 3 a03'
    systemctl stop a03-server
}

scenario_removed_config() {
    reserve a05 24005/tcp 24005/udp
    eventually holder_active
    mv /etc/portreserve/a05 /root/a05.removed
    systemctl daemon-reload
    # Nobody reserves 24005 any more: it must not stay bound for good, and
    # portrelease of the name (or '*') must not say "nothing" while it is.
    portrelease a05 > /tmp/removed.out 2>&1; echo "rc=$?" >> /tmp/removed.out
    check free_after_reload bash -c 'cat /tmp/removed.out; systemctl show -p LoadState -p ActiveState portreserve-24005-tcp.socket
        eventually portcheck free 24005/tcp 24005/udp || { ss -Htlunp | grep 24005; exit 1; }'
    mv /root/a05.removed /etc/portreserve/a05
    systemctl daemon-reload
}

scenario_holder_restart_in_flight() {
    one_round() {
        local verb=$1 n pids=()
        for n in a09 a10 a11; do reserve "$n" "$(aport "$n")/tcp" "$(aport "$n")/udp" || return 1; done
        eventually holder_active || return 1
        for n in a09 a10 a11; do
            release_then_free "$n" "$(aport "$n")/tcp" "$(aport "$n")/udp" > "/tmp/inflight.$n" 2>&1 & pids+=($!)
        done
        systemctl "$verb" portreserve.service
        for p in "${pids[@]}"; do wait "$p" || { cat /tmp/inflight.*; return 1; }; done
    }
    export -f one_round
    repeat 6 restart one_round restart
    repeat 6 stop one_round stop
    check no_failed no_failed_units_but_taken
}

scenario_kill_in_flight() {
    reserve a12 24012/tcp 24012/udp
    reserve a13 24013/tcp 24013/udp
    eventually holder_active
    release_then_free a12 24012/tcp 24012/udp > /tmp/kill.1 2>&1 & local p1=$!
    release_then_free a13 24013/tcp 24013/udp > /tmp/kill.2 2>&1 & local p2=$!
    systemctl kill -s KILL portreserve.service
    local rc1=0 rc2=0
    wait "$p1" || rc1=$?
    wait "$p2" || rc2=$?
    check first bash -c "cat /tmp/kill.1; exit $rc1"
    check second bash -c "cat /tmp/kill.2; exit $rc2"
    systemctl reset-failed portreserve.service
    check next_release_works release_then_free a14 24014/tcp 24014/udp
}

scenario_restart_group_loops() {
    reserve a15 24015/tcp 24015/udp
    (for _ in $(seq 8); do systemctl restart "$(group a15)"; done) & local r=$!
    local n pids=()
    for n in a16 a17 a18 a19 a20 a21; do
        release_then_free "$n" "$(aport "$n")/tcp" "$(aport "$n")/udp" > "/tmp/loops.$n" 2>&1 & pids+=($!)
        sleep 0.2
    done
    local bad=0
    for p in "${pids[@]}"; do wait "$p" || bad=1; done
    wait "$r"
    check releases_true bash -c "[ $bad = 0 ] || { cat /tmp/loops.*; exit 1; }"
    check restarted_held held_eventually 24015/tcp 24015/udp
    check no_failed no_failed_units_but_taken
}

scenario_reload_during_releases() {
    local i ports=()
    for i in $(seq -w 1 10); do echo "270$i/tcp" > "/etc/portreserve/c$i"; ports+=("270$i/tcp"); done
    local n pids=()
    for n in a22 a23 a24 a25 a26; do
        release_then_free "$n" "$(aport "$n")/tcp" "$(aport "$n")/udp" > "/tmp/rel.$n" 2>&1 & pids+=($!)
    done
    portreserve reload > /tmp/rel.reload 2>&1 & pids+=($!)
    local bad=0
    for p in "${pids[@]}"; do wait "$p" || bad=1; done
    check all_ok bash -c "[ $bad = 0 ] || { cat /tmp/rel.*; exit 1; }"
    check new_held held_eventually "${ports[@]}"
    check no_failed no_failed_units_but_taken
}

scenario_requires_consumer() {
    systemctl start adv-requires.service
    local since
    since=$(systemctl show -P ActiveEnterTimestampMonotonic adv-requires.service)
    # Release a name, then reserve it again: step-aside makes the running
    # holder exit; a consumer that Requires= it must not be stopped.
    portrelease a27
    eventually holder_active
    check reserve reserve a27 24027/tcp 24027/udp
    check still_running bash -c "[ \"\$(systemctl show -P ActiveState adv-requires.service)\" = active ] &&
        [ \"\$(systemctl show -P ActiveEnterTimestampMonotonic adv-requires.service)\" = $since ]"
    systemctl stop adv-requires.service
}

# -- floods -------------------------------------------------------------------

scenario_traffic_flood() {
    adv-flood traffic 24028 24029 24030 24032 24033 & local f=$!
    sleep 0.3
    local n bad=0
    for n in a28 a29 a30; do
        release_then_free "$n" "$(aport "$n")/tcp" "$(aport "$n")/udp" > "/tmp/flood.$n" 2>&1 || bad=1
    done
    check releases_true bash -c "[ $bad = 0 ] || { cat /tmp/flood.*; exit 1; }"
    check still_held portcheck bound 24032/tcp 24032/udp 24033/tcp 24033/udp
    check still_refused portcheck refused 24032 24033
    kill "$f"; wait "$f" 2>/dev/null
    check holder_alive holder_active
}

scenario_control_junk_flood() {
    # Root floods the control socket with junk; a real release still goes through.
    adv-flood junk & local f=$!
    sleep 0.5
    check real_release release_then_free a34 24034/tcp 24034/udp
    kill "$f"; wait "$f" 2>/dev/null
    check holder_alive holder_active
}

scenario_queue_full_timeout() {
    # The holder does not read (stopped); the control socket's queue fills up
    # (net.unix.max_dgram_qlen); portrelease -t 1 must still give up in time.
    reserve a35 24035/tcp 24035/udp
    # Adopted by the holder that step-aside started again (not the one it stops).
    eventually bash -c 'ss -Htlnp "sport = :24035" | grep -q portreserve' && eventually holder_active
    local pid
    pid=$(holder_pid)
    kill -STOP "$pid"
    adv-flood fill > /tmp/qfull.fill 2>&1; local filled=$?
    timeout 12 portrelease -t 1 a35 > /tmp/qfull.out 2>&1
    local rc=$?
    kill -CONT "$pid"
    check gave_up_in_time bash -c "cat /tmp/qfull.fill /tmp/qfull.out; echo rc=$rc
        [ $filled = 0 ] && [ $rc = 1 ]"
    check release_after release_then_free a35 24035/tcp 24035/udp
}

scenario_pid1_busy() {
    local i pids=()
    for i in $(seq 100); do systemd-run -q --no-block --unit="adv-busy-$i" sleep 3 & pids+=($!); done
    local n rel=()
    for n in a36 a37 a38; do
        release_then_free "$n" "$(aport "$n")/tcp" "$(aport "$n")/udp" > "/tmp/busy.$n" 2>&1 & rel+=($!)
    done
    local bad=0
    for p in "${rel[@]}"; do wait "$p" || bad=1; done
    wait "${pids[@]}"
    check releases_true bash -c "[ $bad = 0 ] || { cat /tmp/busy.*; exit 1; }"
}

# -- everything ---------------------------------------------------------------

scenario_thousand_and_all() {
    # 1000 new names in one reload while the holder runs, then release all.
    local i
    for i in $(seq -w 1 1000); do echo "$((30000 + 10#$i))/tcp" > "/etc/portreserve/m$i"; done
    check reload portreserve reload
    check all_held bash -c 'for i in 1 250 500 750 1000; do held_eventually $((30000 + i))/tcp || exit 1; done'
    check release_all bash -c 'portrelease -v "*"'
    local ports=()
    for i in $(seq 30001 31000); do ports+=("$i/tcp"); done
    check all_free flock /run/probe.lock portcheck free "${ports[@]}" 24039/tcp 24039/udp
    check no_job_left bash -c 'eventually bash -c "[ -z \"\$(systemctl list-jobs --no-legend | grep -v boot-driver.service)\" ]" || { systemctl list-jobs --no-pager | head; exit 1; }'
    check holder_exits eventually bash -c '[ "$(holder_state)" = inactive ]'
}

scenario_holder_without_fds() {
    # Everything released, the control socket stopped by an admin: a start of
    # the holder (here by a consumer that Requires= it) gets no fds at all.
    systemctl stop portreserve.socket
    check consumer_starts timeout 30 systemctl start adv-requires.service
    check not_failed bash -c '! systemctl is-failed --quiet portreserve.service ||
        { systemctl status --no-pager -n 20 portreserve.service; exit 1; }'
    check binds_nothing flock /run/probe.lock portcheck free 24001/tcp 24031/udp 30001/tcp
    systemctl stop adv-requires.service
    systemctl reset-failed portreserve.service 2>/dev/null
    systemctl start portreserve.socket
}

scenario_isolate() {
    # A target that keeps a40's reservation and leaves every other one out.
    reserve a40 24040/tcp 24040/udp
    reserve a39 24039/tcp 24039/udp
    # --no-block: the isolate transaction holds the driver's own start job,
    # which ends only with the driver.
    check isolate bash -c 'systemctl isolate --no-block adv-isolate.target &&
        eventually bash -c "[ \"\$(systemctl show -P ActiveState adv-isolate.target)\" = active ]" &&
        eventually bash -c "[ -z \"\$(systemctl list-jobs --no-legend | grep -v boot-driver.service)\" ]" ||
        { systemctl list-jobs --no-pager; systemctl show -p ActiveState adv-isolate.target; exit 1; }'
    check kept_held held_eventually 24040/tcp 24040/udp
    check others_free eventually portcheck free 24039/tcp 24039/udp
    check release_kept release_then_free a40 24040/tcp 24040/udp
    check no_failed no_failed_units_but_taken
}

no_failed_units_but_taken() {
    local failed
    failed=$(systemctl --failed --no-legend --plain)
    [ -z "$failed" ] || { echo "failed units: $failed"; return 1; }
}
export -f no_failed_units_but_taken

SCENARIOS=(
    boot_burst
    hostile_names
    non_root
    daemon_reexec
    reload_storm
    socket_unit_by_hand
    in_use_after_admin_stop
    removed_config
    holder_restart_in_flight
    kill_in_flight
    restart_group_loops
    reload_during_releases
    requires_consumer
    traffic_flood
    control_junk_flood
    queue_full_timeout
    pid1_busy
    thousand_and_all
    holder_without_fds
    isolate
)
run_scenarios "${SCENARIOS[@]}"
echo "== end $(date +%s.%N)"
systemctl list-units --all --no-pager 'portreserve*' > /results/units.txt 2>&1
