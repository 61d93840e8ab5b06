"""portrelease: usage, its answers from a real holder, and waiting for ports.

The holder here is the real one, started with LISTEN_FDS like systemd starts
it.  portrelease takes its under-systemd path (the generator's map) through
`--user` with $XDG_RUNTIME_DIR pointing at a test directory that has the
user manager's layout; `--socket` takes the standalone path.  A test that
keeps its copy of a socket plays PID 1 holding the port: that is how the
timeout paths are reached honestly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import (
    PORTRELEASE,
    ROOT,
    Reaper,
    alive,
    child_env,
    control_socket,
    free_ports,
    plain_bind,
    portrelease,
    short_dir,
    start_holder,
    systemd_sockets,
    user_runtime,
    wait_until,
    write_config,
    write_map,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portreserve import __version__
from portreserve.release import Options, Release, parse_args, parse_fast, parse_slow


def own_comm() -> str:
    return Path("/proc/self/comm").read_text().strip()


# -- usage -----------------------------------------------------------------------------


def test_help_exits_0_and_documents_name_and_timeout() -> None:
    result = portrelease("--help")
    assert result.returncode == 0, result.stderr
    assert "NAME" in result.stdout
    assert "--timeout" in result.stdout
    assert result.stderr == ""


def test_version() -> None:
    result = portrelease("--version")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"portrelease {__version__}\n", "")


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--timeout", "0", "cups"],
        ["--timeout", "-1", "cups"],
        ["--timeout", "soon", "cups"],
        ["--timeout", "inf", "cups"],
        ["--timeout", "nan", "cups"],
        ["--bogus", "cups"],
        ["--holder-only", "cups"],
        ["--escaped", "cups"],
        ["-t"],
    ],
    ids=["no-name", "zero", "negative", "bad", "inf", "nan", "unknown", "holder-only-gone", "escaped-gone", "t-alone"],
)
def test_bad_usage_exits_2(args: list[str]) -> None:
    result = portrelease(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "usage:" in result.stderr


def test_user_and_system_are_exclusive() -> None:
    assert portrelease("--user", "--system", "cups").returncode == 2


# -- parse_fast agrees with argparse -------------------------------------------------------

ARG_TOKENS = st.one_of(
    st.sampled_from(
        [
            "-v",
            "--verbose",
            "-t",
            "--timeout",
            "--timeout=2",
            "--timeout=",
            "-t0.5",
            "-vt",
            "--user",
            "--system",
            "--socket",
            "--socket=/x",
            "--socket=",
            "--",
            "-",
            "*",
            "1",
            "0.25",
            "-1",
            "inf",
            "nan",
            "cups",
            "--us",
            "--verb",
            "-x",
            "--help",
            "",
            " ",
            "a b",
        ]
    ),
    st.text(min_size=0, max_size=6),
)


def parsed(opts: Options | None) -> tuple[object, ...] | None:
    if opts is None:
        return None
    return (opts.names, opts.verbose, repr(opts.timeout), opts.user, opts.socket)  # repr: nan == nan


def argparse_result(argv: list[str]) -> tuple[object, ...] | None:
    """What argparse makes of argv, or None when it would exit (help, usage)."""
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            return parsed(parse_slow(argv))
        except SystemExit:
            return None


@settings(max_examples=1500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ARG_TOKENS, max_size=6))
def test_fast_parser_agrees_with_argparse(argv: list[str]) -> None:
    """parse_fast handles the common forms itself and returns None for the
    rest, which argparse then handles: whenever it answers, it answers what
    argparse would."""
    fast = parse_fast(argv)
    if fast is None:
        return
    slow = argparse_result(argv)
    assert parsed(fast) == slow, argv


@pytest.mark.parametrize(
    "argv",
    [
        ["cups"],
        ["-v", "cups", "ipp"],
        ["-t", "2", "cups"],
        ["--timeout=2", "cups"],
        ["--user", "cups"],
        ["--system", "-v", "*"],
        ["--socket", "/run/x", "cups"],
        ["--", "-v"],
        ["cups", "--", "--user"],
        ["-"],
        ["cups", "-v", "ipp"],
        ["-t", "1e-3", "cups"],
    ],
)
def test_fast_parser_handles_the_common_forms(argv: list[str]) -> None:
    """Control for the property above: these never fall back to argparse,
    and agree with it."""
    fast = parse_fast(argv)
    assert fast is not None, argv
    assert parsed(fast) == argparse_result(argv)


# -- under systemd (the generator's map): answers from a real holder -------------------------


def test_name_not_in_the_map_is_a_quiet_success_without_asking(workdir: Path) -> None:
    gen, ctl, env = user_runtime(workdir)
    write_map(gen, {"web": [(1, "tcp")]})
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    mute.bind(str(ctl))  # a holder that would never answer
    try:
        quiet = portrelease("--user", "nosuchname", env=env)
        verbose = portrelease("--user", "-v", "nosuchname", env=env)
    finally:
        mute.close()
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert (verbose.returncode, verbose.stdout, verbose.stderr) == (0, "nosuchname: nothing reserved\n", "")


def test_free_ports_are_not_asked_for(workdir: Path) -> None:
    """Every port of the name bindable already (released before): exit 0 at
    once, without asking the holder (which here would never answer)."""
    [port] = free_ports(1)
    gen, ctl, env = user_runtime(workdir)
    write_map(gen, {"web": [(port, "tcp"), (port, "udp")]})
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    mute.bind(str(ctl))
    try:
        result = portrelease("--user", "-v", "-t", "30", "web", env=env, timeout=20)
        with pytest.raises(BlockingIOError):
            mute.recv(100, socket.MSG_DONTWAIT)  # no request was sent
    finally:
        mute.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"web: {port}/tcp {port}/udp free\n"


def test_release_through_the_holder_several_names_at_once(reaper: Reaper, workdir: Path) -> None:
    (p1, s1), (p2, s2) = systemd_sockets(2, ("tcp", "udp"))
    gen, ctl_path, env = user_runtime(workdir)
    owners = {"web": [(p1, "tcp")], "dns": [(p1, "udp"), (p2, "udp")], "mail": [(p2, "tcp")]}
    holder = start_holder(
        reaper,
        workdir,
        [s1["tcp"], s1["udp"], s2["tcp"], s2["udp"]],
        owners,
        control=control_socket(ctl_path),
        generator_dir=gen,
    )
    holder.wait_ready()

    result = portrelease("--user", "-v", "web", "nosuchname", "dns", env=env)

    assert result.returncode == 0, result.stderr
    assert f"web: released {p1}/tcp\n" in result.stdout
    assert f"dns: released {' '.join(f'{p}/udp' for p in sorted([p1, p2]))}\n" in result.stdout
    assert "nosuchname: nothing reserved" in result.stdout
    holder.assert_released([(p1, "tcp"), (p1, "udp"), (p2, "udp")])
    assert holder.held() == {f"{p2}/tcp"}
    assert alive(holder.pid)


@pytest.mark.parametrize("name, proto", [("web", "tcp"), ("dns", "udp")])
def test_port_still_bound_elsewhere_times_out_naming_the_holder(
    reaper: Reaper, workdir: Path, name: str, proto: str
) -> None:
    """PID 1 (here: the test) keeps its copy: the holder drops its own and
    waits; portrelease gives up after its timeout, naming who has the port."""
    [(port, socks)] = systemd_sockets(1, ("tcp", "udp"))
    gen, ctl_path, env = user_runtime(workdir)
    holder = start_holder(
        reaper,
        workdir,
        [socks["tcp"], socks["udp"]],
        {"web": [(port, "tcp")], "dns": [(port, "udp")]},
        control=control_socket(ctl_path),
        generator_dir=gen,
        keep=True,
    )
    holder.wait_ready()

    start = time.monotonic()
    result = portrelease("--user", "--timeout", "0.5", name, env=env)
    elapsed = time.monotonic() - start

    assert result.returncode == 1, (result.stdout, result.stderr)
    assert elapsed >= 0.5, elapsed  # a lower bound: load only makes it longer
    assert "did not answer within 0.5 s" in result.stderr
    assert f"{port}/{proto} is still held by {own_comm()} (pid {os.getpid()})" in result.stderr
    # The holder did drop its own copy, and only that one.  Not necessarily
    # by the time portrelease gave up: a loaded machine may run the holder
    # later than that.
    other = "udp" if proto == "tcp" else "tcp"
    assert wait_until(lambda: f"{port}/{proto}" not in holder.held(), 10), holder.stderr()
    assert holder.held() == {f"{port}/{other}"}
    for sock in socks.values():
        sock.close()


# -- standalone (--socket): answers from a real holder -----------------------------------------


def test_oversized_name_is_refused_by_the_holder(reaper: Reaper, workdir: Path) -> None:
    [(port, socks)] = systemd_sockets(1, ("tcp",))
    holder = start_holder(
        reaper, workdir, [socks["tcp"]], {"web": [(port, "tcp")]}, control=control_socket(workdir / "ctl")
    )
    holder.wait_ready()

    result = portrelease("--socket", str(holder.control_path), "x" * 2000)

    assert result.returncode == 1
    assert "refused" in result.stderr and "request too long" in result.stderr
    assert alive(holder.pid)
    assert holder.ask(".status").ports == {f"{port}/tcp": "held"}


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
        holder = start_holder(reaper, workdir, [socks["tcp"]], {"web": [(port, "tcp")]}, control=ctl)
        holder.wait_ready()

        def become_nobody() -> None:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)

        # nobody may not read the checkout (a clone in /root, mode 0700 on
        # Debian): a copy of the package it can read.
        lib = workdir / "lib"
        shutil.copytree(ROOT / "portreserve", lib / "portreserve", ignore=shutil.ignore_patterns("__pycache__"))
        result = subprocess.run(
            ["/usr/bin/python3", *PORTRELEASE[1:], "--socket", str(workdir / "ctl"), "web"],
            env=child_env(PYTHONPATH=str(lib)),
            preexec_fn=become_nobody,
            capture_output=True,
            text=True,
            timeout=30,
            cwd="/",
        )
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert "refused 'web': permission denied" in result.stderr
        assert holder.held() == {f"{port}/tcp"}, "nothing was released"


def test_several_names_in_one_call_standalone(reaper: Reaper, workdir: Path) -> None:
    (p1, s1), (p2, s2) = systemd_sockets(2, ("tcp",))
    ctl = control_socket(workdir / "ctl")
    holder = start_holder(
        reaper, workdir, [s1["tcp"], s2["tcp"]], {"web": [(p1, "tcp")], "mail": [(p2, "tcp")]}, control=ctl
    )
    holder.wait_ready()

    result = portrelease("--socket", str(holder.control_path), "-v", "web", "nosuchname", "mail")

    assert result.returncode == 0, result.stderr
    assert f"web: released {p1}/tcp" in result.stdout and f"mail: released {p2}/tcp" in result.stdout
    assert "nosuchname: nothing reserved" in result.stdout
    assert holder.wait_exit() == 0
    holder.assert_released([(p1, "tcp"), (p2, "tcp")])


# -- a holder that never answers (the original C portreserve) ----------------------------------


def mute_holder(path: Path, drop: bool = True) -> tuple[socket.socket, threading.Event]:
    """A live control socket that reads every request and drops it, as the
    original C holder does.  Returns (socket, stop event)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return

    threading.Thread(target=serve, daemon=True).start()
    return sock, stop


