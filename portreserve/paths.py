"""Where things live, for the system manager and for a user manager."""

from __future__ import annotations

from pathlib import Path

from . import rundirs
from .config import SYSTEM_CONFIG_DIRS


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


def config_dirs(user: bool) -> list[Path]:
    return user_config_dirs() if user else [Path(d) for d in SYSTEM_CONFIG_DIRS]


def control_socket(user: bool) -> Path:
    return Path(rundirs.control_socket(user))


def generator_dir(user: bool) -> Path:
    return Path(rundirs.generator_dir(user))
