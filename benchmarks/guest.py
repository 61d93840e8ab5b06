#!/usr/bin/python3
"""In a benchmark boot: `guest.py '[[STEP, {ARGUMENTS}], ...]'` runs step_STEP(**ARGUMENTS) in order, each
writing /results/STEP.json: its figures (ms) or {"error": traceback}.  benchI owns port 20000+I (README.md)."""

from __future__ import annotations

import errno
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from jeepney.io.blocking import DBusConnectionBase, prep_socket
from jeepney.low_level import HeaderFields
from jeepney.wrappers import DBusAddress, new_method_call

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any, TypedDict

    class Footprint(TypedDict, total=False):
        holder: dict[str, int]
        floor: dict[str, int]
        sockets: int
        smaps: dict[str, int]  # kB of RSS by mapping
        standalone: dict[str, int]

    ReleaseAllFigure = float | str | dict[str, float | None] | None

BASE = 20000
PY = "/usr/bin/python3"
FLOOR = [PY, "-IS", "-c", "pass"]  # the bare interpreter, as portrelease's #! starts it
PORTRELEASE = "/usr/sbin/portrelease"
MANAGER = DBusAddress("/org/freedesktop/systemd1", "org.freedesktop.systemd1", "org.freedesktop.systemd1.Manager")
now = time.perf_counter


def bindable(port: int, proto: str) -> bool:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, proto == "tcp")
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
        return True
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, errno.EACCES):
            return False
        raise
    finally:
        sock.close()


def ports_of(indexes: Iterable[int], protos: list[str]) -> list[tuple[int, str]]:
    return [(BASE + i, p) for i in indexes for p in protos]