class LateClose:
    """Closes `sock` from a timer thread `after` seconds from the start of
    the `with` block, and says afterwards whether it had: whether something
    happened before or after the close is a question of order, not of
    durations, and no load can change the answer."""

    def __init__(self, sock: socket.socket, after: float) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._closed = False
        self._timer = threading.Timer(after, self._close)

    def _close(self) -> None:
        with self._lock:  # held across the close: had_closed() waits for a close under way
            self._sock.close()
            self._closed = True

    def had_closed(self) -> bool:
        with self._lock:
            return self._closed

    def __enter__(self) -> LateClose:
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._timer.cancel()
        self._sock.close()


# Long enough that only waiting the whole timeout crosses half of it: a
# loaded machine stretches a return "at once" to seconds, not to 30 s.
PATIENT_TIMEOUT = 60.0


def user_config(workdir: Path, files: dict[str, list[str]]) -> dict[str, str]:
    """Environment for `portrelease --user` reading this configuration (and
    no generator map: the standalone path)."""
    home = workdir / "config"
    write_config(home / "portreserve", files)
    return {"XDG_CONFIG_HOME": str(home), "XDG_CONFIG_DIRS": str(workdir / "none"), "XDG_RUNTIME_DIR": str(workdir)}


def test_holder_that_never_answers_is_not_waited_for_once_the_ports_are_free(workdir: Path) -> None:
    """The old holder let go of the port (or never had it): portrelease
    looks at the configured ports instead of waiting its whole timeout."""
    [port] = free_ports(1)
    env = user_config(workdir, {"web": [f"{port}"]})
    mute, stop = mute_holder(workdir / "ctl")
    timeout = PATIENT_TIMEOUT
    try:
        start = time.monotonic()
        result = portrelease(
            "--user", "--socket", str(workdir / "ctl"), "-t", str(timeout), "-v", "web", env=env, timeout=2 * timeout
        )
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        mute.close()
    assert result.returncode == 0, result.stderr
    assert f"web: released {port}/tcp {port}/udp" in result.stdout
    print(f"portrelease against a mute holder: {elapsed:.3f} s, {elapsed / timeout:.3f} of its timeout")
    assert elapsed < timeout / 2, "it waited for the mute holder's answer"


