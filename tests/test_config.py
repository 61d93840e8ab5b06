"""The configuration format: compatible with the original, then better."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from portreserve.config import Port, Proto, load_config, parse_entry, parse_file, parse_services

SERVICES = parse_services(
    textwrap.dedent(
        """\
        # a comment
        sunrpc		111/tcp		portmapper	# RPC 4.0 portmapper
        sunrpc		111/udp		portmapper
        ipp		631/tcp				# Internet Printing Protocol
        ldaps		636/tcp
        ldaps		636/udp
        imaps		993/tcp
        http-alt	8080/tcp	webcache
        sctponly	9999/sctp
        """
    )
)
TCP, UDP = Proto.TCP, Proto.UDP


def ports(entry: str) -> list[Port]:
    found, error = parse_entry(entry, SERVICES)
    assert error is None, error
    return found


def error_of(entry: str) -> str:
    found, error = parse_entry(entry, SERVICES)
    assert found == [] and error
    return error


def test_services_aliases_and_first_entry_win() -> None:
    assert SERVICES["portmapper"] == {TCP: 111, UDP: 111}
    assert SERVICES["webcache"] == {TCP: 8080}
    assert SERVICES["sctponly"] == {}  # known, but for neither tcp nor udp


def test_name_defined_only_for_other_protocols() -> None:
    assert "only for protocols other than tcp and udp" in error_of("sctponly")


def test_name_without_suffix_takes_every_protocol_it_is_defined_for() -> None:
    assert ports("ipp") == [Port(631, TCP)]
    assert ports("ldaps") == [Port(636, TCP), Port(636, UDP)]


def test_name_with_suffix() -> None:
    assert ports("ldaps/udp") == [Port(636, UDP)]
    assert ports("http-alt/TCP") == [Port(8080, TCP)]


def test_name_not_defined_for_protocol() -> None:
    assert "not defined for udp" in error_of("ipp/udp")


def test_bare_number_means_both_protocols() -> None:
    assert ports("783") == [Port(783, TCP), Port(783, UDP)]
    assert ports("783/udp") == [Port(783, UDP)]


def test_range() -> None:
    assert ports("1000-1002/tcp") == [Port(1000, TCP), Port(1001, TCP), Port(1002, TCP)]
    assert len(ports("1000-1001")) == 4


@pytest.mark.parametrize(
    "entry, message",
    [
        ("bogus", "unknown service 'bogus'"),
        ("0", "port 0 out of range"),
        ("70000", "port 70000 out of range"),
        ("20-10", "range '20-10' is reversed"),
        ("631/sctp", "unknown protocol 'sctp'"),
        ("1-65535", "spans more than"),
        ("/tcp", "empty service name"),
    ],
)
def test_bad_entries(entry: str, message: str) -> None:
    assert message in error_of(entry)


def test_line_ends_blanks_tabs_and_comments() -> None:
    # The original reserved TCP for '631/udp' followed by '\r' or a blank.
    data = b"631/udp\r\n  ldaps/tcp \t\n\n# comment\nimaps # trailing comment\n\t\n"
    found, errors = parse_file(Path("f"), data, SERVICES)
    assert errors == []
    assert found == [Port(631, UDP), Port(636, TCP), Port(993, TCP)]


def test_bad_line_names_file_and_line_and_keeps_the_rest() -> None:
    data = b"ipp\nbogus\n\xff\xfe\n70000\nimaps\ntwo words\n"
    found, errors = parse_file(Path("/etc/portreserve/cups"), data, SERVICES)
    assert found == [Port(631, TCP), Port(993, TCP)]
    assert [(str(e.path), e.line) for e in errors] == [
        ("/etc/portreserve/cups", 2),
        ("/etc/portreserve/cups", 3),
        ("/etc/portreserve/cups", 4),
        ("/etc/portreserve/cups", 6),
    ]
    assert "UTF-8" in errors[1].message
    assert str(errors[0]).startswith("/etc/portreserve/cups:2: unknown service 'bogus'")


def test_duplicate_lines_count_once() -> None:
    found, _ = parse_file(Path("f"), b"ipp\n631/tcp\n", SERVICES)
    assert found == [Port(631, TCP)]


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def test_file_names_with_dot_or_tilde_and_hidden_files_are_ignored(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    for name in ("cups", "cups.rpmnew", "cups~", ".cups", "slapd.dpkg-old", "#cups#~"):
        write(etc, name, "ipp\n")
    config = load_config([etc], SERVICES)
    assert [r.name for r in config.reservations] == ["cups"]


def test_etc_overrides_vendor_and_dev_null_masks(tmp_path: Path) -> None:
    vendor, etc = tmp_path / "usr", tmp_path / "etc"
    write(vendor, "cups", "ipp\n")
    write(vendor, "slapd", "ldaps\n")
    write(vendor, "dovecot", "imaps\n")
    write(etc, "cups", "631/udp\n")
    os.symlink("/dev/null", etc / "slapd")
    config = load_config([vendor, etc], SERVICES)
    assert {r.name: r.ports for r in config.reservations} == {
        "cups": (Port(631, UDP),),
        "dovecot": (Port(993, TCP),),
    }
    assert config.errors == []
    assert next(r for r in config.reservations if r.name == "cups").source == str(etc / "cups")


def test_directory_unreadable_file_and_fifo_are_errors_not_fatal(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    write(etc, "good", "imaps\n")
    (etc / "adir").mkdir()
    os.symlink(tmp_path / "missing", etc / "dangling")
    os.mkfifo(etc / "fifo")
    config = load_config([etc], SERVICES)
    assert [r.name for r in config.reservations] == ["good"]
    messages = {os.path.basename(e.path): e.message for e in config.errors}
    assert "is a directory" in messages["adir"]
    assert "cannot read" in messages["dangling"]
    assert "not a regular file" in messages["fifo"]


def test_missing_directories_are_fine(tmp_path: Path) -> None:
    config = load_config([tmp_path / "nope"], SERVICES)
    assert config.reservations == [] and config.errors == []


def test_overlap_is_one_port_with_two_owners(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    write(etc, "cups", "ipp\n636/tcp\n")
    write(etc, "slapd", "ldaps\n")
    owners = load_config([etc], SERVICES).owners()
    assert [r.name for r in owners[Port(636, TCP)]] == ["cups", "slapd"]
    assert [r.name for r in owners[Port(636, UDP)]] == ["slapd"]
    assert list(owners) == sorted(owners)


def test_real_etc_services_defines_the_usual_names() -> None:
    from portreserve.config import load_services

    services = load_services()
    assert services["ipp"][TCP] == 631
    assert services["ldaps"] == {TCP: 636, UDP: 636}
