import sys
from pathlib import Path

import pytest

# Make tests/ importable (`from boot import boot`) in every pytest import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "boot: boots a real systemd in a throwaway root")