def test_holder_that_never_answers_and_frees_the_port_later(workdir: Path) -> None:
    """The old holder closes the port a moment after the request:
    portrelease returns soon after that, not at its timeout."""
    [port] = free_ports(1, ("udp",))
    env = user_config(workdir, {"dns": [f"{port}/udp"]})
    mute, stop = mute_holder(workdir / "ctl")
    timeout = PATIENT_TIMEOUT
    try:
        with LateClose(plain_bind("udp", port), after=0.3) as closer:
            start = time.monotonic()
            result = portrelease(
                "--user", "--socket", str(workdir / "ctl"), "-t", str(timeout), "dns", env=env, timeout=2 * timeout
            )
            elapsed = time.monotonic() - start
            closed_before_return = closer.had_closed()
    finally:
        stop.set()
        mute.close()
    assert (result.returncode, result.stderr) == (0, "")
    assert closed_before_return, "portrelease returned while the port was still bound"
    assert elapsed < timeout / 2, f"it waited {elapsed:.1f} s of its {timeout:g} s timeout"


def test_holder_that_never_answers_with_the_port_still_bound_fails_at_the_timeout(workdir: Path) -> None:
    [port] = free_ports(1, ("tcp",))
    env = user_config(workdir, {"web": [f"{port}/tcp"]})
    busy = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    busy.bind(("::", port))
    busy.listen()
    mute, stop = mute_holder(workdir / "ctl")
    try:
        start = time.monotonic()
        result = portrelease("--user", "--socket", str(workdir / "ctl"), "--timeout", "0.5", "web", env=env)
        elapsed = time.monotonic() - start
    finally:
        busy.close()
        stop.set()
        mute.close()
    assert result.returncode == 1
    assert elapsed >= 0.5
    assert "did not answer within 0.5 s" in result.stderr
    assert f"{port}/tcp is still held by {own_comm()} (pid {os.getpid()})" in result.stderr


