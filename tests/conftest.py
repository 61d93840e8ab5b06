import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# No example database in the tree: a test run leaves nothing behind.
settings.register_profile("portreserve", database=None)
settings.load_profile("portreserve")

# Make tests/ importable (`from boot import boot`) in every pytest import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import ROOT, Reaper, short_dir  # noqa: E402


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    """Ends, by pid, every process a test started through it."""
    reaper = Reaper()
    try:
        yield reaper
    finally:
        reaper.cleanup()


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short directory (unix socket paths are limited to 108 bytes)."""
    with short_dir() as path:
        yield path


@pytest.fixture(scope="session")
def destdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `make install DESTDIR=... PREFIX=/usr` for every boot of the run
    (each boot copies it over its guest's root and never changes it)."""
    dest = tmp_path_factory.mktemp("destdir")
    subprocess.run(["make", "-s", "install", f"DESTDIR={dest}", "PREFIX=/usr"], cwd=ROOT, check=True)
    return dest
