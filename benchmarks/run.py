#!/usr/bin/env python3
"""portreserve benchmarks in real systemd boots: `make bench` (full) or `make bench BENCH_ARGS=--small` (CI).
Writes benchmarks/latest.md (--small: latest-small.md); exits 1 only when a measurement broke (README.md)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from boot import BootError, boot  # noqa: E402  (tests/ is not a package)

GUEST = "/usr/local/lib/portreserve-bench/guest.py"
STAMP = "/usr/local/bin/stamp.sh"
Results = dict[str, dict[str, Any]]  # boot -> step -> figures


class Settings(NamedTuple):
    k: int  # consumers (and as many bare-interpreter units) in a boot burst
    bursts: int  # boots with a burst
    n: int  # names held
    rounds: int  # back-to-back releases, standalone releases
    stops: int  # systemctl stop of each unit kind
    runs: int  # import-time runs


FULL = Settings(k=30, bursts=3, n=1000, rounds=60, stops=15, runs=15)
SMALL = Settings(k=10, bursts=1, n=100, rounds=15, stops=5, runs=5)


def reservations(n: int, line: str = "{}/tcp") -> dict[str, Any]:
    files: dict[str, Any] = {GUEST: ((REPO / "benchmarks/guest.py").read_text(), 0o755)}
    # As on a Debian machine: journald does not copy every line to the console, and site.py runs no .pth file
    # of this build machine's (it imports certifi into every `python3 -I`, the holder's and the floor's).
    files["/etc/systemd/journald.conf.d/zz-bench.conf"] = "[Journal]\nForwardToConsole=no\n"
    files |= {str(pth): "" for d in ("lib", "local/lib") for pth in Path("/usr", d).glob("python3*/*/_sandboxing*.pth")}
    files |= {f"/etc/portreserve/bench{i}": line.format(20000 + i) + "\n" for i in range(n)}
    return files


def burst(k: int) -> tuple[dict[str, Any], list[str]]:
    """K consumers (ExecStartPre=portrelease benchI, TCP and UDP) and K bare
    interpreters, in the boot transaction (the driver Wants= them)."""
    files = reservations(k, "{}") | {STAMP: ((REPO / "benchmarks/stamp.sh").read_text(), 0o755)}
    units = []
    for i in range(k):
        pair = [("c", f"/usr/sbin/portrelease bench{i}"), ("b", "/usr/bin/python3 -IS -c pass")]
        for order, (group, command) in enumerate(pair if i % 2 else pair[::-1]):
            units.append(f"burst-{i:03d}{order}{group}.service")  # PID 1 starts them in name order
            service = f"Type=oneshot\nExecStartPre={STAMP} {group} {i} {command}\nExecStart=/bin/true\n"
            files[f"/etc/systemd/system/{units[-1]}"] = "[Service]\n" + service
    return files, units


def plans(s: Settings) -> list[tuple[str, dict[str, Any], list[str], list[Any]]]:
    """(boot, files, units the driver waits for, [[step, arguments], ...])."""
    tcp = {"count": s.n, "protos": ["tcp"]}
    everything = ["/usr/sbin/portrelease", "*"]
    out = [(f"burst{j}", *burst(s.k), [["burst", {"k": s.k}]]) for j in range(1, s.bursts + 1)]
    out[0][3].extend([["standalone", {"count": 100, "rounds": s.rounds}], ["imports", {"runs": s.runs}]])
    idle = {"/etc/systemd/system/bench-idle.service": "[Service]\nExecStart=/bin/true\n"}
    steps = [["releases", tcp | {"rounds": s.rounds}], ["stops", tcp | {"rounds": s.stops, "released": s.rounds}]]
    out.append(("n", reservations(s.n) | idle, [], [*steps, ["release_all", tcp | {"argv": everything}]]))
    stop_target = ["systemctl", "stop", "portreserve.target"]
    out.append(("target", reservations(s.n), [], [["release_all", tcp | {"argv": stop_target}]]))
    both = {"count": s.n, "protos": ["tcp", "udp"], "argv": everything}
    out.append(("both", reservations(s.n, "{}"), [], [["footprint", {"sockets": 2 * s.n}], ["release_all", both]]))
    return out


def run_boot(key: str, files: dict[str, Any], after: list[str], steps: list[Any], destdir: Path, tmp: Path) -> Any:
    print(f"[bench] boot {key}: {', '.join(step for step, _ in steps)}", file=sys.stderr, flush=True)
    driver = f"#!/bin/bash\nexec /usr/bin/python3 {GUEST} {shlex.quote(json.dumps(steps))}\n"
    try:
        booted = boot(tmp / key, files=files, install=destdir, driver=driver, driver_after=after, timeout=900)
    except BootError as e:
        return {step: {"error": f"boot failed: {str(e)[:3000]}"} for step, _ in steps}
    results = {}
    for step, _ in steps:
        try:
            results[step] = json.loads((booted.results_dir / f"{step}.json").read_text())
        except (OSError, ValueError) as e:
            results[step] = {"error": f"no result ({e}): {booted.driver_log[-2000:]}"}
    return results


# -- the report: one function per table, each adding its goals to `goals` (README: how) ------


def cells(*values: object) -> str:
    text = ("—" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v) for v in values)
    return "| " + " | ".join(text) + " |"


def section(title: str, text: str, header: list[str], rows: list[list[object]]) -> list[str]:
    return [f"## {title}", "", text, "", cells(*header), "|" + "---|" * len(header), *(cells(*r) for r in rows)]


def goal(goals: list[str], what: str, limit: str, shown: str, value: float | None, bound: float | None) -> None:
    verdict = "" if bound is None else "no figure" if value is None else "met" if value <= bound else "**NOT met**"
    goals.append(cells(what, limit, shown, verdict))


def p90(values: list[float]) -> float:
    return sorted(values)[max(0, -(-9 * len(values) // 10) - 1)]


def phases(x: dict[str, float]) -> str:
    return (f"until the holder logged the request {x['ask']:.1f} ms, until PID 1 had stopped the name's socket "
            f"{x['stop']:.1f} ms, until portrelease returned {x['answer']:.1f} ms")  # fmt: skip


def table_burst(r: Results, s: Settings, goals: list[str]) -> list[str]:
    runs = [steps["burst"] for key, steps in r.items() if key.startswith("burst")]
    c: list[float] = sum((x["c"] for x in runs), [])
    b: list[float] = sum((x["b"] for x in runs), [])
    rows: list[list[object]] = [[f"boot {j}", median(x["c"]), p90(x["c"]), median(x["b"]), p90(x["b"]),
                                 f"{median(x['c']) / median(x['b']):.2f}", f"{x['offset_c']:.0f} / {x['offset_b']:.0f}",
                                 x["failed"]] for j, x in enumerate(runs, 1)]  # fmt: skip
    rows.append(["all", median(c), p90(c), median(b), p90(b), f"{median(c) / median(b):.2f}", "", ""])
    q = median(c) / median(b)
    what = f"1. boot burst of {s.k}: portrelease ÷ bare interpreter, medians"
    goal(goals, what, "≤ 1.5×", f"{q:.2f}× ({median(c):.0f} ÷ {median(b):.0f} ms)", q, 1.5)
    m = {key: median([x[key] for x in runs]) for key in runs[0] if not isinstance(runs[0][key], list)}
    text = (f"Where a consumer's time goes (medians): {phases(m)}. The holder started "
            f"{m['ExecMainStartTimestamp']:.0f} ms and was ready {m['ActiveEnterTimestamp']:.0f} ms after the "
            "burst's first unit (negative: before).")  # fmt: skip
    header = ["", "portrelease median ms", "p90", "bare median ms", "p90", "ratio", "start ms (c / b)", "failed"]
    return section(f"1. Boot burst: {s.k} consumers beside {s.k} bare interpreters", text, header, rows)


def table_releases(r: Results, s: Settings, goals: list[str]) -> list[str]:
    x, m, fl = r["n"]["releases"], r["n"]["releases"]["ms"], r["n"]["releases"]["floor"]
    shown = f"{m['median']:.1f} ms ({m['median'] / fl['median']:.2f}× the interpreter)"
    goal(goals, f"2. back-to-back `portrelease NAME`, {x['held']} held: median", "≤ 20 ms", shown, m["median"], 20)
    busy, free = x["ports"] - x["free_at_return"], f"{x['free_at_return']}/{x['ports']}"
    goal(goals, "2. … bindable when it returned", "all", free, busy, 0)
    rows = [["`portrelease NAME`", m["median"], m["p95"], m["max"], x["failed"], free]]
    rows.append(["`python3 -IS -c pass`", fl["median"], fl["p95"], fl["max"], "", ""])
    text = f"{m['n']} releases, {x['held']} names held at the start. Medians: {phases(x)}."
    return section("2. Back-to-back releases", text, ["", "median ms", "p95", "max", "failed", "bindable"], rows)


def table_release_all(r: Results, s: Settings, goals: list[str]) -> list[str]:
    rows = []
    for key, what in (("n", f"`portrelease '*'`, {s.n} names"), ("target", "`systemctl stop portreserve.target`"),
                      ("both", f"`portrelease '*'`, {s.n} names × TCP and UDP")):  # fmt: skip
        x = r[key]["release_all"]
        done = None if None in (x["free"], x["idle"]) else max(x["free"], x["idle"])
        rows.append([what, x["ports"], x["returned"], x["free"], x["idle"], x["rc"], *x["cpu"].values()])
        if key == "n":
            goal(goals, f"3. release-all of {s.n}: bindable and no job", "≤ 1000 ms", f"{done:.0f} ms", done, 1000)
        elif key == "target":
            what = f"4. `systemctl stop portreserve.target`, {s.n} held: all bindable"
            goal(goals, what, "≤ 100 ms", f"{x['free']:.0f} ms", x["free"], 100)
        else:
            what = f"6. `portrelease '*'`, {x['ports']} sockets: bindable and no job"
            goal(goals, what, "—", f"{done:.0f} ms", 0, None)
    header = ["", "ports", "returned ms", "all bindable ms", "no job ms", "exit", "CPU ms: PID 1", "journald", "holder"]
    errors = [f"{k}: `{r[k]['release_all']['stderr'].strip()}`" for k in ("n", "target", "both")
              if r[k]["release_all"]["rc"]]  # fmt: skip
    text = "Each in its own boot, every name held." + (" Errors: " + "; ".join(errors) if errors else "")
    return section("3. Release everything", text, header, rows)


def table_stops(r: Results, s: Settings, goals: list[str]) -> list[str]:
    x, rows = r["n"]["stops"], []
    floor = x["floor"]["median"]
    for kind, what in (("socket", "`portreserve-PORT-tcp.socket`"), ("group", "`portreserve@NAME.target`")):
        y = x[kind]
        free = y["free"].get("median")
        goal(goals, f"4. `systemctl stop` {what}, {x['held']} held: bindable", "≤ 100 ms", f"{free:.0f} ms", free, 100)
        rows.append([what, free, y["free"].get("p95"), y["returned"]["median"], f"{free / floor:.2f}", y["failed"]])
    text = f"{s.stops} of each, {x['held']} names held. Floor: `systemctl stop` of an inactive unit, {floor:.1f} ms."
    header = ["stopped", "bindable median ms", "p95", "returned median ms", "÷ floor", "failed"]
    return section("4. `systemctl stop` of one unit", text, header, rows)


def table_standalone(r: Results, s: Settings, goals: list[str]) -> list[str]:
    x = r["burst1"]["standalone"]
    rel, fl = x["release"], x["floor"]
    q = rel["median"] / fl["median"]
    what = "5. standalone `portrelease --socket PATH NAME` ÷ `python3 -IS -c pass`"
    goal(goals, what, "≤ 1.25×", f"{q:.2f}×", q, 1.25)
    rows: list[list[object]] = [[what, y["median"], y["p90"], y["max"]] for what, y in (
        ("`portrelease --socket PATH NAME`", rel), ("`python3 -IS -c pass`", fl),
        ("its imports alone (`-IS`, then `os._exit`, as the command)", x["imports"]))]  # fmt: skip
    rows.insert(2, ["ratio", f"{q:.2f}", "", ""])
    text = (f"{rel['n']} of each, {x['count']} names held; bindable at return {x['free_at_return']}/{rel['n']}. "
            f"`portrelease '*'` of the rest: {x['all']:.1f} ms, exit {x['all_rc']}.")  # fmt: skip
    return section("5. Standalone release (no systemd)", text, ["", "median ms", "p90", "max"], rows)


def table_footprint(r: Results, s: Settings, goals: list[str]) -> list[str]:
    x = r["both"]["footprint"]
    rss = x["holder"]["rss"] / 1024
    goal(goals, f"6. holder RSS at {x['sockets']} sockets, jeepney included", "≤ 15 MB", f"{rss:.1f} MB", rss, 15)
    who = {"holder": "the holder (portreserve.service)", "standalone": "standalone holder, same sockets",
           "floor": "idle `python3 -I`"}  # fmt: skip
    rows: list[list[object]] = [[who[k], *(x[k][f] / 1024 for f in ("rss", "hwm", "pss", "anon")), x[k]["fds"]]
                                for k in who]  # fmt: skip
    top = sorted(x["smaps"].items(), key=lambda kv: -kv[1])[:8]
    text = "The holder's resident memory by mapping (KiB): " + ", ".join(f"{k} {v}" for k, v in top) + "."
    return section("6. Holder memory", text, ["", "RSS MB", "peak MB", "PSS MB", "anonymous MB", "fds"], rows)


def table_imports(r: Results, s: Settings, goals: list[str]) -> list[str]:
    x = r["burst1"]["imports"]
    share = 100 * x["jeepney"] / x["total"]
    goal(goals, "7. jeepney's share of the holder's import time", "—", f"{share:.0f} %", 0, None)
    rss = "{:.1f} / {:.1f} / {:.1f} MB".format(*(x[f"rss_{k}"] / 1024 for k in ("bare", "holder", "manager")))
    rows: list[list[object]] = [
        ["the holder's imports (cumulative, `-X importtime`)", f"{x['total']:.1f} ms"],
        ["… portreserve.manager, jeepney in it", f"{x['manager']:.1f} ms, {x['jeepney']:.1f} ms ({share:.0f} %)"],
        ["RSS: `pass` / + cli, holder / + manager, jeepney", rss],
        ["jeepney's RSS (with manager.py)", f"{(x['rss_manager'] - x['rss_holder']) / 1024:.1f} MB"],
    ]
    return section("7. The holder's imports", f"`python3 -I`, medians of {s.runs} runs.", ["", ""], rows)


TABLES = (table_burst, table_releases, table_release_all, table_stops, table_standalone, table_footprint, table_imports)


def report(r: Results, s: Settings, small: bool, seconds: float, load: float) -> tuple[str, list[str]]:
    goals: list[str] = []
    body: list[str] = []
    for table in TABLES:
        try:
            body += ["", *table(r, s, goals)]
        except (KeyError, TypeError, ValueError, ZeroDivisionError, statistics.StatisticsError) as e:
            body += ["", f"## {table.__name__}: no figures ({e!r})"]
    problems = [f"{key}/{step}: {x['error'].strip().splitlines()[-1][:300]}"
                for key, steps in r.items() for step, x in steps.items() if "error" in x]  # fmt: skip
    commit, changed = (subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()
                       for a in (["rev-parse", "--short", "HEAD"], ["status", "--porcelain"]))  # fmt: skip
    cpu = [x.split(":")[1].strip() for x in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in x]
    systemd = subprocess.run(["/lib/systemd/systemd", "--version"], capture_output=True, text=True).stdout
    how, when = " BENCH_ARGS=--small" if small else "", datetime.datetime.now(datetime.UTC)
    head = f"""# portreserve benchmarks{" (--small)" if small else ""}