def test_without_a_map_an_answer_to_ask_again_is_asked_again(workdir: Path) -> None:
    """No map (standalone, or PID 1 rewriting it during a daemon-reload,
    docs/design.md F18), and the holder is stepping aside: its RETRY is
    asked again, as under systemd, not taken for a refusal (it was: exit 1,
    "the holder refused")."""
    [port] = free_ports(1, ("tcp",))
    holder = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    holder.bind(str(workdir / "ctl"))
    holder.settimeout(PATIENT_TIMEOUT)
    asked: list[bytes] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            for answer in (b"RETRY\n", f"OK\n{port}/tcp free\n".encode()):
                data, address = holder.recvfrom(4096)
                asked.append(data)
                holder.sendto(answer, address)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        result = portrelease("--socket", str(workdir / "ctl"), "-v", "-t", str(PATIENT_TIMEOUT), "web")
    finally:
        holder.close()
        server.join()
    assert (result.returncode, result.stderr) == (0, ""), result
    assert asked == [b"web", b"web"]
    assert f"web: released {port}/tcp" in result.stdout


# -- waiting for ports ---------------------------------------------------------------------------


def release_for(timeout: float = 5.0) -> Release:
    return Release(parse_args(["--timeout", str(timeout), "--socket", "/nonexistent", "x"]))


