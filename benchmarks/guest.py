#!/usr/bin/python3
"""Measurements taken inside a benchmark boot (benchmarks/run.py).

Standard library only: /usr/bin/python3 of the guest runs it.  Every command
writes one JSON object to --out (with "error" set when something broke) and
exits 0 on success, 1 otherwise; the driver runs them one after another.

    guest.py boot-times                      manager and unit timestamps of this boot
    guest.py footprint                       the holder's RSS, fds, status
    guest.py load --rate R --seconds S       TCP connections at reserved ports; holder CPU
    guest.py release --base P --count N --rounds R
                                             portrelease benchN..., re-reserving after each
    guest.py release-all --base P --count N  portrelease '*'
    guest.py standalone --base P --count N --rounds R
                                             the same without systemd: portreserve hold --socket
    guest.py generator --lines L --runs K    the installed generator on L config lines
    guest.py python-floor --runs K           /usr/bin/python3 -I -c pass, for scale

Ports are TCP, numbered P+i for the name benchI (standalone: saI).  "Bindable"
means what a fresh server needs: bind [::] dual-stack (IPV6_V6ONLY=0, so IPv4
and IPv6 at once) with SO_REUSEADDR, as net.bindable() in the product does.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

PORTRELEASE = "/usr/sbin/portrelease"
PORTRESERVE = "/usr/sbin/portreserve"
GENERATOR = "/usr/lib/systemd/system-generators/portreserve-generator"
HOLDER_UNIT = "portreserve.service"
STEP_ASIDE_UNIT = "portreserve-step-aside.service"
SETTLE_TIMEOUT = 30.0  # for states the benchmark waits for between measurements
BIND_TIMEOUT = 10.0  # a released port that is not bindable after this is a failure

perf = time.perf_counter


# -- helpers -----------------------------------------------------------------


def bindable(port: int, proto: str = "tcp") -> bool:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET6, kind | socket.SOCK_CLOEXEC)
    try:
        if proto == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, errno.EACCES):
            return False
        raise
    finally:
        sock.close()
    return True


def summary(values: list[float]) -> dict[str, float | int | None]:
    """median, p95 (nearest rank), min, max, mean of milliseconds."""
    if not values:
        return {"n": 0, "median": None, "p95": None, "min": None, "max": None, "mean": None}
    ordered = sorted(values)
    rank = max(1, -(-95 * len(ordered) // 100))  # ceil(0.95 n)
    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "p95": ordered[rank - 1],
        "min": ordered[0],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def systemctl(*args: str) -> str:
    return subprocess.run(
        ["systemctl", "--no-pager", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    ).stdout


def show(unit: str | None, *props: str) -> dict[str, str]:
    out = systemctl("show", f"--property={','.join(props)}", *([unit] if unit else []))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def holder_state() -> dict[str, str]:
    return show(HOLDER_UNIT, "ActiveState", "SubState", "MainPID", "StatusText", "NRestarts", "Result")


def wait_for(predicate: Callable[[], bool], timeout: float = SETTLE_TIMEOUT, interval: float = 0.002) -> bool:
    deadline = perf() + timeout
    while True:
        if predicate():
            return True
        if perf() > deadline:
            return False
        time.sleep(interval)


def wait_holding(count: int) -> dict[str, str]:
    """Until portreserve.service runs and says it holds `count` ports."""
    want = f"Holding {count} port(s)"
    state: dict[str, str] = {}

    def ready() -> bool:
        nonlocal state
        state = holder_state()
        return state.get("ActiveState") == "active" and state.get("StatusText", "").startswith(want)

    if not wait_for(ready, interval=0.01):
        raise RuntimeError(f"holder never reported '{want}': {state}")
    return state


def settle(seconds: float) -> None:
    """Let the previous round's tail (the holder restarting, step-aside,
    journald) finish: on 2 cores it would otherwise compete with the release
    being measured (measured: median 39 ms without, 25 ms with 0.3 s)."""
    # (not every job: the driver itself runs in boot-driver.service's start job)
    if not wait_for(lambda: not systemctl("list-jobs", "--no-legend", "portreserve*").strip(), interval=0.01):
        raise RuntimeError("portreserve jobs still queued after 30 s: " + systemctl("list-jobs", "--no-legend"))
    time.sleep(seconds)


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def memory_of(pid: int) -> dict[str, float | int]:
    status = proc_status(pid)

    def kib(key: str) -> int:
        return int(status.get(key, "0 kB").split()[0])

    out: dict[str, float | int] = {
        "rss_kib": kib("VmRSS"),
        "hwm_kib": kib("VmHWM"),
        "rss_anon_kib": kib("RssAnon"),
        "rss_file_kib": kib("RssFile"),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }
    try:  # PSS: the holder's fair share of the pages it shares (libpython, libc)
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["pss_kib"] = int(line.split()[1])
    except OSError:
        pass
    return out


def cpu_ticks(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15 of proc(5))


def timed_release(argv: list[str], ports: list[int]) -> dict[str, Any]:
    """Run portrelease; check the ports at once when it returns, then poll.

    returned_ms: portrelease's own run time; bindable_ms: from invoking it
    until the last of `ports` could be bound (None: never, within BIND_TIMEOUT).
    """
    pid0 = last_pid()
    t0 = perf()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    t1 = perf()
    pid1 = last_pid()
    busy = [p for p in ports if not bindable(p)]
    at_return = len(ports) - len(busy)
    # A failed portrelease is a failure, whatever happens later: no waiting.
    deadline = t1 + (BIND_TIMEOUT if proc.returncode == 0 else 0)
    while busy and perf() < deadline:
        time.sleep(0.0002)
        busy = [p for p in busy if not bindable(p)]
    t2 = perf()
    return {
        "rc": proc.returncode,
        "stderr": proc.stderr[-2000:],
        "returned_ms": (t1 - t0) * 1e3,
        "bindable_ms": None if busy else (t2 - t0) * 1e3,
        "bindable_at_return": at_return,
        "ports": len(ports),
        "never_bindable": busy[:20],
        # processes (and threads) the guest started meanwhile, portrelease included
        "spawned": pid1 - pid0 if pid1 >= pid0 > 0 else None,
    }


def last_pid() -> int:
    """The last pid handed out in this (the guest's) pid namespace."""
    try:
        return int(Path("/proc/sys/kernel/ns_last_pid").read_text())
    except (OSError, ValueError):
        return 0


def wait_pid_exit(pid: int, timeout: float) -> float | None:
    """Seconds until `pid` exits (pidfd), None on timeout.  -1 if already gone."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return -1.0
    try:
        t0 = perf()
        ready, _, _ = select.select([pidfd], [], [], timeout)
        return perf() - t0 if ready else None
    finally:
        os.close(pidfd)


def check_failures(samples: list[dict[str, Any]], limit: int = 3) -> None:
    """Give up after `limit` failed releases in a row: the figures would mean
    nothing, and every one may cost BIND_TIMEOUT."""
    recent = samples[-limit:]
    if len(recent) == limit and all(s["rc"] != 0 or s["bindable_ms"] is None for s in recent):
        last = recent[-1]
        raise RuntimeError(
            f"{limit} releases in a row failed; the last: exit {last['rc']}, "
            f"never bindable {last['never_bindable']}, stderr: {last['stderr'].strip()[-500:]}"
        )


def release_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [s for s in samples if s["rc"] == 0 and s["bindable_ms"] is not None]
    spawned = [int(s["spawned"]) for s in samples if s["spawned"] is not None]
    return {
        "rounds": len(samples),
        "failures": len(samples) - len(ok),
        "bindable_ms": summary([float(s["bindable_ms"]) for s in ok]),
        "returned_ms": summary([float(s["returned_ms"]) for s in samples]),
        "bindable_at_return": sum(int(s["bindable_at_return"]) for s in samples),
        "ports_released": sum(int(s["ports"]) for s in samples),
        "errors": [s["stderr"] for s in samples if s["rc"] != 0][:5],
        "spawned_median": statistics.median(spawned) if spawned else None,
    }


# -- commands ------------------------------------------------------------------

MANAGER_STAMPS = (
    "FirmwareTimestampMonotonic",
    "LoaderTimestampMonotonic",
    "KernelTimestampMonotonic",
    "InitRDTimestampMonotonic",
    "UserspaceTimestampMonotonic",
    "SecurityStartTimestampMonotonic",
    "GeneratorsStartTimestampMonotonic",
    "GeneratorsFinishTimestampMonotonic",
    "UnitsLoadStartTimestampMonotonic",
    "UnitsLoadFinishTimestampMonotonic",
    "FinishTimestampMonotonic",
)


def cmd_boot_times(args: argparse.Namespace) -> dict[str, Any]:
    manager = {k: int(v or 0) for k, v in show(None, *MANAGER_STAMPS).items()}
    # In a container the firmware/loader/kernel/initrd stamps are 0; the
    # earliest non-zero one is when this systemd started.
    origin_key = next(k for k in MANAGER_STAMPS if manager.get(k))
    origin = manager[origin_key]

    def since(usec: int) -> float | None:
        return (usec - origin) / 1e3 if usec else None

    units = {}
    for unit in ("sockets.target", "basic.target", "portreserve.service", "boot-test.target", "boot-driver.service"):
        stamps = show(unit, "ActiveEnterTimestampMonotonic", "InactiveExitTimestampMonotonic", "ActiveState")
        units[unit] = {
            "state": stamps.get("ActiveState"),
            "active_ms": since(int(stamps.get("ActiveEnterTimestampMonotonic") or 0)),
            "started_ms": since(int(stamps.get("InactiveExitTimestampMonotonic") or 0)),
        }
    sockets = systemctl("list-units", "--all", "--plain", "--no-legend", "portreserve-*.socket").splitlines()
    return {
        "origin": origin_key,
        "generators_ms": (manager["GeneratorsFinishTimestampMonotonic"] - manager["GeneratorsStartTimestampMonotonic"])
        / 1e3
        if manager.get("GeneratorsFinishTimestampMonotonic")
        else None,
        "units_load_ms": (manager["UnitsLoadFinishTimestampMonotonic"] - manager["UnitsLoadStartTimestampMonotonic"])
        / 1e3
        if manager.get("UnitsLoadFinishTimestampMonotonic")
        else None,
        "manager": {k: since(v) for k, v in manager.items()},
        "units": units,
        "socket_units": len(sockets),
        "socket_units_active": sum(1 for line in sockets if " active " in f" {line} "),
    }


def cmd_footprint(args: argparse.Namespace) -> dict[str, Any]:
    state = wait_holding(args.expect) if args.expect else holder_state()
    pid = int(state["MainPID"])
    if pid == 0:
        raise RuntimeError(f"portreserve.service has no main process: {state}")
    time.sleep(0.2)  # let it settle after READY=1
    return {"pid": pid, "status": state.get("StatusText"), **memory_of(pid)}


def cmd_load(args: argparse.Namespace) -> dict[str, Any]:
    """`rate` TCP connection attempts a second at the reserved ports, for
    `seconds`, alternately over 127.0.0.1 and ::1; the holder's CPU meanwhile."""
    state = wait_holding(args.expect) if args.expect else holder_state()
    pid = int(state["MainPID"])
    ports = [args.base + i for i in range(args.count)]
    tick = os.sysconf("SC_CLK_TCK")
    outcomes: dict[str, int] = {}
    connect_ms: list[float] = []
    total = int(args.rate * args.seconds)
    cpu0, w0 = cpu_ticks(pid), perf()
    hard_stop = w0 + args.seconds * 3  # bounded in time as well as in count
    for k in range(total):
        target = w0 + k / args.rate
        now = perf()
        if now > hard_stop:
            break
        if target > now:
            time.sleep(target - now)
        host, family = ("127.0.0.1", socket.AF_INET) if k % 2 == 0 else ("::1", socket.AF_INET6)
        c0 = perf()
        with socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(1.0)
            try:
                sock.connect((host, ports[k % len(ports)]))
                outcome = "data" if sock.recv(1) else "eof"
            except ConnectionResetError:
                outcome = "reset"
            except ConnectionRefusedError:
                outcome = "refused"
            except TimeoutError:
                outcome = "timeout"
            except OSError as e:
                outcome = errno.errorcode.get(e.errno or 0, str(e))
        connect_ms.append((perf() - c0) * 1e3)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    w1 = perf()
    time.sleep(0.1)  # the last resets
    cpu1 = cpu_ticks(pid)
    cpu_s = (cpu1 - cpu0) / tick
    attempts = sum(outcomes.values())
    after = holder_state()
    return {
        "pid": pid,
        "attempts": attempts,
        "seconds": w1 - w0,
        "rate": attempts / (w1 - w0),
        "outcomes": outcomes,
        "attempt_ms": summary(connect_ms),
        "holder_cpu_s": cpu_s,
        "holder_cpu_percent": 100 * cpu_s / (w1 - w0 + 0.1),
        "holder_cpu_us_per_attempt": 1e6 * cpu_s / attempts if attempts else None,
        "clock_ticks_per_s": tick,
        "holder_same_pid_after": after.get("MainPID") == str(pid) and after.get("ActiveState") == "active",
        "memory_after": memory_of(pid) if after.get("MainPID") == str(pid) else None,
    }


def cmd_release(args: argparse.Namespace) -> dict[str, Any]:
    """portrelease benchI with `count` reservations held, `rounds` times.

    After each release the name is reserved again (systemctl start
    portreserve@benchI.target; the holder steps aside and comes back with
    every socket), so every release happens with exactly `count` held."""
    samples: list[dict[str, Any]] = []
    reserve_ms: list[float] = []
    for i in range(args.rounds):
        wait_holding(args.count)
        index = (i * 7919) % args.count  # spread over the names, no pattern in port order
        name, port = f"bench{index}", args.base + index
        if bindable(port):
            raise RuntimeError(f"{port}/tcp of {name} is not held before its release")
        settle(args.settle)
        sample = timed_release([PORTRELEASE, name], [port])
        sample["name"] = name
        samples.append(sample)
        check_failures(samples)
        if sample["rc"] != 0 or sample["bindable_ms"] is None:
            continue
        t0 = perf()
        # Every re-reservation runs portreserve-step-aside.service and restarts
        # the holder, and these units (and the grouping unit) have systemd's
        # default start limit (5 starts in 10 s).  Past it the step-aside fails and the new socket is
        # refused ("service already active"), or the holder fails and takes
        # every socket unit with it.  Forget the counts before each start (a
        # product issue, reported with the results).
        systemctl("reset-failed", HOLDER_UNIT, STEP_ASIDE_UNIT, f"portreserve@{name}.target")
        systemctl("start", f"portreserve@{name}.target")
        wait_holding(args.count)
        if not wait_for(lambda held=port: not bindable(held)):  # type: ignore[misc]
            raise RuntimeError(f"{port}/tcp never held again after systemctl start portreserve@{name}.target")
        reserve_ms.append((perf() - t0) * 1e3)
    final = holder_state()
    return {
        "count": args.count,
        **release_summary(samples),
        "re_reserve_ms": summary(reserve_ms),
        "holder_after": final,
        "samples": samples,
    }


def cmd_release_all(args: argparse.Namespace) -> dict[str, Any]:
    state = wait_holding(args.count)
    pid = int(state["MainPID"])
    ports = [args.base + i for i in range(args.count)]
    settle(args.settle)
    pidfd = os.pidfd_open(pid)
    t0 = perf()
    sample = timed_release([PORTRELEASE, "*"], ports)
    # The holder's own exit (pidfd), then systemd's view of it.
    ready, _, _ = select.select([pidfd], [], [], SETTLE_TIMEOUT)
    t_exit = perf()
    os.close(pidfd)
    inactive = wait_for(lambda: holder_state().get("ActiveState") in ("inactive", "failed"), interval=0.001)
    t_inactive = perf()
    final = holder_state()
    return {
        "count": args.count,
        **sample,
        "holder_exited_ms": (t_exit - t0) * 1e3 if ready else None,
        "unit_inactive_ms": (t_inactive - t0) * 1e3 if inactive else None,
        "holder_after": final,
        "failed_units": systemctl("--failed", "--plain", "--no-legend").strip(),
    }


class Standalone:
    """`portreserve hold --config-dir D --socket S`: daemonizes once the ports are held."""

    def __init__(self, base: int, count: int) -> None:
        self.root = Path("/run/portreserve-bench")
        self.conf = self.root / "conf"
        self.socket = self.root / "ctl" / "socket"
        self.pidfile = self.socket.parent / "holder.pid"
        self.conf.mkdir(parents=True, exist_ok=True)
        self.ports = [base + i for i in range(count)]
        for i, port in enumerate(self.ports):
            (self.conf / f"sa{i}").write_text(f"{port}/tcp\n")
        self.pid = 0

    def start(self) -> float:
        t0 = perf()
        argv = [PORTRESERVE, "hold", "--config-dir", str(self.conf), "--socket", str(self.socket)]
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        elapsed = perf() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"portreserve hold exited {proc.returncode}: {proc.stderr}")
        if not wait_for(self.pidfile.exists):
            raise RuntimeError(f"no {self.pidfile} from the standalone holder")
        self.pid = int(self.pidfile.read_text())
        return elapsed * 1e3

    def stop(self) -> None:
        if self.pid and wait_pid_exit(self.pid, 0) is None:
            os.kill(self.pid, signal.SIGTERM)
            if wait_pid_exit(self.pid, 10) is None:
                os.kill(self.pid, signal.SIGKILL)
                wait_pid_exit(self.pid, 5)
        self.pid = 0


