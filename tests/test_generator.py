"""The generator, run as systemd runs it: a real process writing a real tree."""

from __future__ import annotations

import configparser
import os
import shutil
from pathlib import Path

import pytest
from genhelp import run_generator, verify

GOLDEN = Path(__file__).resolve().parent / "golden"


def config_args(case: Path) -> list[str | Path]:
    return ["--config-dir", case / "input" / "vendor", "--config-dir", case / "input" / "etc"]


def read_tree(root: Path, case: Path) -> dict[str, str]:
    """Every file and symlink below root; paths of the case replaced by @CASE@."""
    tree: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            tree[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            tree[rel] = path.read_text().replace(str(case), "@CASE@")
    return tree


# golden/dropins belongs to tests/test_dropins.py (other inputs, same comparison).
@pytest.mark.parametrize("case", sorted(p.name for p in GOLDEN.iterdir() if p.name != "dropins"))
def test_generated_tree_matches_golden(case: str, tmp_path: Path) -> None:
    case_dir = GOLDEN / case
    out = tmp_path / "normal"
    result = run_generator(*config_args(case_dir), out, tmp_path / "early", tmp_path / "late")
    assert result.returncode == 0, result.stderr
    got = read_tree(out, case_dir)
    expected_dir = case_dir / "expected"
    if os.environ.get("UPDATE_GOLDEN"):
        shutil.rmtree(expected_dir, ignore_errors=True)
        shutil.copytree(out, expected_dir, symlinks=True)
        for path in expected_dir.rglob("*"):
            if path.is_file() and not path.is_symlink():
                path.write_text(path.read_text().replace(str(case_dir), "@CASE@"))
    assert got == read_tree(expected_dir, case_dir)
    assert not any((tmp_path / d).exists() and any((tmp_path / d).iterdir()) for d in ("early", "late"))


def test_realistic_reservations(tmp_path: Path) -> None:
    result = run_generator(*config_args(GOLDEN / "realistic"), tmp_path)
    sockets = sorted(p.name for p in tmp_path.glob("*.socket"))
    assert sockets == [
        "portreserve-389-tcp.socket",
        "portreserve-600-udp.socket",
        "portreserve-601-udp.socket",
        "portreserve-602-udp.socket",
        "portreserve-631-tcp.socket",  # cups and 'my printer' share it
        "portreserve-631-udp.socket",
        "portreserve-636-tcp.socket",  # slapd overridden from /etc: no 636/udp
        "portreserve-783-tcp.socket",
        "portreserve-783-udp.socket",
    ]  # dovecot is masked, cups.rpmnew and cups~ are ignored
    assert sorted(p.name for p in (tmp_path / "sockets.target.wants").iterdir()) == [
        "portreserve@cups.target",
        "portreserve@my\\x20printer.target",
        "portreserve@nis.target",
        "portreserve@slapd.target",
        "portreserve@spamd.target",
    ]
    assert result.stderr == ""


def parse_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def test_shared_port_is_one_socket_part_of_both_names(tmp_path: Path) -> None:
    run_generator(*config_args(GOLDEN / "realistic"), tmp_path)
    unit = parse_unit(tmp_path / "portreserve-631-tcp.socket")
    assert unit["Unit"]["PartOf"] == "portreserve@cups.target portreserve@my\\x20printer.target portreserve.target"
    # One constant fd name whatever the owners: the holder's environment does
    # not grow with the names.
    assert unit["Socket"]["FileDescriptorName"] == "portreserve-port"
    assert unit["Socket"]["BindIPv6Only"] == "both"
    assert unit["Socket"]["Service"] == "portreserve.service"
    group = parse_unit(tmp_path / "portreserve@my\\x20printer.target")
    assert group["Unit"]["Wants"].split() == [
        "portreserve-631-tcp.socket",
        "portreserve-631-udp.socket",
        "portreserve.service",
        "portreserve-step-aside.service",
        "portreserve.target",
    ]
    assert group["Unit"]["PartOf"] == "portreserve.target"


def test_bad_config_logs_file_and_line_and_exits_zero(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "good").write_text("imaps\n")
    (etc / "bad").write_bytes(b"ipp\nnosuchservice\n70000\n\xff\xfe\n")
    (etc / "adir").mkdir()
    out = tmp_path / "out"
    result = run_generator("--config-dir", etc, out)
    assert result.returncode == 0
    assert f"{etc}/bad:2: unknown service 'nosuchservice'" in result.stderr
    assert f"{etc}/bad:3: port 70000 out of range" in result.stderr
    assert f"{etc}/bad:4: not valid UTF-8" in result.stderr
    assert f"{etc}/adir: is a directory" in result.stderr
    assert (out / "portreserve-993-tcp.socket").exists()
    assert (out / "portreserve-631-tcp.socket").exists()  # the good line of the bad file


def test_no_config_generates_an_empty_map_only(tmp_path: Path) -> None:
    (tmp_path / "none").mkdir()
    result = run_generator("--config-dir", tmp_path / "none", tmp_path / "out")
    assert result.returncode == 0 and result.stderr == ""
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["portreserve.map"]
    assert (tmp_path / "out" / "portreserve.map").read_text().splitlines()[1:] == []


def test_print_writes_nothing(tmp_path: Path) -> None:
    result = run_generator("--print", *config_args(GOLDEN / "realistic"))
    assert result.returncode == 0
    assert "# portreserve-631-tcp.socket\n" in result.stdout
    assert "ListenDatagram=783" in result.stdout


def test_usage_errors_and_help() -> None:
    assert run_generator().returncode == 2
    helped = run_generator("--help")
    assert helped.returncode == 0 and "--print" in helped.stdout
    version = run_generator("--version")
    assert version.returncode == 0 and version.stdout.startswith("portreserve-generator ")


def test_unit_name_too_long_is_reported(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / ("-" * 100)).write_text("ipp\n")  # every '-' becomes \x2d: 400 characters
    (etc / "ok").write_text("imaps\n")
    result = run_generator("--config-dir", etc, tmp_path / "out")
    assert result.returncode == 0
    assert "file name too long: its unit name would be 419 characters (at most 255), ignoring file" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.socket")) == ["portreserve-993-tcp.socket"]


def test_generated_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    result = run_generator(*config_args(GOLDEN / "realistic"), out)
    assert result.returncode == 0
    assert verify(out, tmp_path) == []
