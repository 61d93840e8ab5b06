"""The generator's drop-ins: NAME.service releases NAME before it starts.

The unit search path is checked against systemd's own (`systemd-analyze
unit-paths`); the Exec quoting against a model of systemd's Exec line parser
here and, in tests/test_boot_dropins.py, against systemd itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portreserve import config, dropins, unitpath
from portreserve.config import SETTINGS_FILE, ConfigError, Port, Proto, Reservation, directive_lines, load_config
from portreserve.dropins import AUTOMATIC, DROPIN, MANUAL, Planner, exec_quote, parse_directives, read_settings
from portreserve.unitpath import UnitPath
from portreserve.units import Scope

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "dropins"
GENERATOR = REPO / "generators" / "portreserve-generator"
SYSTEM = Scope(user=False, sbindir="/usr/sbin")
USER = Scope(user=True, sbindir="/usr/sbin")


# -- a model of how systemd 252 reads one Exec line (load-fragment.c) ----------


def _cunescape(text: str, i: int) -> tuple[bytes, int]:
    """One C escape at text[i] == '\\' (only those exec_quote writes)."""
    kind = text[i + 1]
    if kind in "\\\"'":
        return kind.encode(), i + 2
    if kind == "x":
        return bytes([int(text[i + 2 : i + 4], 16)]), i + 4
    raise AssertionError(f"escape \\{kind} not expected")


def systemd_exec_argv(value: str) -> list[str]:
    """argv of ExecStartPre=VALUE: specifiers, then words (EXTRACT_UNQUOTE |
    EXTRACT_CUNESCAPE; \\xNN is a raw byte), then $-expansion; the bytes
    decoded as Python decodes its argv."""
    assert "%" not in value.replace("%%", ""), "a lone % would be a specifier"
    value = value.replace("%%", "%")
    words: list[bytes] = []
    i = 0
    while i < len(value):
        if value[i] in " \t":
            i += 1
            continue
        word, quote = b"", None
        while i < len(value) and (quote or value[i] not in " \t"):
            char = value[i]
            if char == "\\":
                got, i = _cunescape(value, i)
                word += got
            elif quote and char == quote:
                quote, i = None, i + 1
            elif not quote and char in "\"'":
                quote, i = char, i + 1
            else:
                word, i = word + char.encode(), i + 1
        assert quote is None, "unterminated quote"
        words.append(word)
    # $$ is a literal $; any other $ would expand a variable
    assert all(b"$" not in w.replace(b"$$", b"") for w in words), f"unescaped $ in {words!r}"
    return [os.fsdecode(w.replace(b"$$", b"$")) for w in words]


HOSTILE_NAMES = [
    "cups",
    "my printer",
    'say "hi"',
    "it's",
    "100%",
    "%n%i%%",
    "$HOME",
    "${HOME}",
    "$$",
    "back\\slash",
    "trailing\\",
    "new\nline",
    "tab\there",
    "; rm -rf /",
    ";",
    "-v",
    "--user",
    "ünïcödé",
    "日本語",
    "\u2028",
    "\x7f",
    os.fsdecode(b"latin1-\xe9"),
    os.fsdecode(b"\xff\xfe"),
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_exec_quote_round_trips_through_systemds_parser(name: str) -> None:
    line = f"-+/usr/sbin/portrelease --system -- {exec_quote(name)}"
    assert "\n" not in line and "\r" not in line
    assert systemd_exec_argv(line) == ["-+/usr/sbin/portrelease", "--system", "--", name]


@settings(max_examples=2000)
@given(st.lists(st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))), min_size=1))
def test_exec_quote_round_trips_any_text(args: list[str]) -> None:
    line = " ".join(exec_quote(a) for a in args)
    assert "\n" not in line
    assert systemd_exec_argv(line) == args


@settings(max_examples=1000)
@given(st.binary(min_size=1).filter(lambda b: b"\0" not in b and b"/" not in b))
def test_exec_quote_round_trips_file_names_that_are_not_utf8(raw: bytes) -> None:
    name = os.fsdecode(raw)
    assert systemd_exec_argv(exec_quote(name)) == [name]


def test_plain_names_stay_readable() -> None:
    assert exec_quote("cups") == "cups"
    assert exec_quote("foo-bar_1:2") == "foo-bar_1:2"
    assert exec_quote("a b") == '"a b"'
    assert exec_quote("") == '""'


# -- the unit search path ----------------------------------------------------------


def analyze_unit_paths(user: bool, environ: dict[str, str]) -> list[str]:
    result = subprocess.run(
        ["systemd-analyze", *(["--user"] if user else []), "unit-paths"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], **environ},
        cwd="/",
        check=True,
    )
    return result.stdout.split()


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"SYSTEMD_UNIT_PATH": "/a:/b"},
        {"SYSTEMD_UNIT_PATH": "/a:"},
        {"SYSTEMD_UNIT_PATH": ""},
        {"SYSTEMD_UNIT_PATH": "/a::/b/"},
    ],
)
def test_system_search_path_is_systemds(environ: dict[str, str]) -> None:
    assert unitpath.unit_search_path(False, environ) == analyze_unit_paths(False, environ)


@pytest.mark.parametrize(
    "environ",
    [
        {"HOME": "/home/dev", "XDG_RUNTIME_DIR": "/run/user/1000"},
        {"HOME": "/home/dev"},
        {"HOME": "/home/dev", "XDG_RUNTIME_DIR": "/r", "XDG_CONFIG_HOME": "/cfg", "XDG_DATA_HOME": "/data"},
        {"HOME": "/home/dev", "XDG_RUNTIME_DIR": "/r", "XDG_CONFIG_DIRS": "/c1:/c2", "XDG_DATA_DIRS": "/d1::/d2"},
        {"HOME": "/home/dev", "XDG_RUNTIME_DIR": "/r", "XDG_CONFIG_DIRS": "", "XDG_DATA_DIRS": ""},
        {"HOME": "/home/dev", "XDG_CONFIG_HOME": ""},
        {"HOME": "/home/dev", "XDG_RUNTIME_DIR": "/r", "SYSTEMD_UNIT_PATH": "/only:"},
    ],
)
def test_user_search_path_is_systemds(environ: dict[str, str]) -> None:
    assert unitpath.unit_search_path(True, environ) == analyze_unit_paths(True, environ)


# -- which units exist ---------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """etc/, run/, lib/ unit directories (highest priority first) and a fake
    generator directory that must be ignored."""
    for d in ("etc", "run", "run/systemd/generator", "lib"):
        (tmp_path / d).mkdir(parents=True)
    return tmp_path


def search(tree: Path) -> list[str]:
    return [str(tree / d) for d in ("etc", "run", "run/systemd/generator", "lib")]


UNIT = "[Service]\nExecStart=/bin/true\n"


def test_unit_states(tree: Path) -> None:
    (tree / "lib" / "plain.service").write_text(UNIT)
    (tree / "lib" / "masked.service").write_text(UNIT)
    os.symlink("/dev/null", tree / "etc" / "masked.service")  # systemctl mask
    (tree / "run" / "empty.service").write_text("")  # an empty file masks too
    os.symlink(tree / "nowhere", tree / "etc" / "dangling.service")  # ignored: the lower file counts
    (tree / "lib" / "dangling.service").write_text(UNIT)
    os.symlink(tree / "lib" / "plain.service", tree / "etc" / "alias.service")
    (tree / "lib" / "tmpl@.service").write_text(UNIT)
    os.symlink("/dev/null", tree / "etc" / "tmpl@off.service")
    (tree / "run" / "systemd" / "generator" / "generated.service").write_text(UNIT)
    units = UnitPath(search(tree))
    assert units.state("plain.service") == "present"
    assert units.state("masked.service") == "masked"
    assert units.state("empty.service") == "masked"
    assert units.state("dangling.service") == "present"
    assert units.state("alias.service") == "present"
    assert units.state("tmpl@any.service") == "present"
    assert units.state("tmpl@off.service") == "masked"
    assert units.state("tmpl@.service") == "present"
    assert units.state("generated.service") is None  # other generators run beside us
    assert units.state("missing.service") is None
    assert units.state("missing@x.service") is None


@pytest.mark.parametrize(
    "unit, valid",
    [
        ("cups.service", True),
        ("foo\\x2dbar.service", True),
        ("getty@tty1.service", True),
        ("a@b@c.service", True),
        ("my printer.service", False),
        ("@x.service", False),
        ("cups.socket", True),
        ("cups@.socket", True),
        ("cups.target", False),
        ("cups.service.socket", True),
        ("x" * 247 + ".service", True),
        ("x" * 248 + ".service", False),
    ],
)
def test_valid_unit_names(unit: str, valid: bool) -> None:
    assert unitpath.valid_unit_name(unit) is valid


# -- directives and settings ------------------------------------------------------------


def test_directives_name_units_and_manual_release(tmp_path: Path) -> None:
    path = tmp_path / "ldap"
    data = (
        b"# portreserve: unit=slapd\n"
        b"ldap\n"
        b"  #portreserve:   unit=slapd2.service unit=slapd.service\n"
        b"# portreserve: this file reserves ldap for slapd\n"  # prose: no '='
        b"ldaps # portreserve: unit=ignored.service\n"  # only whole comment lines count
        b"# portreserve: release=manual\n"
    )
    found, errors = parse_directives(path, directive_lines(data))
    assert found.units == ["slapd.service", "slapd2.service"]
    assert found.manual and errors == []


def test_bad_directives_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "x"
    data = (
        b"# portreserve: unit=slapd.target\n"
        b"# portreserve: unit=getty@.service\n"
        b"# portreserve: unit=portreserve\n"
        b"# portreserve: release=sometimes\n"
        b"# portreserve: units=cups\n"
        b"# portreserve: unit=\xff\xfe\n"
        b"# portreserve: unit=cups release=auto\n"
    )
    found, errors = parse_directives(path, directive_lines(data))
    assert [(e.line, e.message) for e in errors] == [
        (1, "'slapd.target' is not a service or socket unit name, ignoring"),
        (2, "'getty@.service' is a template: name an instance (foo@bar.service), ignoring"),
        (3, "'portreserve' is one of portreserve's own units, ignoring"),
        (4, "release=sometimes: expected release=auto or release=manual, ignoring"),
        (5, "unknown setting 'units=cups' (expected unit=UNIT or release=auto|manual), ignoring"),
        (6, "'\ufffd\ufffd' is not a service or socket unit name, ignoring"),
    ]
    assert found.units == ["cups.service"] and not found.manual
    assert str(errors[0]) == f"{path}:1: 'slapd.target' is not a service or socket unit name, ignoring"


def settings_of(*dirs: Path) -> tuple[bool, list[ConfigError]]:
    """The settings as the generator reads them: the files its one listing
    of the configuration directories found (Config.settings)."""
    return read_settings(load_config(list(dirs), {}).settings)


def test_host_wide_setting_later_directory_wins(tmp_path: Path) -> None:
    vendor, etc, home = tmp_path / "vendor", tmp_path / "etc", tmp_path / "home"
    for d in (vendor, etc, home):
        d.mkdir()
    (vendor / "portreserve.conf").write_text("AutoRelease=no\n")
    assert settings_of(vendor, etc) == (False, [])
    (etc / "portreserve.conf").write_text("# the admin wants it back\n; really\n\nAutoRelease = yes\n")
    assert settings_of(vendor, etc) == (True, [])
    os.symlink("/dev/null", home / "portreserve.conf")  # masked: says nothing
    assert settings_of(vendor, home) == (False, [])
    (etc / "portreserve.conf").write_text("AutoRelease=perhaps\nAuto=no\n")
    auto, errors = settings_of(etc)
    assert auto is True
    assert [str(e) for e in errors] == [
        f"{etc}/portreserve.conf:1: AutoRelease=perhaps: expected yes or no, ignoring",
        f"{etc}/portreserve.conf:2: unknown setting 'Auto=no' (expected AutoRelease=), ignoring",
    ]


# -- who releases a name ------------------------------------------------------------------


def reservation(cfg: Path, name: str, text: str = "1234/tcp\n") -> Reservation:
    path = cfg / name
    path.write_text(text)
    # The directive lines as config keeps them from its one read of the file.
    return Reservation(name, (Port(1234, Proto.TCP),), path, directive_lines(text.encode()))


def test_release_of_every_case(tree: Path) -> None:
    cfg = tree / "cfg"
    cfg.mkdir()
    for unit in ("cups", "slapd", "dovecot", "mapped", "ownrelease", "masked"):
        (tree / "lib" / f"{unit}.service").write_text(UNIT)
    os.symlink("/dev/null", tree / "etc" / "masked.service")
    (tree / "etc" / "dovecot.service.d").mkdir()
    os.symlink("/dev/null", tree / "etc" / "dovecot.service.d" / "portreserve.conf")  # per-unit opt-out
    planner = Planner(SYSTEM, [cfg / SETTINGS_FILE], search(tree))

    def of(name: str, text: str = "1\n") -> tuple[tuple[str, ...], str | None]:
        r = reservation(cfg, name, text)
        release = planner.release_of(name, r.source, r.notes)
        return release.units, release.how

    assert of("cups") == (("cups.service",), AUTOMATIC)
    assert of("ldap", "# portreserve: unit=slapd\nldap\n") == (("slapd.service",), AUTOMATIC)
    assert of("ownrelease", "# portreserve: release=manual\n1\n") == (("ownrelease.service",), MANUAL)
    assert of("dovecot") == (("dovecot.service",), MANUAL)
    assert of("masked") == ((), None)
    assert of("nounit") == ((), None)
    assert of("my printer") == ((), None)
    assert of("two", "# portreserve: unit=cups unit=missing unit=slapd\n") == (
        ("cups.service", "slapd.service"),
        AUTOMATIC,
    )
    assert of("manualmissing", "# portreserve: unit=missing release=manual\n") == (("missing.service",), MANUAL)
    # of two units, the one whose drop-in /etc masks is left out
    assert of("pair", "# portreserve: unit=dovecot unit=cups\n") == (("cups.service",), AUTOMATIC)
    assert of("*", "# portreserve: unit=cups\n") == ((), None)
    assert planner.errors == []
    assert "masked.service masked" in planner.release_of("masked", cfg / "masked").reason
    assert "no nounit.service in the unit search path" in planner.release_of("nounit", cfg / "nounit").reason


def test_host_wide_off_makes_every_name_manual(tree: Path) -> None:
    cfg = tree / "cfg"
    cfg.mkdir()
    (cfg / "portreserve.conf").write_text("AutoRelease=no\n")
    (tree / "lib" / "cups.service").write_text(UNIT)
    planner = Planner(SYSTEM, [cfg / SETTINGS_FILE], search(tree))
    release = planner.release_of("cups", reservation(cfg, "cups").source)
    assert (release.units, release.how) == (("cups.service",), MANUAL)
    assert planner.plan([reservation(cfg, "cups")]) == {}


# -- rendering ------------------------------------------------------------------------------


def test_dropin_text() -> None:
    owners = [
        Reservation("ipp", (Port(631, Proto.TCP),), Path("/etc/portreserve/ipp")),
        Reservation("my printer", (Port(632, Proto.TCP),), Path("/etc/portreserve/my printer")),
    ]
    text = dropins.render_dropin("cups.service", owners, SYSTEM)
    assert text.endswith('\n[Service]\nExecStartPre=-+/usr/sbin/portrelease --system -- ipp "my printer"\n')
    assert text.startswith("# Automatically generated by portreserve-generator\n")
    assert "ln -s /dev/null /etc/systemd/system/cups.service.d/portreserve.conf" in text
    user = dropins.render_dropin("web.service", owners[:1], Scope(user=True, sbindir="/opt/x y/sbin"))
    assert user.endswith('ExecStartPre=-+"/opt/x y/sbin/portrelease" --user -- ipp\n')
    assert "~/.config/systemd/user/web.service.d/portreserve.conf" in user


def test_comment_lines_stay_comments() -> None:
    source = Path(os.fsdecode(b"/etc/portreserve/evil\n[Service]\nExecStart=/bin/false\\\xff"))
    text = dropins.render_dropin("x.service", [Reservation("evil", (), source)], SYSTEM)
    sections = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert sections == ["[Service]", "ExecStartPre=-+/usr/sbin/portrelease --system -- evil"]
    assert not any(line.endswith("\\") for line in text.splitlines())


# -- the generator, run as systemd runs it ----------------------------------------------------


def run_generator(
    *args: str | Path, unit_path: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(REPO), "SYSTEMD_UNIT_PATH": unit_path, **(env or {})}
    environ.pop("SYSTEMD_EXEC_PID", None)
    return subprocess.run(
        [sys.executable, str(GENERATOR), *map(str, args)], capture_output=True, text=True, env=environ, timeout=60
    )


def dropin_tree(root: Path, case: Path) -> dict[str, str]:
    """Every file below the *.d/ directories of an output tree."""
    found: dict[str, str] = {}
    for directory in sorted(root.glob("*.d")):
        for path in sorted(directory.rglob("*")):
            found[str(path.relative_to(root))] = path.read_text().replace(str(case), "@CASE@")
    return found


GOLDEN_CASES = sorted(p.name for p in GOLDEN.iterdir()) if GOLDEN.is_dir() else []


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_dropins_match_golden(case: str, tmp_path: Path) -> None:
    """input/portreserve/: the configuration; input/units/{etc,run,lib}: the
    unit search path; input/args: extra generator arguments (one a line);
    expected/: every drop-in directory of the output, compared whole."""
    case_dir = GOLDEN / case
    inputs = case_dir / "input"
    args_file = inputs / "args"
    extra = args_file.read_text().split("\n") if args_file.exists() else []
    unit_path = ":".join(str(inputs / "units" / d) for d in ("etc", "run", "lib"))
    out = tmp_path / "normal"
    result = run_generator(
        *filter(None, extra),
        "--config-dir",
        inputs / "portreserve",
        out,
        tmp_path / "e",
        tmp_path / "l",
        unit_path=unit_path,
    )
    assert result.returncode == 0, result.stderr
    expected_dir = case_dir / "expected"
    if os.environ.get("UPDATE_GOLDEN"):
        shutil.rmtree(expected_dir, ignore_errors=True)
        expected_dir.mkdir()
        for rel, text in dropin_tree(out, case_dir).items():
            (expected_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (expected_dir / rel).write_text(text)
        (expected_dir / "stderr").write_text(result.stderr.replace(str(case_dir), "@CASE@"))
    expected = {
        str(p.relative_to(expected_dir)): p.read_text()
        for p in sorted(expected_dir.rglob("*"))
        if p.is_file() and p.name != "stderr"
    }
    assert dropin_tree(out, case_dir) == expected
    assert result.stderr.replace(str(case_dir), "@CASE@") == (expected_dir / "stderr").read_text()


def test_golden_cases_exist() -> None:
    assert {"system", "user", "off"} <= set(GOLDEN_CASES)


def test_no_unit_no_dropin(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "cups").write_text("631/tcp\n")
    result = run_generator("--config-dir", cfg, tmp_path / "out", unit_path=str(tmp_path / "none"))
    assert result.returncode == 0 and result.stderr == ""
    assert not list((tmp_path / "out").glob("*.d"))
    assert (tmp_path / "out" / "portreserve-631-tcp.socket").exists()


def test_name_without_ports_gets_no_dropin(tmp_path: Path) -> None:
    cfg, units = tmp_path / "cfg", tmp_path / "units"
    cfg.mkdir()
    units.mkdir()
    (units / "cups.service").write_text(UNIT)
    (cfg / "cups").write_text("# nothing valid\nnosuchservice\n")
    result = run_generator("--config-dir", cfg, "--services", "/dev/null", tmp_path / "out", unit_path=str(units))
    assert result.returncode == 0
    assert not (tmp_path / "out" / "cups.service.d").exists()


def test_hostile_file_names_give_one_exec_line_that_round_trips(tmp_path: Path) -> None:
    cfg, units = os.fsencode(tmp_path / "cfg"), tmp_path / "units"
    os.mkdir(cfg)
    units.mkdir()
    (units / "target.service").write_text(UNIT)
    raw_names = [b"a\nb", b"x\\", b"50% of $HOME", b"q\"uo'te", b"\xff\xfe", "ü日".encode(), b"\t;"]
    for raw in raw_names:
        with open(os.path.join(cfg, raw), "wb") as f:
            f.write(b"# portreserve: unit=target\n4000/tcp\n")
    result = run_generator("--config-dir", os.fsdecode(cfg), tmp_path / "out", unit_path=str(units))
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "out" / "target.service.d" / "portreserve.conf").read_text()
    execs = [line for line in text.splitlines() if not line.startswith("#") and "=" in line]
    assert len(execs) == 1
    key, _, value = execs[0].partition("=")
    assert key == "ExecStartPre"
    argv = systemd_exec_argv(value)
    assert argv[:3] == ["-+/usr/sbin/portrelease", "--system", "--"]
    # Names that are not UTF-8 or hold control characters are refused by the
    # generator itself (config.name_problem); every other one is released.
    accepted = [os.fsdecode(n) for n in raw_names if config.name_problem(os.fsdecode(n)) is None]
    assert len(accepted) == 4
    assert sorted(argv[3:]) == sorted(accepted)


def test_print_shows_the_dropins(tmp_path: Path) -> None:
    cfg, units = tmp_path / "cfg", tmp_path / "units"
    cfg.mkdir()
    units.mkdir()
    (units / "cups.service").write_text(UNIT)
    (cfg / "cups").write_text("631/tcp\n")
    result = run_generator("--print", "--config-dir", cfg, unit_path=str(units))
    assert "# cups.service.d/portreserve.conf\n" in result.stdout
    assert "ExecStartPre=-+/usr/sbin/portrelease --system -- cups\n" in result.stdout


def test_bad_directives_are_logged_and_cost_nothing(tmp_path: Path) -> None:
    cfg, units = tmp_path / "cfg", tmp_path / "units"
    cfg.mkdir()
    units.mkdir()
    (units / "cups.service").write_text(UNIT)
    (cfg / "cups").write_text("631/tcp\n# portreserve: unit=nope.mount\n")
    (cfg / "portreserve.conf").write_text("AutoRelease=maybe\n")
    result = run_generator("--config-dir", cfg, tmp_path / "out", unit_path=str(units))
    assert result.returncode == 0
    assert f"{cfg}/cups:2: 'nope.mount' is not a service or socket unit name, ignoring" in result.stderr
    assert f"{cfg}/portreserve.conf:1: AutoRelease=maybe: expected yes or no, ignoring" in result.stderr
    assert (tmp_path / "out" / "cups.service.d" / "portreserve.conf").exists()
    assert (tmp_path / "out" / "portreserve-631-tcp.socket").exists()


def test_dropin_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd itself loads the unit with the drop-in (hostile name included)."""
    cfg, units, out = tmp_path / "cfg", tmp_path / "units", tmp_path / "out"
    cfg.mkdir()
    units.mkdir()
    (units / "cups.service").write_text("[Service]\nExecStart=/bin/true\nUser=daemon\n")
    (cfg / "cups").write_text("631/tcp\n")
    # (a newline would be refused by the generator: control characters)
    (cfg / 'weird "$x" 100% \\ ').write_text("# portreserve: unit=cups\n632/tcp\n")
    # verify wants the binary to exist: /bin/portrelease does not, /bin/true does.
    result = run_generator("--config-dir", cfg, "--sbindir", "/bin", out, unit_path=str(units))
    assert result.returncode == 0, result.stderr
    # Only the drop-in: verify is about it, not about the other generated units.
    dropin = units / "cups.service.d" / "portreserve.conf"
    dropin.parent.mkdir()
    dropin.write_text(
        (out / "cups.service.d" / "portreserve.conf").read_text().replace("/bin/portrelease", "/bin/true")
    )

    def verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["systemd-analyze", "verify", "--man=no", "cups.service"],
            capture_output=True,
            text=True,
            cwd=units,
            env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"},
        )

    checked = verify()
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    # negative control: verify does read the drop-in (it only warns, exit 0)
    dropin.write_text(dropin.read_text().replace('"weird', '"weird%Z"'))
    assert "portreserve.conf" in verify().stderr


