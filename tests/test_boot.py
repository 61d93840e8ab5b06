"""End to end: portreserve installed by `make install` into a throwaway root and
booted under a real systemd 252 as PID 1 (tests/boot.py).

Three boots, each run by a driver under tests/guest/ (realistic.sh,
bad_config.sh, user_mode.sh) made of scenario_* functions, numbered in the
order they run across the three boots.  Every scenario is one test here,
derived from the driver (tests/scenarios.py): it passes when the scenario ran
to its end and each of its checks recorded "ok".  This file holds what the
guest cannot do itself: the configuration and units staged into each boot, and
the checks of what the host collected (console, /dev/kmsg, files the driver
wrote).
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from boot import BootResult, boot
from scenarios import GUEST, Driver, assert_scenario, guest_tools, rpcbind_rival

pytestmark = pytest.mark.boot

REALISTIC = Driver(GUEST / "realistic.sh")
BAD_CONFIG = Driver(GUEST / "bad_config.sh")
USER_MODE = Driver(GUEST / "user_mode.sh")
BOOTS = (REALISTIC, BAD_CONFIG, USER_MODE)  # in the order pytest runs them

# Every driver under tests/guest/ is made of scenarios and run by lib.sh's
# run_scenarios, but for these, which record no checks: lib.sh (sourced by the
# drivers), demo.sh (`make demo`) and lintian.sh (tests/lintian_guest.py).
NOT_SCENARIO_DRIVERS = {"lib.sh", "demo.sh", "lintian.sh"}
SCENARIO_DRIVERS = tuple(Driver(p) for p in sorted(GUEST.glob("*.sh")) if p.name not in NOT_SCENARIO_DRIVERS)
# Each driver numbers its scenarios from s1, in the order they run, but for
# drivers numbered together (scenarios that run one after another, across the
# boots of one file or in one boot) and the race and adversary boots
# (tests/test_boot_races.py, tests/test_boot_adversary.py), which do not number theirs.
NUMBERED_TOGETHER = {
    "realistic-bad_config-user_mode": BOOTS,
    # the boot of tests/test_boot_package.py where package_realistic.sh runs realistic.sh first
    "realistic-package_realistic": (REALISTIC, Driver(GUEST / "package_realistic.sh")),
}
NOT_NUMBERED = {"races.sh", "adversary.sh"}


def numbered_in_order() -> dict[str, tuple[Driver, ...]]:
    """Each run of scenarios that is numbered from s1: the drivers numbered
    together, and every other numbered driver alone."""
    together = {d.path.name for drivers in NUMBERED_TOGETHER.values() for d in drivers}
    alone = {d.path.name: (d,) for d in SCENARIO_DRIVERS if d.path.name not in together | NOT_NUMBERED}
    return {**NUMBERED_TOGETHER, **alone}


NUMBERED = numbered_in_order()


def unit(text: str) -> str:
    return textwrap.dedent(text).lstrip()


def consumer(description: str, release: str, ports: str, in_unit: str = "", in_service: str = "") -> str:
    """A service that releases its name with ExecStartPre=portrelease (release
    may carry an Exec prefix: "-cups", "+cups") and then binds ports, READY=1
    once bound.  in_unit, in_service: extra lines for either section."""
    prefix, name = (release[0], release[1:]) if release[0] in "-+" else ("", release)
    # After the rivals: what they try must still be reserved when they try it.
    lines = [
        "[Unit]",
        f"Description={description}",
        "After=rpcbind.service rpc-statd.service",
        *in_unit.splitlines(),
        "[Service]",
        "Type=notify",
        "NotifyAccess=all",
        *in_service.splitlines(),
        f"ExecStartPre={prefix}/usr/sbin/portrelease {name}",
        f"ExecStart=/usr/local/bin/portcheck serve {ports}",
    ]
    return "\n".join(lines) + "\n"


# -- boot 1: realistic configuration, rivals, consumers, releases ------------

REALISTIC_FILES: dict[str, str | bytes | tuple[str | bytes, int]] = {
    **guest_tools(),
    # vendor files, one overridden from /etc, one masked
    "/usr/lib/portreserve/cups": "ipp\n",
    "/usr/lib/portreserve/slapd": "ldaps\n",
    "/usr/lib/portreserve/dovecot": "imaps\npop3s\n",
    "/usr/lib/portreserve/legacy": "1111\n",
    "/etc/portreserve/legacy": "# moved\r\n1112\r\n",
    "/usr/lib/portreserve/masked": "1113/tcp\n",
    # admin files: a name tcp-only plus a numeric /udp, a range, an overlap
    "/etc/portreserve/spamd": "spamd\n783/udp\n",
    "/etc/portreserve/nis": "600-603/udp\n",
    "/etc/portreserve/shared1": "700/tcp\n701/tcp\n",
    "/etc/portreserve/shared2": "700/tcp\n702/tcp\n",
    "/etc/portreserve/shared2.dpkg-old": "703/tcp\n",
    # early rivals shaped like Debian's rpcbind.service and rpc-statd.service
    "/etc/systemd/system/rpcbind.service": rpcbind_rival(
        "631/tcp 636/tcp 636/udp 993/tcp 995/tcp 783/tcp 783/udp 1112/tcp 1112/udp "
        "600/udp 601/udp 602/udp 603/udp 700/tcp 701/tcp 702/tcp",
        "/results/rival-rpcbind.txt",
    ),
    "/etc/systemd/system/rpc-statd.service": unit(
        """
        [Unit]
        Description=rival shaped like rpc-statd
        DefaultDependencies=no
        After=rpcbind.service systemd-tmpfiles-setup.service
        [Service]
        Type=oneshot
        RemainAfterExit=yes
        ExecStart=/bin/sh -c '/usr/local/bin/portcheck rival 600/udp 601/udp 783/udp 1112/udp \
            > /results/rival-statd.txt'
        """
    ),
    # consumers: the three ways a unit may ask for its port
    "/etc/systemd/system/cups-test.service": consumer("cups stand-in", "cups", "631/tcp"),
    "/etc/systemd/system/dovecot-test.service": consumer("dovecot stand-in", "-dovecot", "993/tcp 995/tcp"),
    "/etc/systemd/system/slapd-test.service": consumer(
        "slapd stand-in", "slapd", "636/tcp 636/udp", in_unit="Requires=portreserve.service\nAfter=portreserve.service"
    ),
    "/etc/portreserve/webuser": "8443/tcp\n",
    "/etc/systemd/system/webuser-test.service": consumer(
        "a consumer running as another user", "+webuser", "8443/tcp", in_service="User=nobody"
    ),
    "/etc/systemd/system/spamd-test.service": consumer(
        "spamd stand-in, started later",
        "spamd",
        "783/tcp 783/udp",
        in_unit="Wants=portreserve.service\nAfter=portreserve.service",
    ),
}

REALISTIC_LINKS = {
    "/etc/portreserve/masked": "/dev/null",
    "/etc/systemd/system/sysinit.target.wants/rpcbind.service": "/etc/systemd/system/rpcbind.service",
    "/etc/systemd/system/sysinit.target.wants/rpc-statd.service": "/etc/systemd/system/rpc-statd.service",
    "/etc/systemd/system/boot-test.target.wants/cups-test.service": "/etc/systemd/system/cups-test.service",
    "/etc/systemd/system/boot-test.target.wants/dovecot-test.service": "/etc/systemd/system/dovecot-test.service",
    "/etc/systemd/system/boot-test.target.wants/slapd-test.service": "/etc/systemd/system/slapd-test.service",
}


@pytest.fixture(scope="module")
def realistic(destdir: Path, tmp_path_factory: pytest.TempPathFactory) -> BootResult:
    return boot(
        tmp_path_factory.mktemp("realistic"),
        files=REALISTIC_FILES,
        symlinks=REALISTIC_LINKS,
        install=destdir,
        driver=REALISTIC.text,
        timeout=120,
    )


@pytest.mark.parametrize("scenario", REALISTIC.scenarios)
def test_realistic_boot(realistic: BootResult, scenario: str) -> None:
    assert_scenario(realistic, REALISTIC, scenario)


def test_status_json_reports_held_ports(realistic: BootResult) -> None:
    # written by the driver's first scenario, right after boot
    status = json.loads(realistic.read("status.json"))
    assert status["scope"] == "system" and status["mode"] == "systemd"
    states = {(s["port"], s["proto"]): s["state"] for s in status["ports"] if s["name"] == "spamd"}
    assert states == {(783, "tcp"): "held", (783, "udp"): "held"}
    assert not {"masked", "shared2.dpkg-old"} & {s["name"] for s in status["ports"]}


# -- boot 2: bad configuration, a port taken at boot, daemon-reload ----------

BAD_FILES: dict[str, str | bytes | tuple[str | bytes, int]] = {
    **guest_tools(),
    "/etc/portreserve/good": "imaps\n",
    "/etc/portreserve/bad": b"ipp\nnosuchservice\n70000\n\xff\xfe\n1301/udp\n",
    "/etc/portreserve/adir/file": "1302/tcp\n",  # a directory where a file should be
    "/etc/portreserve/my-printer:x y": "1300/tcp\n",  # a name that needs escaping
    "/etc/portreserve/taken": "1200/tcp\n1201/tcp\n",
    # holds 1200/tcp before the reservation's socket unit starts
    "/etc/systemd/system/squatter.service": unit(
        """
        [Unit]
        Description=takes 1200/tcp early
        DefaultDependencies=no
        Before=portreserve-1200-tcp.socket sockets.target
        [Service]
        Type=notify
        NotifyAccess=all
        ExecStart=/usr/local/bin/portcheck serve 1200/tcp
        """
    ),
    "/etc/systemd/system/good-test.service": consumer("consumer of good", "good", "993/tcp"),
}

BAD_LINKS = {
    "/etc/portreserve/unreadable": "/nonexistent/file",
    "/etc/systemd/system/sysinit.target.wants/squatter.service": "/etc/systemd/system/squatter.service",
}


@pytest.fixture(scope="module")
def bad(destdir: Path, tmp_path_factory: pytest.TempPathFactory) -> BootResult:
    return boot(
        tmp_path_factory.mktemp("bad"),
        files=BAD_FILES,
        symlinks=BAD_LINKS,
        install=destdir,
        driver=BAD_CONFIG.text,
        timeout=120,
    )


@pytest.mark.parametrize("scenario", BAD_CONFIG.scenarios)
def test_bad_config_boot(bad: BootResult, scenario: str) -> None:
    assert_scenario(bad, BAD_CONFIG, scenario)


@pytest.mark.parametrize(
    "message",
    [
        "/etc/portreserve/bad:2: unknown service 'nosuchservice'",
        "/etc/portreserve/bad:3: port 70000 out of range",
        "/etc/portreserve/bad:4: not valid UTF-8",
        "/etc/portreserve/adir: is a directory",
        "/etc/portreserve/unreadable: cannot read",
    ],
)
def test_generator_messages_name_file_and_line(bad: BootResult, message: str) -> None:
    # The generator logs to /dev/kmsg; the journal and the console get copies.
    assert message in bad.journal + bad.kmsg + bad.console


def test_a_port_taken_at_boot_is_logged(bad: BootResult) -> None:
    # PID 1 logs the bind failure of portreserve-1200-tcp.socket, to the
    # journal if journald runs by then, else to the console (or /dev/kmsg):
    # the harness collects all three.
    failed = re.compile(r"portreserve-1200-tcp\.socket.*failed to listen|failed to listen.*portreserve-1200-tcp", re.I)
    logs = bad.journal + bad.console + bad.kmsg
    assert failed.search(logs), "no 'failed to listen' line for portreserve-1200-tcp.socket in journal or console"


# -- boot 3: user mode, a user manager (user@UID.service) ---------------------

USER_FILES: dict[str, str | bytes | tuple[str | bytes, int]] = {
    **guest_tools(),
    "/etc/xdg/portreserve/site": "9000/tcp\n",  # a site default
    "/etc/xdg/portreserve/dev": "7000/tcp\n",  # overridden by the user's own file
    "/etc/skel/.config/portreserve/dev": "8080/tcp\n5173\n631/tcp\n",
    "/etc/skel/.config/systemd/user/web.service": consumer(
        "a developer's web server", "dev", "8080/tcp 5173/tcp 5173/udp"
    ),
}


@pytest.fixture(scope="module")
def user_boot(destdir: Path, tmp_path_factory: pytest.TempPathFactory) -> BootResult:
    return boot(tmp_path_factory.mktemp("user"), files=USER_FILES, install=destdir, driver=USER_MODE.text, timeout=120)


@pytest.mark.parametrize("scenario", USER_MODE.scenarios)
def test_user_mode_boot(user_boot: BootResult, scenario: str) -> None:
    assert_scenario(user_boot, USER_MODE, scenario)


# -- the drivers themselves (no boot) -----------------------------------------


@pytest.mark.parametrize("driver", SCENARIO_DRIVERS, ids=lambda d: d.path.name)
def test_driver_runs_exactly_the_scenarios_it_defines_in_their_order(driver: Driver) -> None:
    assert driver.run_list == driver.scenarios
    assert 'run_scenarios "${SCENARIOS[@]}"' in driver.text


@pytest.mark.parametrize("driver", SCENARIO_DRIVERS, ids=lambda d: d.path.name)
def test_every_scenario_records_checks_with_plain_names(driver: Driver) -> None:
    for scenario in driver.scenarios:
        checks = driver.checks(scenario)
        assert checks, f"{scenario} records no check"
        odd = [c for c in checks if not re.fullmatch(r"[a-z0-9_]+", c)]
        assert not odd, f"{scenario}: check names must be plain words (the tests find them in the text): {odd}"
        assert len(set(checks)) == len(checks), f"{scenario} records a check name twice"


def test_a_scenario_fails_on_a_failed_or_missing_check_or_when_cut_short(tmp_path: Path) -> None:
    driver_path = tmp_path / "driver.sh"
    driver_path.write_text("scenario_s1_x() {\n    check a true\n    repeat 3 b false\n}\nSCENARIOS=(\n    s1_x\n)\n")
    driver = Driver(driver_path)
    results = tmp_path / "results"
    (results / "checks").mkdir(parents=True)
    (results / "scenarios").mkdir()
    result = BootResult(results, "", "", "", "", 0, 0.0, 0.0)

    def failure() -> str:
        with pytest.raises(AssertionError) as excinfo:
            assert_scenario(result, driver, "s1_x")
        return str(excinfo.value)

    (results / "checks" / "s1_x.a").write_text("ok\n")
    assert "check b never ran" in failure()
    (results / "checks" / "s1_x.b").write_text("FAIL (exit 1)\n")
    assert "b: FAIL (exit 1)" in failure()
    (results / "checks" / "s1_x.b").write_text("ok\n")
    assert "did not run to its end" in failure()
    (results / "scenarios" / "s1_x").write_text("returned 0\n")
    assert_scenario(result, driver, "s1_x")


@pytest.mark.parametrize("drivers", NUMBERED.values(), ids=NUMBERED.keys())
def test_scenarios_are_numbered_in_the_order_they_run(drivers: tuple[Driver, ...]) -> None:
    numbers = [Driver.number(s) for d in drivers for s in d.run_list]
    assert numbers == list(range(1, len(numbers) + 1))


def test_the_drivers_left_out_are_there() -> None:
    # A name left out that no longer names a driver would leave out nothing.
    names = {p.name for p in GUEST.glob("*.sh")}
    assert NOT_SCENARIO_DRIVERS <= names
    assert NOT_NUMBERED <= {d.path.name for d in SCENARIO_DRIVERS}
