#!/usr/bin/env python3
"""portreserve benchmarks: `make bench` (full) or `make bench BENCH_ARGS=--small` (CI).

Installs the tree (`make install DESTDIR=... PREFIX=/usr`) and boots the real
systemd 252 as PID 1 in throwaway roots (tests/boot.py); benchmarks/guest.py
measures inside each boot.  Prints the report and writes it to
benchmarks/latest.md (--small: latest-small.md, not committed).  Goals are
reported, not asserted: the exit status is 1 only when a measurement broke.
"""

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
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from boot import BootError, boot  # type: ignore[import-not-found]  # noqa: E402  (tests/ is not a package)

GUEST = "/usr/local/lib/portreserve-bench/guest.py"
STAMP = "/usr/local/bin/stamp.sh"
BASE = 20000  # benchI owns BASE+I


class Settings(NamedTuple):
    k: int  # consumers (and bare units) in a boot burst
    bursts: int  # burst boots
    n: int  # names held
    rounds: int  # back-to-back releases
    stops: int  # systemctl stop of each kind
    sa_count: int  # names of the standalone holder
    sa_rounds: int
    import_runs: int


FULL = Settings(k=30, bursts=3, n=1000, rounds=60, stops=15, sa_count=100, sa_rounds=40, import_runs=15)
SMALL = Settings(k=10, bursts=1, n=100, rounds=15, stops=5, sa_count=20, sa_rounds=10, import_runs=5)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- the boots -------------------------------------------------------------------


def reservations(n: int, line: str = "{port}/tcp") -> dict[str, Any]:
    files: dict[str, Any] = {GUEST: ((REPO / "benchmarks" / "guest.py").read_text(), 0o755)}
    for i in range(n):
        files[f"/etc/portreserve/bench{i}"] = line.format(port=BASE + i) + "\n"
    return files


def burst_files(k: int) -> tuple[dict[str, Any], list[str]]:
    """K consumers (ExecStartPre=portrelease benchI) and K bare-interpreter
    units, all in the boot transaction (the driver Wants= them)."""
    files = reservations(k, "{port}")  # a bare number: TCP and UDP
    files[STAMP] = ((REPO / "benchmarks" / "stamp.sh").read_text(), 0o755)
    units = []
    for i in range(k):
        pair = [("c", f"/usr/sbin/portrelease bench{i}"), ("b", "/usr/bin/python3 -IS -c pass")]
        for order, (group, command) in enumerate(pair if i % 2 else reversed(pair)):
            # PID 1 starts them in name order: the groups alternate.
            units.append(f"burst-{i:03d}{order}-{group}.service")
            files[f"/etc/systemd/system/{units[-1]}"] = (
                f"[Service]\nType=oneshot\nExecStartPre={STAMP} {group} {i} {command}\nExecStart=/bin/true\n"
            )
    return files, units


def plans(s: Settings) -> list[tuple[str, dict[str, Any], list[str], list[Any]]]:
    """(key, files, driver_after, [[step, arguments], ...]) per boot."""
    tcp = {"count": s.n, "base": BASE, "protos": ["tcp"]}
    files, units = burst_files(s.k)
    out = [(f"burst{j}", files, units, [["burst", {"k": s.k}]]) for j in range(1, s.bursts + 1)]
    out[0][3].extend(
        [["standalone", {"count": s.sa_count, "rounds": s.sa_rounds}], ["imports", {"runs": s.import_runs}]]
    )
    idle = {"/etc/systemd/system/bench-idle.service": "[Service]\nExecStart=/bin/true\n"}
    out.append(
        (
            "n",
            {**reservations(s.n), **idle},
            [],
            [
                ["releases", {**tcp, "rounds": s.rounds}],
                ["stops", {**tcp, "rounds": s.stops, "released": s.rounds}],
                ["release_all", {**tcp, "argv": ["/usr/sbin/portrelease", "*"]}],
            ],
        )
    )
    stop_target = ["systemctl", "stop", "portreserve.target"]
    out.append(("target", reservations(s.n), [], [["release_all", {**tcp, "argv": stop_target}]]))
    out.append(
        (
            "both",
            reservations(s.n, "{port}"),
            [],
            [
                ["footprint", {"sockets": 2 * s.n}],
                ["release_all", {**tcp, "protos": ["tcp", "udp"], "argv": ["/usr/sbin/portrelease", "*"]}],
            ],
        )
    )
    return out