@settings(max_examples=3000)
@given(st.binary(max_size=400), st.sampled_from([b"", b"# portreserve: ", b"#portreserve:unit=", b"AutoRelease="]))
def test_directives_and_settings_never_raise(data: bytes, prefix: bytes) -> None:
    path = Path("/etc/portreserve/x")
    found, errors = parse_directives(path, directive_lines(prefix + data))
    assert all(unitpath.valid_unit_name(u) and not unitpath.is_template(u) for u in found.units)
    assert all(e.path == str(path) and e.line is not None for e in errors)
    dropins.render_dropin("x.service", [Reservation(os.fsdecode(data.replace(b"\0", b"")), (), path)], SYSTEM)


def test_settings_file_of_any_bytes(tmp_path: Path) -> None:
    (tmp_path / "portreserve.conf").write_bytes(b"\xff\xfe\nAutoRelease=no\r\n\x00\n")
    auto, errors = settings_of(tmp_path)
    assert auto is False
    assert [e.line for e in errors] == [1, 3]


def test_messages_show_control_characters_escaped(tmp_path: Path) -> None:
    _, errors = parse_directives(tmp_path / "x", directive_lines(b"# portreserve: unit=a\x1bb\x7f\n"))
    assert errors[0].message == "'a\\x1bb\\x7f' is not a service or socket unit name, ignoring"


