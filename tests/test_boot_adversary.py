"""An adversary's boot: a hostile but ordinary admin against the holder,
portrelease and step-aside (the review of issue 8).

One boot runs tests/guest/adversary.sh, made of scenario_* functions; every
scenario is one test here, derived from the driver (tests/scenarios.py): it
passes when the scenario ran to its end and each of its checks recorded "ok".
The boot has 200 consumers that each run portrelease at boot; 1000 more
reservations come with a `portreserve reload` late in the run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from boot import BootResult, boot
from scenarios import GUEST, Driver, assert_scenario, guest_tools

pytestmark = pytest.mark.boot

ADVERSARY = Driver(GUEST / "adversary.sh")
# (a tab or any control character is refused by the generator: tests/test_hostile_inputs.py)
HOSTILE_NAMES = [" lead", "sp ace", "trail ", "café", "日本語", '50% "q" $x', "back\\slash"]
BURST = 200


def config() -> tuple[dict[str, str | bytes | tuple[str | bytes, int]], dict[str, str]]:
    files: dict[str, str | bytes | tuple[str | bytes, int]] = {
        **guest_tools(),
        "/usr/local/bin/adv-flood": ((GUEST / "adv-flood").read_text(), 0o755),
        # Consumers started at boot: portrelease in ExecStartPre= (a failure
        # fails the unit), then a check that the port can be bound.
        "/etc/systemd/system/adv-burst@.service": (
            "[Unit]\nDescription=burst consumer %i\n"
            "[Service]\nType=oneshot\nRemainAfterExit=yes\n"
            "ExecStartPre=/usr/sbin/portrelease b%i\nExecStart=/usr/local/bin/portcheck free 25%i/tcp\n"
        ),
        "/etc/systemd/system/adv-burst.target": "[Unit]\nDescription=burst of consumers\n",
        # A consumer that Requires= the holder (the original's units did).
        "/etc/systemd/system/adv-requires.service": (
            "[Unit]\nRequires=portreserve.service\nAfter=portreserve.service\n"
            "[Service]\nExecStart=/bin/sleep infinity\n"
        ),
        # Keeps a40's reservation, leaves every other reservation out.  The
        # driver is in it (isolate cancels every job outside the transaction,
        # the driver's running start job included), with what it needs.
        "/etc/systemd/system/adv-isolate.target": (
            # DefaultDependencies=no: a target is ordered after what it wants,
            # and the driver's start job ends only with the driver.
            "[Unit]\nDescription=isolate without most reservations\nAllowIsolate=yes\nDefaultDependencies=no\n"
            "Wants=portreserve@a40.target boot-driver.service adv-burst.target systemd-journald.service "
            "systemd-journald.socket systemd-journald-dev-log.socket\n"
        ),
    }
    symlinks: dict[str, str] = {}
    for i in range(1, BURST + 1):
        symlinks[f"/etc/systemd/system/adv-burst.target.wants/adv-burst@{i:03d}.service"] = (
            "/etc/systemd/system/adv-burst@.service"
        )
        files[f"/etc/portreserve/b{i:03d}"] = f"{25000 + i}/tcp\n"
    for i in range(1, 41):
        files[f"/etc/portreserve/a{i:02d}"] = f"{24000 + i}/tcp\n{24000 + i}/udp\n"
    for i, name in enumerate(HOSTILE_NAMES, start=1):
        files[f"/etc/portreserve/{name}"] = f"{26000 + i}/tcp\n"
    return files, symlinks


@pytest.fixture(scope="module")
def adversary(destdir: Path, tmp_path_factory: pytest.TempPathFactory) -> BootResult:
    files, symlinks = config()
    return boot(
        tmp_path_factory.mktemp("adversary"),
        files=files,
        symlinks=symlinks,
        install=destdir,
        driver=ADVERSARY.text,
        driver_after=["adv-burst.target"],
        timeout=600,
    )


@pytest.mark.parametrize("scenario", ADVERSARY.scenarios)
def test_adversary(adversary: BootResult, scenario: str) -> None:
    assert_scenario(adversary, ADVERSARY, scenario)
