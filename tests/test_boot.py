"""End to end: portreserve installed by `make install` into a throwaway root and
booted under a real systemd 252 as PID 1 (tests/boot.py).

Each boot runs a driver script that performs the scenario steps in order and
records every check in /results/checks/NAME ("ok", or "FAIL" and the output);
the tests below each assert one of them, so a failure names the behaviour.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from boot import BootResult, boot

pytestmark = pytest.mark.boot

REPO = Path(__file__).resolve().parent.parent
PORTCHECK = (REPO / "tests" / "guest" / "portcheck").read_text()

# Shared by every driver: check NAME CMD... runs CMD and records the outcome.
DRIVER_PRELUDE = r"""#!/bin/bash
set -u
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /results/checks
check() {
    local name=$1; shift
    local out
    if out=$("$@" 2>&1); then
        printf 'ok\n%s\n' "$out" > "/results/checks/$name"
    else
        printf 'FAIL (exit %s)\n%s\n' "$?" "$out" > "/results/checks/$name"
    fi
}
# The condition holds within a few seconds (for states systemd settles async).
eventually() {
    for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
    "$@"
}
no_failed_units() {
    local failed
    failed=$(systemctl --failed --no-legend --plain)
    [ -z "$failed" ] || { echo "failed units: $failed"; return 1; }
}
unit_state() {  # unit -> ActiveState/Result
    systemctl show -P ActiveState "$1"; systemctl show -P Result "$1"
}
export -f eventually no_failed_units unit_state
"""


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


@pytest.fixture(scope="session")
def destdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("destdir")
    subprocess.run(["make", "-s", "install", f"DESTDIR={dest}", "PREFIX=/usr"], cwd=REPO, check=True)
    return dest


def record(result: BootResult, name: str) -> str:
    path = result.results_dir / "checks" / name
    assert path.exists(), f"check {name} never ran; driver log:\n{result.read('driver.log')}"
    return path.read_text()


def assert_check(result: BootResult, name: str) -> None:
    text = record(result, name)
    assert text.startswith("ok"), f"{name}:\n{text}\n--- journal tail ---\n{result.journal[-6000:]}"


# -- boot 1: realistic configuration, rivals, consumers, releases ------------

REALISTIC_FILES: dict[str, str | bytes | tuple[str | bytes, int]] = {
    "/usr/local/bin/portcheck": (PORTCHECK, 0o755),
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
    "/etc/systemd/system/rpcbind.service": unit(
        """
        [Unit]
        Description=rival shaped like rpcbind
        DefaultDependencies=no
        After=systemd-tmpfiles-setup.service
        [Service]
        Type=oneshot
        RemainAfterExit=yes
        ExecStart=/bin/sh -c '/usr/local/bin/portcheck rival 631/tcp 636/tcp 636/udp 993/tcp 995/tcp \
            783/tcp 783/udp 1112/tcp 1112/udp 600/udp 601/udp 602/udp 603/udp 700/tcp 701/tcp 702/tcp \
            > /results/rival-rpcbind.txt'
        """
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

HELD_AT_BOOT = "783/tcp 783/udp 1112/tcp 1112/udp 600/udp 601/udp 602/udp 603/udp 700/tcp 701/tcp 702/tcp"

REALISTIC_DRIVER = (
    DRIVER_PRELUDE
    + r"""
# 1. right after boot every listed port is held, IPv4 and IPv6; overridden,
#    masked and ignored entries are not.
check s1_held portcheck bound $HELD_AT_BOOT
check s1_not_reserved portcheck free 1111/tcp 1111/udp 1113/tcp 703/tcp
check s1_list_sockets bash -c 'out=$(systemctl list-sockets --all --no-legend --plain); echo "$out";
    for p in 783 1112 600 603 700 702; do grep -q "\[::\]:$p " <<<"$out" || exit 1; done;
    ! grep -q ":1111 \|:1113 \|:703 " <<<"$out"'
check s1_holder_active eventually bash -c '[ "$(systemctl show -P ActiveState portreserve.service)" = active ]'
check s1_holder_status bash -c 'systemctl show -P StatusText portreserve.service | grep "Holding"'
check s1_status_json bash -c 'portreserve status --json > /results/status.json'

