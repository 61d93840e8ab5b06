"""Unit naming, the escaping rules systemd expects, and the static units
agreeing with the names the code uses."""

from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

import pytest

from portreserve import names, paths, units
from portreserve.config import Port, Proto

NAMES = ["cups", "slapd", "my-service", "x.y", ".hidden", "with space", "ünï", "a:b", "back\\slash", "a,b", "-"]


@pytest.mark.parametrize("name", NAMES)
def test_escape_matches_systemd_escape(name: str) -> None:
    expected = subprocess.run(["systemd-escape", "--", name], capture_output=True, text=True, check=True).stdout.strip()
    assert names.escape(name) == expected


@pytest.mark.parametrize("name", NAMES)
def test_unescape_round_trips(name: str) -> None:
    assert names.unescape(names.escape(name)) == name
    assert names.name_of_group_unit(names.group_unit(name)) == name


def test_socket_unit_names_round_trip() -> None:
    for port in (Port(631, Proto.TCP), Port(65535, Proto.UDP)):
        assert names.port_of_socket_unit(units.socket_unit(port)) == port
    assert names.port_of_socket_unit("portreserve.socket") is None
    assert names.port_of_socket_unit("portreserve@cups.target") is None


def test_percent_in_free_text_is_doubled() -> None:
    assert units.systemd_quote("100%") == "100%%"


STATIC = Path(__file__).resolve().parent.parent / "units"


def static_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_static_units_are_the_units_the_code_names() -> None:
    system = {p.name for p in (STATIC / "system").iterdir()}
    user = {p.name for p in (STATIC / "user").iterdir()}
    assert system == {names.HOLDER_UNIT, names.CONTROL_UNIT, names.STEP_ASIDE_UNIT, names.ALL_UNIT}
    assert user == system


@pytest.mark.parametrize("scope", ["system", "user"])
def test_the_control_socket_unit_agrees_with_the_code(scope: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "%t")  # the specifier of a user unit
    socket = static_unit(STATIC / scope / names.CONTROL_UNIT)["Socket"]
    assert socket["ListenDatagram"] == paths.control_socket(scope == "user")
    assert socket["FileDescriptorName"] == names.CONTROL_FDNAME
    assert socket["Service"] == names.HOLDER_UNIT