def stats(values: Iterable[float]) -> dict[str, float]:
    v = sorted(values)
    rank: Callable[[int], float] = lambda q: v[max(0, -(-q * len(v) // 100) - 1)]  # noqa: E731  (nearest rank)
    return {"n": len(v), "median": statistics.median(v), "p90": rank(90), "p95": rank(95), "max": v[-1]} if v else {}


def ms(t0: float) -> float:
    return (now() - t0) * 1e3


def timed(argv: list[str]) -> tuple[float, int]:
    t0 = now()
    rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL).returncode
    return ms(t0), rc


def wait_free(ports: list[tuple[int, str]], t0: float, timeout: float = 30.0) -> float | None:
    """ms from t0 until every port is bindable; None if not within timeout."""
    while ports := [p for p in ports if not bindable(*p)]:
        if now() - t0 > timeout:
            return None
        time.sleep(0.0005)
    return ms(t0)


def show(unit: str, prop: str) -> str:
    return subprocess.run(["systemctl", "show", "-P", prop, unit], capture_output=True, text=True).stdout.strip()


def wait_holding(count: int) -> int:
    """The holder's pid, once it says it holds `count` ports."""
    for _ in range(6000):
        if show("portreserve.service", "StatusText") == f"Holding {count} port(s)":
            return int(show("portreserve.service", "MainPID"))
        time.sleep(0.01)
    raise RuntimeError(f"the holder never held {count} ports: {show('portreserve.service', 'StatusText')!r}")


class Manager:
    """A blocking D-Bus client of PID 1's private socket (no Hello() there)."""

    def __init__(self) -> None:
        self.conn, self.serial = DBusConnectionBase(prep_socket("/run/systemd/private")), 0
        # systemd 252 left a call sent with or right after BEGIN unanswered until the next event on the
        # connection (4 of 4 tries); 50 ms later, never.
        time.sleep(0.05)

    def wait_idle(self, t0: float) -> float:
        """ms from t0 until PID 1 has no job queued but the driver's own (ListJobs every 5 ms)."""
        while True:
            self.serial += 1
            self.conn.sock.sendall(new_method_call(MANAGER, "ListJobs").serialise(serial=self.serial))
            reply = None
            while reply != self.serial:  # PID 1's signals come here too
                msg = self.conn._receive(time.monotonic() + 10)
                reply = msg.header.fields.get(HeaderFields.reply_serial)
            if all(job[1] == "boot-driver.service" for job in msg.body[0]):
                return ms(t0)
            time.sleep(0.005)


def cpu_ms(pid: int) -> float | None:
    """utime + stime of a process so far; None once it is gone."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split() if os.path.exists(f"/proc/{pid}") else None
    # /proc/PID/stat has 50-odd fields: stat is never [], so this is None or a float.
    return stat and (int(stat[11]) + int(stat[12])) * 1e3 / os.sysconf("SC_CLK_TCK")  # type: ignore[return-value]


def memory(pid: int) -> dict[str, int]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    pss = Path(f"/proc/{pid}/smaps_rollup").read_text().split("Pss:")[1].split()[0]
    kib = {key: int(status[key].split()[0]) for key in ("VmRSS", "VmHWM", "RssAnon")}
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return {"rss": kib["VmRSS"], "hwm": kib["VmHWM"], "anon": kib["RssAnon"], "pss": int(pss), "fds": fds}


# -- steps ---------------------------------------------------------------------------


def phases(calls: list[tuple[int, float, float]]) -> dict[str, float | None]:
    """Medians of calls [(I, start µs, end µs)] of portrelease benchI: until the holder logged the request
    (journald's arrival stamp), until PID 1 stopped the socket (InactiveEnterTimestamp), until the end."""
    offset = time.time_ns() // 1000 - time.monotonic_ns() // 1000  # realtime - monotonic, µs
    journal = subprocess.run(["journalctl", "-o", "json", "SYSLOG_IDENTIFIER=portreserve"], capture_output=True)
    asked: dict[str | None, int] = {}
    for entry in map(json.loads, journal.stdout.splitlines()):
        asked.setdefault(entry.get("PORTRESERVE_NAME"), int(entry["__REALTIME_TIMESTAMP"]))
    out: dict[str, list[float]] = {"ask": [], "stop": [], "answer": []}
    for i, start, end in calls:
        stopped = int(show(f"portreserve-{BASE + i}-tcp.socket", "InactiveEnterTimestampMonotonic") or 0) + offset
        if f"bench{i}" in asked:
            out["ask"].append((asked[f"bench{i}"] - start) / 1e3)
            out["stop"].append((stopped - asked[f"bench{i}"]) / 1e3)
            out["answer"].append((end - stopped) / 1e3)
    return {key: statistics.median(v) if v else None for key, v in out.items()}


def step_burst(k: int) -> dict[str, list[float] | float | None]:
    """Table 1: the burst units' stamps (stamp.sh), where the consumers' time went, the holder's start and READY."""
    stamps: dict[str, tuple[float, float, int]] = {}
    for path in Path("/results/burst").iterdir():
        t0, t1, rc = path.read_text().split()
        stamps[path.name] = (float(t0) * 1e6, float(t1) * 1e6, int(rc))
    first = min(s[0] for s in stamps.values())
    out: dict[str, list[float] | float | None]
    out = {group: [(s[1] - s[0]) / 1e3 for n, s in stamps.items() if n[0] == group] for group in "cb"}
    for g in "cb":
        out[f"offset_{g}"] = statistics.median((s[0] - first) / 1e3 for n, s in stamps.items() if n[0] == g)
    out["failed"] = sum(s[2] != 0 for s in stamps.values())
    out |= phases([(i, *stamps[f"c-{i}"][:2]) for i in range(k)])
    offset = time.time_ns() // 1000 - time.monotonic_ns() // 1000
    for prop in ("ExecMainStartTimestamp", "ActiveEnterTimestamp"):  # the holder's start and READY=1
        out[prop] = (int(show("portreserve.service", prop + "Monotonic")) + offset - first) / 1e3
    return out


def step_releases(count: int, rounds: int, protos: list[str]) -> dict[str, float | dict[str, float] | None]:
    """Table 2: back-to-back `portrelease benchI`, then as many bare interpreters."""
    wait_holding(count * len(protos))
    out, calls, times = {"held": count, "failed": 0, "free_at_return": 0, "ports": rounds * len(protos)}, [], []
    for i in (i * 7919 % count for i in range(rounds)):
        start = time.time_ns() / 1e3
        elapsed, rc = timed([PORTRELEASE, f"bench{i}"])
        out["free_at_return"] += sum(bindable(*p) for p in ports_of([i], protos))
        out["failed"] += rc != 0
        calls.append((i, start, start + elapsed * 1e3))
        times.append(elapsed)
    return out | phases(calls) | {"ms": stats(times), "floor": stats([timed(FLOOR)[0] for _ in range(rounds)])}


def step_stops(count: int, rounds: int, protos: list[str], released: int) -> dict[str, Any]:
    """Table 4: `systemctl stop` of socket and grouping units (of names step_releases left) until bindable."""
    manager = Manager()
    left = sorted(set(range(count)) - {i * 7919 % count for i in range(released)})
    out: dict[str, Any] = {"held": len(left) * len(protos)}  # Any: out[kind] is an int or a dict indexed below
    for kind in ("socket", "group"):
        free, returned = [], []
        for _ in range(rounds):
            i = left.pop()
            ports = ports_of([i], protos)[: 1 if kind == "socket" else None]
            unit = f"portreserve-{BASE + i}-{protos[0]}.socket" if kind == "socket" else f"portreserve@bench{i}.target"
            manager.wait_idle(now())
            t0 = now()
            proc = subprocess.Popen(["systemctl", "stop", unit])
            free.append(wait_free(ports, t0, timeout=10))
            returned.append((proc.wait(), ms(t0)))
        out[kind] = {"free": stats([x for x in free if x is not None]), "returned": stats([x[1] for x in returned])}
        out[kind]["failed"] = free.count(None) + sum(rc != 0 for rc, _ in returned)
    out["floor"] = stats([timed(["systemctl", "stop", "bench-idle.service"])[0] for _ in range(rounds)])
    return out


def step_release_all(count: int, protos: list[str], argv: list[str]) -> dict[str, ReleaseAllFigure]:
    """Table 3: `portrelease '*'` or `systemctl stop portreserve.target`; CPU used meanwhile."""
    ports = [p for p in ports_of(range(count), protos) if not bindable(*p)]
    manager = Manager()
    pids = {"pid1": 1, "journald": int(show("systemd-journald.service", "MainPID"))}
    pids["holder"] = int(show("portreserve.service", "MainPID"))
    cpu = {who: cpu_ms(pid) for who, pid in pids.items()}
    t0 = now()
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    free = wait_free(ports, t0)
    holder = cpu_ms(pids["holder"])  # it exits soon after
    err = proc.communicate()[1]
    out: dict[str, ReleaseAllFigure]
    out = {"ports": len(ports), "rc": proc.returncode, "free": free, "returned": ms(t0), "idle": manager.wait_idle(t0)}
    out["stderr"] = err[:200] + f" ({err.count(chr(10))} lines)" * bool(err)
    after = {"pid1": cpu_ms(1), "journald": cpu_ms(pids["journald"]), "holder": holder}
    # ignore: mypy narrows no after[who] (hence no | overload); cpu[who] is None only if after[who] is too
    return out | {"wall": ms(t0), "cpu": {who: None if after[who] is None else after[who] - cpu[who] for who in cpu}}  # type: ignore[operator, return-value]


def step_footprint(sockets: int) -> Footprint:
    """Table 6: the holder's memory; a standalone holder of as many sockets, an idle interpreter."""
    pid = wait_holding(sockets)
    idle = subprocess.Popen([PY, "-I", "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    time.sleep(0.5)
    out: Footprint = {"holder": memory(pid), "floor": memory(idle.pid), "sockets": sockets, "smaps": {}}
    idle.communicate(b"")
    alone, ctl = standalone(sockets // 2, ["tcp", "udp"])  # the same sockets, no manager connection
    time.sleep(0.5)
    out["standalone"] = memory(alone.pid)
    subprocess.run([PORTRELEASE, "--socket", ctl, "*"])
    name = "[anonymous]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if "-" in line.split(" ", 1)[0]:  # a mapping's first line: address range, ..., path
            name = (line.split(maxsplit=5)[5:] or ["[anonymous]"])[0].strip()
        elif line.startswith("Rss:"):
            out["smaps"][name] = out["smaps"].get(name, 0) + int(line.split()[1])
    return out


def standalone(count: int, protos: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """A standalone holder (`portreserve -d`) of saI = 30000+I, once it holds them all."""
    conf, ctl = Path(f"/run/bench-sa-{len(protos)}"), f"/run/bench-sa-{len(protos)}.socket"
    conf.mkdir()
    for i in range(count):
        (conf / f"sa{i}").write_text("".join(f"{30000 + i}/{p}\n" for p in protos))
    with open(f"/results/standalone-{len(protos)}.log", "wb") as log:
        argv = ["/usr/sbin/portreserve", "-d", "--config-dir", str(conf), "--socket", ctl]
        holder = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    client.bind("")
    client.settimeout(1)
    for _ in range(500):  # until it answers that it holds every port
        try:
            client.sendto(b".status", ctl)
            if client.recv(1 << 20).count(b" held") == count * len(protos):
                return holder, ctl
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"the standalone holder never held {count * len(protos)} ports")


def step_standalone(count: int, rounds: int) -> dict[str, float | dict[str, float]]:
    """Table 5: `portrelease --socket PATH saI` interleaved with bare interpreters."""
    holder, ctl = standalone(count, ["tcp"])
    times: dict[str, list[float]]
    times, free = {"release": [], "floor": [], "imports": []}, 0
    code = "import os, sys; sys.path.append('/usr/lib/python3/dist-packages'); import portreserve.release; os._exit(0)"
    for i in range(rounds):
        runs = [
            ("release", [PORTRELEASE, "--socket", ctl, f"sa{i}"]),
            ("floor", FLOOR),
            ("imports", [PY, "-ISc", code]),
        ]
        for kind, argv in runs if i % 2 else runs[::-1]:
            elapsed, rc = timed(argv)
            if rc:
                raise RuntimeError(f"{argv} exited {rc}")
            times[kind].append(elapsed)
        free += bindable(30000 + i, "tcp")
    all_ms, rc = timed([PORTRELEASE, "--socket", ctl, "*"])
    holder.wait(10)
    out = {"count": count, "free_at_return": free, "all": all_ms, "all_rc": rc}
    return out | {k: stats(v) for k, v in times.items()}


HOLDER_IMPORTS = "import portreserve.cli, portreserve.holder, systemd.daemon"


def step_imports(runs: int) -> dict[str, float]:
    """Table 7: jeepney's share of the holder's imports (-X importtime); RSS after them, without and with it."""
    rows: dict[str, list[float]] = {"total": [], "manager": [], "jeepney": []}
    for _ in range(runs):
        code = HOLDER_IMPORTS + ", portreserve.manager"
        err = subprocess.run([PY, "-I", "-X", "importtime", "-c", code], capture_output=True, text=True).stderr
        found = dict.fromkeys(rows, 0)
        parents: list[tuple[int, str]] = []  # (depth, name) of the enclosing imports
        # A module's line follows those of the imports it caused: read backwards.
        for line in reversed(err.splitlines()[1:]):
            _self, cumulative, name = line.removeprefix("import time:").split("|")
            depth = (len(name) - len(name.lstrip()) - 1) // 2
            name = name.strip()
            del parents[depth:]
            found["total"] += int(cumulative) if depth == 0 and name.startswith(("portreserve", "systemd")) else 0
            found["manager"] += int(cumulative) if name == "portreserve.manager" else 0
            outer = [n for _, n in parents if n.startswith("jeepney")]
            found["jeepney"] += int(cumulative) if name.startswith("jeepney") and not outer else 0
            parents.append((depth, name))
        for key in rows:
            rows[key].append(found[key] / 1e3)
    out = {key: statistics.median(v) for key, v in rows.items()}
    probe = "; print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"
    for key, imports in (("bare", "pass"), ("holder", HOLDER_IMPORTS), ("manager", code)):
        rss = [subprocess.run([PY, "-I", "-c", imports + probe], capture_output=True).stdout for _ in range(5)]
        out[f"rss_{key}"] = statistics.median(map(int, rss))
    return out


def main() -> None:
    for step, kwargs in json.loads(sys.argv[1]):
        t0 = now()
        try:
            result = globals()[f"step_{step}"](**kwargs)
        except Exception:
            result = {"error": traceback.format_exc()}
        Path(f"/results/{step}.json").write_text(json.dumps(result, indent=1) + "\n")
        print(f"{step}: {'FAILED' if 'error' in result else 'ok'} in {ms(t0) / 1e3:.1f}s", flush=True)


if __name__ == "__main__":
    main()
