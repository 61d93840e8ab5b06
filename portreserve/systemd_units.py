"""What the generator left for us, and the systemctl calls that act on it.

portrelease and `portreserve status` find a name's units in the generator's
output directory instead of re-reading the configuration: that is exactly what
systemd loaded, also after the files in /etc changed.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import names, units
from .config import Port


def group_files(generator_dir: Path) -> dict[str, Path]:
    """Every generated group unit: {unit name: path}."""
    try:
        names = os.listdir(generator_dir)
    except OSError:
        return {}
    return {n: generator_dir / n for n in sorted(names) if units.name_of_group_unit(n) is not None}


def sockets_of_group(path: Path) -> list[str]:
    return names.sockets_of_group(str(path))


def ports_of(socket_units: Iterable[str]) -> list[Port]:
    return [p for u in socket_units if (p := units.port_of_socket_unit(u))]


def systemctl(user: bool, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    argv = ["systemctl", *(["--user"] if user else []), "--no-ask-password", *args]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=check)


def show(user: bool, unit_names: Sequence[str], properties: Sequence[str]) -> dict[str, dict[str, str]]:
    """`systemctl show` for many units in one call: {unit: {property: value}}."""
    if not unit_names:
        return {}
    result = systemctl(user, "show", f"--property=Id,{','.join(properties)}", "--", *unit_names)
    shown: dict[str, dict[str, str]] = {}
    for block in result.stdout.split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in props:
            shown[props["Id"]] = props
    return shown