def run_boot(
    key: str, files: dict[str, Any], after: list[str], steps: list[Any], destdir: Path, scratch: Path
) -> dict[str, Any]:
    log(f"boot {key}: {', '.join(step for step, _ in steps)}")
    driver = f"#!/bin/bash\nexec /usr/bin/python3 {GUEST} {shlex.quote(json.dumps(steps))}\n"
    try:
        booted = boot(scratch / key, files=files, install=destdir, driver=driver, driver_after=after, timeout=900)
    except BootError as e:
        return {step: {"error": f"boot failed: {str(e)[:3000]}"} for step, _ in steps}
    results = {}
    for step, _ in steps:
        try:
            results[step] = json.loads((booted.results_dir / f"{step}.json").read_text())
        except (OSError, ValueError) as e:
            results[step] = {"error": f"no result ({e}): {booted.driver_log[-2000:]}"}
    return results


# -- the report: one function per table --------------------------------------------


def f(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def goal(value: float | None, limit: float) -> str:
    return "no figure" if value is None else ("met" if value <= limit else "**NOT met**")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


Summary = list[list[str]]  # rows of the goals table: what, goal, measured, verdict


def table_burst(results: dict[str, Any], s: Settings, summary: Summary) -> list[str]:
    rows, ratios, consumer, bare = [], [], [], []
    phases: dict[str, list[float]] = {"ask": [], "stop": [], "answer": [], "started": [], "ready": []}
    for key in (f"burst{j}" for j in range(1, s.bursts + 1)):
        r = results[key]["burst"]
        if "error" in r:
            rows.append([key, "failed"] + [""] * 7)
            continue
        units = r["units"]
        dur = {g: [(u["end_us"] - u["start_us"]) / 1e3 for n, u in units.items() if n[0] == g] for g in "cb"}
        first = min(u["start_us"] for u in units.values())
        spread = {
            g: statistics.median(u["start_us"] - first for n, u in units.items() if n[0] == g) / 1e3 for g in "cb"
        }
        failed = sum(u["rc"] != 0 for u in units.values())
        phases["started"].append((r["holder"]["ExecMainStartTimestamp"] - first) / 1e3)
        phases["ready"].append((r["holder"]["ActiveEnterTimestamp"] - first) / 1e3)
        c, b = _quantiles(dur["c"]), _quantiles(dur["b"])
        ratios.append(c[0] / b[0])
        consumer += dur["c"]
        bare += dur["b"]
        for u in (u for n, u in units.items() if n[0] == "c" and u.get("received_us") and u.get("sockets_stopped_us")):
            phases["ask"].append((u["received_us"] - u["start_us"]) / 1e3)
            phases["stop"].append((u["sockets_stopped_us"] - u["received_us"]) / 1e3)
            phases["answer"].append((u["end_us"] - u["sockets_stopped_us"]) / 1e3)
        rows.append(
            [
                key,
                f(c[0]),
                f(c[1]),
                f(b[0]),
                f(b[1]),
                f"{ratios[-1]:.2f}",
                f"{f(spread['c'])} / {f(spread['b'])}",
                str(failed),
            ]
        )
    if consumer:
        c, b = _quantiles(consumer), _quantiles(bare)
        rows.append(["all", f(c[0]), f(c[1]), f(b[0]), f(b[1]), f"{c[0] / b[0]:.2f}", "", ""])
        summary.append(
            [
                f"1. boot burst of {s.k}: portrelease / bare interpreter, medians",
                "≤ 1.5×",
                f"{c[0] / b[0]:.2f}× ({f(c[0])} / {f(b[0])} ms)",
                goal(c[0] / b[0], 1.5),
            ]
        )
    lines = [
        f"## 1. Boot burst: {s.k} consumers vs {s.k} bare interpreters",
        "",
        f"One boot transaction starts {s.k} consumers (`ExecStartPre=/usr/sbin/portrelease benchI`, TCP and UDP "
        f"each) and {s.k} units whose `ExecStartPre=` is `/usr/bin/python3 -IS -c pass`, all after basic.target. "
        "Both run under the same wrapper (benchmarks/stamp.sh: bash's `$EPOCHREALTIME` before and after the "
        "command). *Start offset*: median start of each group after the first unit started.",
        "",
    ]
    lines += table(
        [
            "boot",
            "portrelease median ms",
            "p90 ms",
            "bare median ms",
            "p90 ms",
            "ratio",
            "start offset ms (c / b)",
            "failed",
        ],
        rows,
    )
    if phases["ask"]:
        m = {k: statistics.median(v) for k, v in phases.items()}
        lines += [
            "",
            "Where a consumer's time goes (medians over all boots): start → the holder logs the request "
            f"(journald's receive time) **{f(m['ask'])} ms**; → PID 1 has stopped the name's TCP socket unit "
            f"(InactiveEnterTimestamp) **{f(m['stop'])} ms**; → portrelease returned **{f(m['answer'])} ms**. "
            f"The holder's process started {f(m['started'])} ms and was ready (READY=1) {f(m['ready'])} ms "
            "after the first burst unit started (negative: before).",
        ]
    return lines


def _quantiles(values: list[float]) -> tuple[float, float]:
    v = sorted(values)
    return statistics.median(v), v[max(0, -(-9 * len(v) // 10) - 1)]


def table_releases(results: dict[str, Any], s: Settings, summary: Summary) -> list[str]:
    r = results["n"]["releases"]
    lines = ["## 2. Back-to-back releases", ""]
    if "error" in r:
        return lines + ["failed"]
    m = r["ms"]
    summary.append(
        [
            f"2. back-to-back `portrelease NAME`, {r['held']} held, median",
            "≤ 20 ms",
            f"{f(m['median'])} ms ({m['median'] / r['floor_ms']['median']:.2f}× the interpreter)",
            goal(m["median"], 20),
        ]
    )
    summary.append(
        [
            "2. … bindable when portrelease returned",
            "all",
            f"{r['bindable_at_return']}/{r['ports']}",
            goal(r["ports"] - r["bindable_at_return"], 0),
        ]
    )
    lines += [
        f"{m['n']} names released one after another with {r['held']} held (no pause, no re-reservation), "
        "timed from the caller until `portrelease` returned; then the port bound at once. "
        "Floor: as many `python3 -IS -c pass`, timed alike, right after.",
        "",
    ]
    lines += table(
        ["what", "median ms", "p95 ms", "max ms", "failed", "bindable at return"],
        [
            [
                "`portrelease NAME`",
                f(m["median"]),
                f(m["p95"]),
                f(m["max"]),
                str(r["failed"]),
                f"{r['bindable_at_return']}/{r['ports']}",
            ],
            [
                "`python3 -IS -c pass`",
                f(r["floor_ms"]["median"]),
                f(r["floor_ms"]["p95"]),
                f(r["floor_ms"]["max"]),
                "",
                "",
            ],
        ],
    )
    return lines


def table_release_all(results: dict[str, Any], s: Settings, summary: Summary) -> list[str]:
    rows = []
    for key, label in (
        ("n", f"`portrelease '*'`, {s.n} TCP"),
        ("target", f"`systemctl stop portreserve.target`, {s.n} TCP"),
        ("both", f"`portrelease '*'`, {s.n} TCP + {s.n} UDP"),
    ):
        r = results[key]["release_all"]
        if "error" in r:
            rows.append([label, "failed", "", "", "", ""])
            continue
        done = None if r["free_ms"] is None or r["no_jobs_ms"] is None else max(r["free_ms"], r["no_jobs_ms"])
        rows.append([label, str(r["ports"]), f(r["returned_ms"]), f(r["free_ms"]), f(r["no_jobs_ms"]), str(r["rc"])])
        if key == "n":
            summary.append(
                [
                    f"3. release-all of {s.n}: all bindable and no job queued",
                    "≤ 1000 ms",
                    f"{f(done)} ms",
                    goal(done, 1000),
                ]
            )
        if key == "target":
            summary.append(
                [
                    f"4. `systemctl stop portreserve.target`, {s.n} held: all bindable",
                    "≤ 100 ms",
                    f"{f(r['free_ms'])} ms",
                    goal(r["free_ms"], 100),
                ]
            )
        if key == "both":
            summary.append(
                [
                    f"6. `portrelease '*'` at {2 * s.n} sockets: all bindable and no job queued",
                    "(none)",
                    f"{f(done)} ms",
                    "",
                ]
            )
    lines = [
        "## 3. Release everything",
        "",
        "Each in its own boot, timed from the caller: until it returned, until every port was bindable, and "
        "until PID 1 had no job queued (`ListJobs` on /run/systemd/private, polled every 5 ms; the benchmark's "
        "own boot-driver.service job excepted).",
        "",
    ]
    return lines + table(["what", "ports", "returned ms", "all bindable ms", "no job queued ms", "exit"], rows)


def table_stops(results: dict[str, Any], s: Settings, summary: Summary) -> list[str]:
    r = results["n"]["stops"]
    lines = ["## 4. `systemctl stop` of one unit", ""]
    if "error" in r:
        return lines + ["failed"]
    floor = r["floor_ms"]["median"]
    rows = []
    for kind, label in (
        ("socket", "a socket unit `portreserve-PORT-tcp.socket`"),
        ("group", "a grouping unit `portreserve@NAME.target`"),
    ):
        x = r[kind]
        fm = x["free_ms"].get("median")
        rows.append(
            [
                label,
                f(fm),
                f(x["free_ms"].get("p95")),
                f(x["returned_ms"]["median"]),
                f"{fm / floor:.2f}" if fm else "—",
                str(x["failed"]),
            ]
        )
        summary.append(
            [
                f"4. `systemctl stop` of {label}, ~{r['held']} held: bindable, median",
                "≤ 100 ms",
                f"{f(fm)} ms",
                goal(fm, 100),
            ]
        )
    lines += [
        f"{s.stops} stops of each kind with about {r['held']} names held (after table 2's releases), timed "
        "from the caller until the unit's ports were bindable, and until systemctl returned. Floor: "
        f"`systemctl stop` of an inactive unit, median {f(floor)} ms. `portreserve.target`: table 3.",
        "",
    ]
    return lines + table(
        ["stopped", "bindable median ms", "p95 ms", "systemctl returned median ms", "÷ floor", "failed"], rows
    )


def table_standalone(results: dict[str, Any], s: Settings, summary: Summary) -> list[str]:
    r = results["burst1"]["standalone"]
    lines = ["## 5. Standalone release (no systemd)", ""]
    if "error" in r:
        return lines + ["failed"]
    ratio = r["release_ms"]["median"] / r["floor_ms"]["median"]
    summary.append(
        [
            "5. standalone `portrelease --socket PATH NAME` / `python3 -IS -c pass`, medians",
            "≤ 1.25×",
            f"{ratio:.2f}×",
            goal(ratio, 1.25),
        ]
    )
    lines += [
        f"`portreserve -d` binds {r['count']} TCP ports itself; {r['rounds']} releases "
        "`portrelease --socket PATH saI`, interleaved with as many `python3 -IS -c pass` (alternating which "
        f"goes first), in the guest after the burst. Bindable at return: {r['bindable_at_return']}/{r['rounds']}. "
        f"Then `portrelease '*'` of the rest: {f(r['all_ms'])} ms, exit {r['all_rc']}.",
        "",
    ]
    return lines + table(
        ["what", "median ms", "p90 ms", "max ms"],
        [
            [
                "`portrelease --socket PATH NAME`",
                f(r["release_ms"]["median"]),
                f(r["release_ms"]["p90"]),
                f(r["release_ms"]["max"]),
            ],
            ["`python3 -IS -c pass`", f(r["floor_ms"]["median"]), f(r["floor_ms"]["p90"]), f(r["floor_ms"]["max"])],
            ["ratio", f"{ratio:.2f}", "", ""],
        ],
    )


def table_footprint(results: dict[str, Any], s: Settings, summary: Summary) -> list[str]:
    r = results["both"]["footprint"]
    lines = ["## 6. Holder memory", ""]
    if "error" in r:
        return lines + ["failed"]
    h, b = r["holder"], r["floor"]
    summary.append(
        [
            f"6. holder RSS at {r['sockets']} sockets, jeepney loaded",
            "≤ 15 MB",
            f"{h['rss_kib'] / 1024:.1f} MB",
            goal(h["rss_kib"] / 1024, 15),
        ]
    )
    lines += [
        f"portreserve.service's MainPID holding {r['sockets']} sockets ({s.n} names × TCP and UDP), "
        "connected to PID 1 (jeepney loaded), 0.5 s after it reported them; the floor is an idle "
        "`python3 -I` in the same boot. `portrelease '*'` of these: table 3.",
        "",
    ]
    return lines + table(
        ["process", "RSS MB", "PSS MB", "anonymous MB", "fds"],
        [
            [
                name,
                f"{m['rss_kib'] / 1024:.1f}",
                f"{m['pss_kib'] / 1024:.1f}",
                f"{m['anon_kib'] / 1024:.1f}",
                str(m["fds"]),
            ]
            for name, m in (("holder", h), ("idle `python3 -I`", b))
        ]
        + [["ratio", f"{h['rss_kib'] / b['rss_kib']:.2f}", "", "", ""]],
    )


def table_imports(results: dict[str, Any], s: Settings, summary: Summary) -> list[str]:
    r = results["burst1"]["imports"]
    lines = ["## 7. The holder's imports and jeepney", ""]
    if "error" in r:
        return lines + ["failed"]
    rss = r["rss_kib"]
    share = 100 * r["jeepney_us"] / r["total_us"]
    summary.append(["7. jeepney's share of the holder's import time", "(report)", f"{share:.0f} %", ""])
    lines += [
        f"`python3 -I -X importtime -c 'import portreserve.cli, portreserve.holder, portreserve.manager'` "
        f"(medians of {r['runs']} runs); RSS of a fresh `python3 -I` after the imports (median of 5).",
        "",
    ]
    return lines + table(
        ["what", "figure"],
        [
            ["the holder's imports (cumulative)", f"{r['total_us'] / 1e3:.1f} ms"],
            ["of which portreserve.manager", f"{r['manager_us'] / 1e3:.1f} ms"],
            ["of which jeepney", f"{r['jeepney_us'] / 1e3:.1f} ms ({share:.0f} %)"],
            [
                "start to exit, `python3 -I -c pass` / with the holder's imports",
                f"{f(r['wall_ms']['bare']['median'])} / {f(r['wall_ms']['holder']['median'])} ms",
            ],
            [
                "RSS: bare / holder's modules / with manager and jeepney",
                f"{rss['bare'] / 1024:.1f} / {rss['holder'] / 1024:.1f} / {rss['with_manager'] / 1024:.1f} MB",
            ],
            ["jeepney's RSS", f"{(rss['with_manager'] - rss['holder']) / 1024:.1f} MB"],
        ],
    )


TABLES = (table_burst, table_releases, table_release_all, table_stops, table_standalone, table_footprint, table_imports)


def machine() -> list[str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    git = lambda *a: subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()  # noqa: E731
    systemd = subprocess.run(["/lib/systemd/systemd", "--version"], capture_output=True, text=True).stdout
    load = os.getloadavg()[0]
    return [
        f"- **date**: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- **machine**: {cpu}, {len(os.sched_getaffinity(0))} cores, {platform.system()} {platform.release()}, "
        f"load average {load:.1f} at the start",
        f"- **systemd**: {systemd.splitlines()[0] if systemd else 'unknown'}; python {platform.python_version()}",
        f"- **commit**: {git('rev-parse', '--short', 'HEAD')}{' + changes' if git('status', '--porcelain') else ''}",
    ]


def report(results: dict[str, Any], s: Settings, small: bool, seconds: float) -> tuple[str, list[str]]:
    summary: Summary = []
    body: list[str] = []
    for make_table in TABLES:
        try:
            body += ["", *make_table(results, s, summary)]
        except (KeyError, TypeError, ZeroDivisionError) as e:
            body += ["", f"## {make_table.__name__}: no figures ({e!r})"]
    problems = [
        f"{boot_key}/{step}: {r['error'].strip().splitlines()[-1][:300]}"
        for boot_key, steps in results.items()
        for step, r in steps.items()
        if "error" in r
    ]
    head = [
        f"# portreserve benchmarks{' (--small)' if small else ''}",
        "",
        *machine(),
        f"- **run**: `make bench{' BENCH_ARGS=--small' if small else ''}`, {seconds:.0f} s; each figure measured "
        "inside a real systemd 252 booted as PID 1 (tests/boot.py) by benchmarks/guest.py",
        "",
        "## Goals (issue 8)",
        "",
    ]
    head += table(["what", "goal", "measured", "verdict"], summary)
    if problems:
        body += ["", "## Problems", "", *(f"- {p}" for p in problems)]
    return "\n".join(head + body) + "\n", problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="small N, one burst boot (CI)")
    parser.add_argument("--output", type=Path, help="where the report goes (default benchmarks/latest.md)")
    parser.add_argument("--keep", action="store_true", help="keep the boots' scratch directories (logs)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("benchmarks/run.py: needs root (it boots systemd in namespaces)")
    s = SMALL if args.small else FULL
    output = args.output or REPO / "benchmarks" / ("latest-small.md" if args.small else "latest.md")
    started = datetime.datetime.now()
    scratch = Path(tempfile.mkdtemp(prefix="portreserve-bench-"))
    results: dict[str, Any] = {}
    try:
        subprocess.run(
            ["make", "-s", "install", f"DESTDIR={scratch / 'destdir'}", "PREFIX=/usr"],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for key, files, after, steps in plans(s):
            results[key] = run_boot(key, files, after, steps, scratch / "destdir", scratch)
    finally:
        if args.keep:
            log(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    text, problems = report(results, s, args.small, (datetime.datetime.now() - started).total_seconds())
    print(text)
    output.write_text(text)
    log(f"wrote {output}; {len(problems)} measurement(s) broke" if problems else f"wrote {output}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