def cmd_standalone(args: argparse.Namespace) -> dict[str, Any]:
    """The same without systemd: a fresh holder with `count` ports for every
    round (restarting it is outside the timing), release one name."""
    holder = Standalone(args.base, args.count)
    samples: list[dict[str, Any]] = []
    start_ms: list[float] = []
    memory: dict[str, float | int] = {}
    try:
        for i in range(args.rounds):
            start_ms.append(holder.start())
            if i == 0:
                time.sleep(0.2)
                memory = memory_of(holder.pid)
            index = (i * 7919) % args.count
            port = holder.ports[index]
            if bindable(port):
                raise RuntimeError(f"{port}/tcp is not held by the standalone holder")
            settle(args.settle)
            sample = timed_release([PORTRELEASE, "--socket", str(holder.socket), f"sa{index}"], [port])
            samples.append(sample)
            check_failures(samples)
            holder.stop()
        # release-all, standalone
        start_ms.append(holder.start())
        pid = holder.pid
        settle(args.settle)
        all_sample = timed_release([PORTRELEASE, "--socket", str(holder.socket), "*"], holder.ports)
        exited = wait_pid_exit(pid, SETTLE_TIMEOUT)
        all_sample["holder_exited_ms"] = None if exited is None else all_sample["returned_ms"] + max(exited, 0) * 1e3
    finally:
        holder.stop()
    return {
        "count": args.count,
        **release_summary(samples),
        "holder_start_ms": summary(start_ms),
        "memory": memory,
        "release_all": all_sample,
        "samples": samples,
    }


