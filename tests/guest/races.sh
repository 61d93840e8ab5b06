#!/bin/bash
# Boot driver: every way a release can race the holder, PID 1 or another
# release (issue 8).  Each scenario_* function is one behaviour; its checks
# (check, or repeat for the races) are recorded as SCENARIO.CHECK and
# tests/test_boot_races.py has one test per scenario.
# Names n01..n40 reserve 21001..21040/tcp; n01..n10 also the same port in UDP.
# new01..new40 (22001..22040/tcp) are written by the reload scenario.
# Functions run through repeat and bash -c: shellcheck cannot see those calls,
# and the single-quoted commands expand in the inner shell on purpose.
# shellcheck disable=SC2016,SC2317
# shellcheck source=tests/guest/lib.sh
source /usr/local/lib/boot-tests/lib.sh
set -u

port() { printf '210%02d' "$((10#${1#n}))"; }

# No failed unit but the socket of the port taken before boot.
no_failed_but_taken() {
    local failed
    failed=$(systemctl --failed --no-legend --plain | grep -v '^portreserve-21040-tcp.socket ')
    [ -z "$failed" ] || { echo "failed units: $failed"; return 1; }
}
export -f port no_failed_but_taken

scenario_taken_before_boot() {
    # taken-early.service bound 21040/tcp before the reservation could.
    check unit_failed bash -c '[ "$(systemctl show -P ActiveState portreserve-21040-tcp.socket)" = failed ]'
    check warns bash -c 'out=$(portrelease n40 2>&1); rc=$?; echo "$out"; [ $rc = 0 ] &&
        grep -q "21040/tcp.*never reserved" <<<"$out" && grep -q "portcheck" <<<"$out"'
    check udp_still_released release_then_free n40 21040/udp
}

scenario_same_name_twice() {
    one_round() {
        reserve n03 21003/tcp 21003/udp || return 1
        release_then_free n03 21003/tcp 21003/udp > /tmp/twice.1 2>&1 & a=$!
        release_then_free n03 21003/tcp 21003/udp > /tmp/twice.2 2>&1 & b=$!
        wait "$a" || { cat /tmp/twice.1; return 1; }
        wait "$b" || { cat /tmp/twice.2; return 1; }
    }
    export -f one_round
    repeat 25 both_true one_round
}

scenario_many_names_and_all() {
    one_round() {
        for n in n04 n05 n06 n07; do reserve "$n" "$(port "$n")/tcp" || return 1; done
        local pids=()
        for n in n04 n05 n06; do release_then_free "$n" "$(port "$n")/tcp" > "/tmp/many.$n" 2>&1 & pids+=($!); done
        portrelease '*' > /tmp/many.all 2>&1 & pids+=($!)
        for p in "${pids[@]}"; do wait "$p" || { cat /tmp/many.*; return 1; }; done
        portcheck free 21004/tcp 21005/tcp 21006/tcp 21007/tcp
    }
    export -f one_round
    repeat 10 all_true one_round
}

scenario_reserve_one_release_another() {
    reserve n09 21009/tcp
    one_round() {
        portrelease n08 || return 1
        reserve n09 21009/tcp || return 1
        systemctl start --no-block "$(group n08)"
        release_then_free n09 21009/tcp || return 1
        held_eventually 21008/tcp || { echo "n08 not reserved again"; return 1; }
    }
    export -f one_round
    repeat 20 both_true one_round
}

scenario_release_racing_daemon_reload() {
    one_round() {
        reserve n10 21010/tcp 21010/udp || return 1
        systemctl daemon-reload & r=$!
        release_then_free n10 21010/tcp 21010/udp || { wait "$r"; return 1; }
        wait "$r"
        eventually bash -c '[ "$(systemctl show -P ActiveState portreserve-21010-tcp.socket)" = inactive ]'
    }
    export -f one_round
    repeat 30 true_and_consistent one_round
}

scenario_release_while_pid1_rewrites_the_map() {
    # PID 1 removes the generator's map at every daemon-reload until the
    # generator has written it again (docs/design.md F18).  Reloads run
    # without pause; each round a new holder is started by the request
    # itself, and may start, and read its request, while the map is gone.
    # It must not answer "nothing reserved" with 21018 still held.
    one_round() {
        reserve n18 21018/tcp || return 1
        eventually bash -c '[ "$(holder_state)" = active ]' || return 1
        # (No main process: the holder left by itself, 21018 reserved: it
        # took every port for an orphan, the map being gone.)
        systemctl kill --kill-who=main -s TERM portreserve.service || return 1
        eventually bash -c '[ "$(holder_state)" = inactive ]' || return 1
        # Each reload keeps PID 1 from running jobs: this is about the
        # answer's truth, not its speed.
        portrelease -t 30 n18 || { echo "portrelease n18: exit $?"; return 1; }
        flock /run/probe.lock portcheck free 21018/tcp ||
            { echo "portrelease n18 returned 0 but 21018/tcp is still bound"; return 1; }
    }
    export -f one_round
    ( while [ ! -e /run/stop-reloads ]; do systemctl daemon-reload; sleep 0.02; done ) & local reloads=$!
    repeat 20 true_while_reloading one_round
    touch /run/stop-reloads
    wait "$reloads"
    rm -f /run/stop-reloads
    check no_failed no_failed_but_taken
}