def test_wait_returns_at_once_when_ports_are_free() -> None:
    p1, p2 = free_ports(2)
    assert release_for().wait([(p1, "tcp"), (p1, "udp"), (p2, "udp")]) == []


def test_wait_with_nothing_to_wait_for() -> None:
    assert release_for().wait([]) == []


def test_wait_returns_once_the_port_is_freed() -> None:
    [port] = free_ports(1, ("udp",))
    with LateClose(plain_bind("udp", port), after=0.3) as closer:
        assert release_for(timeout=PATIENT_TIMEOUT).wait([(port, "udp")]) == []
        assert closer.had_closed(), "wait() returned while the port was still bound"


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4-only", "ipv6-only"])
def test_wait_counts_a_port_busy_on_one_family_as_busy(family: int) -> None:
    [port] = free_ports(1, ("tcp",))
    with socket.socket(family, socket.SOCK_STREAM) as busy:
        if family == socket.AF_INET6:
            busy.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        busy.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
        busy.listen()
        assert release_for(timeout=0.2).wait([(port, "tcp")]) == [(port, "tcp")]


# -- no control socket: portrelease stops the units itself ---------------------------------


def fake_systemctl(directory: Path, units: list[str], stop_status: int, show_hangs: bool = False) -> dict[str, str]:
    """The environment for a systemctl in PATH that shows `units` active and
    whose stop exits with stop_status, saying why on stderr as the real one does
    (stop_status 0: it queues the job and returns only with --no-block, else it
    hangs as behind a PID 1 that never runs the job).  show_hangs: its show
    never answers (PID 1 reloading)."""
    bindir = directory / "bin"
    bindir.mkdir()
    script = bindir / "systemctl"
    script.write_text(
        "#!/bin/sh\n"
        'case " $* " in\n'
        "*' show '*) [ -n \"$FAKE_SHOW_HANGS\" ] && exec sleep 600\n"
        "    for u in $FAKE_UNITS; do printf 'Id=%s\\nActiveState=active\\n\\n' \"$u\"; done ;;\n"
        "*' stop --no-block '*) [ \"$FAKE_STOP\" = 0 ] && exit 0\n"
        "    echo 'Failed to stop units: Access denied' >&2; exit \"$FAKE_STOP\" ;;\n"
        "*' stop '*) [ \"$FAKE_STOP\" = 0 ] && exec sleep 600\n"
        "    echo 'Failed to stop units: Access denied' >&2; exit \"$FAKE_STOP\" ;;\n"
        "esac\n"
    )
    script.chmod(0o755)
    path = f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    return {
        "PATH": path,
        "FAKE_UNITS": " ".join(units),
        "FAKE_STOP": str(stop_status),
        "FAKE_SHOW_HANGS": "1" if show_hangs else "",
    }


