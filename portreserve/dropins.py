"""Zero-step opt-in: the generator gives NAME.service (and NAME.socket) its
portrelease.

For every reservation name whose unit exists in the unit search path
(NAME.service; NAME.socket only when its Listen*= lines bind one of the name's
ports; or the units ``# portreserve: unit=`` lines in the reservation file
name, taken as they are), the generator writes ``UNIT.d/portreserve.conf``
into its output directory (``--user`` instead of ``--system`` for a user
manager)::

    [Service]
    ExecStartPre=-+/usr/sbin/portrelease --system -- NAME

A socket unit gets the same line in ``[Socket]``: systemd binds a
socket-activated service's ports itself, when the socket unit starts
(sockets.target, after the reservation's sockets), and runs the socket's
ExecStartPre= before it binds.  Without it, the reservation would make the
consumer's socket fail at every boot.  A NAME.socket that binds none of the
name's ports (cups.socket listens on a path) gets nothing: released at
sockets.target, the ports would be free for anyone long before NAME.service
binds them.

``+``: as root even with User= (only root may release system reservations);
``-``: never fails the unit.  The drop-in adds no dependency at all: ordering
or Conflicts= against the reservation's units in the boot transaction can drop
the reservation itself (docs/design.md, F15).

Turning it off, none of which the original portreserve reads differently:

* per name, a comment line in the reservation file (the original ignores
  '#' comments): ``# portreserve: release=manual``;
* host-wide, ``AutoRelease=no`` in ``portreserve.conf`` in a configuration
  directory (a name with a '.' is never a reservation name, so the original
  ignores the file);
* per unit, the systemd way: a drop-in of the same file name in
  /etc/systemd/system/UNIT.d/ replaces the generator's, and a symlink to
  /dev/null there masks it.

Which units exist, and what a socket unit binds, come from unitpath.py (the
unit files as systemd reads them); this module plans and renders the drop-ins.
`portreserve check` and `portreserve status` ask the same Planner which unit
releases each name.  Generator path: imports os and stat only, reads each unit
directory once.
"""

from __future__ import annotations

import os

from .config import DIRECTIVE_MARK, SETTINGS_FILE, ConfigError, Notes, Reservation
from .unitpath import (
    RELEASING_TYPES,
    UNIT_TYPES,
    UnitPath,
    is_template,
    read_head,
    unit_search_path,
    valid_unit_name,
)
from .units import GENERATOR, Scope

# Not typing.TYPE_CHECKING, and no pathlib: the generator imports this module
# at every boot (tests/test_generator_imports.py holds it to its allow-list).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    StrPath = str | os.PathLike[str]

# The file name of the drop-in: the name the README's hand-written drop-in
# always had, so a host that followed it keeps exactly one release per start
# (an /etc drop-in of the same name replaces the generator's).  It also sorts
# after "override.conf" (systemctl edit), so an admin's `ExecStartPre=` reset
# there does not drop the release.
DROPIN = "portreserve.conf"
DIRECTIVE = DIRECTIVE_MARK.decode()
AUTOMATIC, MANUAL = "automatic", "manual"

# Our own units never get a drop-in: a holder releasing before it starts, or a
# grouping unit releasing itself, would undo the reservation.
OWN_PREFIX = "portreserve"


# -- configuration ------------------------------------------------------------------


class Directives:
    """What the `# portreserve:` comment lines of one reservation file say."""

    def __init__(self) -> None:
        self.units: list[str] = []
        self.manual = False


def parse_directives(path: StrPath, notes: Notes) -> tuple[Directives, list[ConfigError]]:
    """Lines ``# portreserve: KEY=VALUE...`` (the original reads them as
    comments), as config.directive_lines kept them.  Keys: unit=UNIT[.service|.socket]
    (repeatable), release=auto|manual.  A comment that merely starts with
    "portreserve:" and holds no '=' is prose."""
    path = os.fspath(path)
    found = Directives()
    errors: list[ConfigError] = []
    for lineno, raw in notes:
        text = raw.strip()
        if not text.startswith(b"#"):
            continue
        text = text[1:].strip()
        if not text.startswith(DIRECTIVE_MARK):
            continue
        words = text[len(DIRECTIVE) :].decode("utf-8", "replace").split()
        if not any("=" in w for w in words):
            continue

        def bad(message: str) -> None:
            errors.append(ConfigError(path, lineno, f"{message}, ignoring"))  # noqa: B023 - used at once

        for word in words:
            key, eq, value = word.partition("=")
            if key == "unit" and eq:
                unit = value if value.endswith(UNIT_TYPES) else f"{value}.service"
                if not valid_unit_name(unit):
                    bad(f"'{comment_text(value)}' is not a service or socket unit name")
                elif is_template(unit):
                    bad(f"'{value}' is a template: name an instance (foo@bar.service)")
                elif unit.startswith(OWN_PREFIX):
                    bad(f"'{value}' is one of portreserve's own units")
                elif unit not in found.units:
                    found.units.append(unit)
            elif key == "release" and value in ("auto", "automatic", "manual"):
                found.manual = value == "manual"
            elif key == "release":
                bad(f"release={comment_text(value)}: expected release=auto or release=manual")
            else:
                bad(f"unknown setting '{comment_text(word)}' (expected unit=UNIT or release=auto|manual)")
    return found, errors


