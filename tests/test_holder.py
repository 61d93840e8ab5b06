"""The holder under systemd: sockets passed with sd_listen_fds.

The holder is started the way systemd starts portreserve.service: sockets made
like systemd makes them (SO_REUSEADDR, [::] dual-stack, TCP listening) at fds
3.. with LISTEN_FDS / LISTEN_FDNAMES / LISTEN_PID, and a NOTIFY_SOCKET that the
test reads.  The test keeps its own copy of every socket, as systemd does
(docs/systemd-facts.md §1), so "released" is checked by looking at the
holder's own fds in /proc, not at whether the port can be bound.

One test uses the real /usr/bin/systemd-socket-activate instead.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import (
    CONTROL_FDNAME,
    PYTHON,
    ROOT,
    Client,
    Holder,
    NotifyListener,
    Reaper,
    alive,
    ask,
    bind_errno,
    blocked_sending_to_unix_peer,
    child_env,
    control_socket,
    parse_reply,
    rival_results,
    socket_inode,
    socket_inodes_of,
    start_holder,
    systemd_sockets,
    tcp_attempt,
    udp_rx_queue,
    wait_until,
)

FAST = 0.5  # "at once": well under a second, with room for a loaded machine


def held_inodes(pid: int, socks: list[socket.socket]) -> set[int]:
    """Which of `socks` the process still has open."""
    mine = {socket_inode(s) for s in socks}
    return mine & socket_inodes_of(pid)


# -- coming up -------------------------------------------------------------------------


def test_holder_adopts_listen_fds_and_reports_ready(reaper: Reaper, workdir: Path) -> None:
    [(port, socks)] = systemd_sockets(1, ("tcp", "udp"))
    ctl = control_socket(workdir / "ctl")
    holder = start_holder(reaper, workdir, [(socks["tcp"], "a"), (socks["udp"], "a"), (ctl, CONTROL_FDNAME)])

    holder.wait_ready()

    assert held_inodes(holder.pid, [socks["tcp"], socks["udp"], ctl]) == {
        socket_inode(s) for s in (socks["tcp"], socks["udp"], ctl)
    }
    holder.notify.wait_for("STATUS", "Holding 2 port(s) for 1 name(s)", timeout=5)
    head, ports = parse_reply(holder.ask(".status"))
    assert head == "OK"
    assert ports == {f"{port}/tcp": ["a"], f"{port}/udp": ["a"]}


def test_holder_escaped_fdnames_are_owner_names(reaper: Reaper, workdir: Path) -> None:
    # units.fdname(): names are systemd-escaped, ':' too, and joined with ','.
    [(p1, s1), (p2, s2)] = systemd_sockets(2, ("tcp",))
    ctl = control_socket(workdir / "ctl")
    holder = start_holder(
        reaper, workdir, [(s1["tcp"], r"my\x2dsvc"), (s2["tcp"], r"odd\x3aname,other"), (ctl, CONTROL_FDNAME)]
    )
    holder.wait_ready()

    # .status names are escaped as in unit names (systemd-escape keeps ':').
    _head, ports = parse_reply(holder.ask(".status"))
    assert ports == {f"{p1}/tcp": [r"my\x2dsvc"], f"{p2}/tcp": ["odd:name", "other"]}

    head, released = parse_reply(holder.ask("odd:name"))
    assert (head, list(released)) == ("OK", [f"{p2}/tcp"])
    head, released = parse_reply(holder.ask("my-svc"))
    assert (head, list(released)) == ("OK", [f"{p1}/tcp"])
    assert holder.wait_exit() == 0


def socket_activate(
    reaper: Reaper, workdir: Path, notify: NotifyListener, log: Path, listen: list[str]
) -> subprocess.Popen[bytes]:
    """The holder (-d, control socket in workdir) behind the real
    systemd-socket-activate, which execs it on the first traffic."""
    activate = shutil.which("systemd-socket-activate") or "/usr/bin/systemd-socket-activate"
    env = child_env()
    with open(log, "wb") as out:
        return reaper.popen(
            subprocess.Popen(
                [
                    activate,
                    *listen,
                    f"--setenv=NOTIFY_SOCKET={notify.path}",
                    f"--setenv=PYTHONPATH={env['PYTHONPATH']}",
                    PYTHON,
                    "-m",
                    "portreserve",
                    "hold",
                    "-d",
                    f"--socket={workdir / 'ctl'}",
                ],
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        )


def test_real_systemd_socket_activate_starts_the_holder(reaper: Reaper, workdir: Path) -> None:
    """systemd-socket-activate -l PORT --fdname=NAME: the real LISTEN_FDS path.

    It waits for the first connection, then execs the holder in its own pid."""
    [(port, probe)] = systemd_sockets(1, ("tcp",))
    probe["tcp"].close()  # only wanted a free port
    notify = NotifyListener(workdir / "notify")
    log = workdir / "activate.log"
    proc = socket_activate(reaper, workdir, notify, log, [f"--listen={port}", "--fdname=web"])
    assert wait_until(lambda: f"Listening on [::]:{port}" in log.read_text(), 10), log.read_text()

    # The first connection triggers the exec; once up, the holder resets it.
    outcome, _ = tcp_attempt(port, timeout=15)
    assert outcome == "reset", log.read_text()
    pid, fields = notify.wait_for("READY", "1", proc=proc)
    assert pid == proc.pid, "the holder runs as the activator's own pid, like a service's main process"
    notify.wait_for("STATUS", "Holding 1 port(s) for 1 name(s)", timeout=5)
    assert "holding" in log.read_text() and f"{port}/tcp for web" in log.read_text()

    # Now every connection is reset at once.
    for host in ("127.0.0.1", "::1"):
        outcome, seconds = tcp_attempt(port, host)
        assert outcome == "reset" and seconds < FAST, (host, outcome, seconds)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0, log.read_text()
    notify.close()


def test_real_systemd_socket_activate_udp_and_control_socket(reaper: Reaper, workdir: Path) -> None:
    [(port, probe)] = systemd_sockets(1, ("udp",))
    probe["udp"].close()
    ctl = workdir / "ctl"
    notify = NotifyListener(workdir / "notify")
    log = workdir / "activate.log"
    listen = ["--datagram", f"--listen={port}", f"--listen={ctl}", f"--fdname=dns:{CONTROL_FDNAME}"]
    proc = socket_activate(reaper, workdir, notify, log, listen)
    assert wait_until(lambda: str(ctl) in log.read_text(), 10), log.read_text()
    # A datagram to the reserved port triggers the exec.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(b"wake up", ("127.0.0.1", port))
    pid, _ = notify.wait_for("READY", "1", proc=proc)
    assert pid == proc.pid

    assert bind_errno("udp", port, socket.AF_INET, reuseaddr=True) == errno.EADDRINUSE
    head, ports = parse_reply(ask(ctl, ".status"))
    assert (head, ports) == ("OK", {f"{port}/udp": ["dns"]})
    head, ports = parse_reply(ask(ctl, "dns"))
    assert (head, list(ports)) == ("OK", [f"{port}/udp"])
    assert proc.wait(10) == 0, log.read_text()
    notify.close()


def test_holder_with_only_the_control_socket_is_ready_then_exits_0(reaper: Reaper, workdir: Path) -> None:
    ctl = control_socket(workdir / "ctl")
    # A request queued before the holder runs (what socket activation starts it for).
    with Client(workdir / "ctl") as client:
        client.send(b".status")
        holder = start_holder(reaper, workdir, [(ctl, CONTROL_FDNAME)])
        holder.wait_ready()
        assert holder.wait_exit() == 0, holder.stderr()
        assert client.receive() == "OK\n", "a request queued at exit is answered"


def test_sigterm_while_sending_ready_is_a_clean_stop(reaper: Reaper, workdir: Path) -> None:
    """A stop right after the start: SIGTERM lands while sd_notify(READY=1)
    is still in progress.  Made deterministic by a full NOTIFY_SOCKET queue,
    which keeps the holder asleep in sendmsg() until the signal."""
    [(_port, socks)] = systemd_sockets(1, ("tcp",))
    holder = start_holder(reaper, workdir, [(socks["tcp"], "web")])
    assert holder.notify.fill() > 0
    assert wait_until(lambda: blocked_sending_to_unix_peer(holder.pid), 15), holder.stderr()

    holder.proc.send_signal(signal.SIGTERM)

    assert holder.wait_exit() == 0, holder.stderr()
    assert "stopping on SIGTERM" in holder.stderr()
    assert "Traceback" not in holder.stderr()


# -- refusing connections and rivals -----------------------------------------------------


def test_tcp_connection_to_held_port_is_reset_at_once(reaper: Reaper, workdir: Path) -> None:
    [(port, socks)] = systemd_sockets(1, ("tcp",))
    # Control: with only systemd's listening socket, a client connects and hangs.
    assert tcp_attempt(port, timeout=0.3)[0] == "timeout"

    holder = start_holder(reaper, workdir, [(socks["tcp"], "web")])
    holder.wait_ready()

    for host in ("127.0.0.1", "::1"):
        for _ in range(20):
            outcome, seconds = tcp_attempt(port, host)
            assert outcome == "reset", (host, outcome)
            assert seconds < FAST, (host, seconds)
    assert alive(holder.pid)
    # The listening socket itself is untouched (systemd would fail it on POLLHUP).
    assert socks["tcp"].getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1


def test_udp_rival_with_reuseaddr_cannot_share_a_held_port(reaper: Reaper, workdir: Path) -> None:
    [(port, socks)] = systemd_sockets(1, ("udp",))
    # Control: systemd's socket has SO_REUSEADDR, so a rival that sets it too
    # can share the port, IPv4 and IPv6 (facts §9).
    before = rival_results("udp", port, reuseaddr=True)
    assert before == {key: 0 for key in before}, before

    holder = start_holder(reaper, workdir, [(socks["udp"], "nfs")])
    holder.wait_ready()

    assert socks["udp"].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
    for reuseaddr in (True, False):
        after = rival_results("udp", port, reuseaddr=reuseaddr)
        assert after == {key: errno.EADDRINUSE for key in after}, (reuseaddr, after)


def test_tcp_rivals_cannot_bind_a_held_port(reaper: Reaper, workdir: Path) -> None:
    [(port, socks)] = systemd_sockets(1, ("tcp",))
    holder = start_holder(reaper, workdir, [(socks["tcp"], "web")])
    holder.wait_ready()
    for reuseaddr in (True, False):
        result = rival_results("tcp", port, reuseaddr=reuseaddr)
        assert result == {key: errno.EADDRINUSE for key in result}, (reuseaddr, result)


def test_datagrams_to_held_udp_port_are_drained(reaper: Reaper, workdir: Path) -> None:
    [(port, socks)] = systemd_sockets(1, ("udp",))
    inode = socket_inode(socks["udp"])

    def send(count: int, size: int) -> None:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as v6:
            for _ in range(count):
                v6.sendto(bytes(size), ("::1", port))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as v4:
            for i in range(count):
                v4.sendto(b"x" * (i % 100), ("127.0.0.1", port))

    send(20, 500)
    # Control: nothing reads systemd's socket yet, so the datagrams pile up.
    queued = udp_rx_queue(inode)
    assert queued is not None and queued > 0

    holder = start_holder(reaper, workdir, [(socks["udp"], "syslog")])
    holder.wait_ready()
    assert wait_until(lambda: udp_rx_queue(inode) == 0, 5), udp_rx_queue(inode)

    send(300, 1400)
    assert wait_until(lambda: udp_rx_queue(inode) == 0, 5), udp_rx_queue(inode)
    assert alive(holder.pid)
    assert held_inodes(holder.pid, [socks["udp"]]) == {inode}


# -- releasing ---------------------------------------------------------------------------


# (holder, "P3/udp" -> "12345/udp", which of the five sockets the holder still has)
FourNames = tuple[Holder, Callable[[str], str], Callable[[], set[str]]]


@pytest.fixture
def four_names(reaper: Reaper, workdir: Path) -> FourNames:
    """a: P1/tcp P1/udp; b: P2/tcp; a and b: P3/udp; c: P4/tcp."""
    (p1, s1), (p2, s2), (p3, s3), (p4, s4) = systemd_sockets(4, ("tcp", "udp"))
    for extra in (s2["udp"], s3["tcp"], s4["udp"]):
        extra.close()
    ctl = control_socket(workdir / "ctl")
    layout = {
        "P1/tcp": (s1["tcp"], "a"),
        "P1/udp": (s1["udp"], "a"),
        "P2/tcp": (s2["tcp"], "b"),
        "P3/udp": (s3["udp"], "a,b"),
        "P4/tcp": (s4["tcp"], "c"),
    }
    numbers = {"P1": p1, "P2": p2, "P3": p3, "P4": p4}
    holder = start_holder(reaper, workdir, [*layout.values(), (ctl, CONTROL_FDNAME)])
    holder.wait_ready()

    def real(key: str) -> str:
        label, proto = key.split("/")
        return f"{numbers[label]}/{proto}"

    def still_held() -> set[str]:
        inodes = socket_inodes_of(holder.pid)
        return {key for key, (sock, _name) in layout.items() if socket_inode(sock) in inodes}

    return holder, real, still_held


def test_release_by_name_closes_exactly_that_names_sockets(four_names: FourNames) -> None:
    holder, real, still_held = four_names

    head, released = parse_reply(holder.ask("b"))

    assert head == "OK"
    assert sorted(released) == sorted([real("P2/tcp"), real("P3/udp")])
    assert still_held() == {"P1/tcp", "P1/udp", "P4/tcp"}
    _head, status = parse_reply(holder.ask(".status"))
    assert status == {real("P1/tcp"): ["a"], real("P1/udp"): ["a"], real("P4/tcp"): ["c"]}
    holder.notify.wait_for("STATUS", "Holding 3 port(s) for 2 name(s)", timeout=5)
    assert alive(holder.pid)


@pytest.mark.parametrize("name", ["a", "b"])
def test_port_of_two_names_is_released_by_either(four_names: FourNames, name: str) -> None:
    holder, real, still_held = four_names

    _head, released = parse_reply(holder.ask(name))

    assert real("P3/udp") in released
    assert "P3/udp" not in still_held()
    assert "P4/tcp" in still_held()


def test_unknown_name_releases_nothing(four_names: FourNames) -> None:
    holder, _real, still_held = four_names
    assert holder.ask("nosuchname") == "OK\n"
    assert still_held() == {"P1/tcp", "P1/udp", "P2/tcp", "P3/udp", "P4/tcp"}


def test_release_all_then_exit_0(four_names: FourNames) -> None:
    holder, real, still_held = four_names

    head, released = parse_reply(holder.ask("*"))

    assert head == "OK"
    assert sorted(released) == sorted(real(k) for k in ("P1/tcp", "P1/udp", "P2/tcp", "P3/udp", "P4/tcp"))
    assert holder.wait_exit() == 0, holder.stderr()
    assert "STOPPING" in holder.notify.wait_for("STOPPING", "1")[1]


def test_requests_queued_when_the_last_port_goes_are_all_answered(four_names: FourNames) -> None:
    holder, real, _still_held = four_names
    os.kill(holder.pid, signal.SIGSTOP)
    try:
        clients = [Client(holder.control_path) for _ in range(5)]
        for client, text in zip(clients, ["a", "b", "c", ".status", "a"], strict=True):
            client.send(text.encode())
    finally:
        os.kill(holder.pid, signal.SIGCONT)

    replies = [parse_reply(client.receive()) for client in clients]
    # each released port with all its owners: portrelease stops their units
    assert replies[0] == ("OK", {real("P1/tcp"): ["a"], real("P1/udp"): ["a"], real("P3/udp"): ["a", "b"]})
    assert replies[1] == ("OK", {real("P2/tcp"): ["b"]})
    assert replies[2] == ("OK", {real("P4/tcp"): ["c"]})
    assert replies[3] == ("OK", {}), "holds nothing any more"
    assert replies[4] == ("OK", {})
    assert holder.wait_exit() == 0, holder.stderr()
    for client in clients:
        client.sock.close()


def test_traffic_arriving_with_the_release_of_its_socket_is_harmless(four_names: FourNames) -> None:
    """A datagram or connection that becomes ready in the same poll round as
    the request that releases its socket must not crash the holder."""
    holder, real, still_held = four_names
    port_p1 = int(real("P1/udp").split("/")[0])
    port_p2 = int(real("P2/tcp").split("/")[0])
    os.kill(holder.pid, signal.SIGSTOP)
    try:
        client = Client(holder.control_path)
        client.send(b"a")  # ready first: handled first, closes P1 and P3
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"late", ("127.0.0.1", port_p1))
        pending = socket.create_connection(("127.0.0.1", int(real("P1/tcp").split("/")[0])), timeout=1)
        client.send(b"b")
        pending2 = socket.create_connection(("127.0.0.1", port_p2), timeout=1)
    finally:
        os.kill(holder.pid, signal.SIGCONT)

    assert parse_reply(client.receive())[0] == "OK"
    assert parse_reply(client.receive())[0] == "OK"
    assert alive(holder.pid), holder.stderr()
    assert parse_reply(holder.ask(".status")) == ("OK", {real("P4/tcp"): ["c"]}), holder.stderr()
    assert still_held() == {"P4/tcp"}
    assert "Traceback" not in holder.stderr()
    for sock in (pending, pending2, client.sock):
        sock.close()


# -- refusing bad requests -------------------------------------------------------------------


BAD_REQUESTS = {
    "forged-uid": (b"*", (os.getpid(), 65534, 65534), "ERR permission denied"),
    "oversized": (b"x" * 1025, None, "ERR request too long"),
    "oversized-big": (b"*" * 60000, None, "ERR request too long"),
    "not-utf8": (b"\xff\xfe*", None, "ERR malformed request"),
    "empty": (b"", None, "ERR malformed request"),
    "newline": (b"a\nb", None, "ERR malformed request"),
    "slash": (b"../a", None, "ERR malformed request"),
}


@pytest.mark.parametrize("kind", list(BAD_REQUESTS))
def test_bad_request_gets_err_and_holder_carries_on(four_names: FourNames, kind: str) -> None:
    holder, _real, still_held = four_names
    data, creds, expected = BAD_REQUESTS[kind]

    with Client(holder.control_path) as client:
        client.send(data, creds)
        reply = client.receive()

    assert reply.startswith("ERR ")
    assert reply == expected + "\n"
    assert alive(holder.pid)
    assert still_held() == {"P1/tcp", "P1/udp", "P2/tcp", "P3/udp", "P4/tcp"}
    head, ports = parse_reply(holder.ask("c"))
    assert head == "OK" and len(ports) == 1, "a valid request is still served"


def test_own_uid_in_credentials_is_accepted(four_names: FourNames) -> None:
    # Control for the forged-uid case: the same datagram with honest credentials works.
    holder, real, _still_held = four_names
    with Client(holder.control_path) as client:
        client.send(b"c", (os.getpid(), os.geteuid(), os.getegid()))
        assert parse_reply(client.receive()) == ("OK", {real("P4/tcp"): ["c"]})


# -- scale --------------------------------------------------------------------------------------

THOUSAND = 1000


def test_thousand_reservations_in_both_protocols(reaper: Reaper, workdir: Path) -> None:
    """2000 inherited sockets, with only a few fds to spare (the tightest
    RLIMIT_NOFILE the interpreter itself can start with): the holder comes up,
    resets a connection to every TCP port at once without running out of fds,
    and '*' lets it all go."""
    pairs = systemd_sockets(THOUSAND, ("tcp", "udp"))
    ctl = control_socket(workdir / "ctl")
    passed = [(sock, f"svc{port}") for port, socks in pairs for sock in socks.values()]
    passed.append((ctl, CONTROL_FDNAME))
    soft = 3 + len(passed) + 3

    start = time.monotonic()
    holder = start_holder(reaper, workdir, passed, nofile_soft=soft)
    holder.wait_ready(timeout=20)
    ready = time.monotonic() - start

    start = time.monotonic()
    slowest = 0.0
    for port, _socks in pairs:
        outcome, seconds = tcp_attempt(port)
        assert outcome == "reset", (port, outcome, holder.stderr())
        slowest = max(slowest, seconds)
    connects = time.monotonic() - start
    assert slowest < FAST, slowest

    head, released = parse_reply(holder.ask("*", timeout=10))
    assert head == "OK" and len(released) == 2 * THOUSAND
    assert holder.wait_exit() == 0, holder.stderr()
    print(f"2001 fds: ready after {ready:.3f} s; 1000 resets in {connects:.3f} s (slowest {slowest * 1000:.1f} ms)")
    for sock, _name in passed:
        sock.close()


def test_default_soft_fd_limit_cannot_start_a_holder_with_2000_sockets(reaper: Reaper, workdir: Path) -> None:
    """With systemd's default LimitNOFILE= soft limit (1024) and 2000 inherited
    fds, no fd below the limit is free: not even the dynamic loader can open
    libpython, so nothing the holder does at run time could help.  The unit
    must raise the limit itself."""
    pairs = systemd_sockets(THOUSAND, ("tcp", "udp"))
    passed = [(sock, f"svc{port}") for port, socks in pairs for sock in socks.values()]

    holder = start_holder(reaper, workdir, passed, nofile_soft=1024)
    assert holder.wait_exit() != 0
    assert "Error 24" in holder.stderr() or "Too many open files" in holder.stderr(), holder.stderr()

    for unit in (ROOT / "units/system/portreserve.service", ROOT / "units/user/portreserve.service"):
        limits = re.findall(r"^LimitNOFILE=(\d+)(?::(\d+))?$", unit.read_text(), re.MULTILINE)
        assert limits, f"{unit} keeps the default soft limit of 1024"
        # Enough for every port in both protocols, plus the interpreter's own.
        assert int(limits[-1][0]) >= 2 * 65535 + 64, f"{unit}: LimitNOFILE={limits[-1][0]} too small"
    for sock, _name in passed:
        sock.close()
