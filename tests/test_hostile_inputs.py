"""Regression tests for issue 9: hostile but plausible inputs that cost a boot,
a reservation or a clear message with the round-1 generator.

Each runs the real generator in a fresh process.  To see one fail on other
code, point PORTRESERVE_TREE at that tree (tests/genhelp.py), e.g.

    git archive 6aa99ac portreserve generators | tar -x -C /tmp/old
    PORTRESERVE_TREE=/tmp/old .venv/bin/python -m pytest tests/test_hostile_inputs.py
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from genhelp import REPO, run_generator, verify

SERVICES = "ipp 631/tcp\nldaps 636/tcp\nldaps 636/udp\nhuge 99999/tcp\nfine 700/tcp\n"


def services_file(tmp_path: Path, text: str = SERVICES) -> Path:
    path = tmp_path / "services"
    path.write_text(text)
    return path


def etc(tmp_path: Path, files: dict[str | bytes, str | bytes]) -> Path:
    directory = tmp_path / "etc"
    directory.mkdir(exist_ok=True)
    for name, content in files.items():
        path = os.path.join(os.fsencode(directory), os.fsencode(name))
        with open(path, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
    return directory


def generate(
    tmp_path: Path, files: dict[str | bytes, str | bytes], *extra: str | Path, **kwargs: object
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "out"
    directory = etc(tmp_path, files)
    args: list[str | Path] = ["--config-dir", directory, "--services", services_file(tmp_path), *extra, out]
    result = run_generator(*args, **kwargs)  # type: ignore[arg-type]
    return result, out


def sockets(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.socket"))


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path, encoding="utf-8")
    return parser


# -- the kernel log: bytes that are not UTF-8 ---------------------------------


def test_kmsg_logger_survives_a_file_name_that_is_not_utf8(tmp_path: Path) -> None:
    """Run as systemd runs it ($SYSTEMD_EXEC_PID is our pid: log to /dev/kmsg),
    with /dev/kmsg a plain file in a private mount namespace."""
    kmsg = tmp_path / "kmsg"
    kmsg.touch()
    script = f'mount --bind {kmsg} /dev/kmsg && export SYSTEMD_EXEC_PID=$$ && exec "$@"'
    result, out = generate(
        tmp_path,
        {b"bad\xff": "ipp\nbogus\n", "good": "ipp\n"},
        prefix=["unshare", "--mount", "sh", "-c", script, "sh"],
    )
    assert result.returncode == 0, result.stderr
    logged = kmsg.read_bytes().decode("utf-8")  # valid UTF-8, whatever the file name held
    assert "bad\\xff: file name is not valid UTF-8, ignoring file" in logged
    assert logged.startswith("<3>portreserve-generator[")
    assert sockets(out) == ["portreserve-631-tcp.socket"]
    assert (out / "portreserve@good.target").exists()


def test_kmsg_records_fit_the_kernel_limit(tmp_path: Path) -> None:
    """/dev/kmsg refuses records over 1024 bytes: a message about a file deep in
    directories with non-ASCII names is cut, not lost."""
    kmsg = tmp_path / "kmsg"
    kmsg.touch()
    deep = tmp_path.joinpath(*["é" * 120] * 6)
    deep.mkdir(parents=True)
    (deep / "x").write_text("nosuch\n")
    script = f'mount --bind {kmsg} /dev/kmsg && export SYSTEMD_EXEC_PID=$$ && exec "$@"'
    result = run_generator(
        "--config-dir",
        deep,
        "--services",
        services_file(tmp_path),
        tmp_path / "out",
        prefix=["unshare", "--mount", "sh", "-c", script, "sh"],
    )
    assert result.returncode == 0, result.stderr
    records = kmsg.read_bytes().splitlines()
    assert len(records) == 1 and len(records[0]) <= 1000 and records[0].endswith(b"...")
    records[0].decode("utf-8")


# -- numbers of any length ----------------------------------------------------


@pytest.mark.parametrize(
    "line",
    ["9" * 5000, "1-" + "9" * 5000, "9" * 5000 + "-1/tcp", "0" * 5000 + "7"],
    ids=["port", "range-high", "range-low", "leading-zeros"],
)
def test_numbers_of_thousands_of_digits(tmp_path: Path, line: str) -> None:
    result, out = generate(tmp_path, {"big": f"{line}\n636/tcp\n"})
    assert result.returncode == 0, result.stderr
    if line.startswith("0"):
        assert sockets(out) == ["portreserve-636-tcp.socket", "portreserve-7-tcp.socket", "portreserve-7-udp.socket"]
    else:
        assert f"{tmp_path}/etc/big:1: port '" in result.stderr and "out of range (1-65535)" in result.stderr
        assert sockets(out) == ["portreserve-636-tcp.socket"]
    assert max(map(len, result.stderr.splitlines()), default=0) < 300


def test_etc_services_port_of_thousands_of_digits(tmp_path: Path) -> None:
    out = tmp_path / "out"
    directory = etc(tmp_path, {"x": "long\nipp\n"})
    services = services_file(tmp_path, SERVICES + f"long {'9' * 5000}/tcp\n")
    result = run_generator("--config-dir", directory, "--services", services, out)
    assert result.returncode == 0, result.stderr
    assert "service 'long' has port a number too long for tcp in /etc/services: out of range" in result.stderr
    assert sockets(out) == ["portreserve-631-tcp.socket"]


def test_etc_services_ports_are_range_checked(tmp_path: Path) -> None:
    result, out = generate(tmp_path, {"x": "huge\nfine\n"})
    assert result.returncode == 0
    assert f"{tmp_path}/etc/x:1: service 'huge' has port 99999 for tcp in /etc/services: out of range" in result.stderr
    assert sockets(out) == ["portreserve-700-tcp.socket"]


# -- names --------------------------------------------------------------------


def test_socket_fd_names_are_short_and_the_same_whatever_the_names(tmp_path: Path) -> None:
    """$LISTEN_FDNAMES must not grow with the names: the round-1 fd name was the
    escaped owner list (an 800-port range with a 200-character name: 203/EXEC)."""
    long_name = "n" * 200
    result, out = generate(tmp_path, {long_name: "5000-5009/tcp\n", "other": "5000/tcp\n"})
    assert result.returncode == 0
    for path in out.glob("*.socket"):
        assert unit(path)["Socket"]["FileDescriptorName"] == "portreserve-port"
    assert f"portreserve@{long_name}.target" in os.listdir(out)


def test_names_with_leading_and_trailing_blanks_round_trip(tmp_path: Path) -> None:
    from portreserve import names

    result, out = generate(tmp_path, {" cups ": "631/tcp\n", "\tx": "700/tcp\n"})
    assert result.returncode == 0
    assert "portreserve@\\x20cups\\x20.target" in os.listdir(out)
    mapped = names.read_map(str(out))
    assert mapped == {" cups ": [(631, "tcp")]}
    assert "\\x09x: file name contains control characters, ignoring file" in result.stderr


def test_name_with_newline_is_refused_naming_the_file(tmp_path: Path) -> None:
    result, out = generate(tmp_path, {"a\nb": "631/tcp\n", "ok": "700/tcp\n"})
    assert result.returncode == 0
    assert f"{tmp_path}/etc/a\\x0ab: file name contains control characters, ignoring file" in result.stderr
    assert sockets(out) == ["portreserve-700-tcp.socket"]


def test_file_name_that_is_not_utf8_is_refused_and_the_units_load(tmp_path: Path) -> None:
    result, out = generate(tmp_path, {b"caf\xe9": "631/tcp\n", "ok": "700/tcp\n"})
    assert result.returncode == 0
    assert f"{tmp_path}/etc/caf\\xe9: file name is not valid UTF-8, ignoring file" in result.stderr
    assert sockets(out) == ["portreserve-700-tcp.socket"]
    assert verify(out, tmp_path) == []


def test_directory_that_is_not_utf8_gives_units_that_load(tmp_path: Path) -> None:
    """The name is fine, its directory is not UTF-8: SourcePath= cannot say it."""
    directory = os.path.join(os.fsencode(tmp_path), b"dir\xff")
    os.mkdir(directory)
    with open(os.path.join(directory, b"cups"), "w") as f:
        f.write("631/tcp\n")
    out = tmp_path / "out"
    result = run_generator("--config-dir", directory, "--services", services_file(tmp_path), out)
    assert result.returncode == 0
    text = (out / "portreserve@cups.target").read_bytes().decode("utf-8")
    assert "SourcePath=" not in text
    assert verify(out, tmp_path) == []


def test_unit_name_over_255_characters_is_refused_naming_the_file(tmp_path: Path) -> None:
    longest = "x" * (255 - len("portreserve@.target"))
    result, out = generate(tmp_path, {longest: "700/tcp\n", longest + "y": "701/tcp\n", "é" * 60: "702/tcp\n"})
    assert result.returncode == 0
    assert f"portreserve@{longest}.target" in os.listdir(out)
    assert f"{longest}y: file name too long: its unit name would be 256 characters (at most 255)" in result.stderr
    assert "would be 499 characters" in result.stderr  # 'é' is two bytes, \xc3\xa9 in a unit name
    assert sockets(out) == ["portreserve-700-tcp.socket"]
    assert verify(out, tmp_path) == []


def test_star_is_not_a_name(tmp_path: Path) -> None:
    result, out = generate(tmp_path, {"*": "700/tcp\n"})
    assert "'*' stands for every name in portrelease" in result.stderr
    assert sockets(out) == []


# -- messages -----------------------------------------------------------------


@pytest.mark.parametrize("entry", ["-5", "5000-", "5-6-7", "-", "1--2"])
def test_malformed_ranges_are_called_malformed(tmp_path: Path, entry: str) -> None:
    result, _ = generate(tmp_path, {"x": f"{entry}\n"})
    assert f"x:1: malformed port or range '{entry}' (expected PORT or LOW-HIGH), ignoring line" in result.stderr


def test_unreadable_etc_services_is_one_message(tmp_path: Path) -> None:
    out = tmp_path / "out"
    directory = etc(tmp_path, {"x": "ipp\n631/udp\nldaps\n"})
    result = run_generator("--config-dir", directory, "--services", tmp_path / "missing", out)
    assert result.returncode == 0
    lines = result.stderr.splitlines()
    assert (
        f"portreserve-generator: {tmp_path}/missing: cannot read: No such file or directory; only port numbers"
        in (lines[0])
    )
    assert "unknown service" not in result.stderr
    checked = portreserve_check("--config-dir", directory, "--services-file", tmp_path / "missing", "--json")
    assert [(e["line"], e["severity"]) for e in json.loads(checked.stdout)] == [
        (None, "warning"),
        (1, "error"),
        (3, "error"),
    ]
    assert f"x:1: cannot look up service 'ipp': {tmp_path}/missing: cannot read" in lines[1]
    assert sockets(out) == ["portreserve-631-udp.socket"]


def test_missing_config_dir_given_explicitly_is_reported(tmp_path: Path) -> None:
    result = run_generator("--config-dir", tmp_path / "nonexistent", tmp_path / "out")
    assert result.returncode == 0
    assert f"{tmp_path}/nonexistent: no such directory" in result.stderr


def test_print_exits_1_on_problems_and_0_without(tmp_path: Path) -> None:
    directory = etc(tmp_path, {"x": "631/tcp\n"})
    assert run_generator("--print", "--config-dir", directory).returncode == 0
    etc(tmp_path, {"y": "nosuch\n"})
    result = run_generator("--print", "--config-dir", directory)
    assert result.returncode == 1
    assert "# portreserve-631-tcp.socket" in result.stdout


def test_a_huge_line_is_quoted_short_in_the_log(tmp_path: Path) -> None:
    result, _ = generate(tmp_path, {"x": "a" * 1_000_000 + "\n" + "b c" * 100_000 + "\n"})
    assert result.returncode == 0
    assert len(result.stderr) < 1000
    assert "x:1: unknown service 'aaaa" in result.stderr and "(1000000 characters)" in result.stderr


# -- bounded memory and sockets -----------------------------------------------

MEMORY = 600 << 20


def test_bad_directive_lines_are_logged_up_to_the_same_cap(tmp_path: Path) -> None:
    """The drop-in directives' problems count with the configuration's: the
    same cap on the kernel log (they were logged one line each, 300 lines
    here; a 1 MiB file of them, 55 000 at every boot), and --print says 1 as
    portreserve check does (it said 0)."""
    text = "".join(f"# portreserve: x={i}\n" for i in range(300)) + "700/tcp\n"
    result, out = generate(tmp_path, {"bad": text})
    assert result.returncode == 0
    lines = result.stderr.splitlines()
    assert len(lines) == 101, lines[:3]
    assert lines[-1] == "portreserve-generator: 200 more problems not shown; see `portreserve check`"
    assert sockets(out) == ["portreserve-700-tcp.socket"]
    printed = run_generator("--print", "--config-dir", tmp_path / "etc", "--services", services_file(tmp_path))
    assert printed.returncode == 1


def test_huge_sparse_config_file_is_read_up_to_the_cap(tmp_path: Path) -> None:
    """4 GB of zeros after a good line: round 1 read it whole (16.8 GB RSS)."""
    directory = etc(tmp_path, {"big": "631/tcp\n"})
    os.truncate(directory / "big", 4 << 30)
    result, out = generate(tmp_path, {"small": "700/tcp\n"}, limit_memory=MEMORY)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "big:" in result.stderr and "file larger than 1048576 bytes, ignoring the rest of it" in result.stderr
    assert sockets(out) == ["portreserve-631-tcp.socket", "portreserve-700-tcp.socket"]


def test_a_file_of_bad_lines_is_listed_up_to_a_cap(tmp_path: Path) -> None:
    """A million bad lines: round 1 kept (and logged) a message for each."""
    result, out = generate(tmp_path, {"bad": "x\n" * 500_000 + "700/tcp\n"}, limit_memory=MEMORY)
    assert result.returncode == 0
    lines = result.stderr.splitlines()
    assert len(lines) == 101
    assert lines[-1] == "portreserve-generator: 901 more problems not shown; see `portreserve check`"
    checked = portreserve_check("--config-dir", tmp_path / "etc", "--services-file", services_file(tmp_path))
    assert checked.stdout.splitlines()[-1] == f"{tmp_path}/etc/bad: 499000 more lines ignored for problems not listed"
    assert len(checked.stdout.splitlines()) == 1001
    assert sockets(out) == ["portreserve-700-tcp.socket"]


def test_huge_etc_services_is_read_up_to_the_cap(tmp_path: Path) -> None:
    services = tmp_path / "services"
    with open(services, "w") as f:
        f.write("ipp 631/tcp\n")
        line = "".join(f"s{i} {i % 65535 + 1}/tcp a{i} b{i} c{i}\n" for i in range(10_000))
        for _ in range(200):  # 60 MB, 2 million names
            f.write(line)
    out = tmp_path / "out"
    directory = etc(tmp_path, {"x": "ipp\n"})
    result = run_generator("--config-dir", directory, "--services", services, out, limit_memory=MEMORY)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{services}: larger than 4194304 bytes: names defined after that are not known" in result.stderr
    assert sockets(out) == ["portreserve-631-tcp.socket"]


def test_sockets_of_the_host_are_capped_with_a_message(tmp_path: Path) -> None:
    from portreserve.config import MAX_SOCKETS

    files: dict[str | bytes, str | bytes] = {
        "a": "10000-11999/tcp\n",  # 2000
        "b": "10000-10099/tcp\n20000-20199/tcp\n",  # 100 shared (free) + 200 new: over
        "c": "30000-30023\n",  # 24 x 2 = 48: exactly the cap
        "d": "40000/udp\n",  # over
    }
    result, out = generate(tmp_path, files)
    assert MAX_SOCKETS == 2048
    assert result.returncode == 0
    limit = f"reserved sockets (port and protocol) on this host, more than the limit of {MAX_SOCKETS}, ignoring line"
    assert f"etc/b:2: would make 2200 {limit}" in result.stderr
    assert f"etc/d:1: would make 2049 {limit}" in result.stderr
    assert len(sockets(out)) == 2000 + 48 == MAX_SOCKETS
    assert "etc/b:1" not in result.stderr and "etc/c" not in result.stderr


# -- portreserve check ----------------------------------------------------------


def portreserve_check(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # These tests are about what the files hold; which unit releases each
    # name is tests/test_check_release.py's: AutoRelease=no (a file the
    # original never reads) keeps check's "no unit releases" warnings out.
    given = [Path(args[i + 1]) for i, a in enumerate(args[:-1]) if a == "--config-dir"]
    if env and "XDG_CONFIG_HOME" in env:
        given.append(Path(env["XDG_CONFIG_HOME"]) / "portreserve")
    for directory in given:
        if directory.is_dir() and not (directory / "portreserve.conf").exists():
            (directory / "portreserve.conf").write_text("AutoRelease=no\n")
    return subprocess.run(
        [sys.executable, "-m", "portreserve", "check", *map(str, args)],
        capture_output=True,
        text=True,
        errors="backslashreplace",
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=60,
    )


def test_check_user_reads_the_xdg_directories(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "portreserve").mkdir(parents=True)
    (home / "portreserve" / "web").write_text("8080/tcp\nnosuch\n")
    env = {"XDG_CONFIG_HOME": str(home), "XDG_CONFIG_DIRS": str(tmp_path / "none")}
    result = portreserve_check("--user", "--services-file", services_file(tmp_path), env=env)
    assert result.returncode == 1
    assert (
        result.stdout == f"{home}/portreserve/web:2: unknown service 'nosuch' (not in /etc/services), ignoring line\n"
    )


def test_check_prints_file_line_message_and_exits_1(tmp_path: Path) -> None:
    directory = etc(tmp_path, {"x": "ipp\n-5\nnosuch\n", b"bad\xff": "ipp\n", "y": "700\n"})
    result = portreserve_check("--system", "--config-dir", directory, "--services-file", services_file(tmp_path))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{directory}/bad\\xff: file name is not valid UTF-8, ignoring file",
        f"{directory}/x:2: malformed port or range '-5' (expected PORT or LOW-HIGH), ignoring line",
        f"{directory}/x:3: unknown service 'nosuch' (not in /etc/services), ignoring line",
    ]


def test_check_json_and_clean_config(tmp_path: Path) -> None:
    directory = etc(tmp_path, {"x": "ipp\n"})
    clean = portreserve_check("--config-dir", directory, "--services-file", services_file(tmp_path), "--json")
    assert clean.returncode == 0 and json.loads(clean.stdout) == []
    etc(tmp_path, {"y": "70000/tcp\n"})
    found = portreserve_check("--config-dir", directory, "--services-file", services_file(tmp_path), "--json")
    assert found.returncode == 1
    assert json.loads(found.stdout) == [
        {
            "file": f"{directory}/y",
            "line": 1,
            "message": "port 70000 out of range (1-65535), ignoring line",
            "severity": "error",
        }
    ]


def test_check_agrees_with_the_generator(tmp_path: Path) -> None:
    directory = etc(tmp_path, {"x": "ipp\n-5\nnosuch\n" + "9" * 5000 + "\n", "a\tb": "1\n"})
    services = services_file(tmp_path)
    checked = portreserve_check("--config-dir", directory, "--services-file", services)
    generated = run_generator("--config-dir", directory, "--services", services, tmp_path / "out")
    assert checked.stdout.splitlines() == [
        line.removeprefix("portreserve-generator: ") for line in generated.stderr.splitlines()
    ]
    assert checked.returncode == 1 and generated.returncode == 0
