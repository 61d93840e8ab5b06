"""`portreserve check` and `portreserve status` say which unit releases each
name (issue 12): the generated drop-in, a manual release, or nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def check(config: Path, units: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SYSTEMD_UNIT_PATH": str(units)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "portreserve",
            "check",
            "--config-dir",
            str(config),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )


def test_a_name_that_no_unit_releases_is_a_warning(tmp_path: Path) -> None:
    config, units = tmp_path / "etc", tmp_path / "units"
    config.mkdir()
    units.mkdir()
    (config / "cups").write_text("631/tcp\n")
    (config / "ldap").write_text("# portreserve: unit=slapd\n636/tcp\n")
    (config / "byhand").write_text("# portreserve: release=manual\n637/tcp\n")
    (config / "lonely").write_text("638/tcp\n")
    (units / "cups.service").write_text("[Service]\nExecStart=/bin/true\n")
    (units / "slapd.service").write_text("[Service]\nExecStart=/bin/true\n")

    result = check(config, units)

    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"{config}/lonely: no unit releases 'lonely': no lonely.service in the unit search path"
    ]
    problems = json.loads(check(config, units, "--json").stdout)
    assert problems == [
        {
            "file": f"{config}/lonely",
            "line": None,
            "message": "no unit releases 'lonely': no lonely.service in the unit search path",
            "severity": "warning",
        }
    ]


def test_every_name_released_is_a_clean_check(tmp_path: Path) -> None:
    config, units = tmp_path / "etc", tmp_path / "units"
    config.mkdir()
    units.mkdir()
    (config / "cups").write_text("631/tcp\n")
    (config / "byhand").write_text("# portreserve: release=manual\n637/tcp\n")
    (units / "cups.service").write_text("[Service]\nExecStart=/bin/true\n")
    result = check(config, units)
    assert (result.returncode, result.stdout) == (0, ""), result.stderr


def test_status_says_which_unit_releases_each_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from portreserve import status
    from portreserve.config import load_config

    config, units = tmp_path / "etc", tmp_path / "units"
    config.mkdir()
    units.mkdir()
    (config / "cups").write_text("631/tcp\n")
    (config / "lonely").write_text("638/tcp\n")
    (units / "cups.service").write_text("[Service]\nExecStart=/bin/true\n")
    monkeypatch.setenv("SYSTEMD_UNIT_PATH", str(units))
    args = argparse.Namespace(config_dir=[str(config)], user=False)

    found = status.released_by(args, load_config([str(config)], {}))

    assert found["cups"][:2] == (("cups.service",), "automatic")
    assert found["lonely"][1] is None
    report = status.Report("system", "systemd", [], [], [], found)
    text = status.render_text(report)
    assert "cups.service (automatic: generated drop-in)" in text
    assert "lonely" in text and "nothing (no lonely.service in the unit search path)" in text
    document = json.loads(status.render_json(report, "pretty"))
    assert document["released_by"]["cups"] == {
        "units": ["cups.service"],
        "how": "automatic",
        "reason": document["released_by"]["cups"]["reason"],
    }
    assert document["released_by"]["lonely"]["how"] is None
