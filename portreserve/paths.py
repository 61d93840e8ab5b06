"""Where things live, for the system manager and for a user manager."""

from __future__ import annotations

import os
from pathlib import Path

from .config import SYSTEM_CONFIG_DIRS

SYSTEM_CONTROL_SOCKET = Path("/run/portreserve/socket")
SYSTEM_GENERATOR_DIR = Path("/run/systemd/generator")


def user_config_dirs() -> list[Path]:
    """Lowest priority first: each of $XDG_CONFIG_DIRS (site defaults), then
    $XDG_CONFIG_HOME (the user's own), which wins."""
    # pyxdg reads the XDG variables at import time; import it late so the
    # system paths never pay for it and tests can set the variables first.
    import importlib

    import xdg.BaseDirectory

    base = importlib.reload(xdg.BaseDirectory)
    # xdg_config_dirs is [XDG_CONFIG_HOME, *XDG_CONFIG_DIRS], most important first.
    return [Path(d) / "portreserve" for d in reversed(base.xdg_config_dirs)]


def user_runtime_dir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime)
    # pyxdg's get_runtime_dir() creates a fallback directory in /tmp when the
    # variable is unset; we only want to know where the user manager's is.
    return Path(f"/run/user/{os.getuid()}")


def config_dirs(user: bool) -> list[Path]:
    return user_config_dirs() if user else list(SYSTEM_CONFIG_DIRS)


def control_socket(user: bool) -> Path:
    return user_runtime_dir() / "portreserve" / "socket" if user else SYSTEM_CONTROL_SOCKET


def generator_dir(user: bool) -> Path:
    return user_runtime_dir() / "systemd" / "generator" if user else SYSTEM_GENERATOR_DIR


def holder_pidfile(user: bool) -> Path:
    """Written by a running holder; portreserve-step-aside.service checks for it."""
    return control_socket(user).parent / "holder.pid"
