"""Zero-step opt-in under a real systemd 252: consumers with no portrelease of
their own start at boot and get their port, because the generator gave their
unit a drop-in (portreserve/dropins.py).

One boot: system consumers of every kind (no drop-in of their own, User=, one
calling portrelease itself, one opted out, one masked per unit, one mapped to
another unit name, an alias, a template instance, a hostile name), a unit
installed after boot, and two user managers (one with AutoRelease=no).  An early
rival shaped like rpcbind tries every port first: it must get none of them, so
a consumer that binds its port proves the release happened.

The boot runs tests/guest/dropins.sh, made of scenario_* functions; every
scenario is one test here, derived from the driver (tests/scenarios.py).  The
first scenario is the control (portrelease by hand frees a reserved port):
while it fails, every other scenario's test fails pointing at it.  This file
holds the configuration and units staged into the boot, and the names whose
quoting systemd itself checks (argv.service).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from boot import BootResult, boot
from scenarios import GUEST, Driver, assert_scenario, guest_tools, rpcbind_rival

from portreserve.dropins import exec_quote

pytestmark = pytest.mark.boot

DROPINS = Driver(GUEST / "dropins.sh")
# The driver's first scenario is the control: portrelease by hand frees a
# reserved port.  Every other scenario's test fails pointing at it if it failed.
CONTROL = DROPINS.run_list[0]

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
    "imap": "1512/tcp",
    "mail": "1513/tcp 1513/udp",
    "printer": "1514/tcp",
}


def socket_consumer(description: str, listen: str) -> str:
    """A socket-activated consumer: systemd itself binds its ports, after
    sysinit.target (DefaultDependencies=yes), so after the reservation's.
    After the rival too, as the services: what the rival tries must still be
    reserved when it tries (sysinit.target does not wait for the rival)."""
    return f"[Unit]\nDescription={description}\nAfter=rpcbind.service\n[Socket]\n{listen}\n"


IDLE_SERVICE = "[Service]\nExecStart=/bin/sleep infinity\n"  # never activated by the checks
ALL_PORTS = " ".join(PORTS.values())

FILES: dict[str, str | bytes | tuple[str | bytes, int]] = {
    **guest_tools(),
    "/usr/local/bin/argdump": ((GUEST / "argdump").read_text(), 0o755),
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
    # 11. socket activation: imap.socket binds the port itself, once released
    "/etc/portreserve/imap": "1512/tcp\n",
    "/etc/systemd/system/imap.socket": socket_consumer("socket-activated consumer", "ListenStream=1512"),
    "/etc/systemd/system/imap.service": IDLE_SERVICE,
    # 12. a socket unit named in the file, with a stream and a datagram port
    "/etc/portreserve/pop3s": "# portreserve: unit=mail.socket\n1513/tcp\n1513/udp\n",
    "/etc/systemd/system/mail.socket": socket_consumer("mapped socket", "ListenStream=1513\nListenDatagram=1513"),
    "/etc/systemd/system/mail.service": IDLE_SERVICE,
    # 13. a socket unit on a path only (as cups.socket): not the one that binds
    # the port, so no drop-in; printer.service, when it starts, releases it
    "/etc/portreserve/printer": "1514/tcp\n",
    "/etc/systemd/system/printer.socket": socket_consumer("path socket", "ListenStream=/run/printer.sock"),
    "/etc/systemd/system/printer.service": server("binds the reserved port", PORTS["printer"]),
    # user scope: tester gets drop-ins, tester2 turned them off host-wide
    "/etc/skel/.config/portreserve/dev": "8081/tcp\n",
    "/etc/skel/.config/systemd/user/dev.service": server("a developer's server", "8081/tcp").replace(
        "After=rpcbind.service\n", ""
    ),
}

# Socket units that nothing starts, each read by systemd (`systemctl show -p
# Listen`) and by portreserve.unitpath.UnitPath.listen_ports() in the boot
# (scenario s18): the two must agree.  Values as a unit file holds them ('%%'
# is a '%' once systemd expands specifiers).
_ORACLE_VALUES = {
    "plain": "ListenStream=1601",
    "ipv4": "ListenStream=0.0.0.0:1602",
    "ipv6": "ListenStream=[::]:1603",
    "ipv6-iface": "ListenStream=[::1]:1604%%lo",  # systemd.socket(5): the interface after the port
    "ipv6-iface-inside": "ListenStream=[fe80::1%%lo]:1605",  # refused
    "ipv4-iface": "ListenStream=127.0.0.1:1606%%lo",
    "ipv4-iface-inside": "ListenStream=127.0.0.1%%lo:1607",  # refused
    "port-iface": "ListenStream=1608%%lo",  # refused
    "ipv6-no-port": "ListenStream=::1609",  # refused
    "continued": "ListenStream=\\\n1610",
    "continued-twice": "ListenStream=16\\\n11",  # '16 11': refused
    "continued-comment": "ListenStream=\\\n# between\n1612",
    "comment-continues-not": "#ListenStream=\\\nListenStream=1613",
    "escaped-backslash": "ListenStream=1614\\\\\nListenStream=1615",
    "hex": "ListenStream=0x64f",
    "plus": "ListenStream=+1617",
    "octal": "ListenStream=01618",
    "octal-ipv4": "ListenStream=127.0.0.1:01619",
    "not-octal": "ListenStream=01698\nListenStream=1620",
    "blanks": "ListenStream \t =  1621 \t",
    "nbsp": "ListenStream=\u00a01622",
    "quoted": 'ListenStream="1623"',
    "percent": "ListenStream=16%%24",
    "instance-literal": "ListenStream=%%i\nListenStream=1625",
    "hostname": "ListenStream=localhost:1626",
    "server-name": "ListenStream=1627#name",
    "trailing-comment": "ListenStream=1628 # imap",
    "semicolon": ";ListenStream=1629\nListenStream=1630",
    "crlf": "ListenStream=1631\r",
    "lone-cr": "# comment\rListenStream=1632",
    "nul": "# comment\x00ListenStream=1633",
    "form-feed": "# comment\x0cListenStream=1634\nListenStream=1635",
    "lf-cr": "ListenStream=\\\n\r1636",
    "reset-by-fifo": "ListenStream=1637\nListenFIFO=\nListenDatagram=1638",
    "unknown-key": "ListenStream=1639\nListenStreamX=",
    "sctp": "ListenStream=1640\nSocketProtocol=sctp",
    "udplite": "ListenDatagram=1641\nSocketProtocol=udplite\nSocketProtocol=",
    "seqpacket": "ListenSequentialPacket=1642",
    "vsock": "ListenStream=vsock:2:1643",
    "path": "ListenStream=/run/listen-oracle.sock",
    "out-of-range": "ListenStream=65536",
    "bad-header": "ListenStream=1644\n[Socket]x\nListenStream=1645",
    "hostname-specifier": "ListenStream=%H:1646\nListenStream=1647",
}
_O = "/etc/systemd/system"
ORACLE_FILES: dict[str, str | bytes] = {
    **{
        f"{_O}/lo-{name}.socket": f"[Socket]\nService=lo-idle.service\n{value}\n"
        for name, value in _ORACLE_VALUES.items()
    },
    f"{_O}/lo-bom.socket": "\ufeff[Socket]\nService=lo-idle.service\nListenStream=1648\n",
    f"{_O}/lo-idle.service": IDLE_SERVICE,
    # drop-ins: a file name in an earlier directory hides it in later ones, /etc's
    # template drop-in an instance drop-in of /usr/lib
    f"{_O}/lo-d.socket": "[Socket]\nService=lo-idle.service\nListenStream=1650\n",
    "/usr/lib/systemd/system/lo-d.socket.d/50-x.conf": "[Socket]\nListenStream=\nListenStream=1651\n",
    f"{_O}/lo-d.socket.d/50-x.conf": "[Socket]\nListenStream=1652\n",
    "/usr/local/lib/systemd/system/lo-d.socket.d/40-y.conf": "[Socket]\nListenDatagram=1653\n",
    f"{_O}/lo-d.socket.d/.hidden.conf": "[Socket]\nListenStream=\n",
    "/usr/lib/systemd/system/lo-tp@.socket": "[Socket]\nService=lo-idle.service\nListenStream=%i\n",
    "/usr/lib/systemd/system/lo-tp@1654.socket.d/50-a.conf": "[Socket]\nListenStream=1655\n",
    f"{_O}/lo-tp@.socket.d/50-a.conf": "[Socket]\nListenStream=1656\n",
    # '-' prefixes, most specific first
    f"{_O}/lp-x-y.socket": "[Socket]\nService=lo-idle.service\nListenStream=1657\n",
    f"{_O}/lp-x-.socket.d/10.conf": "[Socket]\nListenStream=1658\n",
    "/usr/lib/systemd/system/lp-.socket.d/10.conf": "[Socket]\nListenStream=1659\n",
    # a double dash: a trailing dash is chopped once per step, so lq-.socket.d is not read
    f"{_O}/lq--b.socket": "[Socket]\nService=lo-idle.service\nListenStream=1670\n",
    f"{_O}/lq--.socket.d/10.conf": "[Socket]\nListenStream=1671\n",
    f"{_O}/lq-.socket.d/10.conf": "[Socket]\nListenStream=1672\n",
    # an alias: the drop-ins of both names count
    "/usr/lib/systemd/system/lo-real.socket": "[Socket]\nService=lo-idle.service\nListenStream=1660\n",
    "/usr/lib/systemd/system/lo-real.socket.d/10.conf": "[Socket]\nListenStream=1661\n",
    f"{_O}/lo-alias.socket.d/10.conf": "[Socket]\nListenStream=1662\n",
}
ORACLE_LINKS = {f"{_O}/lo-alias.socket": "/usr/lib/systemd/system/lo-real.socket"}
ORACLE_UNITS = [
    *(f"lo-{name}.socket" for name in _ORACLE_VALUES),
    *(
        "lo-bom.socket",
        "lo-d.socket",
        "lo-tp@1654.socket",
        "lp-x-y.socket",
        "lq--b.socket",
        "lo-real.socket",
        "lo-alias.socket",
    ),
]
FILES["/etc/listen-oracle.list"] = "".join(f"{u}\n" for u in ORACLE_UNITS)
FILES.update(ORACLE_FILES)

LINKS = {
    **ORACLE_LINKS,
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
    "/etc/systemd/system/sockets.target.wants/imap.socket": "/etc/systemd/system/imap.socket",
    "/etc/systemd/system/sockets.target.wants/mail.socket": "/etc/systemd/system/mail.socket",
    "/etc/systemd/system/sockets.target.wants/printer.socket": "/etc/systemd/system/printer.socket",
}


@pytest.fixture(scope="module")
def dropin_boot(destdir: Path, tmp_path_factory: pytest.TempPathFactory) -> BootResult:
    return boot(
        tmp_path_factory.mktemp("dropins"),
        files=FILES,
        symlinks=LINKS,
        install=destdir,
        driver=DROPINS.text,
        timeout=180,
    )


def control_passed(result: BootResult) -> None:
    """The control scenario passed, or this test fails pointing at it."""
    try:
        assert_scenario(result, DROPINS, CONTROL)
        return
    except AssertionError as e:
        problems = str(e).split("\n--- driver log")[0]  # its own test shows the logs
    # Out of the except block: the control's own failure is not repeated as the cause.
    pytest.fail(
        f"the control scenario {CONTROL} failed: portrelease by hand does not free a reserved port in this "
        f"boot, so no drop-in can, and what this scenario checks means nothing; look at {CONTROL} first:\n"
        f"{problems}",
        pytrace=False,
    )


@pytest.mark.parametrize("scenario", DROPINS.scenarios)
def test_drop_in_boot(dropin_boot: BootResult, scenario: str) -> None:
    if scenario != CONTROL:
        control_passed(dropin_boot)
    assert_scenario(dropin_boot, DROPINS, scenario)


def test_exec_quote_passes_every_name_through_systemd_unchanged(dropin_boot: BootResult) -> None:
    argv = dropin_boot.results_dir / "argv"
    assert argv.is_dir(), f"argv.service wrote nothing\n--- journal (tail) ---\n{dropin_boot.journal[-6000:]}"
    got = {int(p.name): p.read_bytes() for p in argv.iterdir()}
    assert got == {i: os.fsencode(n) for i, n in enumerate(ARGV_NAMES)}


def test_generator_logged_nothing(dropin_boot: BootResult) -> None:
    assert "portreserve-generator" not in dropin_boot.kmsg, dropin_boot.kmsg


def systemd_listens(shown: str) -> list[list[int | str]]:
    """The TCP and UDP ports of `systemctl show -p LoadState,Listen,SocketProtocol`:
    none unless the unit loaded and its protocol is the default."""
    props = [line.split("=", 1) for line in shown.splitlines() if "=" in line]
    if ("LoadState", "loaded") not in [tuple(p) for p in props] or dict(props).get("SocketProtocol", "0") != "0":
        return []
    ports = set()
    for key, value in props:
        address, _, kind = value.rpartition(" ")
        number = address.rpartition(":")[2].partition("%")[0]  # [::1]:25%lo
        ip = address.startswith(("[", *"0123456789"))  # not a path, vsock:CID:PORT or the like
        if key == "Listen" and kind in ("(Stream)", "(Datagram)") and number.isdigit() and ip:
            ports.add((int(number), "tcp" if kind == "(Stream)" else "udp"))
    return [list(p) for p in sorted(ports)]


def test_listen_ports_read_socket_units_as_systemd_does(dropin_boot: BootResult) -> None:
    listen = dropin_boot.results_dir / "listen"
    assert (listen / "ours.json").is_file(), f"no oracle results\n--- driver log ---\n{dropin_boot.driver_log[-4000:]}"
    ours = json.loads((listen / "ours.json").read_text())
    systemd = {u: systemd_listens((listen / u).read_text()) for u in ORACLE_UNITS}
    assert set(ours) == set(ORACLE_UNITS)
    # The oracle answered: units staged where neither side looks would make
    # both sides say "nothing" and agree.
    assert systemd["lo-plain.socket"] == [[1601, "tcp"]], systemd["lo-plain.socket"]
    assert sum(1 for ports in systemd.values() if ports) >= len(ORACLE_UNITS) // 2, systemd
    assert {u: ours[u] for u in ORACLE_UNITS} == systemd