def test_the_generator_reads_each_reservation_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ports and the drop-in settings come from one read of the file: a
    file rewritten between two reads would give units of one version and a
    drop-in of the other (and each read costs at a thousand names)."""
    from portreserve import generator

    cfg, units = tmp_path / "cfg", tmp_path / "units"
    cfg.mkdir()
    units.mkdir()
    (units / "cups.service").write_text(UNIT)
    (units / "slapd.service").write_text(UNIT)
    (cfg / "cups").write_text("631/tcp\n")
    (cfg / "ldap").write_text("# portreserve: unit=slapd\n636/tcp\n")
    (cfg / "plain").write_text("7000/udp\n")
    opened: list[str] = []
    looked_at: list[str] = []
    real_open, real_stat = os.open, os.stat

    def counting_open(path: str | os.PathLike[str], *args: int, **kwargs: int) -> int:
        opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)

    def counting_stat(path: str | os.PathLike[str], *args: object, **kwargs: bool) -> os.stat_result:
        looked_at.append(os.fspath(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setenv("SYSTEMD_UNIT_PATH", str(units))
    monkeypatch.setattr(os, "open", counting_open)
    monkeypatch.setattr(os, "stat", counting_stat)
    out = tmp_path / "out"
    assert generator.main(["--config-dir", str(cfg), str(out)]) == 0
    monkeypatch.undo()
    assert (out / "cups.service.d" / "portreserve.conf").exists()
    assert (out / "slapd.service.d" / "portreserve.conf").exists()
    reads = {name: opened.count(str(cfg / name)) for name in ("cups", "ldap", "plain")}
    assert reads == {"cups": 1, "ldap": 1, "plain": 1}
    # No settings file in the listing: none is looked for (it was, per directory).
    assert str(cfg / SETTINGS_FILE) not in looked_at + opened


@pytest.mark.parametrize(
    "value, port",
    [
        ("631", 631),
        ("0.0.0.0:631", 631),
        ("127.0.0.1:993", 993),
        ("[::]:110", 110),
        # What systemd 252 did with each (measured in a boot, `systemctl show -p Listen`):
        ("[::1]:25%lo", 25),  # systemd.socket(5): an interface after the port
        ("127.0.0.1:25%lo", 25),
        ("[fe80::1%lo]:25", None),  # "Failed to parse address value"
        ("127.0.0.1%lo:25", None),
        ("25%lo", None),
        ("[::1]:25%", None),
        ("[::1]:25%a:b", None),  # not an interface name
        ("::25", None),  # an IPv6 address without a port
        ("[::1]", None),
        ("localhost:25", None),
        ("0x3f3", 1011),  # strtoul(), base 0
        ("+1012", 1012),
        ("01013", 523),  # octal
        ("0993", None),
        ("127.0.0.1:01022", 530),
        ("[::]:0x3f3", 1011),
        ("-25", None),
        ("\u00a025", None),  # only blanks are stripped
        ("25#name", None),
        ("/run/cups/cups.sock", None),
        ("@abstract:631", None),
        ("vsock:2:631", None),  # a vsock port, not an IP one
        ("0", None),
        ("65536", None),
        ("99999999999999999999", None),
        ("%i", None),
        ("", None),
    ],
)
def test_listen_port_values(value: str, port: int | None) -> None:
    assert unitpath._listen_port(value) == port


def test_a_socket_unit_releases_a_name_only_when_it_binds_one_of_its_ports(tmp_path: Path) -> None:
    """cups.socket listens on a path (Debian, Fedora): it must not release ipp
    at sockets.target, long before cups.service binds 631."""
    lib, etc, cfg = tmp_path / "lib", tmp_path / "etc", tmp_path / "cfg"
    for d in (lib, etc, cfg):
        d.mkdir()
    (lib / "cups.socket").write_text("[Socket]\nListenStream=/run/cups/cups.sock\n")
    (lib / "cups.service").write_text(UNIT)
    (lib / "imap.socket").write_text("[Unit]\nListenStream=143\n[Socket]\nListenStream=0.0.0.0:993\n")
    (lib / "dns.socket").write_text("[Socket]\nListenStream=53\n")
    (etc / "dns.socket.d").mkdir()
    (etc / "dns.socket.d" / "udp.conf").write_text("[Socket]\nListenDatagram=[::]:53\n")
    (lib / "gone.socket").write_text("[Socket]\nListenStream=70\n")
    (etc / "gone.socket.d").mkdir()
    (etc / "gone.socket.d" / "reset.conf").write_text("[Socket]\nListenDatagram=\nListenStream=/run/gone\n")
    planner = Planner(SYSTEM, [cfg / SETTINGS_FILE], [str(etc), str(lib)])
    tcp, udp = "tcp", "udp"
    assert planner.release_of("cups", cfg / "cups", (), [(631, tcp)]).units == ("cups.service",)
    assert planner.release_of("imap", cfg / "imap", (), [(993, tcp)]).units == ("imap.socket",)
    assert planner.release_of("imap", cfg / "imap", (), [(143, tcp)]).how is None  # [Unit] is not [Socket]
    assert planner.release_of("imap", cfg / "imap", (), [(993, udp)]).how is None  # a stream is TCP
    assert planner.release_of("dns", cfg / "dns", (), [(53, udp)]).units == ("dns.socket",)  # from the drop-in
    assert planner.release_of("gone", cfg / "gone", (), [(70, tcp)]).how is None  # reset by the drop-in
    # Named in the file: the admin's word, whatever it binds.
    named = directive_lines(b"# portreserve: unit=cups.socket\n")
    assert planner.release_of("ipp", cfg / "ipp", named, [(631, tcp)]).units == ("cups.socket",)


@settings(max_examples=500, deadline=None)
@given(
    st.binary(max_size=300),
    st.sampled_from([b"", b"[Socket]\n", b"[Socket]\nListenStream=", b"[Socket]\nListenDatagram=[::]:"]),
)
def test_socket_units_of_any_bytes(data: bytes, prefix: bytes) -> None:
    """A socket unit of any content never stops the generator: ports in range or nothing."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        with open(os.path.join(tmp, "x@1.socket"), "wb") as f:
            f.write(prefix + data)
        ports = UnitPath([tmp]).listen_ports("x@1.socket")
    assert all(0 < n < 65536 and p in ("tcp", "udp") for n, p in ports)


