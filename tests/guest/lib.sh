# Shared by the boot drivers (sourced): recording checks and waiting for states.
# shellcheck shell=bash

export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /results/checks

# Under run_scenarios, $SCENARIO is the scenario running: check and repeat
# record NAME as SCENARIO.NAME.
record_name() {
    echo "${SCENARIO:+$SCENARIO.}$1"
}

# check NAME CMD...: run CMD once and record "ok" or "FAIL (exit N)" with its output.
check() {
    local name
    name=$(record_name "$1"); shift
    local out
    if out=$("$@" 2>&1); then
        printf 'ok\n%s\n' "$out" > "/results/checks/$name"
    else
        printf 'FAIL (exit %s)\n%s\n' "$?" "$out" > "/results/checks/$name"
    fi
}

# repeat N NAME CMD...: run CMD N times (it gets the round as $ROUND); record
# the first failure with its round and output, or "ok" and the count.
repeat() {
    local count=$1 name
    name=$(record_name "$2"); shift 2
    local out round
    for round in $(seq "$count"); do
        if ! out=$(ROUND=$round "$@" 2>&1); then
            printf 'FAIL (round %s of %s)\n%s\n' "$round" "$count" "$out" > "/results/checks/$name"
            return 0
        fi
    done
    printf 'ok\n%s rounds\n' "$count" > "/results/checks/$name"
}

# eventually CMD...: true once CMD is, within about 10 s (states that systemd
# or the holder settle asynchronously).
eventually() {
    local _
    for _ in $(seq 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
    "$@"
}

no_failed_units() {
    local failed
    failed=$(systemctl --failed --no-legend --plain)
    [ -z "$failed" ] || { echo "failed units: $failed"; return 1; }
}

# The grouping unit of a name: portreserve@NAME.target (round 1: .service).
group() {
    if compgen -G "/run/systemd/generator/portreserve@*.service" >/dev/null; then
        echo "portreserve@$1.service"
    else
        echo "portreserve@$1.target"
    fi
}

# reserve NAME PORT...: start the name's grouping unit, wait until its ports are held.
# It waits for the socket units to be active, not for the ports to be taken:
# probing a port means binding it for a moment, and a probe that happens to
# bind while systemd binds makes systemd fail the socket (a rival, after all).
reserve() {
    local name=$1; shift
    systemctl start "$(group "$name")" || return 1
    local spec
    for spec in "$@"; do
        eventually systemctl is-active --quiet "portreserve-${spec/\//-}.socket" ||
            { echo "$name: portreserve-${spec/\//-}.socket not active after start"; return 1; }
    done
    # Bound by systemd now; held against every rival once the holder has
    # adopted them (it clears SO_REUSEADDR on UDP sockets).
    eventually portcheck bound "$@" || { echo "$name: $* not held after start"; return 1; }
}

# held_eventually PORT...: the ports' socket units become active, then the ports are held.
held_eventually() {
    local spec
    for spec in "$@"; do
        eventually systemctl is-active --quiet "portreserve-${spec/\//-}.socket" || return 1
    done
    eventually portcheck bound "$@"
}

# release_then_free NAME PORT...: portrelease NAME exits 0, and the ports can
# be bound the moment it returns.  One probe at a time: two probes binding the
# same port at once would each see the other's socket.
release_then_free() {
    local name=$1; shift
    portrelease "$name" || { echo "portrelease '$name': exit $?"; return 1; }
    flock /run/probe.lock portcheck free "$@" ||
        { echo "portrelease '$name' returned 0 but $* still bound"; ss -Htlunp; return 1; }
}

holder_state() {
    systemctl show -P ActiveState portreserve.service
}

# state_is UNIT STATE: the unit is loaded and its ActiveState is STATE (a unit
# that does not exist, a misspelt name say, shows "inactive" too).
state_is() {
    local load state
    load=$(systemctl show -P LoadState "$1")
    state=$(systemctl show -P ActiveState "$1")
    [ "$load" = loaded ] || { echo "$1 is $load"; return 1; }
    [ "$state" = "$2" ] || { echo "$1 is $state, not $2"; return 1; }
}

unit_state() {  # unit -> ActiveState/Result
    systemctl show -P ActiveState "$1"; systemctl show -P Result "$1"
}

# run_scenarios NAME...: run scenario_NAME for each NAME in turn, with
# $SCENARIO set; /results/scenarios/NAME records that it ran to its end.  The
# driver log gets "== NAME" and the time (seconds since the epoch) at each start.
run_scenarios() {
    mkdir -p /results/scenarios
    local scenario
    for scenario in "$@"; do
        echo "== $scenario $(date +%s.%N)"
        export SCENARIO=$scenario
        "scenario_$scenario"
        echo "returned $?" > "/results/scenarios/$scenario"
    done
    unset SCENARIO
}

export -f release_then_free record_name check repeat eventually no_failed_units group reserve held_eventually holder_state state_is \
    unit_state