def services_names() -> list[str]:
    names: list[str] = []
    for line in Path("/etc/services").read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        # TCP and UDP entries only (/etc/services also lists AppleTalk's ddp).
        if len(fields) >= 2 and fields[1].endswith(("/tcp", "/udp")) and fields[0] not in names:
            names.append(fields[0])
    return names


def cmd_generator(args: argparse.Namespace) -> dict[str, Any]:
    """The installed generator, run as systemd runs it (its own #! line), on
    `lines` config lines, one file each: every other one a service name from
    /etc/services (all its protocols), the others bare numbers (tcp and udp)."""
    names = services_names()
    conf = Path(f"/run/portreserve-bench/gen-{args.lines}")
    conf.mkdir(parents=True, exist_ok=True)
    for i in range(args.lines):
        entry = names[(i // 2) % len(names)] if i % 2 == 0 else str(40000 + i)
        (conf / f"svc{i}").write_text(f"{entry}\n")
    times: list[float] = []
    produced = sockets = 0
    for run in range(args.runs):
        out = Path(f"/run/portreserve-bench/gen-out-{args.lines}-{run}")
        out.mkdir(parents=True)
        t0 = perf()
        proc = subprocess.run(
            [GENERATOR, "--config-dir", str(conf), str(out)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_SCOPE": "system"},
        )
        times.append((perf() - t0) * 1e3)
        if proc.returncode != 0 or proc.stderr:
            raise RuntimeError(f"generator exited {proc.returncode}: {proc.stderr[-2000:]}")
        produced = sum(1 for p in out.iterdir() if p.is_file())
        sockets = sum(1 for p in out.iterdir() if p.name.endswith(".socket"))
        subprocess.run(["rm", "-rf", str(out)], check=True)
    return {
        "lines": args.lines,
        "files": args.lines,
        "units": produced,
        "socket_units": sockets,
        "ms": summary(times),
        "best_ms": min(times),
        "runs": times,
    }


def cmd_python_floor(args: argparse.Namespace) -> dict[str, Any]:
    """What any Python command costs before it does anything."""
    out: dict[str, Any] = {}
    for key, argv in (
        ("python_I_pass", ["/usr/bin/python3", "-I", "-c", "pass"]),
        ("python_IS_pass", ["/usr/bin/python3", "-I", "-S", "-c", "pass"]),
        # as the installed portrelease does it: -IS, the package directory added by hand
        (
            "import_release",
            [
                "/usr/bin/python3",
                "-I",
                "-S",
                "-c",
                "import sys; sys.path.append('/usr/lib/python3/dist-packages'); import portreserve.release",
            ],
        ),
        ("import_generator", ["/usr/bin/python3", "-I", "-c", "import portreserve.generator"]),
        ("systemctl_show", ["systemctl", "show", "-P", "ActiveState", HOLDER_UNIT]),
    ):
        times = []
        for _ in range(args.runs):
            t0 = perf()
            subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=True)
            times.append((perf() - t0) * 1e3)
        out[key] = summary(times)
    return out


COMMANDS = {
    "boot-times": cmd_boot_times,
    "footprint": cmd_footprint,
    "load": cmd_load,
    "release": cmd_release,
    "release-all": cmd_release_all,
    "standalone": cmd_standalone,
    "generator": cmd_generator,
    "python-floor": cmd_python_floor,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--base", type=int, default=20000)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--expect", type=int, default=0, help="wait until the holder holds this many ports")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--settle", type=float, default=0.25, help="quiet seconds before each timed release")
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    t0 = perf()
    try:
        result = COMMANDS[args.command](args)
        status = 0
    except Exception:
        result = {"error": traceback.format_exc()}
        status = 1
    result["elapsed_s"] = perf() - t0
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"{args.command}: {'ok' if status == 0 else 'FAILED'} in {result['elapsed_s']:.1f}s -> {args.out}")
    if status:
        print(result["error"], file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
