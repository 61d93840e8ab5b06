"""Unit naming and the escaping rules systemd expects."""

from __future__ import annotations

import subprocess

import pytest

from portreserve import units
from portreserve.config import Port, Proto

NAMES = ["cups", "slapd", "my-service", "x.y", ".hidden", "with space", "ünï", "a:b", "back\\slash", "a,b", "-"]


@pytest.mark.parametrize("name", NAMES)
def test_escape_matches_systemd_escape(name: str) -> None:
    expected = subprocess.run(["systemd-escape", "--", name], capture_output=True, text=True, check=True).stdout.strip()
    assert units.escape(name) == expected


@pytest.mark.parametrize("name", NAMES)
def test_unescape_round_trips(name: str) -> None:
    assert units.unescape(units.escape(name)) == name
    assert units.name_of_group_unit(units.group_unit(name)) == name


def test_socket_unit_names_round_trip() -> None:
    for port in (Port(631, Proto.TCP), Port(65535, Proto.UDP)):
        assert units.port_of_socket_unit(units.socket_unit(port)) == port
    assert units.port_of_socket_unit("portreserve.socket") is None
    assert units.port_of_socket_unit("portreserve@cups.target") is None


def test_percent_in_free_text_is_doubled() -> None:
    assert units.systemd_quote("100%") == "100%%"
