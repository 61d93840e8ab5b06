#!/bin/bash
# Boot driver of benchmarks/socket_cap.py: when the boot reached each stage,
# how many reservation sockets are active, and how the holder fared.
set -u
stamp() { systemctl show -P "$2" "$1"; }
origin=$(systemctl show -P UserspaceTimestampMonotonic)
gen_start=$(systemctl show -P GeneratorsStartTimestampMonotonic)
gen_end=$(systemctl show -P GeneratorsFinishTimestampMonotonic)
load_start=$(systemctl show -P UnitsLoadStartTimestampMonotonic)
load_end=$(systemctl show -P UnitsLoadFinishTimestampMonotonic)
sockets=$(stamp sockets.target ActiveEnterTimestampMonotonic)
active=$(systemctl list-units --plain --no-legend --state=active 'portreserve-*.socket' | wc -l)
all=$(systemctl list-units --all --plain --no-legend 'portreserve-*.socket' | wc -l)
holder_result=$(stamp portreserve.service Result)
holder_status=$(stamp portreserve.service ExecMainStatus)
holder_state=$(stamp portreserve.service ActiveState)
listening=$(ss -Hltun | wc -l)
cat > /results/cap.json <<JSON
{"generators_ms": $(( (gen_end - gen_start) / 1000 )), "units_load_ms": $(( (load_end - load_start) / 1000 )),
 "sockets_target_ms": $(( sockets ? (sockets - origin) / 1000 : -1 )), "socket_units": $all,
 "socket_units_active": $active, "listening": $listening, "holder_state": "$holder_state",
 "holder_result": "$holder_result", "holder_exit_status": "$holder_status"}
JSON
