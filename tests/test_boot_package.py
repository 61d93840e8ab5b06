"""The .deb in a booted guest: `dpkg -i`, upgrade, `dpkg --purge`, and the
realistic scenario of test_boot.py on a guest where the package, not
`make install`, put portreserve in place.

Boot 1 installs the .deb with dpkg inside a running guest (the overlay's upper
layer is a tmpfs: the host's dpkg database is never touched), checks what the
maintainer scripts did, saves the installed files and the dpkg database, then
purges.  Boot 2 starts from that saved tree, so portreserve is there from the
first moment of boot exactly as `dpkg -i` left it, and runs the realistic
driver of test_boot.py unchanged, then checks that dpkg put it there.  A third
boot runs `make install` with its defaults (/usr/local).

Each boot runs a driver under tests/guest/ (package_install.sh,
package_realistic.sh, package_local.sh) made of scenario_* functions; every
scenario is one test here, derived from the driver (tests/scenarios.py).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from boot import BootResult, boot
from scenarios import GUEST, LIB_IN_GUEST, Driver, assert_scenario, guest_tools
from test_boot import REALISTIC, REALISTIC_FILES, REALISTIC_LINKS

from portreserve import __version__

pytestmark = pytest.mark.boot

REPO = Path(__file__).resolve().parent.parent
DEB_IN_GUEST = f"/var/tmp/portreserve_{__version__}_all.deb"

INSTALL = Driver(GUEST / "package_install.sh")
PACKAGED = Driver(GUEST / "package_realistic.sh")  # sources realistic.sh, in the guest next to lib.sh
REALISTIC_IN_GUEST = str(Path(LIB_IN_GUEST).with_name(REALISTIC.path.name))
LOCAL = Driver(GUEST / "package_local.sh")


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(["make", "-s", "-C", str(REPO), "deb", f"DIST={dist}"], check=True, capture_output=True)
    return dist / f"portreserve_{__version__}_all.deb"


@pytest.fixture(scope="module")
def installed(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> BootResult:
    return boot(
        tmp_path_factory.mktemp("deb-install"),
        files={**guest_tools(), DEB_IN_GUEST: deb.read_bytes(), "/etc/portreserve/probe": "1234/tcp\n"},
        driver=INSTALL.text.replace("@DEB@", DEB_IN_GUEST),
        timeout=120,
    )


@pytest.mark.parametrize("scenario", INSTALL.scenarios)
def test_deb_install_upgrade_purge(installed: BootResult, scenario: str) -> None:
    assert_scenario(installed, INSTALL, scenario)


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


@pytest.fixture(scope="module")
def packaged(package_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> BootResult:
    return boot(
        tmp_path_factory.mktemp("deb-realistic"),
        files={**REALISTIC_FILES, REALISTIC_IN_GUEST: REALISTIC.text},
        symlinks=REALISTIC_LINKS,
        install=package_tree,
        driver=PACKAGED.text,
        timeout=120,
    )


@pytest.mark.parametrize("scenario", REALISTIC.scenarios)
def test_realistic_scenario_with_the_deb_installed(packaged: BootResult, scenario: str) -> None:
    assert_scenario(packaged, REALISTIC, scenario)


@pytest.mark.parametrize("scenario", PACKAGED.scenarios)
def test_installed_by_dpkg_not_make(packaged: BootResult, scenario: str) -> None:
    assert_scenario(packaged, PACKAGED, scenario)


def test_the_packaged_driver_sources_realistic_sh_where_it_is_staged() -> None:
    assert f"\nsource {REALISTIC_IN_GUEST}\n" in PACKAGED.text


# -- `make install` with its defaults (/usr/local) ---------------------------------


@pytest.fixture(scope="module")
def local_install(tmp_path_factory: pytest.TempPathFactory) -> BootResult:
    dest = tmp_path_factory.mktemp("local-destdir")
    subprocess.run(["make", "-s", "-C", str(REPO), "install", f"DESTDIR={dest}"], check=True, capture_output=True)
    assert (dest / "usr/local/sbin/portreserve").exists()
    return boot(
        tmp_path_factory.mktemp("local"),
        files={**guest_tools(), "/etc/portreserve/cups": "631/tcp\n"},
        install=dest,
        driver=LOCAL.text,
        timeout=120,
    )


@pytest.mark.parametrize("scenario", LOCAL.scenarios)
def test_default_make_install_works_under_usr_local(local_install: BootResult, scenario: str) -> None:
    assert_scenario(local_install, LOCAL, scenario)