# Each socket unit as systemd 252 read it (measured in a boot: `systemctl show
# -p Listen,LoadState`; tests/test_boot_dropins.py keeps asking systemd).
@pytest.mark.parametrize(
    "body, ports",
    [
        ("[Socket]\nListenStream=\\\n1009\n", {1009}),  # a continuation line
        ("[Socket]\nListenStream=\\\n# a comment\n1013\n", {1013}),  # comments skipped inside one
        ("[Socket]\n#ListenStream=\\\nListenStream=1016\n", {1016}),  # a comment does not continue
        ("[Socket]\nListenStream=10\\\n10\n", set()),  # '10 10'
        ("[Socket]\nListenStream=1014\\\\\nListenStream=1015\n", {1015}),  # an escaped backslash ends the line
        ("\ufeff[Socket]\nListenStream=1020\n", {1020}),  # a UTF-8 byte order mark
        ("[Socket]\n# comment\x0cListenStream=1028\nListenStream=1029\n", {1029}),  # a form feed ends no line
        ("[Socket]\n# comment\rListenStream=1046\n", {1046}),  # a lone CR does
        ("[Socket]\n# comment\x00ListenStream=1048\n", {1048}),  # and so does a NUL
        ("[Socket]\nListenStream=\\\n\r1049\n", {1049}),  # LF CR is one line end
        ("[Socket]\nListenStream=\\\r\n1050\n", {1050}),  # CR LF too
        ("[Socket]\nListenStream=1051\nListenStream=\\\n\n1052\n", set()),  # LF LF: an empty line ends it: a reset
        ("[Socket]\nListenStream=1035\nListenStreamX=\n", {1035}),  # an unknown key resets nothing
        ("[Socket]\nListenStream=1036\nListenFIFO=\n", set()),  # an empty Listen*= resets them all
        ("[Socket]\nListenStream=%%i\nListenStream=1019\n", {1019}),  # %% is a '%'
        ("[Socket]\nListenStream=10%%18\n", set()),
        ("[Socket]\nListenStream=[::1]:1004%%lo\n", {1004}),
        ("[Socket]\nListenStream=1017\nSocketProtocol=sctp\n", set()),  # SCTP, not TCP
        ("[Socket]\nListenDatagram=1016\nSocketProtocol=udplite\n", set()),  # UDP-Lite, not UDP
        ("[Socket]\nListenDatagram=1016\nSocketProtocol=udplite\nSocketProtocol=\n", set()),  # no reset
        ("[Socket]\nListenStream=1026\n[Socket]x\nListenStream=1027\n", set()),  # refused: bad section header
        ("[Socket]\nListenStream=\t1010\t\n", {1010}),
        ("[Socket] \nListenStream=1015\n", {1015}),
    ],
)
def test_listen_ports_read_as_systemd_reads_a_unit(tmp_path: Path, body: str, ports: set[int]) -> None:
    (tmp_path / "x.socket").write_bytes(body.encode("utf-8"))
    assert {n for n, _proto in UnitPath([str(tmp_path)]).listen_ports("x.socket")} == ports


