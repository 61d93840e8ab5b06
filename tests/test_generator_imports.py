"""The generator runs at every boot and daemon-reload, and systemd waits for it:
it imports only what it needs.  Checked in a fresh `/usr/bin/python3 -I`, the
interpreter the installed generator runs under."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from genhelp import TREE as REPO

PYTHON = "/usr/bin/python3"

# Modules the generator may add to a bare interpreter's, on the boot path.
ALLOWED = {
    "__future__",
    "portreserve",
    "portreserve.config",
    "portreserve.dropins",  # issue 12: the drop-ins are written at every boot too
    "portreserve.generator",
    "portreserve.names",
    "portreserve.paths",  # import-free: os only
    "portreserve.unitpath",
    "portreserve.units",
}
# What it once imported, or easily would, each worth milliseconds at every boot.
FORBIDDEN = {
    "argparse",
    "collections",
    "collections.abc",
    "dataclasses",
    "enum",
    "fnmatch",
    "json",
    "logging",
    "pathlib",
    "re",
    "subprocess",
    "tempfile",
    "typing",
    "urllib.parse",
    "xdg",
    "systemd",
}

PROBE = """
import json, sys
before = set(sys.modules)
sys.path.insert(0, {repo!r})
sys.argv = ["portreserve-generator", *{argv!r}]
from portreserve import generator
status = generator.main()
print(json.dumps({{"status": status, "added": sorted(set(sys.modules) - before)}}))
"""


def imports_of(argv: list[str], cwd: Path) -> tuple[int, set[str]]:
    result = subprocess.run(
        [PYTHON, "-I", "-c", PROBE.format(repo=str(REPO), argv=argv)],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=True,
        timeout=60,
    )
    found = json.loads(result.stdout.splitlines()[-1])
    return found["status"], set(found["added"])


def test_boot_path_imports_only_the_allow_list(tmp_path: Path) -> None:
    # As systemd runs it (three output directories), reading the real /etc.
    status, added = imports_of([str(tmp_path / d) for d in ("normal", "early", "late")], tmp_path)
    assert status == 0
    assert added <= ALLOWED, sorted(added - ALLOWED)


def test_no_forbidden_module_is_allowed() -> None:
    # `added <= ALLOWED` above says nothing about FORBIDDEN unless the two are apart.
    assert not ALLOWED & FORBIDDEN, sorted(ALLOWED & FORBIDDEN)


def test_the_probe_sees_imports(tmp_path: Path) -> None:
    """Negative control: --print goes through argparse, and the probe notices."""
    (tmp_path / "etc").mkdir()
    _, added = imports_of(["--print", "--config-dir", str(tmp_path / "etc")], tmp_path)
    assert "argparse" in added and not added <= ALLOWED
