"""The standalone holder (no systemd): `portreserve hold` reads the
configuration, binds every port itself, daemonizes, and portrelease talks to it
over the control socket.

Layout used by most tests (Pn are free high ports picked per test):

    alpha:  P1 (tcp+udp), P2/udp
    beta:   P3/tcp, P4/tcp
    gamma:  P4/tcp (shared with beta), prtest-svc (P5/tcp, from a private services file)
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import (
    PORTRESERVE,
    ROOT,
    NotifyListener,
    Reaper,
    alive,
    bind_errno,
    child_env,
    free_ports,
    pids_with_arg,
    portrelease,
    portreserve,
    rival_results,
    tcp_attempt,
    wait_gone,
    write_config,
)


@dataclasses.dataclass
class Daemon:
    socket: Path
    config: Path
    services: Path
    pid: int
    hold: subprocess.CompletedProcess[str]
    ports: dict[str, int]

    def key_args(self) -> list[str]:
        return ["--socket", str(self.socket), "--config-dir", str(self.config), "--services", str(self.services)]

    def release(self, *args: str) -> subprocess.CompletedProcess[str]:
        return portrelease("--socket", str(self.socket), *args)

    def status(self, *args: str) -> subprocess.CompletedProcess[str]:
        return portreserve("status", *self.key_args(), *args)

    def port(self, spec: str) -> tuple[str, int]:
        """'P4/tcp' -> ('tcp', number)."""
        label, proto = spec.split("/")
        return proto, self.ports[label]


LAYOUT = {
    "alpha": ["{P1}", "{P2}/udp"],
    "beta": ["{P3}/tcp", "{P4}/tcp"],
    "gamma": ["{P4}/tcp", "prtest-svc"],
}
OWNED = {
    "alpha": ["P1/tcp", "P1/udp", "P2/udp"],
    "beta": ["P3/tcp", "P4/tcp"],
    "gamma": ["P4/tcp", "P5/tcp"],
}
EVERY = sorted({spec for specs in OWNED.values() for spec in specs})


def write_layout(tmp_path: Path, layout: dict[str, list[str]] = LAYOUT) -> tuple[Path, Path, dict[str, int]]:
    numbers = free_ports(6)
    ports = {f"P{i}": n for i, n in enumerate(numbers, start=1)}
    services = tmp_path / "services"
    services.write_text(f"# private services(5) file\nprtest-svc\t{ports['P5']}/tcp\t\t# for gamma\n")
    config = write_config(
        tmp_path / "portreserve", {name: [line.format(**ports) for line in lines] for name, lines in layout.items()}
    )
    return config, services, ports


@pytest.fixture
def start_daemon(reaper: Reaper, workdir: Path, tmp_path: Path) -> Callable[..., Daemon]:
    def start(layout: dict[str, list[str]] = LAYOUT) -> Daemon:
        config, services, ports = write_layout(tmp_path, layout)
        sock = workdir / "ctl"
        reaper.marker(str(sock))
        hold = portreserve(
            "hold", "--socket", str(sock), "--config-dir", str(config), "--services", str(services), timeout=30
        )
        assert hold.returncode == 0, hold.stderr
        pids = pids_with_arg(str(sock))
        assert len(pids) == 1, f"expected one daemon, found {pids}"
        return Daemon(sock, config, services, pids[0], hold, ports)

    return start


def assert_held(daemon: Daemon, specs: list[str]) -> None:
    for spec in specs:
        proto, number = daemon.port(spec)
        for reuseaddr in (False, True):
            result = rival_results(proto, number, reuseaddr)
            assert result == {k: errno.EADDRINUSE for k in result}, (spec, reuseaddr, result)


def assert_free(daemon: Daemon, specs: list[str]) -> None:
    """Bindable by a fresh server without SO_REUSEADDR, IPv4 and IPv6."""
    for spec in specs:
        proto, number = daemon.port(spec)
        assert bind_errno(proto, number, socket.AF_INET6, "::") == 0, spec
        assert bind_errno(proto, number, socket.AF_INET, "0.0.0.0") == 0, spec


def status_table(result: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], str]:
    """{(name, 'PORT/PROTO'): state} from `portreserve status`."""
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("NAME"))
    table = {}
    for line in lines[header + 1 :]:
        name, port, state, *_detail = line.split()
        table[(name, port)] = state
    return table


def expected_table(daemon: Daemon, released: set[str]) -> dict[tuple[str, str], str]:
    table = {}
    for name, specs in OWNED.items():
        for spec in specs:
            proto, number = daemon.port(spec)
            table[(name, f"{number}/{proto}")] = "released" if spec in released else "held"
    return table


# -- holding -------------------------------------------------------------------------------


def test_hold_daemonizes_and_returns_once_every_port_is_bound(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()

    # Checked right after `hold` returned, without waiting for anything.
    assert_held(daemon, EVERY)
    assert (daemon.hold.stdout, daemon.hold.stderr) == ("", "")
    assert alive(daemon.pid)
    assert os.getsid(daemon.pid) == daemon.pid, "the daemon runs in its own session"
    assert daemon.socket.is_socket()
    assert oct(daemon.socket.stat().st_mode & 0o777) == oct(0o600)


def test_a_port_nobody_reserved_stays_bindable(start_daemon: Callable[..., Daemon]) -> None:
    # Control for the test above: the rival check does succeed on a free port.
    daemon = start_daemon()
    assert daemon.ports["P6"] not in [daemon.port(s)[1] for s in EVERY]
    for proto in ("tcp", "udp"):
        result = rival_results(proto, daemon.ports["P6"], reuseaddr=False)
        assert result == {k: 0 for k in result}, result


def test_tcp_connect_to_reserved_port_is_refused_at_once(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()
    # Refused is at once by nature: the kernel answers a connect to a bound
    # port that nobody listens on.  A port listened on and never accepted
    # from would hang instead ('timeout' after 10 s).
    for spec in ("P1/tcp", "P3/tcp", "P4/tcp", "P5/tcp"):
        for host in ("127.0.0.1", "::1"):
            outcome, seconds = tcp_attempt(daemon.port(spec)[1], host, timeout=10)
            assert outcome == "refused", (spec, host, outcome, seconds)


def test_second_holder_on_same_socket_refuses_to_start(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()
    again = portreserve("hold", *daemon.key_args())
    assert again.returncode == 1
    assert str(daemon.socket) in again.stderr
    assert pids_with_arg(str(daemon.socket)) == [daemon.pid]
    assert_held(daemon, ["P1/tcp"])


# -- status ----------------------------------------------------------------------------------


def test_status_shows_every_name_held(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()
    result = daemon.status()
    assert "standalone" in result.stdout.splitlines()[0]
    assert status_table(result) == expected_table(daemon, released=set())


def test_status_json_shows_held_and_released(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()
    assert daemon.release("alpha").returncode == 0

    result = daemon.status("--json")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["mode"] == "standalone"
    states = {(e["name"], f"{e['port']}/{e['proto']}"): e["state"] for e in document["ports"]}
    assert states == expected_table(daemon, released={"P1/tcp", "P1/udp", "P2/udp"})


def test_status_after_everything_is_released(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()
    assert daemon.release("*").returncode == 0
    assert wait_gone(daemon.pid, 10)
    assert status_table(daemon.status()) == expected_table(daemon, released=set(EVERY))


# -- releasing -------------------------------------------------------------------------------


def test_portrelease_frees_exactly_that_names_ports(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()

    result = daemon.release("alpha")

    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert_free(daemon, OWNED["alpha"])  # at once: portrelease only returns when they are
    assert_held(daemon, OWNED["beta"] + OWNED["gamma"])
    assert alive(daemon.pid)


def test_portrelease_verbose_says_what_it_released(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()
    result = daemon.release("-v", "beta")
    assert result.returncode == 0, result.stderr
    for spec in OWNED["beta"]:
        proto, number = daemon.port(spec)
        assert f"{number}/{proto}" in result.stdout


@pytest.mark.parametrize("name, other", [("beta", "gamma"), ("gamma", "beta")])
def test_port_in_two_files_is_released_by_either(start_daemon: Callable[..., Daemon], name: str, other: str) -> None:
    daemon = start_daemon()

    assert daemon.release(name).returncode == 0

    assert_free(daemon, OWNED[name])  # P4/tcp included
    assert_held(daemon, [s for s in OWNED[other] if s != "P4/tcp"] + OWNED["alpha"])
    table = status_table(daemon.status())
    proto, number = daemon.port("P4/tcp")
    assert table[(other, f"{number}/{proto}")] == "released"


def test_release_all_frees_everything_and_the_daemon_exits(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()

    result = daemon.release("*")

    assert (result.returncode, result.stderr) == (0, "")
    assert_free(daemon, EVERY)
    assert wait_gone(daemon.pid, 10), "the daemon exits once it holds nothing"
    assert not daemon.socket.exists(), "and removes its control socket"


def test_releasing_every_name_one_by_one_ends_the_daemon(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()
    for name in OWNED:
        assert daemon.release(name).returncode == 0
    assert_free(daemon, EVERY)
    assert wait_gone(daemon.pid, 10)


def test_sigterm_stops_the_daemon_and_frees_the_ports(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()
    os.kill(daemon.pid, signal.SIGTERM)
    assert wait_gone(daemon.pid, 10)
    assert_free(daemon, EVERY)
    assert not daemon.socket.exists()


@pytest.mark.parametrize("verbose", [False, True])
def test_portrelease_with_nothing_running_is_a_quiet_success(workdir: Path, verbose: bool) -> None:
    result = portrelease("--socket", str(workdir / "ctl"), *(["-v"] if verbose else []), "cups")
    assert (result.returncode, result.stderr) == (0, "")
    if verbose:
        assert "cups" in result.stdout and "no holder" in result.stdout
    else:
        assert result.stdout == ""


def test_portrelease_with_a_stale_socket_is_a_quiet_success(workdir: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(workdir / "ctl"))
    stale.close()  # the path stays, nobody listens
    result = portrelease("--socket", str(workdir / "ctl"), "cups")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize("verbose", [False, True])
def test_portrelease_of_an_unknown_name_is_a_quiet_success(start_daemon: Callable[..., Daemon], verbose: bool) -> None:
    daemon = start_daemon()
    result = daemon.release(*(["-v"] if verbose else []), "nosuchname")
    assert (result.returncode, result.stderr) == (0, "")
    if verbose:
        assert "nosuchname" in result.stdout and "nothing reserved" in result.stdout
    else:
        assert result.stdout == ""
    assert_held(daemon, EVERY)


# -- bad configuration ---------------------------------------------------------------------------

BROKEN = {
    "good": ["{P1}/tcp"],
    "broken": ["{P2}/udp", "no-such-service-xyz", "{P3}/sctp", "70000", "{P4}/tcp"],
}


def test_bad_config_line_costs_no_other_reservation(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(BROKEN)
    assert_held(daemon, ["P1/tcp", "P2/udp", "P4/tcp"])
    assert "broken:2" in daemon.hold.stderr, "the warnings are printed before going to the background"


def test_bad_config_lines_are_named_by_file_and_line_in_debug_mode(
    reaper: Reaper, workdir: Path, tmp_path: Path
) -> None:
    config, services, ports = write_layout(tmp_path, BROKEN)
    notify = NotifyListener(workdir / "notify")
    log = workdir / "hold.log"
    with open(log, "wb") as out:
        proc = reaper.popen(
            subprocess.Popen(
                [
                    *PORTRESERVE,
                    "hold",
                    "-d",
                    "--socket",
                    str(workdir / "ctl"),
                    "--config-dir",
                    str(config),
                    "--services",
                    str(services),
                ],
                env=child_env(NOTIFY_SOCKET=str(notify.path)),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        )
    pid, _ = notify.wait_for("READY", "1", proc=proc)
    assert pid == proc.pid, "-d stays in the foreground"
    stderr = log.read_text()
    broken = config / "broken"
    assert f"{broken}:2: unknown service 'no-such-service-xyz'" in stderr
    assert f"{broken}:3: unknown protocol 'sctp'" in stderr
    assert f"{broken}:4: port 70000 out of range" in stderr
    assert f"{broken}:1" not in stderr and f"{broken}:5" not in stderr
    for proto, label in (("tcp", "P1"), ("udp", "P2"), ("tcp", "P4")):
        assert bind_errno(proto, ports[label], socket.AF_INET, reuseaddr=True) == errno.EADDRINUSE, label
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0, log.read_text()
    notify.close()


def test_port_taken_by_another_process_costs_no_other_reservation(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    [taken] = free_ports(1, ("tcp",))
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind(("127.0.0.1", taken))
    squatter.listen()  # a server has it (a bound-only TCP socket is not in /proc/net/tcp)
    try:
        daemon = start_daemon({"web": ["{P1}/tcp", f"{taken}/tcp", "{P2}/udp"]})
        assert f"cannot reserve {taken}/tcp for web" in daemon.hold.stderr
        assert f"(pid {os.getpid()})" in daemon.hold.stderr, "says who has the port"
        assert_held(daemon, ["P1/tcp", "P2/udp"])
    finally:
        squatter.close()


def test_two_holders_started_at_once_leave_one_reachable_holder(reaper: Reaper, workdir: Path, tmp_path: Path) -> None:
    """Two `portreserve hold` at the same moment (a boot script and an admin):
    one holds the ports and owns the control socket, the other refuses, and a
    release reaches the one that holds the ports.  Each used to remove the
    other's socket file and bind its own, so the holder of the ports could end
    unreachable, and portrelease answered 'nothing running' with the ports
    still held."""
    config, services, ports = write_layout(tmp_path, {"alpha": ["{P1}/tcp"]})
    for round_ in range(20):
        sock = workdir / f"ctl{round_}"
        reaper.marker(str(sock))
        argv = [*PORTRESERVE, "hold", "--socket", str(sock), "--config-dir", str(config), "--services", str(services)]
        starts = [subprocess.Popen(argv, env=child_env(), stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outcomes = sorted(p.wait(timeout=30) for p in starts)
        errors = [p.stderr.read() for p in starts if p.stderr is not None]
        pids = pids_with_arg(str(sock))
        assert len(pids) == 1, (round_, outcomes, pids, errors)
        assert outcomes == [0, 1], (round_, outcomes, errors)  # one holds, the other refuses
        assert any("another holder is" in e for e in errors), (round_, errors)
        released = portrelease("--socket", str(sock), "-v", "alpha")
        assert f"released {ports['P1']}/tcp" in released.stdout, (round_, released.stdout, released.stderr, errors)
        assert wait_gone(pids[0], 10), round_
        assert bind_errno("tcp", ports["P1"], socket.AF_INET6, "::") == 0, round_
