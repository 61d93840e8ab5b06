#!/usr/bin/python3
"""Measurements inside a benchmark boot; run by the guest's /usr/bin/python3.

    guest.py PLAN-JSON      PLAN: [[step, {arguments}], ...], run in order

Every step writes /results/STEP.json: its figures, or {"error": traceback}.
Names benchI own port BASE+I (one line per protocol); "bindable" is what a
fresh server needs: [::] dual-stack (IPv4 and IPv6), SO_REUSEADDR for TCP.
"""

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

from jeepney.io.blocking import DBusConnectionBase, prep_socket
from jeepney.low_level import HeaderFields
from jeepney.wrappers import DBusAddress, new_method_call

PY = "/usr/bin/python3"
FLOOR = [PY, "-IS", "-c", "pass"]  # the bare interpreter, as portrelease's #! starts it
MANAGER = DBusAddress("/org/freedesktop/systemd1", "org.freedesktop.systemd1", "org.freedesktop.systemd1.Manager")
now = time.perf_counter


def bindable(port, proto):
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    try:
        if proto == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
        return True
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, errno.EACCES):
            return False
        raise
    finally:
        sock.close()


def ports_of(names, base, protos):
    return [(base + int(n[5:]), p) for n in names for p in protos]


def stats(values):
    """median, p90, p95 (nearest rank), max of a list of milliseconds."""
    v = sorted(values)
    rank = lambda q: v[max(0, -(-q * len(v) // 100) - 1)]  # noqa: E731
    return {"n": len(v), "median": statistics.median(v), "p90": rank(90), "p95": rank(95), "max": v[-1]} if v else {}


def ms(t0, t1=None):
    return ((now() if t1 is None else t1) - t0) * 1e3


def timed(argv):
    t0 = now()
    rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
    return ms(t0), rc


def wait_free(ports, t0, timeout=10.0):
    """ms from t0 until every port is bindable (None: not within timeout)."""
    busy = list(ports)
    while busy:
        busy = [p for p in busy if not bindable(*p)]
        if busy and now() - t0 > timeout:
            return None
        if busy:
            time.sleep(0.0005)
    return ms(t0)


def show(unit, prop):
    return subprocess.run(["systemctl", "show", "-P", prop, unit], capture_output=True, text=True).stdout.strip()


def wait_holding(count):
    """Until portreserve.service runs and says it holds `count` ports; its pid."""
    for _ in range(6000):
        if show("portreserve.service", "StatusText") == f"Holding {count} port(s)":
            return int(show("portreserve.service", "MainPID"))
        time.sleep(0.01)
    raise RuntimeError(f"the holder never held {count} ports: {show('portreserve.service', 'StatusText')!r}")


class Manager:
    """A blocking D-Bus client on PID 1's private socket (no Hello() there)."""

    def __init__(self):
        self.conn = DBusConnectionBase(prep_socket("/run/systemd/private"))
        self.serial = 0
        # systemd 252 leaves a call that arrives with (or just after) BEGIN
        # unanswered until the next event on the connection: 4 of 4 tries.
        time.sleep(0.05)

    def call(self, method, signature=None, *body):
        self.serial += 1
        self.conn.sock.sendall(new_method_call(MANAGER, method, signature, body).serialise(serial=self.serial))
        while True:
            msg = self.conn._receive(time.monotonic() + 10)
            if msg.header.fields.get(HeaderFields.reply_serial) == self.serial:
                return msg.body

    def jobs(self):
        return [job[1] for job in self.call("ListJobs")[0] if job[1] != "boot-driver.service"]


def wait_no_jobs(manager, t0):
    while manager.jobs():
        if now() - t0 > 60:
            return None
        time.sleep(0.005)
    return ms(t0)


def memory(pid):
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    pss = [line for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines() if line.startswith("Pss:")]
    return {
        "rss_kib": int(status["VmRSS"].split()[0]),
        "anon_kib": int(status["RssAnon"].split()[0]),
        "pss_kib": int(pss[0].split()[1]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


# -- steps ---------------------------------------------------------------------


def step_burst(k):
    """Table 1: the stamps of the burst units (stamp.sh), and where the
    consumers' time went: the holder's journal line for each request
    (journald stamps datagrams on receipt) and when PID 1 had stopped the
    name's sockets."""
    offset_us = (time.time_ns() - time.monotonic_ns()) // 1000  # realtime - monotonic
    received = {}
    journal = subprocess.run(
        ["journalctl", "-b", "-o", "json", "SYSLOG_IDENTIFIER=portreserve"], capture_output=True, text=True
    ).stdout
    for line in journal.splitlines():
        entry = json.loads(line)
        name = entry.get("PORTRESERVE_NAME")
        if name and name not in received:
            received[name] = int(entry["__REALTIME_TIMESTAMP"])
    units = {}
    for group in ("c", "b"):
        for i in range(k):
            t0, t1, rc = Path(f"/results/burst/{group}-{i}").read_text().split()
            unit = {"start_us": int(t0.replace(".", "")), "end_us": int(t1.replace(".", "")), "rc": int(rc)}
            if group == "c":
                stopped = show(f"portreserve-{20000 + i}-tcp.socket", "InactiveEnterTimestampMonotonic")
                unit["received_us"] = received.get(f"bench{i}")
                unit["sockets_stopped_us"] = int(stopped) + offset_us if stopped and stopped != "0" else None
            units[f"{group}{i}"] = unit
    holder = {
        prop: int(show("portreserve.service", prop + "Monotonic") or 0) + offset_us
        for prop in ("ExecMainStartTimestamp", "ActiveEnterTimestamp")
    }
    return {"units": units, "holder": holder}


def step_releases(count, rounds, base, protos):
    """Table 2: back-to-back `portrelease NAME`, then as many bare interpreters."""
    wait_holding(count * len(protos))
    names = [f"bench{(i * 7919) % count}" for i in range(rounds)]
    samples = []
    for name in names:
        elapsed, rc = timed(["/usr/sbin/portrelease", name])
        ports = ports_of([name], base, protos)
        samples.append((elapsed, rc, sum(bindable(*p) for p in ports), len(ports)))
    floor = [timed(FLOOR)[0] for _ in names]
    return {
        "held": count,
        "ms": stats([s[0] for s in samples]),
        "failed": sum(s[1] != 0 for s in samples),
        "bindable_at_return": sum(s[2] for s in samples),
        "ports": sum(s[3] for s in samples),
        "floor_ms": stats(floor),
    }


def step_stops(count, rounds, base, protos, released):
    """Table 4 (socket and grouping unit): `systemctl stop UNIT` until its
    ports are bindable; the floor is `systemctl stop` of an inactive unit."""
    manager = Manager()
    skip = {f"bench{(i * 7919) % count}" for i in range(released)}  # step_releases' names
    free = [f"bench{i}" for i in range(count) if f"bench{i}" not in skip]
    held = len(free) * len(protos)
    out = {"held": held}
    for kind in ("socket", "group"):
        samples = []
        for _ in range(rounds):
            name = free.pop()
            ports = ports_of([name], base, protos)
            unit = (
                f"portreserve-{ports[0][0]}-{ports[0][1]}.socket" if kind == "socket" else f"portreserve@{name}.target"
            )
            wait_no_jobs(manager, now())
            t0 = now()
            proc = subprocess.Popen(["systemctl", "stop", unit], stdin=subprocess.DEVNULL)
            freed = wait_free(ports[:1] if kind == "socket" else ports, t0)
            proc.wait()
            samples.append((freed, ms(t0), proc.returncode))
        out[kind] = {
            "free_ms": stats([s[0] for s in samples if s[0] is not None]),
            "returned_ms": stats([s[1] for s in samples]),
            "failed": sum(s[0] is None or s[2] != 0 for s in samples),
        }
    out["floor_ms"] = stats([timed(["systemctl", "stop", "bench-idle.service"])[0] for _ in range(rounds)])
    return out


def step_release_all(count, base, protos, argv):
    """Tables 3 and 4: `portrelease '*'` or `systemctl stop portreserve.target`
    until every port is bindable, it returned, and PID 1 has no job left."""
    names = [f"bench{i}" for i in range(count)]
    ports = [p for p in ports_of(names, base, protos) if not bindable(*p)]
    manager = Manager()
    pid = int(show("portreserve.service", "MainPID"))
    t0 = now()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    freed = wait_free(ports, t0, timeout=30)
    proc.wait()
    returned = ms(t0)
    jobs_done = wait_no_jobs(manager, t0)
    return {
        "argv": argv,
        "ports": len(ports),
        "rc": proc.returncode,
        "free_ms": freed,
        "returned_ms": returned,
        "no_jobs_ms": jobs_done,
        "holder_pid": pid,
        "floor_ms": stats([timed(FLOOR)[0] for _ in range(10)]),
    }


def step_footprint(sockets):
    """Table 6: the managed holder (jeepney loaded, connected to PID 1) at
    `sockets` sockets; the floor is an idle bare interpreter."""
    pid = wait_holding(sockets)
    time.sleep(0.5)
    idle = subprocess.Popen([PY, "-I", "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    time.sleep(0.3)
    floor = memory(idle.pid)
    idle.communicate(b"")
    return {"holder": memory(pid), "floor": floor, "sockets": sockets}


def step_standalone(count, rounds):
    """Table 5: a standalone holder (`portreserve -d`, ports 30000+i) and
    `portrelease --socket PATH saI` against `python3 -IS -c pass`, interleaved."""
    conf, ctl = Path("/run/bench-sa/conf"), "/run/bench-sa/socket"
    conf.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (conf / f"sa{i}").write_text(f"{30000 + i}/tcp\n")
    log = open("/results/standalone-holder.log", "wb")
    holder = subprocess.Popen(
        ["/usr/sbin/portreserve", "-d", "--config-dir", str(conf), "--socket", ctl],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    client.bind("")
    client.settimeout(1)
    for _ in range(500):
        try:
            client.sendto(b".status", ctl)
            if client.recv(1 << 20).count(b" held") == count:
                break
        except OSError:
            time.sleep(0.01)
    release, floor, bindable_at_return = [], [], 0
    for i in range(rounds):
        pair = [("r", ["/usr/sbin/portrelease", "--socket", ctl, f"sa{i}"]), ("f", FLOOR)]
        for kind, argv in pair if i % 2 else reversed(pair):
            elapsed, rc = timed(argv)
            if rc:
                raise RuntimeError(f"{argv} exited {rc}")
            (release if kind == "r" else floor).append(elapsed)
        bindable_at_return += bindable(30000 + i, "tcp")
    all_ms, rc = timed(["/usr/sbin/portrelease", "--socket", ctl, "*"])
    holder.wait(10)
    return {
        "count": count,
        "release_ms": stats(release),
        "floor_ms": stats(floor),
        "bindable_at_return": bindable_at_return,
        "rounds": rounds,
        "all_ms": all_ms,
        "all_rc": rc,
    }


HOLDER_IMPORTS = "import portreserve.cli, portreserve.holder"


def step_imports(runs):
    """Table 7: the holder's imports (`python3 -I`, as its #! runs it) with
    -X importtime, jeepney's share (portreserve.manager imports it); RSS of a
    fresh interpreter after the imports, with and without the manager."""
    rows = {"total_us": [], "jeepney_us": [], "manager_us": []}
    for _ in range(runs):
        err = subprocess.run(
            [PY, "-I", "-X", "importtime", "-c", HOLDER_IMPORTS + ", portreserve.manager"],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        total = jeepney = manager = 0
        stack = []  # (depth, name) of the open ancestors
        # A module's line follows those of the imports it caused: read
        # backwards, every line comes after its parent's.
        for line in reversed(err.splitlines()):
            if not line.startswith("import time:") or "cumulative" in line:
                continue
            _self, cumulative, name = line[12:].split("|")
            depth = (len(name) - len(name.lstrip())) // 2
            name = name.strip()
            while stack and stack[-1][0] >= depth:
                stack.pop()
            if depth == 0 and name.startswith("portreserve"):
                total += int(cumulative)
            if name == "portreserve.manager":
                manager += int(cumulative)
            if name.startswith("jeepney") and not any(n.startswith("jeepney") for _, n in stack):
                jeepney += int(cumulative)
            stack.append((depth, name))
        rows["total_us"].append(total)
        rows["jeepney_us"].append(jeepney)
        rows["manager_us"].append(manager)
    probe = "; print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"
    rss = {}
    for key, imports in (
        ("bare", "pass"),
        ("holder", HOLDER_IMPORTS),
        ("with_manager", HOLDER_IMPORTS + ", portreserve.manager"),
    ):
        values = [
            int(subprocess.run([PY, "-I", "-c", imports + probe], capture_output=True, text=True).stdout)
            for _ in range(5)
        ]
        rss[key] = statistics.median(values)
    wall = {
        key: stats([timed([PY, "-I", "-c", code])[0] for _ in range(runs)])
        for key, code in (("bare", "pass"), ("holder", HOLDER_IMPORTS + ", portreserve.manager"))
    }
    return {**{k: statistics.median(v) for k, v in rows.items()}, "rss_kib": rss, "wall_ms": wall, "runs": runs}


def main():
    for step, kwargs in json.loads(sys.argv[1]):
        t0 = now()
        try:
            result = globals()[f"step_{step}"](**kwargs)
        except Exception:
            result = {"error": traceback.format_exc()}
        result["seconds"] = ms(t0) / 1e3
        Path(f"/results/{step}.json").write_text(json.dumps(result, indent=1) + "\n")
        print(f"{step}: {'FAILED' if 'error' in result else 'ok'} in {result['seconds']:.1f}s", flush=True)


if __name__ == "__main__":
    main()
