"""Zero-step opt-in under a real systemd 252: consumers with no portrelease of
their own start at boot and get their port, because the generator gave their
unit a drop-in (portreserve/dropins.py).

One boot: system consumers of every kind (no drop-in of their own, User=, one
calling portrelease itself, one opted out, one masked per unit, one mapped to
another unit name, an alias, a template instance, a hostile name), a unit
installed after boot, and two user managers (one with AutoRelease=no).  An early
rival shaped like rpcbind tries every port first: it must get none of them, so
a consumer that binds its port proves the release happened.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from boot import BootResult, boot
from test_boot import DRIVER_PRELUDE, PORTCHECK, assert_check, destdir, record, rpcbind_rival

from portreserve.dropins import exec_quote

pytestmark = pytest.mark.boot
__all__ = ["destdir"]  # the session fixture of tests/test_boot.py: one make install for both

HOSTILE = 'my "odd" $HOME 100% \\ ü'


def server(description: str, ports: str, in_unit: str = "", in_service: str = "") -> str:
    """A consumer that knows nothing of portreserve: it binds its ports
    (failing if they are taken) and says READY=1."""
    lines = [
        "[Unit]",
        f"Description={description}",
        # After the rival, so that what it tries is still reserved when it tries.
        "After=rpcbind.service",
        *in_unit.splitlines(),
        "[Service]",
        "Type=notify",
        "NotifyAccess=all",
        *in_service.splitlines(),
        f"ExecStart=/usr/local/bin/portcheck serve {ports}",
    ]
    return "\n".join(lines) + "\n"


def random_names(count: int) -> list[str]:
    """Names as arbitrary file names: any byte but NUL and '/'."""
    rng = random.Random(12)
    alphabet = [b for b in range(1, 256) if b != ord("/")]
    return [os.fsdecode(bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))) for _ in range(count)]


# Every name passed through exec_quote() into a real Exec line, and what the
# process really got: systemd itself is the oracle of the quoting.
ARGV_NAMES = [
    HOSTILE,
    "%n%i%%",
    "$HOME ${HOME} $$",
    "trailing\\",
    "new\nline",
    "tab\there",
    ";",
    "'single'",
    '"',
    "日本語",
    os.fsdecode(b"\xff\xfe latin1 \xe9"),
    *random_names(60),
]
ARGDUMP = """#!/usr/bin/python3
import os, sys
os.makedirs("/results/argv", exist_ok=True)
with open(f"/results/argv/{sys.argv[1]}", "wb") as f:
    f.write(os.fsencode(sys.argv[2]))
