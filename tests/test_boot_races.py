"""Races between a release and everything else that moves: the holder starting,
emptying, exiting or stopped; PID 1 reloading; the same name released twice;
reservations started while others are released (issue 8).

One boot runs tests/guest/races.sh, whose scenario_* functions each record
their checks under their own name; every check of a scenario must be "ok".
Each race is repeated inside the guest (the count is in the driver) often
enough that the round-1 holder failed it reliably.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from boot import BootResult, boot

pytestmark = pytest.mark.boot

REPO = Path(__file__).resolve().parent.parent
GUEST = REPO / "tests" / "guest"
DRIVER = (GUEST / "races.sh").read_text()
SCENARIOS = re.findall(r"^scenario_(\w+)\(\)", DRIVER, re.MULTILINE)


def config() -> dict[str, str | bytes | tuple[str | bytes, int]]:
    files: dict[str, str | bytes | tuple[str | bytes, int]] = {
        "/usr/local/bin/portcheck": ((GUEST / "portcheck").read_text(), 0o755),
        "/usr/local/lib/boot-tests/lib.sh": (GUEST / "lib.sh").read_text(),
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
def destdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("destdir")
    subprocess.run(["make", "-s", "install", f"DESTDIR={dest}", "PREFIX=/usr"], cwd=REPO, check=True)
    return dest


@pytest.fixture(scope="module")
def races(destdir: Path, tmp_path_factory: pytest.TempPathFactory) -> BootResult:
    return boot(
        tmp_path_factory.mktemp("races"),
        files=config(),
        symlinks={
            "/etc/systemd/system/sysinit.target.wants/taken-early.service": "/etc/systemd/system/taken-early.service"
        },
        install=destdir,
        driver=DRIVER,
        timeout=600,
    )


def test_driver_defines_the_scenarios_it_runs() -> None:
    listed = re.search(r"^SCENARIOS=\(\n(.*?)\n\)", DRIVER, re.MULTILINE | re.DOTALL)
    assert listed is not None
    assert sorted(listed.group(1).split()) == sorted(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_race(races: BootResult, scenario: str) -> None:
    checks = sorted((races.results_dir / "checks").glob(f"{scenario}.*"))
    assert checks, f"scenario {scenario} recorded no check; driver log:\n{races.read('driver.log')[-3000:]}"
    failed = {c.name: c.read_text() for c in checks if not c.read_text().startswith("ok")}
    assert not failed, (
        "\n".join(f"{k}:\n{v}" for k, v in failed.items()) + "\n--- journal ---\n" + races.journal[-8000:]
    )
