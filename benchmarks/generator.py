#!/usr/bin/env python3
"""How long the generator takes, as systemd runs it, beside the interpreter's floor.

Each figure is the median wall time of fresh `/usr/bin/python3 -I` processes
(fork, exec, imports, reading, writing the tree), taken in the same run as the
floor `/usr/bin/python3 -I -c pass`, so the ratio means something on any
machine.  The trees are written to a tmpfs (/dev/shm), as systemd's generator
directories are (/run).  Runs in seconds; no root, no boot.

Usage: benchmarks/generator.py [--json FILE] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = "/usr/bin/python3"

# The installed generator's code path (no argparse: systemd passes output
# directories only), with the configuration directories pointed elsewhere.
RUNNER = """
import sys
sys.path.insert(0, {repo!r})
from portreserve import generator, paths
paths.SYSTEM_CONFIG_DIRS = ({confdir!r},)
sys.argv = ["portreserve-generator", {out!r}, {out!r} + ".early", {out!r} + ".late"]
sys.exit(generator.main())
"""


def timed(
    argv: list[str], before: Callable[[], None] | None = None, repeat: int = 10
) -> tuple[list[float], list[float]]:
    """Wall times and CPU times (user + system, of the child) in ms.  CPU time
    hardly depends on what else the machine does; wall time does."""
    walls, cpus = [], []
    for _ in range(repeat):
        if before:
            before()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        walls.append((time.perf_counter() - start) * 1e3)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime) * 1e3)
    return walls, cpus


def write_files(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True)
    for name, text in files.items():
        (directory / name).write_text(text)


def cases() -> dict[str, tuple[str, dict[str, str], int]]:
    """name -> (description, files, repeat)."""
    full_range = "".join(
        f"{low}-{min(low + 4095, 65535)}/{p}\n" for p in ("tcp", "udp") for low in range(1, 65536, 4096)
    )
    lines_100k = "".join(f"{10000 + i // 2}/{'tcp' if i % 2 == 0 else 'udp'}\n" for i in range(100_000))
    return {
        "10-names": ("10 files, one port each", {f"svc{i}": f"{6000 + i}/tcp\n" for i in range(10)}, 30),
        "100-names": ("100 files, one port each", {f"svc{i}": f"{6000 + i}/tcp\n" for i in range(100)}, 15),
        "1000-names": ("1000 files, one port each", {f"svc{i}": f"{6000 + i}/tcp\n" for i in range(1000)}, 9),
        "2000-names": (
            "2000 files, one port each (the socket cap)",
            {f"svc{i}": f"{6000 + i}/tcp\n" for i in range(2000)},
            3,
        ),
        "full-range": ("1-65535 in TCP and UDP, 32 range lines (over the cap)", {"all": full_range}, 3),
        "100k-lines": ("one file of 100 000 distinct lines (over the cap)", {"many": lines_100k}, 3),
        "10k-bad-files": (
            "10 000 files whose lines are all bad",
            {f"bad{i}": "nosuchservice\n" for i in range(10_000)},
            3,
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--repeat", type=float, default=1.0, help="scale the number of runs")
    args = parser.parse_args()

    results: dict[str, dict[str, object]] = {}
    tmpfs = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="portreserve-genbench-", dir=tmpfs) as tmp:
        floor_walls, floor_cpus = timed([PYTHON, "-I", "-c", "pass"], repeat=max(3, int(30 * args.repeat)))
        floor, floor_cpu = statistics.median(floor_walls), statistics.median(floor_cpus)
        results["floor"] = {
            "description": "python3 -I -c pass",
            "median_ms": round(floor, 2),
            "cpu_ms": round(floor_cpu, 2),
        }
        print(f"{'case':<14} {'median':>10} {'floor x':>8} {'cpu':>9} {'floor x':>8} {'sockets':>8} {'problems':>9}")
        print(f"{'floor':<14} {floor:>8.1f}ms {1:>8.1f} {floor_cpu:>7.1f}ms {1:>8.1f} {'':>8} {'':>9}")
        for key, (description, files, repeat) in cases().items():
            confdir = Path(tmp) / key / "conf"
            out = Path(tmp) / key / "out"
            write_files(confdir, files)

            def clean(out: Path = out) -> None:
                for path in (out, Path(f"{out}.early"), Path(f"{out}.late")):
                    shutil.rmtree(path, ignore_errors=True)

            runner = RUNNER.format(repo=str(REPO), confdir=str(confdir), out=str(out))
            samples, cpus = timed([PYTHON, "-I", "-c", runner], before=clean, repeat=max(1, int(repeat * args.repeat)))
            median, cpu = statistics.median(samples), statistics.median(cpus)
            sockets = sum(1 for name in os.listdir(out) if name.endswith(".socket"))
            sys.path.insert(0, str(REPO))
            from portreserve.config import gather

            problems = len(gather([str(confdir)]).errors)
            results[key] = {
                "description": description,
                "median_ms": round(median, 2),
                "min_ms": round(min(samples), 2),
                "ratio_to_floor": round(median / floor, 2),
                "cpu_ms": round(cpu, 2),
                "cpu_ratio_to_floor": round(cpu / floor_cpu, 2),
                "runs": len(samples),
                "sockets": sockets,
                "problems": problems,
            }
            print(
                f"{key:<14} {median:>8.1f}ms {median / floor:>8.1f} {cpu:>7.1f}ms {cpu / floor_cpu:>8.1f}"
                f" {sockets:>8} {problems:>9}  {description}"
            )
    ten, thousand = results["10-names"], results["1000-names"]
    print(
        f"goals: 10 names <= 15 ms: {ten['median_ms']} ms ({ten['cpu_ms']} ms CPU; the floor {floor:.1f} ms, "
        f"{floor_cpu:.1f} ms CPU); 1000 names <= 60 ms: {thousand['median_ms']} ms ({thousand['cpu_ms']} ms CPU)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