- **date**: {when:%Y-%m-%d %H:%M} UTC; `make bench{how}`, {seconds:.0f} s
- **machine**: {cpu[0] if cpu else "?"}, {len(os.sched_getaffinity(0))} cores, {platform.system()} \
{platform.release()}; load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (other jobs ran on it)
- **systemd**: {systemd.splitlines()[0]}, booted as PID 1 by tests/boot.py; python {platform.python_version()}
- **commit**: {commit}{" + changes" if changed else ""}

## Goals (issue 8)

| what | goal | measured | verdict |
|---|---|---|---|
""".splitlines()
    head += goals
    if problems:
        body += ["", "## Problems", "", *(f"- {p}" for p in problems)]
    return "\n".join(head + body) + "\n", problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="N=100, one burst of 10 (CI)")
    parser.add_argument("--output", type=Path, help="the report (default: latest.md, --small: latest-small.md)")
    parser.add_argument("--only", help="only these boots (comma-separated: burst1, n, target, both)")
    parser.add_argument("--keep", action="store_true", help="keep the boots' directories (journals, logs)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("benchmarks/run.py: needs root (it boots systemd in namespaces)")
    s = SMALL if args.small else FULL
    started, load, tmp = time.monotonic(), os.getloadavg()[0], Path(tempfile.mkdtemp(prefix="portreserve-bench-"))
    results = {}
    try:
        install = ["make", "-s", "install", f"DESTDIR={tmp / 'destdir'}", "PREFIX=/usr"]
        subprocess.run(install, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        for key, files, after, steps in plans(s):
            if args.only and key not in args.only.split(","):
                continue
            results[key] = run_boot(key, files, after, steps, tmp / "destdir", tmp)
    finally:
        if args.keep:
            print(f"[bench] kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    text, problems = report(results, s, args.small, time.monotonic() - started, load)
    print(text)
    output = args.output or REPO / "benchmarks" / ("latest-small.md" if args.small else "latest.md")
    output.write_text(text)
    print(f"[bench] wrote {output}" + (f"; {len(problems)} measurement(s) broke" if problems else ""), file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