# 2. the early rivals never got a reserved port
check s2_rivals bash -c 'cat /results/rival-rpcbind.txt /results/rival-statd.txt;
    [ ! -s /results/rival-rpcbind.txt ] && [ ! -s /results/rival-statd.txt ] &&
    [ "$(systemctl show -P ActiveState rpcbind.service)" = active ]'

# 3. consumers released their names at boot and bound on the first try
check s3_consumers bash -c 'for u in cups-test dovecot-test slapd-test; do
    systemctl is-active $u || exit 1;
    [ "$(systemctl show -P NRestarts $u)" = 0 ] || exit 1; done'
check s3_consumer_ports portcheck bound 631/tcp 993/tcp 995/tcp 636/tcp 636/udp
check s3_others_still_held portcheck bound $HELD_AT_BOOT
check s3_user_consumer bash -c 'systemctl start webuser-test && systemctl is-active webuser-test'
check s3_non_root_told_why bash -c 'out=$(setpriv --reuid=nobody --regid=nogroup --clear-groups \
    env -u XDG_RUNTIME_DIR portrelease legacy 2>&1); echo "$out"; grep -q "only root may release" <<<"$out"'
check s3_later_consumer bash -c 'systemctl start spamd-test && systemctl is-active spamd-test'
check s3_spamd_unit_gone eventually bash -c \
    '[ "$(systemctl show -P ActiveState portreserve@spamd.target)" = inactive ]'

# 7. a connection to a reserved TCP port fails at once; the units stay active
check s7_refused portcheck refused 700/tcp 1112/tcp
check s7_units_active systemctl is-active portreserve-700-tcp.socket portreserve-1112-tcp.socket portreserve.service

# 4. systemctl stop of the grouping unit frees exactly that name's ports
check s4_stop_group systemctl stop portreserve@nis.target
check s4_freed portcheck free 600/udp 601/udp 602/udp 603/udp
check s4_others_held portcheck bound 1112/tcp 1112/udp 700/tcp 701/tcp 702/tcp
# the grouping unit starts before its sockets (so that its stop waits for
# theirs): right after `systemctl start` returns they may still be starting
check s4_start_again bash -c 'systemctl start portreserve@nis.target && eventually portcheck bound 600/udp 603/udp'
# released and reserved again, six times within seconds: no start limit fails it
check s4_repeat bash -c 'for i in 1 2 3 4 5 6; do portrelease nis && systemctl start portreserve@nis.target || exit 1
    done; eventually portcheck bound 600/udp 603/udp && no_failed_units'

# 5. a port in two files: releasing either frees it; the other's other ports stay
check s5_release_shared1 portrelease shared1
check s5_freed portcheck free 700/tcp 701/tcp
check s5_other_kept portcheck bound 702/tcp
check s5_release_shared2 portrelease -v shared2
check s5_freed2 portcheck free 702/tcp

# 8. the holder killed: ports stay reserved, a later portrelease works
check s8_kill systemctl kill --signal=SIGKILL portreserve.service
check s8_dead eventually bash -c '[ "$(systemctl show -P ActiveState portreserve.service)" != active ]'
check s8_still_held portcheck bound 1112/tcp 1112/udp 600/udp
check s8_release portrelease legacy
check s8_freed portcheck free 1112/tcp 1112/udp
check s8_nis_still_held portcheck bound 600/udp 601/udp 602/udp 603/udp
check s8_holder_back systemctl is-active portreserve.service

# 6. release everything: the holder exits 0, nothing failed, nothing restarts
check s6_release_all portrelease '*'
check s6_all_free portcheck free 600/udp 601/udp 602/udp 603/udp 700/tcp 1112/tcp
check s6_groups_stopped eventually bash -c '[ -z "$(systemctl list-units --no-legend --plain --state=active \
    "portreserve@*" "portreserve-*.socket")" ]'
check s6_holder_gone eventually bash -c 'unit_state portreserve.service | tr "\n" " " | grep -x "inactive success "'
check s6_no_failed no_failed_units
invocation=$(systemctl show -P InvocationID portreserve.service)
sleep 3
check s6_still_no_failed no_failed_units
check s6_not_restarted bash -c '[ "$(systemctl show -P InvocationID portreserve.service)" = "'"$invocation"'" ] &&
    [ "$(systemctl show -P ActiveState portreserve.service)" = inactive ] &&
    [ "$(systemctl show -P ActiveState portreserve.socket)" = active ]'