"""
ARGV_UNIT = "[Service]\nType=oneshot\nRemainAfterExit=yes\n" + "".join(
    f"ExecStart=/usr/local/bin/argdump {i} {exec_quote(n)}\n" for i, n in enumerate(ARGV_NAMES)
)

# Ports of the system consumers, all tried by the rival at boot.
PORTS = {
    "plain": "1501/tcp 1501/udp",
    "asuser": "1502/tcp",
    "selfrelease": "1503/tcp",
    "optout": "1504/tcp",
    "ldap": "1505/tcp",
    "masked1": "1506/tcp",
    "odd": "1507/tcp",
    "ldap2": "1508/tcp",
    "web": "1509/tcp",
    "later": "1510/tcp",
}
ALL_PORTS = " ".join(PORTS.values())

FILES: dict[str, str | bytes | tuple[str | bytes, int]] = {
    "/usr/local/bin/portcheck": (PORTCHECK, 0o755),
    "/usr/local/bin/argdump": (ARGDUMP, 0o755),
    "/etc/systemd/system/argv.service": ARGV_UNIT,
    # the rival: DefaultDependencies=no like Debian's rpcbind
    "/etc/systemd/system/rpcbind.service": rpcbind_rival(ALL_PORTS, "/results/rival.txt"),
    "/etc/portreserve/control": "1511/tcp\n",
    # 1. a consumer with nothing of its own: the drop-in is all it has
    "/etc/portreserve/plain": "1501/tcp\n1501/udp\n",
    "/etc/systemd/system/plain.service": server("no drop-in of its own", PORTS["plain"]),
    # 2. User=: the drop-in's '+' runs portrelease as root
    "/etc/portreserve/asuser": "1502/tcp\n",
    "/etc/systemd/system/asuser.service": server("runs as nobody", PORTS["asuser"], in_service="User=nobody"),
    # 3. a unit that already calls portrelease: the second call is a no-op
    "/etc/portreserve/selfrelease": "1503/tcp\n",
    "/etc/systemd/system/selfrelease.service": server(
        "calls portrelease itself",
        PORTS["selfrelease"],
        in_service="ExecStartPre=/usr/sbin/portrelease selfrelease",
    ),
    # 4. opted out in its reservation file: no drop-in, the port stays held
    "/etc/portreserve/optout": "1504/tcp\n# portreserve: release=manual\n",
    "/etc/systemd/system/optout.service": server("opted out", PORTS["optout"]),
    # 5. mapped: the file is ldap, the unit slapd.service
    "/etc/portreserve/ldap": "# portreserve: unit=slapd.service\n1505/tcp\n",
    "/etc/systemd/system/slapd.service": server("slapd stand-in", PORTS["ldap"]),
    # 6. opted out per unit, the systemd way: the drop-in masked in /etc
    "/etc/portreserve/masked1": "1506/tcp\n",
    "/etc/systemd/system/masked1.service": server("drop-in masked", PORTS["masked1"]),
    # 7. a name that needs every kind of quoting, mapped to a plain unit
    f"/etc/portreserve/{HOSTILE}": "# portreserve: unit=oddprinter\n1507/tcp\n",
    "/etc/systemd/system/oddprinter.service": server("hostile name", PORTS["odd"]),
    # 8. the name is an alias of the unit (a symlink in the unit path)
    "/etc/portreserve/ldap2": "1508/tcp\n",
    "/etc/systemd/system/slapd2.service": server("aliased as ldap2", PORTS["ldap2"]),
    # 9. a template instance
    "/etc/portreserve/web@1509": "1509/tcp\n",
    "/etc/systemd/system/web@.service": server("template instance", "%i/tcp"),
    # 10. a unit installed after boot: its drop-in comes with daemon-reload
    "/etc/portreserve/later": "1510/tcp\n",
    # user scope: tester gets drop-ins, tester2 turned them off host-wide
    "/etc/skel/.config/portreserve/dev": "8081/tcp\n",
    "/etc/skel/.config/systemd/user/dev.service": server("a developer's server", "8081/tcp").replace(
        "After=rpcbind.service\n", ""
    ),
}

LINKS = {
    "/etc/systemd/system/sysinit.target.wants/rpcbind.service": "/etc/systemd/system/rpcbind.service",
    "/etc/systemd/system/masked1.service.d/portreserve.conf": "/dev/null",
    "/etc/systemd/system/ldap2.service": "/etc/systemd/system/slapd2.service",
    **{
        f"/etc/systemd/system/boot-test.target.wants/{u}": f"/etc/systemd/system/{u}"
        for u in (
            "plain.service",
            "asuser.service",
            "selfrelease.service",
            "slapd.service",
            "oddprinter.service",
            "slapd2.service",
            "argv.service",
        )
    },
    "/etc/systemd/system/boot-test.target.wants/web@1509.service": "/etc/systemd/system/web@.service",
}


DRIVER = (
    DRIVER_PRELUDE
    + r"""
dropins() { systemctl show -P DropInPaths "$@"; }
has_dropin() { dropins "$1" | tr ' ' '\n' | grep -x "$2"; }
export -f dropins has_dropin
G=/run/systemd/generator

# The rival tried every port before any consumer: it got none
check d_rival bash -c 'cat /results/rival.txt; [ -f /results/rival.txt ] && [ ! -s /results/rival.txt ]'
# Control: portrelease by hand frees a port (without that, no drop-in can help)
check d_control bash -c 'portcheck bound 1511/tcp && portrelease control && portcheck free 1511/tcp'