def release_without_control_socket(
    workdir: Path, timeout: str, source: str = "map", stop_status: int = 0, show_hangs: bool = False
) -> tuple[int, subprocess.CompletedProcess[str], float]:
    """`portrelease --user -t TIMEOUT web` with no control socket, against a
    fake systemctl (fake_systemctl) and PID 1's copy of web's TCP port, which
    nothing frees but a stop.  source: where web's port is read from, the
    generator's map, or ("configuration") the configuration, with no map
    under a running manager.  Returns (port, result, seconds it took)."""
    ((port, socks),) = systemd_sockets(1)
    if source == "map":
        gen, _ctl, env = user_runtime(workdir)  # no control socket at _ctl
        write_map(gen, {"web": [(port, "tcp")]})
    else:
        env = user_config(workdir, {"web": [f"{port}/tcp"]})
        (workdir / "systemd").mkdir()
        (workdir / "systemd" / "private").touch()  # a user manager runs; no generator output, no control socket
    env.update(fake_systemctl(workdir, [f"portreserve-{port}-tcp.socket"], stop_status, show_hangs))
    try:
        started = time.monotonic()
        result = portrelease("--user", "-t", timeout, "web", env=env, timeout=60)
        return port, result, time.monotonic() - started
    finally:
        socks["tcp"].close()


@pytest.mark.parametrize("source", ["map", "configuration"])
def test_a_refused_stop_without_a_control_socket_is_said_once_and_not_waited_out(workdir: Path, source: str) -> None:
    """No control socket (portreserve.socket stopped, the holder gone): portrelease
    stops the name's socket units itself.  When systemctl refuses (a unit
    with User= and no '+'), that is the answer: one message of ours after
    systemctl's own, exit 1 at once, not a wait to the deadline followed by
    a 'still in use' line per port for the same cause.
    source "configuration": no map either (PID 1 rewriting it, docs/design.md
    F18) under a running manager: the configured ports' units are stopped the
    same way (before, "no holder running, nothing to release", exit 0, the
    port held)."""
    _port, result, elapsed = release_without_control_socket(workdir, "20", source, stop_status=1)
    assert result.returncode == 1, result
    assert result.stderr.splitlines() == [
        "Failed to stop units: Access denied",
        "portrelease: systemctl stop failed (exit status 1)",
    ]
    assert elapsed < 20  # not the deadline: nothing was going to free the port


def test_a_stop_job_pid1_never_runs_does_not_outlast_the_timeout(workdir: Path) -> None:
    """No control socket, and PID 1 never runs the stop job (a hung boot):
    portrelease queues the stop (--no-block) and answers at its --timeout that
    the port is still in use, instead of waiting as long as systemctl would."""
    port, result, elapsed = release_without_control_socket(workdir, "1")
    assert result.returncode == 1, result.stderr
    assert f"{port}/tcp is still in use after 1 s" in result.stderr
    assert elapsed < 30  # the fake's blocking stop would have taken 600 s


def test_a_systemctl_pid1_does_not_answer_does_not_outlast_the_timeout(workdir: Path) -> None:
    """No control socket, and PID 1 answers nothing (a daemon-reload, F18):
    systemctl show waits for it; portrelease stops waiting at its --timeout
    and says why."""
    _port, result, elapsed = release_without_control_socket(workdir, "1", show_hangs=True)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("portrelease: systemctl show did not end within "), result.stderr
    assert elapsed < 30  # the fake's show would have taken 600 s