check s6_quiet_when_nothing bash -c 'out=$(portrelease cups nosuchname 2>&1) && [ -z "$out" ]'

# 12. consumers that Require=/Want= the holder restart normally afterwards
check s12_restart_requires bash -c 'systemctl restart slapd-test && systemctl is-active slapd-test'
check s12_restart_wants bash -c 'systemctl restart spamd-test cups-test && systemctl is-active spamd-test cups-test'
check s12_holder_clean eventually bash -c 'unit_state portreserve.service | tr "\n" " " | grep -x "inactive success "'
check s12_no_failed no_failed_units
systemctl list-units --all --no-pager 'portreserve*' > /results/units.txt 2>&1
""".replace("$HELD_AT_BOOT", HELD_AT_BOOT)
)


@pytest.fixture(scope="module")
def realistic(destdir: Path, tmp_path_factory: pytest.TempPathFactory) -> BootResult:
    return boot(
        tmp_path_factory.mktemp("realistic"),
        files=REALISTIC_FILES,
        symlinks=REALISTIC_LINKS,
        install=destdir,
        driver=REALISTIC_DRIVER,
        timeout=120,
    )


@pytest.mark.parametrize(
    "check", ["s1_held", "s1_not_reserved", "s1_list_sockets", "s1_holder_active", "s1_holder_status", "s1_status_json"]
)
def test_s1_every_listed_port_is_held_right_after_boot(realistic: BootResult, check: str) -> None:
    assert_check(realistic, check)


def test_s1_status_reports_held_ports(realistic: BootResult) -> None:
    import json

    status = json.loads(realistic.read("status.json"))
    assert status["scope"] == "system" and status["mode"] == "systemd"
    states = {(s["port"], s["proto"]): s["state"] for s in status["ports"] if s["name"] == "spamd"}
    assert states == {(783, "tcp"): "held", (783, "udp"): "held"}
    assert not {"masked", "shared2.dpkg-old"} & {s["name"] for s in status["ports"]}


def test_s2_early_rivals_never_get_a_reserved_port(realistic: BootResult) -> None:
    assert_check(realistic, "s2_rivals")


@pytest.mark.parametrize(
    "check",
    [
        "s3_consumers",
        "s3_consumer_ports",
        "s3_others_still_held",
        "s3_user_consumer",
        "s3_non_root_told_why",
        "s3_later_consumer",
        "s3_spamd_unit_gone",
    ],
)
def test_s3_consumers_release_and_bind_on_first_try(realistic: BootResult, check: str) -> None:
    assert_check(realistic, check)


@pytest.mark.parametrize("check", ["s4_stop_group", "s4_freed", "s4_others_held", "s4_start_again", "s4_repeat"])
def test_s4_stopping_the_grouping_unit_frees_exactly_that_name(realistic: BootResult, check: str) -> None:
    assert_check(realistic, check)


@pytest.mark.parametrize(
    "check", ["s5_release_shared1", "s5_freed", "s5_other_kept", "s5_release_shared2", "s5_freed2"]
)
def test_s5_a_port_in_two_files_is_released_by_either(realistic: BootResult, check: str) -> None:
    assert_check(realistic, check)


@pytest.mark.parametrize(
    "check",
    [
        "s6_release_all",
        "s6_all_free",
        "s6_groups_stopped",
        "s6_holder_gone",
        "s6_no_failed",
        "s6_still_no_failed",
        "s6_not_restarted",
        "s6_quiet_when_nothing",
    ],
)
def test_s6_release_all_ends_the_holder_cleanly(realistic: BootResult, check: str) -> None:
    assert_check(realistic, check)


@pytest.mark.parametrize("check", ["s7_refused", "s7_units_active"])
def test_s7_connections_to_reserved_ports_fail_at_once(realistic: BootResult, check: str) -> None:
    assert_check(realistic, check)


@pytest.mark.parametrize(
    "check", ["s8_kill", "s8_dead", "s8_still_held", "s8_release", "s8_freed", "s8_nis_still_held", "s8_holder_back"]
)
def test_s8_killed_holder_keeps_ports_and_release_still_works(realistic: BootResult, check: str) -> None:
    assert_check(realistic, check)


@pytest.mark.parametrize("check", ["s12_restart_requires", "s12_restart_wants", "s12_holder_clean", "s12_no_failed"])
def test_s12_consumers_restart_after_everything_was_released(realistic: BootResult, check: str) -> None:
    assert_check(realistic, check)


# -- boot 2: bad configuration, a port taken at boot, daemon-reload ----------

BAD_FILES: dict[str, str | bytes | tuple[str | bytes, int]] = {
    "/usr/local/bin/portcheck": (PORTCHECK, 0o755),
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

BAD_DRIVER = (
    DRIVER_PRELUDE
    + r"""
