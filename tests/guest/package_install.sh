#!/bin/bash
# Boot driver (tests/test_boot_package.py, boot 1): the .deb installed with
# dpkg in a running guest, what its maintainer scripts did, an upgrade, and a
# purge.  Each scenario_* function is one behaviour; its checks are recorded
# as SCENARIO.CHECK and tests/test_boot_package.py has one test per scenario.
# The package's installed files and dpkg's database are saved to
# /results/installed.tar before the upgrade: the next boot starts from them.
#
# tests/test_boot_package.py substitutes @DEB@ (where it staged the .deb) and
# stages the admin's /etc/portreserve/probe (1234/tcp) before boot.
# shellcheck source=tests/guest/lib.sh
source /usr/local/lib/boot-tests/lib.sh
set -u

DEB=@DEB@
ADMIN_BEFORE=$(sha256sum /etc/portreserve/probe)

# dpkg -i installs it: the commands and the manual pages are in place.
scenario_s1_dpkg_installs_the_package() {
    check not_installed not_installed
    check install dpkg -i "$DEB"
    check installed dpkg_says_installed
    check commands commands_run
    check man man_pages_installed
}
not_installed() {
    ! dpkg -s portreserve >/dev/null 2>&1 && [ ! -e /usr/sbin/portreserve ]
}
dpkg_says_installed() {
    dpkg -s portreserve | grep -x "Status: install ok installed"
}
commands_run() {
    portreserve --version && /lib/systemd/system-generators/portreserve-generator --version
}
man_pages_installed() {
    local p
    for p in portreserve.8 portrelease.8 portreserve-generator.8 portreserve.5; do
        [ -f "/usr/share/man/man${p##*.}/$p.gz" ] || { echo "no $p"; return 1; }
    done
}

# postinst: daemon-reload ran the generator and the units are loaded, but
# nothing is enabled; the admin's file is as it was (no conffiles).
scenario_s2_postinst_loads_the_units_and_enables_nothing() {
    check generator_ran grep -x "probe 1234/tcp" /run/systemd/generator/portreserve.map
    check units_loaded units_loaded portreserve.service portreserve.socket portreserve.target \
        portreserve-1234-tcp.socket
    check nothing_enabled nothing_enabled
    check status_says_systemd status_says_systemd
    check admin_file_kept admin_file_unchanged
    check no_conffiles no_conffiles
}
units_loaded() {
    local u
    for u in "$@"; do
        [ "$(systemctl show -P LoadState "$u")" = loaded ] || { echo "$u not loaded"; return 1; }
    done
}
nothing_enabled() {
    local out
    out=$(systemctl list-unit-files --no-legend --plain "portreserve*" | grep -v static)
    echo "$out"
    ! grep -q enabled <<<"$out"
}
status_says_systemd() {
    local rc=0
    portreserve status --no-pager || rc=$?
    [ "$rc" != 2 ] && portreserve status --no-pager | head -1 | grep -x "Scope: system (systemd)"
}
admin_file_unchanged() {
    [ "$(sha256sum /etc/portreserve/probe)" = "$ADMIN_BEFORE" ]
}
no_conffiles() {
    [ -z "$(dpkg-query -W -f="\${Conffiles}" portreserve)" ]
}

# The installed state, for the next boot: the package's files (and the
# bytecode its postinst compiled) and dpkg's database, in /results/installed.tar
# (tar's messages in /results/tar.err).  The list of files is kept for s5.
scenario_s3_the_installed_tree_is_saved_for_the_next_boot() {
    check tree_saved save_installed_tree
}
save_installed_tree() {
    dpkg -L portreserve | while read -r f; do [ -e "$f" ] || [ -L "$f" ] && [ ! -d "$f" ] && echo "$f"; done \
        > /results/files.txt
    find /usr/lib/python3/dist-packages/portreserve -name '*.pyc' >> /results/files.txt
    tar -cf /results/installed.tar --files-from=/results/files.txt /var/lib/dpkg/status \
        /var/lib/dpkg/info/portreserve.* /etc/portreserve /usr/lib/portreserve 2>/results/tar.err
}

# An upgrade (the same version again): the scripts run with $2 set, nothing breaks.
scenario_s4_an_upgrade_keeps_it_working() {
    check reinstall dpkg -i "$DEB"
    check after_reinstall still_works
}
still_works() {
    portreserve --version && [ "$(systemctl show -P LoadState portreserve.service)" = loaded ]
}

# dpkg --purge: every file and unit gone, the admin's file kept.
scenario_s5_purge_removes_everything_but_the_admins_file() {
    check purge dpkg --purge portreserve
    check files_gone files_gone
    check no_unit_left no_unit_left
    check admin_file_survives_purge admin_file_unchanged
    check dpkg_clean not_known_to_dpkg
}
files_gone() {
    local left
    left=$(while read -r f; do [ -e "$f" ] || [ -L "$f" ] && echo "$f"; done < /results/files.txt |
        grep -v "^/etc/portreserve")
    echo "$left"
    [ -z "$left" ]
}
no_unit_left() {
    local out
    out=$(systemctl list-units --all --no-legend --plain "portreserve*")
    echo "$out"
    [ -z "$out" ] && [ ! -e /run/systemd/generator/portreserve.map ] &&
        [ "$(systemctl show -P LoadState portreserve.service)" = not-found ]
}
not_known_to_dpkg() {
    ! dpkg -s portreserve >/dev/null 2>&1
}

SCENARIOS=(
    s1_dpkg_installs_the_package
    s2_postinst_loads_the_units_and_enables_nothing
    s3_the_installed_tree_is_saved_for_the_next_boot
    s4_an_upgrade_keeps_it_working
    s5_purge_removes_everything_but_the_admins_file
)
run_scenarios "${SCENARIOS[@]}"