def test_listen_ports_take_drop_ins_in_systemds_order(tmp_path: Path) -> None:
    """Measured in a boot with systemd 252 (`systemctl show -p Listen,DropInPaths`):
    per directory of the search path the unit's own .d, its template's, the
    '-' prefixes'; a file name in an earlier one hides it in every later one;
    then the drop-ins of its aliases, then socket.d (every socket).  Hidden
    files are not drop-ins."""
    etc, lib = tmp_path / "etc", tmp_path / "lib"

    def put(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    # /etc's template drop-in hides /usr/lib's instance drop-in of the same name.
    put(lib / "tp@.socket", "[Socket]\nListenStream=%i\n")
    put(lib / "tp@3001.socket.d/50-a.conf", "[Socket]\nListenStream=3002\n")
    put(etc / "tp@.socket.d/50-a.conf", "[Socket]\nListenStream=3003\n")
    # A '-' prefix drop-in (systemd.unit(5)) applies to my-tp@3011.socket.
    put(lib / "my-tp@.socket", "[Socket]\nListenStream=%i\n")
    put(etc / "my-.socket.d/10.conf", "[Socket]\nListenStream=\nListenStream=3010\n")
    # A hidden file is skipped.
    put(etc / "hid.socket", "[Socket]\nListenStream=2007\n")
    put(etc / "hid.socket.d/.hidden.conf", "[Socket]\nListenStream=\nListenStream=2008\n")
    # An alias (a symlink) is the unit it points to: that unit's drop-ins count.
    put(lib / "real2.socket", "[Socket]\nListenStream=2011\n")
    put(lib / "real2.socket.d/10.conf", "[Socket]\nListenStream=2012\n")
    (etc / "alias2.socket").symlink_to(lib / "real2.socket")
    # socket.d applies to every socket unit.
    put(etc / "top.socket", "[Socket]\nListenStream=2020\n")
    put(etc / "socket.d/99-all.conf", "[Socket]\nListenDatagram=2021\n")
    units = UnitPath([str(etc), str(lib)])

    def ports(unit: str) -> set[tuple[int, str]]:
        return units.listen_ports(unit)

    assert ports("tp@3001.socket") == {(3001, "tcp"), (3003, "tcp"), (2021, "udp")}
    assert ports("my-tp@3011.socket") == {(3010, "tcp"), (2021, "udp")}
    assert ports("hid.socket") == {(2007, "tcp"), (2021, "udp")}
    assert ports("alias2.socket") == {(2011, "tcp"), (2012, "tcp"), (2021, "udp")}
    assert ports("top.socket") == {(2020, "tcp"), (2021, "udp")}


def test_what_hides_the_generators_dropin(tmp_path: Path) -> None:
    """Ours is GENERATOR/UNIT.d/portreserve.conf.  A portreserve.conf that systemd
    reads before it hides it (the admin's call, reported as such): in /etc, also
    in the template's or a '-' prefix's directory; one in /usr/lib comes after it."""
    etc, gen, lib = tmp_path / "etc/systemd/system", tmp_path / "run/systemd/generator", tmp_path / "lib/systemd/system"
    for d in (etc, gen, lib):
        d.mkdir(parents=True)

    def put(path: Path, text: str = "[Service]\n") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    put(lib / "vendor.service", UNIT)
    put(lib / "vendor.service.d" / dropins.DROPIN)  # below the generator's: ours wins
    put(lib / "web@.service", UNIT)
    put(etc / "web@.service.d" / dropins.DROPIN)  # the template's, in /etc: before ours
    put(lib / "db-main.service", UNIT)
    (etc / "db-.service.d").mkdir()
    (etc / "db-.service.d" / dropins.DROPIN).symlink_to("/dev/null")
    put(lib / "plain.service", UNIT)
    units = UnitPath([str(etc), str(gen), str(lib)])
    assert units.dropin_replaced("vendor.service", DROPIN) is None
    assert units.dropin_replaced("web@80.service", DROPIN) == "replaced"
    assert units.dropin_replaced("db-main.service", DROPIN) == "masked"
    assert units.dropin_replaced("plain.service", DROPIN) is None


def test_a_name_that_is_a_template_gets_no_dropin(tree: Path) -> None:
    """A file named sshd@ would give sshd@.service a drop-in, and so every
    instance of it: with an Accept=yes sshd.socket, a portrelease (and a
    request to the holder, the port being in use) for every connection.  The
    file's unit= refuses a template; its name must not slip one in either."""
    cfg = tree / "cfg"
    cfg.mkdir()
    (tree / "lib" / "sshd.socket").write_text("[Socket]\nListenStream=2222\nAccept=yes\n")
    (tree / "lib" / "sshd@.service").write_text(UNIT)
    planner = Planner(SYSTEM, [cfg / SETTINGS_FILE], search(tree))
    assert planner.release_of("sshd@", reservation(cfg, "sshd@", "2222/tcp\n").source, (), [(2222, "tcp")]).how is None
    assert planner.release_of("sshd", reservation(cfg, "sshd", "2222/tcp\n").source, (), [(2222, "tcp")]).units == (
        "sshd.socket",
    )


@pytest.mark.parametrize(
    "unit, prefixes",
    [
        ("a-b-c.socket", ["a-b-.socket", "a-.socket"]),
        ("my-tp@3011.socket", ["my-.socket"]),
        ("my-tp@.socket", ["my-.socket"]),
        ("foo-.socket", []),
        ("a--b.socket", ["a--.socket"]),
        ("plain.socket", []),
    ],
)
def test_dash_prefixes_as_systemd_walks_them(unit: str, prefixes: list[str]) -> None:
    assert unitpath.unit_name_prefixes(unit) == prefixes
