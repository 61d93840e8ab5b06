"""The .deb in a booted guest: `dpkg -i`, upgrade, `dpkg --purge`, and the
realistic scenario of test_boot.py on a guest where the package, not
`make install`, put portreserve in place.

Boot 1 installs the .deb with dpkg inside a running guest (the overlay's upper
layer is a tmpfs: the host's dpkg database is never touched), checks what the
maintainer scripts did, saves the installed files and the dpkg database, then
purges.  Boot 2 starts from that saved tree, so portreserve is there from the
first moment of boot exactly as `dpkg -i` left it, and runs the realistic
driver of test_boot.py unchanged.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from boot import BootResult, boot
from scenarios import assert_scenario
from test_boot import DRIVER_PRELUDE, PORTCHECK, REALISTIC, REALISTIC_FILES, REALISTIC_LINKS, assert_check

from portreserve import __version__

pytestmark = pytest.mark.boot

REPO = Path(__file__).resolve().parent.parent
DEB_IN_GUEST = f"/var/tmp/portreserve_{__version__}_all.deb"

INSTALL_DRIVER = (
    DRIVER_PRELUDE
    + r"""
DEB=@DEB@
admin_before=$(sha256sum /etc/portreserve/probe)
check p_not_installed bash -c '! dpkg -s portreserve >/dev/null 2>&1 && [ ! -e /usr/sbin/portreserve ]'
check p_install dpkg -i "$DEB"
check p_installed bash -c 'dpkg -s portreserve | grep -x "Status: install ok installed"'
check p_commands bash -c 'portreserve --version && /lib/systemd/system-generators/portreserve-generator --version'
check p_man bash -c 'for p in portreserve.8 portrelease.8 portreserve-generator.8 portreserve.5; do
    [ -f /usr/share/man/man${p##*.}/$p.gz ] || { echo "no $p"; exit 1; }; done'
# postinst: daemon-reload ran the generator; the units are loaded; nothing enabled
check p_generator_ran bash -c 'grep -x "probe 1234/tcp" /run/systemd/generator/portreserve.map'
check p_units_loaded bash -c 'for u in portreserve.service portreserve.socket portreserve.target \
    portreserve-1234-tcp.socket; do [ "$(systemctl show -P LoadState $u)" = loaded ] || exit 1; done'
check p_nothing_enabled bash -c 'out=$(systemctl list-unit-files --no-legend --plain "portreserve*" | grep -v static);
    echo "$out"; ! grep -q enabled <<<"$out"'
check p_status_says_systemd bash -c 'portreserve status --no-pager; [ $? -ne 2 ] &&
    portreserve status --no-pager | head -1 | grep -x "Scope: system (systemd)"'
check p_admin_file_kept bash -c '[ "$(sha256sum /etc/portreserve/probe)" = "'"$admin_before"'" ]'
check p_no_conffiles bash -c '[ -z "$(dpkg-query -W -f="\${Conffiles}" portreserve)" ]'

# the installed state, for the next boot: the package's files and dpkg's database
dpkg -L portreserve | while read -r f; do [ -e "$f" ] || [ -L "$f" ] && [ ! -d "$f" ] && echo "$f"; done \
    > /results/files.txt
find /usr/lib/python3/dist-packages/portreserve -name '*.pyc' >> /results/files.txt
tar -cf /results/installed.tar --files-from=/results/files.txt /var/lib/dpkg/status \
    /var/lib/dpkg/info/portreserve.* /etc/portreserve /usr/lib/portreserve 2>/results/tar.err

# an upgrade (the same version again): scripts run with $2 set, nothing breaks
check p_reinstall dpkg -i "$DEB"
check p_after_reinstall bash -c 'portreserve --version &&
    [ "$(systemctl show -P LoadState portreserve.service)" = loaded ]'

# purge: every file and unit gone, the admin's file kept
check p_purge dpkg --purge portreserve
check p_files_gone bash -c 'left=$(while read -r f; do [ -e "$f" ] || [ -L "$f" ] && echo "$f"; done \
    < /results/files.txt | grep -v "^/etc/portreserve"); echo "$left"; [ -z "$left" ]'
check p_no_unit_left bash -c 'out=$(systemctl list-units --all --no-legend --plain "portreserve*");
    echo "$out"; [ -z "$out" ] && [ ! -e /run/systemd/generator/portreserve.map ] &&
    [ "$(systemctl show -P LoadState portreserve.service)" = not-found ]'
check p_admin_file_survives_purge bash -c '[ "$(sha256sum /etc/portreserve/probe)" = "'"$admin_before"'" ]'
check p_dpkg_clean bash -c '! dpkg -s portreserve >/dev/null 2>&1'
""".replace("@DEB@", DEB_IN_GUEST)
)


def check_names(driver: str) -> list[str]:
    """The checks a driver records, in order (`check NAME ...` lines)."""
    return re.findall(r"^check (\w+)", driver, re.M)


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(["make", "-s", "-C", str(REPO), "deb", f"DIST={dist}"], check=True, capture_output=True)
    return dist / f"portreserve_{__version__}_all.deb"


@pytest.fixture(scope="module")
def installed(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> BootResult:
    return boot(
        tmp_path_factory.mktemp("deb-install"),
        files={DEB_IN_GUEST: deb.read_bytes(), "/etc/portreserve/probe": "1234/tcp\n"},
        driver=INSTALL_DRIVER,
        timeout=120,
    )


@pytest.mark.parametrize("check", check_names(INSTALL_DRIVER))
def test_deb_install_upgrade_purge(installed: BootResult, check: str) -> None:
    assert_check(installed, check)


@pytest.fixture(scope="module")
def package_tree(installed: BootResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `dpkg -i` left in boot 1, as a tree to lay over the next guest's root."""
    tree = tmp_path_factory.mktemp("deb-tree")
    archive = installed.results_dir / "installed.tar"
    assert archive.exists(), installed.read("tar.err") if (installed.results_dir / "tar.err").exists() else ""
    # tar as root keeps owners and modes (this Python's tarfile has no extraction filters).
    subprocess.run(["tar", "-C", str(tree), "-xpf", str(archive)], check=True)
    assert (tree / "usr/sbin/portreserve").exists() and (tree / "var/lib/dpkg/info/portreserve.list").exists()
    # Boot 2 brings its own configuration (the realistic one).
    (tree / "etc/portreserve/probe").unlink()
    return tree


PACKAGED_DRIVER = (
    REALISTIC.text
    + r"""
check pk_installed_by_dpkg bash -c 'dpkg -s portreserve | grep -x "Status: install ok installed" &&
    dpkg -S /usr/sbin/portrelease /lib/systemd/system-generators/portreserve-generator &&
    [ ! -e /usr/local/sbin/portreserve ]'
"""
)


@pytest.fixture(scope="module")
def packaged(package_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> BootResult:
    return boot(
        tmp_path_factory.mktemp("deb-realistic"),
        files={**REALISTIC_FILES, "/usr/local/bin/portcheck": (PORTCHECK, 0o755)},
        symlinks=REALISTIC_LINKS,
        install=package_tree,
        driver=PACKAGED_DRIVER,
        timeout=120,
    )


@pytest.mark.parametrize("scenario", REALISTIC.scenarios)
def test_realistic_scenario_with_the_deb_installed(packaged: BootResult, scenario: str) -> None:
    assert_scenario(packaged, REALISTIC, scenario)


def test_installed_by_dpkg_not_make(packaged: BootResult) -> None:
    assert_check(packaged, "pk_installed_by_dpkg")


def test_check_names_are_found() -> None:
    # The parametrizations above must not pass by finding nothing.
    assert len(REALISTIC.scenarios) >= 9
    assert {"p_install", "p_purge", "p_no_unit_left"} <= set(check_names(INSTALL_DRIVER))


# -- `make install` with its defaults (/usr/local) ---------------------------------

LOCAL_DRIVER = (
    DRIVER_PRELUDE
    + r"""
export PATH=/usr/local/sbin:$PATH  # root's PATH on Debian has it; the harness's does not
check l_units_from_usr_local bash -c '[ "$(systemctl show -P FragmentPath portreserve.service)" = \
    /usr/local/lib/systemd/system/portreserve.service ] && systemctl show -P ExecStart portreserve.service |
    grep -F "/usr/local/sbin/portreserve"'
check l_generator_ran bash -c 'grep -x "cups 631/tcp" /run/systemd/generator/portreserve.map'
check l_held_at_boot portcheck bound 631/tcp
check l_status bash -c 'portreserve status | grep -E "^cups +631/tcp +held "'
check l_release bash -c 'portrelease cups && portcheck free 631/tcp'
check l_not_in_usr bash -c '[ ! -e /usr/sbin/portreserve ] && [ ! -e /usr/lib/python3/dist-packages/portreserve ]'
"""
)


@pytest.fixture(scope="module")
def local_install(tmp_path_factory: pytest.TempPathFactory) -> BootResult:
    dest = tmp_path_factory.mktemp("local-destdir")
    subprocess.run(["make", "-s", "-C", str(REPO), "install", f"DESTDIR={dest}"], check=True, capture_output=True)
    assert (dest / "usr/local/sbin/portreserve").exists()
    return boot(
        tmp_path_factory.mktemp("local"),
        files={"/usr/local/bin/portcheck": (PORTCHECK, 0o755), "/etc/portreserve/cups": "631/tcp\n"},
        install=dest,
        driver=LOCAL_DRIVER,
        timeout=120,
    )


@pytest.mark.parametrize("check", check_names(LOCAL_DRIVER))
def test_default_make_install_works_under_usr_local(local_install: BootResult, check: str) -> None:
    assert_check(local_install, check)
