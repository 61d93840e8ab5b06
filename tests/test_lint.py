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
        ["ruff", "check", "portreserve", "tests"],
        ["ruff", "format", "--check", "portreserve", "tests"],
        ["mypy"],
        ["make", "-s", "shellcheck"],
    ],
    ids=["ruff-check", "ruff-format", "mypy", "shellcheck"],
)
def test_lint(argv: list[str]) -> None:
    result = subprocess.run([tool(argv[0]), *argv[1:]], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def python_string_drivers() -> dict[str, str]:
    """Boot drivers still written as Python strings: `make shellcheck` sees
    only the files under tests/guest/ and tests/harness/."""
    from test_boot_package import INSTALL_DRIVER, LOCAL_DRIVER, PACKAGED_DRIVER
    from test_status import STATUS_DRIVER

    return {"status": STATUS_DRIVER, "deb-install": INSTALL_DRIVER, "deb-realistic": PACKAGED_DRIVER,
            "usr-local": LOCAL_DRIVER}  # fmt: skip


@pytest.mark.parametrize("name", list(python_string_drivers()))
def test_drivers_in_python_strings_pass_shellcheck(name: str) -> None:
    # SC2016: `check NAME bash -c '... $(...) ...'` is single-quoted on purpose,
    # for the inner bash to expand.  -x follows `source` (the realistic driver's
    # `# shellcheck source=tests/guest/lib.sh`, relative to the tree).
    text = python_string_drivers()[name]
    argv = [tool("shellcheck"), "--shell=bash", "--external-sources", "--exclude=SC2016", "-"]
    result = subprocess.run(argv, input=text, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