# 9. bad configuration: the boot completes, the good reservations hold
check s9_booted systemctl is-active boot-test.target sockets.target basic.target
check s9_good_held portcheck bound 993/tcp 631/tcp 1301/udp 1300/tcp 1201/tcp
check s9_bad_not_held portcheck free 1302/tcp
check s9_escaped_release bash -c 'portrelease "my-printer:x y" && portcheck free 1300/tcp'
journalctl -b --no-pager -o cat > /results/boot-journal.txt 2>&1

# 11. a port taken at boot: only its unit fails, with a clear message
check s11_only_that_unit_failed bash -c 'out=$(systemctl --failed --no-legend --plain); echo "$out";
    [ "$(echo "$out" | wc -l)" = 1 ] && grep -q "portreserve-1200-tcp.socket" <<<"$out"'
check s11_others_held portcheck bound 1201/tcp 993/tcp
check s11_message bash -c 'journalctl -b -u portreserve-1200-tcp.socket --no-pager -o cat | tee /dev/stderr |
    grep -i "failed to listen"'
check s11_status bash -c 'portreserve status | tee /dev/stderr | grep "1200/tcp" | grep failed | grep portcheck'

# 10. daemon-reload after releases neither re-reserves a released port nor
#     disturbs its service; a new file plus `portreserve reload` reserves it
check s10_consumer systemctl start good-test
pid=$(systemctl show -P MainPID good-test)
check s10_daemon_reload systemctl daemon-reload
check s10_consumer_undisturbed bash -c '[ "$(systemctl show -P MainPID good-test)" = "'"$pid"'" ] &&
    systemctl is-active good-test && [ "$(systemctl show -P ActiveState portreserve-993-tcp.socket)" = inactive ]'
echo 1400/tcp > /etc/portreserve/newname
check s10_reload portreserve reload
check s10_new_port_held portcheck bound 1400/tcp
check s10_released_stays_released bash -c '[ "$(systemctl show -P MainPID good-test)" = "'"$pid"'" ] &&
    [ "$(systemctl show -P ActiveState portreserve-993-tcp.socket)" = inactive ] &&
    [ "$(systemctl show -P ActiveState portreserve@good.target)" = inactive ]'
check s10_new_refused portcheck refused 1400/tcp
check s10_release_new bash -c 'portrelease newname && portcheck free 1400/tcp'
"""
)


@pytest.fixture(scope="module")
def bad(destdir: Path, tmp_path_factory: pytest.TempPathFactory) -> BootResult:
    return boot(
        tmp_path_factory.mktemp("bad"),
        files=BAD_FILES,
        symlinks=BAD_LINKS,
        install=destdir,
        driver=BAD_DRIVER,
        timeout=120,
    )


@pytest.mark.parametrize("check", ["s9_booted", "s9_good_held", "s9_bad_not_held", "s9_escaped_release"])
def test_s9_bad_configuration_costs_nothing_else(bad: BootResult, check: str) -> None:
    assert_check(bad, check)


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
def test_s9_generator_messages_name_file_and_line(bad: BootResult, message: str) -> None:
    logs = bad.read("boot-journal.txt") + bad.kmsg + bad.console
    assert message in logs


@pytest.mark.parametrize("check", ["s11_only_that_unit_failed", "s11_others_held", "s11_message", "s11_status"])
def test_s11_a_port_taken_at_boot_fails_only_its_unit(bad: BootResult, check: str) -> None:
    assert_check(bad, check)


@pytest.mark.parametrize(
    "check",
    [
        "s10_consumer",
        "s10_daemon_reload",
        "s10_consumer_undisturbed",
        "s10_reload",
        "s10_new_port_held",
        "s10_released_stays_released",
        "s10_new_refused",
        "s10_release_new",
    ],
)
def test_s10_daemon_reload_and_new_reservations(bad: BootResult, check: str) -> None:
    assert_check(bad, check)


# -- boot 3: user mode, a user manager (user@UID.service) ---------------------

USER_FILES: dict[str, str | bytes | tuple[str | bytes, int]] = {
    "/usr/local/bin/portcheck": (PORTCHECK, 0o755),
    "/etc/xdg/portreserve/site": "9000/tcp\n",  # a site default
    "/etc/xdg/portreserve/dev": "7000/tcp\n",  # overridden by the user's own file
    "/etc/skel/.config/portreserve/dev": "8080/tcp\n5173\n631/tcp\n",
    "/etc/skel/.config/systemd/user/web.service": consumer(
        "a developer's web server", "dev", "8080/tcp 5173/tcp 5173/udp"
    ),
}

USER_DRIVER = (
    DRIVER_PRELUDE
    + r"""