_BOOLEANS = {"1": True, "yes": True, "y": True, "true": True, "t": True, "on": True}
_BOOLEANS.update({"0": False, "no": False, "n": False, "false": False, "f": False, "off": False})


def read_settings(files: Iterable[StrPath]) -> tuple[bool, list[ConfigError]]:
    """AutoRelease= from the settings files (SETTINGS_FILE of each configuration
    directory that has one, as config.gather found them: Config.settings; later
    ones win; a symlink to /dev/null or an empty file says nothing)."""
    auto = True
    errors: list[ConfigError] = []
    for file in files:
        path = os.fspath(file)
        data = read_head(path)
        if data is None:
            continue
        for lineno, raw in enumerate(data.split(b"\n"), start=1):
            line = raw.decode("utf-8", "replace").strip()
            if not line or line[0] in "#;":
                continue
            key, eq, value = line.partition("=")
            key, value = key.strip(), value.strip()
            if key == "AutoRelease" and eq and value.lower() in _BOOLEANS:
                auto = _BOOLEANS[value.lower()]
            elif key == "AutoRelease" and eq:
                message = f"AutoRelease={comment_text(value)}: expected yes or no"
                errors.append(ConfigError(path, lineno, f"{message}, ignoring"))
            else:
                message = f"unknown setting '{comment_text(line)}' (expected AutoRelease=)"
                errors.append(ConfigError(path, lineno, f"{message}, ignoring"))
    return auto, errors


# -- who releases a name ------------------------------------------------------------


class Release:
    """The units that release one name, and how."""

    def __init__(self, units: Sequence[str], how: str | None, reason: str) -> None:
        self.units = tuple(units)  # with how=AUTOMATIC: the units that get the drop-in
        self.how = how  # AUTOMATIC, MANUAL, or None: nothing releases the name
        self.reason = reason


class Planner:
    """Decides, for each reservation, which units get a drop-in."""

    def __init__(self, scope: Scope, settings: Iterable[StrPath], search_path: Sequence[str] | None = None) -> None:
        """settings: the settings files (Config.settings)."""
        self.scope = scope
        self.units = UnitPath(unit_search_path(scope.user) if search_path is None else search_path)
        self.auto, self.errors = read_settings(settings)

    def release_of(
        self, name: str, source: StrPath, notes: Notes = (), ports: Iterable[tuple[int, str]] = ()
    ) -> Release:
        """notes: the file's directive lines as config read them
        (Reservation.notes); ports: the name's ports, for NAME.socket (it
        releases the name only when it binds one of them itself)."""
        source = os.fspath(source)
        directives, errors = parse_directives(source, notes)
        self.errors += errors
        if name == "*":  # portrelease '*' releases everything
            return Release((), None, "the name '*' means every name to portrelease")
        named = directives.units
        # A template (a file named foo@) would give every instance the drop-in.
        implicit = [f"{name}{t}" for t in RELEASING_TYPES]
        candidates = named or [u for u in implicit if valid_unit_name(u) and not is_template(u)]
        if not named and f"{name}.socket" in candidates:
            # A socket unit of the name releases it only when it binds one of
            # its ports (socket activation, F16): cups.socket, which listens
            # on a path, must not release ipp at sockets.target, long before
            # cups.service binds it.
            wanted = {(int(n), str(p)) for n, p in ports}
            if not wanted & self.units.listen_ports(f"{name}.socket"):
                candidates.remove(f"{name}.socket")
        candidates = [u for u in candidates if not u.startswith(OWN_PREFIX)]
        states = {u: self.units.state(u) for u in candidates}
        present = [u for u in candidates if states[u] == "present"]
        if directives.manual:
            return Release(present or named, MANUAL, f"release=manual in {comment_text(str(source))}")
        if not self.auto:
            return Release(present or named, MANUAL, f"AutoRelease=no in {SETTINGS_FILE}")
        if not present:
            if not candidates:
                shown = comment_text(name)
                return Release((), None, f"'{shown}' is not a unit name; name the unit with '# {DIRECTIVE} unit=UNIT'")
            masked = [u for u in candidates if states[u] == "masked"]
            what = f"{', '.join(masked)} masked" if masked else f"no {' or '.join(candidates)} in the unit search path"
            return Release((), None, what)
        # A drop-in of ours that /etc or /run masks or replaces is the admin's call.
        replaced = {u: self.units.dropin_replaced(u, DROPIN) for u in present}
        generated = [u for u in present if not replaced[u]]
        if not generated:
            how = " ".join(f"{u}.d/{DROPIN} {replaced[u]} in /etc or /run" for u in present)
            return Release(present, MANUAL, how)
        return Release(generated, AUTOMATIC, "drop-in " + " ".join(f"{u}.d/{DROPIN}" for u in generated))

    def plan(self, reservations: Iterable[Reservation]) -> dict[str, list[Reservation]]:
        """{unit: the reservations it releases} for every drop-in to write."""
        plan: dict[str, list[Reservation]] = {}
        index = self.units.index()
        for reservation in reservations:
            # The common case at a thousand names, quickly: no unit of that
            # name (nor an instance of one) and no directive in the file.
            if (
                not any(f"{reservation.name}{t}" in index for t in RELEASING_TYPES)
                and "@" not in reservation.name
                and not reservation.notes
            ):
                continue
            release = self.release_of(reservation.name, reservation.source, reservation.notes, reservation.ports)
            if release.how == AUTOMATIC:
                for unit in release.units:
                    plan.setdefault(unit, []).append(reservation)
        return plan