# 1. no drop-in of its own: started at boot, bound at the first try
check d_plain bash -c 'systemctl is-active plain.service && [ "$(systemctl show -P NRestarts plain.service)" = 0 ]'
check d_plain_dropin has_dropin plain.service $G/plain.service.d/portreserve.conf
check d_plain_exec bash -c 'systemctl show -P ExecStartPre plain.service | tee /dev/stderr |
    grep -F "argv[]=/usr/sbin/portrelease --system -- plain ;" | grep -F "ignore_errors=yes"'
check d_plain_ports portcheck bound 1501/tcp 1501/udp
check d_plain_released bash -c '[ "$(systemctl show -P ActiveState portreserve@plain.target)" = inactive ]'

# 2. User=nobody
check d_asuser bash -c 'systemctl is-active asuser.service &&
    [ "$(ps -o user= -p "$(systemctl show -P MainPID asuser.service)")" = nobody ]'

# 3. calls portrelease itself too
check d_selfrelease bash -c 'systemctl is-active selfrelease.service &&
    [ "$(systemctl show -P ExecStartPre selfrelease.service | grep -o "argv\[\]=/usr/sbin/portrelease" | wc -l)" = 2 ]'

# 4. opted out: no drop-in, still reserved, and it cannot start without releasing
check d_optout_no_dropin bash -c 'out=$(dropins optout.service); echo "$out"; ! grep -q portreserve <<<"$out"'
check d_optout_held portcheck bound 1504/tcp
check d_optout_still_reserved bash -c \
    '[ "$(systemctl show -P ActiveState portreserve-1504-tcp.socket)" = active ] && ! systemctl start optout.service'
check d_optout_by_hand bash -c 'portrelease optout && systemctl start optout.service'

# 5. mapped to another unit name
check d_mapped bash -c 'systemctl is-active slapd.service'
check d_mapped_dropin has_dropin slapd.service $G/slapd.service.d/portreserve.conf
check d_mapped_name bash -c 'systemctl show -P ExecStartPre slapd.service | grep -F -- "--system -- ldap ;"'

# 6. masked per unit: systemd ignores the generator's drop-in
check d_masked_no_release bash -c 'out=$(systemctl show -P ExecStartPre masked1.service); echo "$out";
    ! grep -q portrelease <<<"$out"'
check d_masked_held portcheck bound 1506/tcp

# 7. hostile name: systemd hands portrelease exactly the file name
check d_hostile bash -c 'systemctl is-active oddprinter.service && [ "$(systemctl show -P ActiveState \
    "portreserve@$(systemd-escape "$(ls /etc/portreserve | grep odd)").target")" = inactive ]'

# 8. alias, 9. template instance
check d_alias bash -c 'systemctl is-active slapd2.service && dropins slapd2.service'
check d_instance bash -c 'systemctl is-active web@1509.service'

# 10. installed after boot: no drop-in until daemon-reload, then it starts
cp /etc/systemd/system/plain.service /etc/systemd/system/later.service
sed -i 's|serve .*|serve 1510/tcp|' /etc/systemd/system/later.service
check d_later_held portcheck bound 1510/tcp
check d_later_reload systemctl daemon-reload
check d_later_dropin has_dropin later.service $G/later.service.d/portreserve.conf
check d_later_start bash -c 'systemctl start later.service && systemctl is-active later.service'

# the argv oracle ran at boot
check d_argv systemctl is-active argv.service
check d_no_failed no_failed_units

# user managers: tester gets a drop-in, tester2 turned them off
useradd --create-home --shell /bin/bash tester
useradd --create-home --shell /bin/bash tester2
echo "AutoRelease=no" > /home/tester2/.config/portreserve/portreserve.conf
sed -i 's/8081/8082/' /home/tester2/.config/portreserve/dev /home/tester2/.config/systemd/user/dev.service
chown -R tester2: /home/tester2/.config
for u in tester tester2; do systemctl start "user@$(id -u $u).service"; done
as() { local u=$1; shift; runuser -u "$u" -- env XDG_RUNTIME_DIR=/run/user/$(id -u "$u") "$@"; }
export -f as
check u_held eventually portcheck bound 8081/tcp 8082/tcp
check u_dropin bash -c 'as tester systemctl --user show -P DropInPaths dev.service | tee /dev/stderr |
    grep -F "/run/user/$(id -u tester)/systemd/generator/dev.service.d/portreserve.conf"'
