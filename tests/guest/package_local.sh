#!/bin/bash
# Boot driver (tests/test_boot_package.py, the /usr/local boot): `make install`
# with its defaults puts everything under /usr/local, and systemd 252 finds it
# there.  Each scenario_* function is one behaviour; its checks are recorded as
# SCENARIO.CHECK and tests/test_boot_package.py has one test per scenario.
#
# Configuration (tests/test_boot_package.py stages it): cups 631/tcp.
# shellcheck source=tests/guest/lib.sh
source /usr/local/lib/boot-tests/lib.sh
set -u
export PATH=/usr/local/sbin:$PATH  # root's PATH on Debian has it; the harness's does not

# The units and the generator ran from /usr/local, and nothing is in /usr.
scenario_s1_installed_under_usr_local_only() {
    check units_from_usr_local units_from_usr_local
    check generator_ran grep -x "cups 631/tcp" /run/systemd/generator/portreserve.map
    check not_in_usr not_in_usr
}
units_from_usr_local() {
    [ "$(systemctl show -P FragmentPath portreserve.service)" = /usr/local/lib/systemd/system/portreserve.service ] &&
        systemctl show -P ExecStart portreserve.service | grep -F "/usr/local/sbin/portreserve"
}
not_in_usr() {
    [ ! -e /usr/sbin/portreserve ] && [ ! -e /usr/lib/python3/dist-packages/portreserve ]
}

# And it works from there: reserved at boot, reported, released.
scenario_s2_reserves_reports_and_releases() {
    check held_at_boot portcheck bound 631/tcp
    check status status_shows_cups_held
    check release release_frees_cups
}
status_shows_cups_held() {
    portreserve status | grep -E "^cups +631/tcp +held "
}
release_frees_cups() {
    portrelease cups && portcheck free 631/tcp
}

SCENARIOS=(
    s1_installed_under_usr_local_only
    s2_reserves_reports_and_releases
)
run_scenarios "${SCENARIOS[@]}"
