"""Running the generator as systemd does, and checking its output with systemd's
own verifier (shared by the generator tests)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Negative controls: PORTRESERVE_TREE=/tmp/old runs the generator of another
# tree (e.g. `git archive 6aa99ac portreserve generators | tar -x -C /tmp/old`),
# to show that a regression test fails on the code it guards against.
TREE = Path(os.environ.get("PORTRESERVE_TREE") or REPO)
GENERATOR = TREE / "generators" / "portreserve-generator"
UNIT_SUFFIXES = (".service", ".socket", ".target")


def run_generator(
    *args: str | bytes | Path,
    env: dict[str, str] | None = None,
    prefix: list[str] | None = None,
    limit_memory: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """The generator in a fresh process; prefix: argv before the interpreter;
    limit_memory: RLIMIT_AS in bytes (a generator reading a huge file fails
    with MemoryError under it instead of swapping the test machine)."""
    # The shim's shebang is /usr/bin/python3 -I; run it with the test's Python
    # so the source tree is what gets imported.
    # SYSTEMD_UNIT_PATH="": no drop-ins for units the host happens to have
    # (the drop-ins have tests of their own, tests/test_dropins.py).
    environ = {**os.environ, "PYTHONPATH": str(TREE), "SYSTEMD_UNIT_PATH": "", **(env or {})}
    environ.pop("SYSTEMD_EXEC_PID", None)
    environ.pop("SYSTEMD_SCOPE", None)
    return subprocess.run(
        [*(prefix or []), sys.executable, str(GENERATOR), *map(os.fsencode, args)],
        capture_output=True,
        text=True,
        errors="surrogateescape",
        env=environ,
        timeout=120,
        preexec_fn=None if limit_memory is None else lambda: _limit_memory(limit_memory),
    )


def _limit_memory(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def install_static_units(out: Path, scratch: Path) -> None:
    """The static units beside the generated ones, pointing at executables that
    exist (verify checks ExecStart=), so that every dependency resolves."""
    sbindir = scratch / "sbin"
    sbindir.mkdir(exist_ok=True)
    for tool in ("portreserve", "portrelease"):
        (sbindir / tool).write_text("#!/bin/sh\n")
        (sbindir / tool).chmod(0o755)
    for unit in (REPO / "units" / "system").iterdir():
        (out / unit.name).write_text(unit.read_text().replace("@SBINDIR@", str(sbindir)))


def verify(out: Path, scratch: Path, sample: list[str] | None = None) -> list[str]:
    """systemd-analyze verify on the generated units (all, or a sample of them),
    offline: SYSTEMD_UNIT_PATH points at the tree, the static units beside.
    Returns the lines that concern portreserve's units."""
    install_static_units(out, scratch)
    units = sample if sample is not None else sorted(p.name for p in out.iterdir() if p.name.endswith(UNIT_SUFFIXES))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units],
        cwd=out,
        capture_output=True,
        text=True,
        errors="backslashreplace",
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{out}:", "SYSTEMD_LOG_LEVEL": "warning"},
        timeout=300,
    )
    problems = [
        line
        for line in result.stderr.splitlines()
        if "portreserve" in line
        and "Failed to put bus name" not in line
        # The real holder's sandboxing settings on a host without them.
        and "unit configures an IP firewall" not in line
    ]
    if result.returncode != 0 and not problems:
        problems = [f"exit {result.returncode}: {result.stderr}"]
    return problems
