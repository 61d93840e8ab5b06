"""Runtime paths of the system and of a user manager.  Imports only os: portrelease uses it."""

import os


def user_runtime_dir() -> str:
    # pyxdg's get_runtime_dir() would create a fallback directory in /tmp when
    # the variable is unset; we only want to know where the user manager's is.
    return os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"


def control_socket(user: bool) -> str:
    return f"{user_runtime_dir()}/portreserve/socket" if user else "/run/portreserve/socket"


def generator_dir(user: bool) -> str:
    return f"{user_runtime_dir()}/systemd/generator" if user else "/run/systemd/generator"


def default_user_scope() -> bool:
    """Which reservations a command acts on when not told: the user's own for a
    user with a session or user manager ($XDG_RUNTIME_DIR is set), the system's
    otherwise.  So ExecStartPre=portrelease in a system service with User=
    reaches the system holder (and, without the '+' prefix, is told that only
    root may release), instead of quietly finding nothing in a user scope."""
    return os.geteuid() != 0 and bool(os.environ.get("XDG_RUNTIME_DIR"))
