"""Booted under the real systemd 252 (tests/boot.py): the names and sizes of
issue 9 at the limits.

- the longest name that makes a unit name (236 bytes: `portreserve@NAME.target`
  is then 255 characters) with an 800-port range: every socket is active and
  listening, every unit loads, and the holder starts (round 1: the fd names of
  800 sockets with a 200-character name made $LISTEN_FDNAMES exceed 128 KiB and
  the holder failed with 203/EXEC);
- a 255-byte name and a name that is not UTF-8: refused, naming the file, and
  nothing else lost;
- a name with leading and trailing blanks: reserved under exactly that name.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from boot import BootResult, boot
from scenarios import GUEST, Driver, assert_scenario, guest_tools

pytestmark = pytest.mark.boot

LONGEST = "L" * 236  # portreserve@ + 236 + .target = 255 characters
TOO_LONG = "T" * 255  # the longest file name: no unit name can hold it
SPACED = " spaced name "
LOW, HIGH = 20000, 20799  # 800 ports

FILES: dict[str, str | bytes | tuple[str | bytes, int]] = {
    **guest_tools(),
    f"/etc/portreserve/{LONGEST}": f"{LOW}-{HIGH}/tcp\n",
    f"/etc/portreserve/{TOO_LONG}": "21001/tcp\n",
    f"/etc/portreserve/{SPACED}": "21000/udp\n",
    "/etc/portreserve/caf\udce9": "21002/tcp\n",  # the byte 0xe9 alone: not UTF-8
}

INPUTS = Driver(GUEST / "inputs-driver.sh")
# The driver with the names and the range filled in (its @...@ placeholders).
DRIVER = (
    INPUTS.text.replace("@LONGEST@", LONGEST)
    .replace("@LOW@", str(LOW))
    .replace("@HIGH@", str(HIGH))
    .replace("@SPACED@", SPACED)
)


@pytest.fixture(scope="module")
def booted(destdir: Path, tmp_path_factory: pytest.TempPathFactory) -> BootResult:
    return boot(tmp_path_factory.mktemp("inputs"), files=FILES, install=destdir, driver=DRIVER, timeout=300)


@pytest.mark.parametrize("scenario", INPUTS.scenarios)
def test_names_and_sizes_at_the_limits(booted: BootResult, scenario: str) -> None:
    assert_scenario(booted, INPUTS, scenario)


def test_refused_names_are_reported_naming_the_file(booted: BootResult) -> None:
    logs = booted.kmsg + booted.journal
    assert f"/etc/portreserve/{TOO_LONG}: file name too long: its unit name would be 274 characters" in logs
    assert "/etc/portreserve/caf\\xe9: file name is not valid UTF-8, ignoring file" in logs