useradd --create-home --shell /bin/bash tester
uid=$(id -u tester)
systemctl start "user@$uid.service"
as_user() { runuser -u tester -- env XDG_RUNTIME_DIR=/run/user/$(id -u tester) "$@"; }
export -f as_user
check u_manager systemctl is-active "user@$uid.service"
check u_held eventually portcheck bound 8080/tcp 5173/tcp 5173/udp 9000/tcp
check u_not_held portcheck free 7000/tcp
check u_holder bash -c 'as_user systemctl --user is-active portreserve.service'
check u_privileged_message bash -c 'journalctl -b --no-pager -o cat | grep -F \
    "/home/tester/.config/portreserve/dev:3: '"'"'631/tcp'"'"' is below net.ipv4.ip_unprivileged_port_start"'
check u_status bash -c 'as_user portreserve status | tee /dev/stderr | grep -x "Scope: user (systemd)"'
check u_consumer bash -c 'as_user systemctl --user start web.service && as_user systemctl --user is-active web.service'
check u_consumer_ports portcheck bound 8080/tcp 5173/tcp 5173/udp
check u_others_held portcheck bound 9000/tcp
check u_release_all bash -c 'as_user portrelease "*" && portcheck free 9000/tcp'
check u_no_failed bash -c 'out=$(as_user systemctl --user --failed --no-legend --plain); echo "$out"; [ -z "$out" ]'
check u_system_untouched bash -c '[ "$(systemctl show -P ActiveState portreserve.service)" = inactive ]'

# standalone user mode: a user without a user manager runs the holder herself
useradd --create-home --shell /bin/bash solo
mkdir -p /home/solo/.config/portreserve /tmp/solo-run
echo 8090/tcp > /home/solo/.config/portreserve/web
echo 8091/udp > /home/solo/.config/portreserve/dns
chown -R solo: /home/solo/.config /tmp/solo-run
as_solo() { runuser -u solo -- env XDG_RUNTIME_DIR=/tmp/solo-run "$@"; }
export -f as_solo
check s_hold bash -c 'as_solo portreserve hold && [ -S /tmp/solo-run/portreserve/socket ]'
check s_held portcheck bound 8090/tcp 8091/udp
check s_status bash -c 'as_solo portreserve status | tee /dev/stderr | grep -x "Scope: user (standalone)"'
check s_socket_mode_0600 bash -c '[ "$(stat -c %a /tmp/solo-run/portreserve/socket)" = 600 ]'
check s_release bash -c 'as_solo portrelease web && portcheck free 8090/tcp && portcheck bound 8091/udp'
check s_release_all bash -c 'as_solo portrelease "*" && portcheck free 8091/udp &&
    eventually bash -c "! pgrep -u solo -f \"portreserve hold\""'
"""
)


@pytest.fixture(scope="module")
def user_boot(destdir: Path, tmp_path_factory: pytest.TempPathFactory) -> BootResult:
    return boot(tmp_path_factory.mktemp("user"), files=USER_FILES, install=destdir, driver=USER_DRIVER, timeout=120)


@pytest.mark.parametrize(
    "check",
    [
        "u_manager",
        "u_held",
        "u_not_held",
        "u_holder",
        "u_privileged_message",
        "u_status",
        "u_consumer",
        "u_consumer_ports",
        "u_others_held",
        "u_release_all",
        "u_no_failed",
        "u_system_untouched",
        "s_hold",
        "s_held",
        "s_status",
        "s_socket_mode_0600",
        "s_release",
        "s_release_all",
    ],
)
def test_user_mode_reservations_under_a_user_manager(user_boot: BootResult, check: str) -> None:
    assert_check(user_boot, check)
