"""ruff, mypy and shellcheck are part of the test run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run the tests through `make test`")
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["ruff", "check", "portreserve", "tests", "benchmarks"],
        ["ruff", "format", "--check", "portreserve", "tests", "benchmarks"],
        ["mypy"],
        ["make", "-s", "shellcheck"],
    ],
    ids=["ruff-check", "ruff-format", "mypy", "shellcheck"],
)
def test_lint(argv: list[str]) -> None:
    result = subprocess.run([tool(argv[0]), *argv[1:]], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
