"""portreserve check: the configuration as the generator sees it, every problem.

The same code as the generator (config.gather), so what check accepts is
exactly what the next boot reserves.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TextIO

from . import paths
from .config import WARNING, Config, ConfigError, gather, printable
from .paths import SERVICES_FILE


def as_json(errors: Sequence[ConfigError]) -> str:
    # File names are bytes and JSON is text: bytes that are not UTF-8 appear
    # as \xNN, as in the messages.
    return json.dumps(
        [{"file": printable(e.path), "line": e.line, "message": e.message, "severity": e.severity} for e in errors],
        indent=2,
    )


def check(
    config_dirs: Sequence[str] | None,
    services_file: str = SERVICES_FILE,
    user: bool = False,
    json_output: bool = False,
    out: TextIO | None = None,
) -> int:
    """Print every problem; 1 when there is any, 0 otherwise."""
    try:
        dirs = list(config_dirs) if config_dirs else paths.config_dirs(user)
    except Exception as e:  # pyxdg missing or broken
        print(f"portreserve check: cannot determine the configuration directories: {e}", file=sys.stderr)
        return 1
    config = gather(dirs, services_file, user, required=bool(config_dirs))
    config.errors.extend(unreleased(config, user))
    stream = sys.stdout if out is None else out
    if json_output:
        print(as_json(config.errors), file=stream)
    else:
        for error in config.errors:
            print(str(error), file=stream)
    return 1 if config.errors else 0


def unreleased(config: Config, user: bool) -> list[ConfigError]:
    """A warning for every name with ports that no unit releases: neither a
    NAME.service, a NAME.socket that binds one of its ports, nor the unit its
    `# portreserve: unit=` line names gets the generated drop-in, and no
    `# portreserve: release=manual` says that a unit does it by hand.  Its
    ports would stay reserved at every boot."""
    from . import dropins, units

    planner = dropins.Planner(units.Scope(user=user), config.settings)
    found = [
        ConfigError(r.source, None, f"no unit releases '{r.name}': {release.reason}", WARNING)
        for r in config.reservations
        if r.ports and (release := planner.release_of(r.name, r.source, r.notes, r.ports)).how is None
    ]
    return [*planner.errors, *found]


def run_check(args: argparse.Namespace) -> int:
    return check(args.config_dir, args.services_file, args.user, args.json)