check u_exec bash -c 'as tester systemctl --user show -P ExecStartPre dev.service | tee /dev/stderr |
    grep -F -- "portrelease --user -- dev ;"'
check u_consumer bash -c 'as tester systemctl --user start dev.service &&
    as tester systemctl --user is-active dev.service'
check u_off_no_dropin bash -c 'out=$(as tester2 systemctl --user show -P DropInPaths dev.service); echo "$out";
    ! grep -q portreserve <<<"$out"'
check u_off_still_held portcheck bound 8082/tcp
check u_no_failed bash -c 'out=$(as tester systemctl --user --failed --no-legend --plain); echo "$out"; [ -z "$out" ]'
"""
)


@pytest.fixture(scope="module")
def dropin_boot(destdir: Path, tmp_path_factory: pytest.TempPathFactory) -> BootResult:
    files = FILES
    return boot(
        tmp_path_factory.mktemp("dropins"), files=files, symlinks=LINKS, install=destdir, driver=DRIVER, timeout=180
    )


# Checks that mean something only if portrelease itself frees ports in this tree.
NEED_RELEASE = {
    "d_plain", "d_plain_released", "d_asuser", "d_selfrelease", "d_mapped", "d_hostile", "d_alias", "d_instance",
    "d_no_failed", "d_optout_by_hand", "d_later_start", "u_consumer", "u_no_failed",
}  # fmt: skip


def assert_checked(result: BootResult, check: str) -> None:
    control = record(result, "d_control")
    if check in NEED_RELEASE and not control.startswith("ok"):
        pytest.fail(f"portrelease by hand does not free a port in this tree, so no drop-in can:\n{control}")
    assert_check(result, check)


@pytest.mark.parametrize(
    "check",
    [
        "d_rival",
        "d_plain",
        "d_plain_dropin",
        "d_plain_exec",
        "d_plain_ports",
        "d_plain_released",
        "d_asuser",
        "d_selfrelease",
        "d_mapped",
        "d_mapped_dropin",
        "d_mapped_name",
        "d_hostile",
        "d_alias",
        "d_instance",
        "d_no_failed",
    ],
)
def test_consumers_without_a_drop_in_of_their_own_get_their_port_at_boot(dropin_boot: BootResult, check: str) -> None:
    assert_checked(dropin_boot, check)


@pytest.mark.parametrize(
    "check",
    [
        "d_optout_no_dropin",
        "d_optout_held",
        "d_optout_still_reserved",
        "d_optout_by_hand",
        "d_masked_no_release",
        "d_masked_held",
    ],
)
def test_opted_out_units_get_no_release(dropin_boot: BootResult, check: str) -> None:
    assert_checked(dropin_boot, check)


@pytest.mark.parametrize("check", ["d_later_held", "d_later_reload", "d_later_dropin", "d_later_start"])
def test_a_unit_installed_later_gets_its_drop_in_at_daemon_reload(dropin_boot: BootResult, check: str) -> None:
    assert_checked(dropin_boot, check)


@pytest.mark.parametrize(
    "check", ["u_held", "u_dropin", "u_exec", "u_consumer", "u_off_no_dropin", "u_off_still_held", "u_no_failed"]
)
def test_user_managers_get_drop_ins_unless_turned_off(dropin_boot: BootResult, check: str) -> None:
    assert_checked(dropin_boot, check)


def test_exec_quote_passes_every_name_through_systemd_unchanged(dropin_boot: BootResult) -> None:
    assert_check(dropin_boot, "d_argv")
    got = {int(p.name): p.read_bytes() for p in (dropin_boot.results_dir / "argv").iterdir()}
    assert got == {i: os.fsencode(n) for i, n in enumerate(ARGV_NAMES)}


def test_generator_logged_nothing(dropin_boot: BootResult) -> None:
    assert "portreserve-generator" not in dropin_boot.kmsg, dropin_boot.kmsg


def test_control_portrelease_by_hand_frees_a_port(dropin_boot: BootResult) -> None:
    assert_check(dropin_boot, "d_control")
