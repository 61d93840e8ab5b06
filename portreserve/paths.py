"""Where things live, for the system manager and for a user manager.

Imports only os at the top: portrelease (every consumer's ExecStartPre=) and
the generator (every boot) use it.  pyxdg is imported only for a user's
configuration directories.
"""

from __future__ import annotations

import os

SYSTEM_CONFIG_DIRS = ("/usr/lib/portreserve", "/etc/portreserve")  # lowest priority first
SERVICES_FILE = "/etc/services"


def user_runtime_dir() -> str:
    # pyxdg's get_runtime_dir() would create a fallback directory in /tmp when
    # the variable is unset; we only want to know where the user manager's is.
    return os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"


def control_socket(user: bool) -> str:
    return f"{user_runtime_dir()}/portreserve/socket" if user else "/run/portreserve/socket"


def generator_dir(user: bool) -> str:
    """Where the manager runs its generators' output: the generator writes its
    map there, portrelease and the holder read it."""
    return f"{user_runtime_dir()}/systemd/generator" if user else "/run/systemd/generator"


def manager_socket(user: bool) -> str:
    """The service manager's private D-Bus socket (PID 1's, or the user manager's)."""
    return f"{user_runtime_dir()}/systemd/private" if user else "/run/systemd/private"


def manager_runs(user: bool) -> bool:
    """Is there a service manager for this scope (sd_booted(), or a user manager)?"""
    if user:
        return os.path.exists(manager_socket(True))
    return os.path.isdir("/run/systemd/system")


def user_config_dirs() -> list[str]:
    """Lowest priority first: each of $XDG_CONFIG_DIRS (site defaults), then
    $XDG_CONFIG_HOME (the user's own), which wins."""
    # pyxdg reads the XDG variables at import time; reload it so that the
    # variables of this moment count (tests set them).
    import importlib

    import xdg.BaseDirectory

    base = importlib.reload(xdg.BaseDirectory)
    # xdg_config_dirs is [XDG_CONFIG_HOME, *XDG_CONFIG_DIRS], most important first.
    return [os.path.join(d, "portreserve") for d in reversed(base.xdg_config_dirs)]


def config_dirs(user: bool) -> list[str]:
    """The reservation directories of a scope, lowest priority first."""
    return user_config_dirs() if user else list(SYSTEM_CONFIG_DIRS)


def default_user_scope() -> bool:
    """Which reservations a command acts on when not told: the user's own for a
    user with a session or user manager ($XDG_RUNTIME_DIR is set), the system's
    otherwise.  So ExecStartPre=portrelease in a system service with User=
    reaches the system holder (and, without the '+' prefix, is told that only
    root may release), instead of quietly finding nothing in a user scope."""
    return os.geteuid() != 0 and bool(os.environ.get("XDG_RUNTIME_DIR"))
