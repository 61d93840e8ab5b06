"""portrelease: usage, its answers from a real holder, and waiting for ports.

The holder here is the real one, started with LISTEN_FDS like systemd starts it;
the test keeps its own copy of every socket, as systemd does.  That is exactly
the situation in which closing the holder's copy is not enough (facts §1), so
it is how portrelease's timeout path is reached honestly.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import (
    CONTROL_FDNAME,
    PORTRELEASE,
    Holder,
    Reaper,
    alive,
    child_env,
    control_socket,
    free_ports,
    parse_reply,
    plain_bind,
    portrelease,
    short_dir,
    socket_inode,
    socket_inodes_of,
    start_holder,
    systemd_sockets,
)

from portreserve.release import EXIT_FAILED, EXIT_OK, Release, parse_args


def own_comm() -> str:
    return Path("/proc/self/comm").read_text().strip()


# -- usage -----------------------------------------------------------------------------


def test_help_exits_0_and_documents_name_and_timeout() -> None:
    result = portrelease("--help")
    assert result.returncode == 0, result.stderr
    assert "NAME" in result.stdout
    assert "--timeout" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(
    "args",
    [[], ["--timeout", "0", "cups"], ["--timeout", "-1", "cups"], ["--timeout", "soon", "cups"], ["--bogus", "cups"]],
    ids=["no-name", "zero-timeout", "negative-timeout", "bad-timeout", "unknown-option"],
)
def test_bad_usage_exits_2(args: list[str]) -> None:
    result = portrelease(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "usage:" in result.stderr


def test_user_and_system_are_exclusive() -> None:
    assert portrelease("--user", "--system", "cups").returncode == 2


# -- answers from a real holder ---------------------------------------------------------------


HolderWith = tuple[Holder, int, dict[str, socket.socket]]


@pytest.fixture
def holder_with(reaper: Reaper, workdir: Path) -> HolderWith:
    """A real holder for 'web' (P/tcp) and 'dns' (P/udp); returns (holder, port, sockets)."""
    [(port, socks)] = systemd_sockets(1, ("tcp", "udp"))
    ctl = control_socket(workdir / "ctl")
    holder = start_holder(reaper, workdir, [(socks["tcp"], "web"), (socks["udp"], "dns"), (ctl, CONTROL_FDNAME)])
    holder.wait_ready()
    return holder, port, socks


@pytest.mark.parametrize("name, proto", [("web", "tcp"), ("dns", "udp")])
def test_port_still_bound_elsewhere_times_out_naming_the_holder(
    holder_with: HolderWith,
    name: str,
    proto: str,
) -> None:
    holder, port, socks = holder_with

    start = time.monotonic()
    result = portrelease("--socket", str(holder.control_path), "--timeout", "0.5", name)
    elapsed = time.monotonic() - start

    assert result.returncode == 1, (result.stdout, result.stderr)
    assert 0.5 <= elapsed < 5, elapsed
    assert f"{port}/{proto} ({name}) is still in use after 0.5 s" in result.stderr
    # The socket the test holds (systemd's copy, in real life) is named.
    assert f"{own_comm()} (pid {os.getpid()})" in result.stderr
    # The holder did drop its own copy.
    assert socket_inode(socks[proto]) not in socket_inodes_of(holder.pid)


def test_oversized_name_is_refused_by_the_holder(holder_with: HolderWith) -> None:
    holder, port, socks = holder_with

    result = portrelease("--socket", str(holder.control_path), "x" * 2000)

    assert result.returncode == 1
    assert "refused" in result.stderr and "request too long" in result.stderr
    assert alive(holder.pid)
    assert parse_reply(holder.ask(".status"))[1] == {f"{port}/tcp": ["web"], f"{port}/udp": ["dns"]}


NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run portrelease as another user")
@pytest.mark.skipif(not os.access("/usr/bin/python3", os.X_OK), reason="needs a python3 that any user may run")
def test_request_from_another_user_is_refused(reaper: Reaper) -> None:
    """Real credentials, not forged ones: portrelease run as nobody reaches a
    control socket it may write to, and the holder still says no."""
    with short_dir() as workdir:
        workdir.chmod(0o755)
        [(port, socks)] = systemd_sockets(1, ("tcp",))
        ctl = control_socket(workdir / "ctl")
        (workdir / "ctl").chmod(0o666)
        holder = start_holder(reaper, workdir, [(socks["tcp"], "web"), (ctl, CONTROL_FDNAME)])
        holder.wait_ready()

        def become_nobody() -> None:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)

        result = subprocess.run(
            ["/usr/bin/python3", *PORTRELEASE[1:], "--socket", str(workdir / "ctl"), "web"],
            env=child_env(),
            preexec_fn=become_nobody,
            capture_output=True,
            text=True,
            timeout=30,
            cwd="/",
        )
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert "refused 'web': permission denied" in result.stderr
        assert socket_inode(socks["tcp"]) in socket_inodes_of(holder.pid), "nothing was released"


def test_holder_that_never_answers_times_out(workdir: Path) -> None:
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    mute.bind(str(workdir / "ctl"))  # a live socket that reads nothing
    try:
        start = time.monotonic()
        result = portrelease("--socket", str(workdir / "ctl"), "--timeout", "0.3", "web")
        assert result.returncode == 1
        assert time.monotonic() - start < 5
        assert "did not answer within 0.3 s" in result.stderr
    finally:
        mute.close()


def test_several_names_in_one_call(reaper: Reaper, workdir: Path) -> None:
    (p1, s1), (p2, s2) = systemd_sockets(2, ("tcp",))
    ctl = control_socket(workdir / "ctl")
    holder = start_holder(reaper, workdir, [(s1["tcp"], "web"), (s2["tcp"], "mail"), (ctl, CONTROL_FDNAME)])
    holder.wait_ready()
    # systemd's copies go away at once, so the ports become free.
    s1["tcp"].close()
    s2["tcp"].close()

    result = portrelease("--socket", str(holder.control_path), "-v", "web", "nosuchname", "mail")

    assert result.returncode == 0, result.stderr
    assert f"{p1}/tcp (web)" in result.stdout and f"{p2}/tcp (mail)" in result.stdout
    assert "nosuchname: nothing reserved" in result.stdout
    assert holder.wait_exit() == 0
    plain_bind("tcp", p1).close()
    plain_bind("tcp", p2).close()


# -- waiting for ports ---------------------------------------------------------------------------


def release_for(timeout: float = 5.0) -> Release:
    return Release(parse_args(["--timeout", str(timeout), "--socket", "/nonexistent", "x"]))


def test_wait_returns_at_once_when_ports_are_free() -> None:
    p1, p2 = free_ports(2)
    ports = {(p1, "tcp"): "web", (p1, "udp"): "dns", (p2, "udp"): "ntp"}
    start = time.monotonic()
    assert release_for().wait(ports) == EXIT_OK
    assert time.monotonic() - start < 0.1


def test_wait_with_nothing_to_wait_for() -> None:
    start = time.monotonic()
    assert release_for().wait({}) == EXIT_OK
    assert time.monotonic() - start < 0.05


def test_wait_returns_soon_after_the_port_is_freed() -> None:
    [port] = free_ports(1, ("udp",))
    busy = plain_bind("udp", port)
    closer = threading.Timer(0.3, busy.close)
    closer.start()
    try:
        start = time.monotonic()
        assert release_for(timeout=5).wait({(port, "udp"): "dns"}) == EXIT_OK
        elapsed = time.monotonic() - start
    finally:
        closer.cancel()
        busy.close()
    assert 0.25 <= elapsed < 0.5, elapsed


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4-only", "ipv6-only"])
def test_wait_counts_a_port_busy_on_one_family_as_busy(family: int, capsys: pytest.CaptureFixture[str]) -> None:
    [port] = free_ports(1, ("tcp",))
    with socket.socket(family, socket.SOCK_STREAM) as busy:
        if family == socket.AF_INET6:
            busy.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        busy.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
        busy.listen()
        assert release_for(timeout=0.2).wait({(port, "tcp"): "web"}) == EXIT_FAILED
    assert f"{port}/tcp (web) is still in use" in capsys.readouterr().err
