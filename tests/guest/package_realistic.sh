#!/bin/bash
# Boot driver (tests/test_boot_package.py, boot 2): the realistic boot of
# tests/test_boot.py on a guest where dpkg, not `make install`, put portreserve
# in place.  It runs realistic.sh unchanged (its scenarios s1-s9, which
# tests/test_boot_package.py asserts as tests/test_boot.py does), then its own
# scenario, numbered after them.  Each scenario_* function is one behaviour;
# its checks are recorded as SCENARIO.CHECK.
# shellcheck source=tests/guest/realistic.sh
source /usr/local/lib/boot-tests/realistic.sh

# What ran above was the package's portreserve: dpkg installed it, nothing is
# under /usr/local.
scenario_s10_installed_by_dpkg_not_by_make_install() {
    check installed_by_dpkg installed_by_dpkg
}
installed_by_dpkg() {
    dpkg -s portreserve | grep -x "Status: install ok installed" &&
        dpkg -S /usr/sbin/portrelease /lib/systemd/system-generators/portreserve-generator &&
        [ ! -e /usr/local/sbin/portreserve ]
}

SCENARIOS=(
    s10_installed_by_dpkg_not_by_make_install
)
run_scenarios "${SCENARIOS[@]}"
