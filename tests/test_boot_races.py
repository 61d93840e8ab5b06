"""Races between a release and everything else that moves: the holder starting,
emptying, exiting or stopped; PID 1 reloading; the same name released twice;
reservations started while others are released (issue 8).

One boot runs tests/guest/races.sh, made of scenario_* functions; every
scenario is one test here, derived from the driver (tests/scenarios.py): it
passes when the scenario ran to its end and each of its checks recorded "ok".
Each race is repeated inside the guest (the count is in the driver) often
enough that the round-1 holder failed it reliably.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from boot import BootResult, boot
from scenarios import GUEST, Driver, assert_scenario, guest_tools

pytestmark = pytest.mark.boot

RACES = Driver(GUEST / "races.sh")


def config() -> dict[str, str | bytes | tuple[str | bytes, int]]:
    files: dict[str, str | bytes | tuple[str | bytes, int]] = {
        **guest_tools(),
        # Binds 21040/tcp before the reservation can (a rival at boot).
        "/etc/systemd/system/taken-early.service": (
            "[Unit]\nDescription=takes 21040/tcp before portreserve\nDefaultDependencies=no\n"
            "Before=portreserve-21040-tcp.socket sysinit.target\n"
            "[Service]\nType=notify\nNotifyAccess=all\nExecStart=/usr/local/bin/portcheck serve 21040/tcp\n"
        ),
    }
    for i in range(1, 41):
        protos = ["tcp", "udp"] if i <= 10 or i == 40 else ["tcp"]
        files[f"/etc/portreserve/n{i:02d}"] = "".join(f"{21000 + i}/{p}\n" for p in protos)
    return files


@pytest.fixture(scope="module")
def races(destdir: Path, tmp_path_factory: pytest.TempPathFactory) -> BootResult:
    return boot(
        tmp_path_factory.mktemp("races"),
        files=config(),
        symlinks={
            "/etc/systemd/system/sysinit.target.wants/taken-early.service": "/etc/systemd/system/taken-early.service"
        },
        install=destdir,
        driver=RACES.text,
        timeout=600,
    )


@pytest.mark.parametrize("scenario", RACES.scenarios)
def test_race(races: BootResult, scenario: str) -> None:
    assert_scenario(races, RACES, scenario)