scenario_stale_request_of_a_stopped_holder() {
    one_round() {
        reserve n11 21011/tcp || return 1
        eventually bash -c '[ "$(holder_state)" = active ]' || return 1
        local pid
        pid=$(systemctl show -P MainPID portreserve.service)
        kill -STOP "$pid"
        if portrelease -t 0.5 n11; then kill -CONT "$pid"; echo "returned 0 while the holder was stopped"; return 1; fi
        kill -CONT "$pid"
        # The request it finds when it wakes up is carried out whole: units
        # stopped and copies dropped, so that the next request is true.
        eventually portcheck free 21011/tcp || { echo "stale request left 21011 bound"; return 1; }
        eventually bash -c '[ "$(systemctl show -P ActiveState portreserve-21011-tcp.socket)" = inactive ]' || return 1
        release_then_free n11 21011/tcp
    }
    export -f one_round
    repeat 3 consistent one_round
}

scenario_requests_at_holder_exit() {
    # 21014 is in use by its service after its release: asking for it again
    # goes to the holder (or starts one), which must answer "in use".
    portrelease n14
    systemd-run --unit=n14-server --service-type=notify -p NotifyAccess=all portcheck serve 21014/tcp
    one_round() {
        portrelease '*' || return 1
        eventually bash -c '[ "$(holder_state)" = inactive ]' || return 1
        reserve n12 21012/tcp || return 1
        reserve n13 21013/tcp || return 1
        local pids=()
        release_then_free n12 21012/tcp > /tmp/exit.1 2>&1 & pids+=($!)
        release_then_free n13 21013/tcp > /tmp/exit.2 2>&1 & pids+=($!)
        portrelease n14 > /tmp/exit.3 2>&1 & pids+=($!)
        portrelease n14 > /tmp/exit.4 2>&1 & pids+=($!)
        for p in "${pids[@]}"; do wait "$p" || { cat /tmp/exit.*; return 1; }; done
    }
    export -f one_round
    repeat 15 all_answered one_round
    check no_failed no_failed_but_taken
    systemctl stop n14-server
}

scenario_reserve_in_a_row_after_exit() {
    one_round() {
        portrelease '*' || return 1
        eventually bash -c '[ "$(holder_state)" = inactive ]' || return 1
        sleep 0.2
        for n in n15 n16 n17; do systemctl start "$(group "$n")" || return 1; done
        held_eventually 21015/tcp 21016/tcp 21017/tcp ||
            { systemctl list-units --all --no-pager 'portreserve*'; journalctl -n 30 --no-pager; return 1; }
    }
    export -f one_round
    repeat 5 all_held one_round
    check no_failed no_failed_but_taken
}

scenario_reload_of_forty_new_names() {
    for i in $(seq -w 1 40); do echo "220$i/tcp" > "/etc/portreserve/new$i"; done
    local ports=()
    for i in $(seq -w 1 40); do ports+=("220$i/tcp"); done
    check reload portreserve reload
    check all_held held_eventually "${ports[@]}"
    check released_one release_then_free new07 22007/tcp
    # The same by hand, while the holder runs: 40 more names in one systemctl start.
    check holder_running eventually bash -c '[ "$(holder_state)" = active ]'
    local groups=() more=()
    for i in $(seq 41 80); do
        echo "220$i/tcp" > "/etc/portreserve/new$i"
        groups+=("$(group "new$i")")
        more+=("220$i/tcp")
    done
    systemctl daemon-reload
    check start_in_one_call systemctl start "${groups[@]}"
    check all_held_by_hand held_eventually "${more[@]}"
    check no_failed no_failed_but_taken
}

scenario_stop_routes() {
    reserve n01 21001/tcp 21001/udp
    # The socket unit itself: only the holder's own view can tell it to let go.
    check socket_unit bash -c 'systemctl stop portreserve-21001-tcp.socket &&
        eventually portcheck free 21001/tcp && portcheck bound 21001/udp'
    check group bash -c 'systemctl stop "$(group n01)" && eventually portcheck free 21001/udp'
    reserve n01 21001/tcp 21001/udp
    reserve n02 21002/tcp 21002/udp
    check restart_group bash -c 'systemctl restart "$(group n02)" && held_eventually 21002/tcp 21002/udp'
    check all_target bash -c 'systemctl stop portreserve.target &&
        eventually portcheck free 21001/tcp 21001/udp 21002/tcp 21040/udp'
    check no_failed no_failed_but_taken
}

# In this order: the port taken at boot is looked at before anything stops
# its failed unit; the stop routes end with everything stopped.
SCENARIOS=(
    taken_before_boot
    same_name_twice
    many_names_and_all
    reserve_one_release_another
    release_racing_daemon_reload
    release_while_pid1_rewrites_the_map
    stale_request_of_a_stopped_holder
    requests_at_holder_exit
    reserve_in_a_row_after_exit
    reload_of_forty_new_names
    stop_routes
)
run_scenarios "${SCENARIOS[@]}"
systemctl list-units --all --no-pager 'portreserve*' > /results/units.txt 2>&1