# -- rendering ------------------------------------------------------------------------

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.,+=@/-")


def _escaped_char(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if char.isprintable():
        return char
    return "".join(f"\\x{b:02x}" for b in char.encode("utf-8", "surrogatepass"))


def exec_quote(arg: str) -> str:
    """One argument of an Exec line, so that systemd passes exactly `arg`.

    systemd expands specifiers ('%') in the whole line first, splits words with
    C unescaping inside and outside quotes, and then replaces '$VAR' in the
    arguments: '%' -> '%%', '$' -> '$$', '\\' and '"' backslashed, anything not
    printable (newlines, bytes that are not UTF-8) as \\xNN.  Plain words stay
    bare.  (A NUL cannot be in a file name.)"""
    if arg and _PLAIN.issuperset(arg):
        return arg
    out = ['"']
    for char in arg:
        if char == "%":
            out.append("%%")
        elif char == "$":
            out.append("$$")
        elif char in '"\\':
            out.append("\\" + char)
        else:
            out.append(_escaped_char(char))
    out.append('"')
    return "".join(out)


def comment_text(text: str) -> str:
    """Free text in a comment line: one line, no specifiers to worry about."""
    if text.isprintable() and "\\" not in text:
        return text  # the common case: every drop-in names its files and unit
    return "".join("\\\\" if c == "\\" else _escaped_char(c) for c in text)


def render_dropin(unit: str, reservations: Sequence[Reservation], scope: Scope) -> str:
    names = [r.name for r in reservations]
    sources = [comment_text(str(r.source)) for r in reservations]
    args = ["--user" if scope.user else "--system", "--", *names]
    etc = "~/.config/systemd/user" if scope.user else "/etc/systemd/system"
    return (
        f"# Automatically generated by {GENERATOR}\n"
        f"#\n"
        f"# {unit} releases its port reservations before it starts:\n"
        + "".join(f"#   {s}\n" for s in sources)
        + "# Turn it off for this unit with\n"
        f"#   ln -s /dev/null {etc}/{comment_text(unit)}.d/{DROPIN}\n"
        f"# or for a name with a line '# {DIRECTIVE} release=manual' in its file.\n"
        f"\n[{'Socket' if unit.endswith('.socket') else 'Service'}]\n"
        f"ExecStartPre=-+{exec_quote(scope.portrelease)} {' '.join(map(exec_quote, args))}\n"
    )


def generate(
    reservations: Iterable[Reservation], scope: Scope, settings: Iterable[StrPath]
) -> tuple[dict[str, str], list[ConfigError]]:
    """The drop-ins, as {path relative to the output directory: text}, and the
    problems of the settings and directive lines (the generator reports them
    with the configuration's, under the same limit); settings: the settings
    files (Config.settings)."""
    planner = Planner(scope, settings)
    # A name without a valid port has nothing to release; with no such name,
    # the unit search path is not even listed.
    wanted = [r for r in reservations if r.ports]
    plan = planner.plan(wanted) if wanted else {}
    return {f"{unit}.d/{DROPIN}": render_dropin(unit, owners, scope) for unit, owners in plan.items()}, planner.errors
