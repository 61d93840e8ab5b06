"""`portreserve status` and `portreserve reload` for people and scripts.

Without a boot: the standalone holder (real processes, real sockets) and the
pure parts.  With a boot (real systemd 252): every state a port can be in, the
exit codes, --json fields, `since` from systemd, the process and unit holding a
port taken before the reservation, files added since the generator ran, and what
`reload` says per name.  The boot runs tests/guest/status.sh, made of
scenario_* functions: every scenario is one test here, derived from the driver
(tests/scenarios.py); the tests of --json read what the driver wrote.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from boot import BootResult, boot
from helpers import (
    PORTRESERVE,
    Reaper,
    free_ports,
    pids_with_arg,
    plain_bind,
    portrelease,
    portreserve,
    run,
    write_config,
    write_map,
)
from scenarios import GUEST, Driver, assert_scenario, guest_tools

from portreserve.status import EXIT_FAILED, EXIT_OK, EXIT_PENDING, PortState, Report, unit_of_cgroup

# -- pure parts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, unit",
    [
        ("0::/system.slice/squatter.service\n", "squatter.service"),
        ("0::/user.slice/user-1000.slice/user@1000.service/app.slice/web.service\n", "web.service"),
        ("0::/user.slice/user-1000.slice/session-3.scope\n", "session-3.scope"),
        (
            "0::/system.slice/system-portreserve.slice/portreserve@my\\x2dprinter.service\n",
            "portreserve@my\\x2dprinter.service",
        ),  # fmt: skip
        ("0::/init.scope\n", "init.scope"),
        ("0::/\n", None),
        ("0::/system.slice\n", None),
        ("12:memory:/foo.service\n", None),  # cgroup v1 lines do not count
        ("", None),
    ],
)
def test_unit_of_a_process_from_its_cgroup(text: str, unit: str | None) -> None:
    assert unit_of_cgroup(text) == unit


def report(*states: str, pending: list[str] | None = None) -> Report:
    ports = [PortState("n", (1000 + i, "tcp"), s) for i, s in enumerate(states)]
    return Report("system", "systemd", ports, [], pending or [])


@pytest.mark.parametrize(
    "states, pending, expected",
    [
        ((), [], EXIT_OK),
        (("held", "released"), [], EXIT_OK),
        (("held", "failed"), [], EXIT_FAILED),
        (("held", "pending"), [], EXIT_PENDING),
        (("held",), ["new"], EXIT_PENDING),
        (("failed", "pending"), ["new"], EXIT_FAILED),  # a failure wins
    ],
)
def test_exit_status(states: tuple[str, ...], pending: list[str], expected: int) -> None:
    assert report(*states, pending=pending).exit_status() == expected


# -- a standalone holder ----------------------------------------------------------------


@pytest.fixture
def standalone(reaper: Reaper, workdir: Path, tmp_path: Path) -> Callable[[dict[str, str]], list[str]]:
    """Start a standalone holder on a private config; returns the key arguments."""

    def start(files: dict[str, str]) -> list[str]:
        config = write_config(tmp_path / "config", {name: text for name, text in files.items()})
        services = tmp_path / "services"
        services.write_text("")
        sock = workdir / "ctl"
        reaper.marker(str(sock))
        args = ["--socket", str(sock), "--config-dir", str(config), "--services", str(services)]
        hold = portreserve("hold", *args)
        assert hold.returncode == 0, hold.stderr
        assert len(pids_with_arg(str(sock))) == 1
        return args

    return start


def test_json_has_one_object_per_port_with_separate_fields(
    standalone: Callable[[dict[str, str]], list[str]],
) -> None:
    a, b = free_ports(2)
    args = standalone({"alpha": f"{a}/tcp\n", "beta": f"{b}/udp\n"})
    assert portrelease("--socket", args[1], "beta").returncode == 0
    with plain_bind("udp", b):  # someone else takes the released port: this test process
        result = portreserve("status", *args, "--json")
    assert result.returncode == EXIT_OK, result.stderr
    document = json.loads(result.stdout)
    assert (document["scope"], document["mode"], document["exit_status"]) == ("system", "standalone", 0)
    by_name = {p["name"]: p for p in document["ports"]}
    assert set(by_name) == {"alpha", "beta"}
    fields = {"name", "port", "proto", "state", "unit", "since", "detail", "taken_by"}
    assert all(set(p) == fields for p in document["ports"])
    assert (by_name["alpha"]["port"], by_name["alpha"]["proto"], by_name["alpha"]["state"]) == (a, "tcp", "held")
    assert by_name["alpha"]["detail"] == ""  # was "by another name's reservation", from an old reading of .status
    assert (by_name["beta"]["port"], by_name["beta"]["proto"], by_name["beta"]["state"]) == (b, "udp", "released")
    holder = by_name["beta"]["taken_by"]
    assert [h["pid"] for h in holder] == [os.getpid()]
    assert holder[0]["process"] == Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert by_name["alpha"]["taken_by"] == []


@pytest.mark.parametrize("flag, lines", [("--json=short", 1), ("--json=pretty", None), ("--json", None)])
def test_json_short_is_one_line_pretty_is_indented(
    standalone: Callable[[dict[str, str]], list[str]], flag: str, lines: int | None
) -> None:
    (a,) = free_ports(1)
    args = standalone({"alpha": f"{a}/tcp\n"})
    result = portreserve("status", *args, flag)
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)
    if lines is not None:
        assert result.stdout.count("\n") == lines
    else:
        assert result.stdout.count("\n") > 5 and '\n  "ports": [' in result.stdout


def test_quiet_prints_nothing_and_no_pager_is_accepted(standalone: Callable[[dict[str, str]], list[str]]) -> None:
    (a,) = free_ports(1)
    args = standalone({"alpha": f"{a}/tcp\n"})
    quiet = portreserve("status", *args, "-q")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert portreserve("status", *args, "--quiet", "--no-pager").stdout == ""
    table = portreserve("status", *args, "--no-pager")
    assert table.returncode == 0 and f"{a}/tcp" in table.stdout


def test_unknown_json_style_is_a_usage_error(standalone: Callable[[dict[str, str]], list[str]]) -> None:
    (a,) = free_ports(1)
    args = standalone({"alpha": f"{a}/tcp\n"})
    result = portreserve("status", *args, "--json=yaml")
    assert result.returncode == 2 and "invalid choice" in result.stderr


# -- under a real systemd -----------------------------------------------------------------

STATUS = Driver(GUEST / "status.sh")

STATUS_FILES: dict[str, str | bytes | tuple[str | bytes, int]] = {
    **guest_tools(),
    "/etc/portreserve/held": "1500/tcp\n",
    "/etc/portreserve/taken": "1200/tcp\n1201/tcp\n",
    "/etc/portreserve/gone": "1600/udp\n",
    "/etc/portreserve/empty": "# nothing valid\n",
    # holds 1200/tcp before the reservation's socket unit starts
    "/etc/systemd/system/squatter.service": (
        "[Unit]\nDefaultDependencies=no\nBefore=portreserve-1200-tcp.socket sockets.target\n"
        "[Service]\nType=notify\nNotifyAccess=all\nExecStart=/usr/local/bin/portcheck serve 1200/tcp\n"
    ),
    "/etc/systemd/system/consumer.service": (
        "[Service]\nType=notify\nNotifyAccess=all\nExecStart=/usr/local/bin/portcheck serve 1600/udp\n"
    ),
}
STATUS_LINKS = {"/etc/systemd/system/sysinit.target.wants/squatter.service": "/etc/systemd/system/squatter.service"}


@pytest.fixture(scope="module")
def status_boot(destdir: Path, tmp_path_factory: pytest.TempPathFactory) -> BootResult:
    return boot(
        tmp_path_factory.mktemp("status"),
        files=STATUS_FILES,
        symlinks=STATUS_LINKS,
        install=destdir,
        driver=STATUS.text,
        timeout=120,
    )


@pytest.mark.boot
@pytest.mark.parametrize("scenario", STATUS.scenarios)
def test_status_and_reload_under_systemd(status_boot: BootResult, scenario: str) -> None:
    assert_scenario(status_boot, STATUS, scenario)


@pytest.mark.boot
def test_json_fields_under_systemd(status_boot: BootResult) -> None:
    document = json.loads(status_boot.read("status1.json"))
    assert (document["mode"], document["exit_status"]) == ("systemd", 1)
    ports = {(p["name"], p["port"], p["proto"]): p for p in document["ports"]}
    held = ports[("held", 1500, "tcp")]
    assert (held["state"], held["unit"], held["taken_by"]) == ("held", "portreserve-1500-tcp.socket", [])
    # since: systemd's ActiveEnterTimestamp, to the second
    seconds = int(status_boot.read("held-since.txt").strip().lstrip("@").split(".")[0])
    import datetime

    assert int(datetime.datetime.fromisoformat(held["since"]).timestamp()) == seconds
    taken = ports[("taken", 1200, "tcp")]
    assert taken["state"] == "failed" and taken["since"] is not None
    assert taken["taken_by"] == [
        {"pid": int(status_boot.read("squatter-pid.txt")), "process": "portcheck", "unit": "squatter.service"}
    ]
    gone = ports[("gone", 1600, "udp")]
    assert gone["state"] == "released" and [h["unit"] for h in gone["taken_by"]] == ["consumer.service"]
    assert document["empty"] == ["empty"]


@pytest.mark.boot
def test_json_pending_names_the_command(status_boot: BootResult) -> None:
    document = json.loads(status_boot.read("status-pending.json"))
    assert (document["exit_status"], document["pending"], document["reload_command"]) == (
        3,
        ["late"],
        "portreserve reload",
    )
    late = [p for p in document["ports"] if p["name"] == "late"]
    assert [(p["port"], p["proto"], p["state"]) for p in late] == [(1700, "tcp", "pending")]


def test_quiet_prints_nothing_also_when_systemctl_fails(tmp_path: Path) -> None:
    """-q is for scripts: exit status 1 and no word, also from systemctl (its
    complaint goes into our one message, which -q keeps quiet)."""
    runtime = tmp_path / "run"
    (runtime / "systemd" / "generator").mkdir(parents=True)
    (runtime / "systemd" / "private").touch()  # a user manager runs
    write_map(runtime / "systemd" / "generator", {"web": [(8080, "tcp")]})
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "systemctl").write_text("#!/bin/sh\necho 'Failed to connect to bus: No medium found' >&2\nexit 1\n")
    (bindir / "systemctl").chmod(0o755)
    env = {"XDG_RUNTIME_DIR": str(runtime), "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    cfg = write_config(tmp_path / "cfg", {"web": "8080/tcp\n"})
    args = ["status", "--user", "--config-dir", str(cfg)]
    quiet = run([*PORTRESERVE, *args, "-q"], env=env)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (EXIT_FAILED, "", "")
    loud = run([*PORTRESERVE, *args], env=env)
    assert loud.returncode == EXIT_FAILED
    assert loud.stderr == (
        "portreserve: systemctl show failed (exit status 1): Failed to connect to bus: No medium found\n"
    )


def test_a_map_being_rewritten_is_read_once_pid1_answers(tmp_path: Path) -> None:
    """PID 1 removes the map at every daemon-reload and answers no call until
    the generator has written it again (docs/design.md F18).  Here the map is
    missing until systemctl has been called once (the fake systemctl writes
    it, as the end of the reload would): status reads it then, and does not
    call every name "not loaded yet" (it did)."""
    runtime = tmp_path / "run"
    gen = runtime / "systemd" / "generator"
    (runtime / "systemd").mkdir(parents=True)
    (runtime / "systemd" / "private").touch()  # a user manager runs
    ready = write_map(tmp_path / "ready", {"web": [(8080, "tcp")]})
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "systemctl").write_text(
        "#!/bin/sh\n"
        f"[ -e '{gen}' ] || cp -r '{ready}' '{gen}'\n"
        'for unit; do case "$unit" in *.socket) printf "Id=%s\\nLoadState=loaded\\nActiveState=active\\n'
        'ActiveEnterTimestamp=@1764652621\\n\\n" "$unit";; esac; done\n'
    )
    (bindir / "systemctl").chmod(0o755)
    env = {"XDG_RUNTIME_DIR": str(runtime), "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    cfg = write_config(tmp_path / "cfg", {"web": "8080/tcp\n"})
    result = run([*PORTRESERVE, "status", "--user", "--config-dir", str(cfg), "--json"], env=env)
    assert result.returncode == EXIT_OK, result
    document = json.loads(result.stdout)
    assert [(p["name"], p["port"], p["state"]) for p in document["ports"]] == [("web", 8080, "held")]
    assert document["pending"] == []


def test_who_holds_many_ports_is_one_pass_over_proc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ten released ports, each in use by this process: status names the
    process for each, from one scan of /proc (it was one scan per port)."""
    from portreserve import cli

    ports = free_ports(10, ("tcp",))
    rivals = [socket.create_server(("", port)) for port in ports]
    try:
        cfg = write_config(tmp_path / "cfg", {f"n{i}": f"{port}/tcp\n" for i, port in enumerate(ports)})
        scans: list[str] = []
        real_scandir = os.scandir

        def counting_scandir(path: str = ".") -> Iterator[os.DirEntry[str]]:
            scans.append(os.fspath(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", counting_scandir)
        args = ["status", "--socket", str(tmp_path / "none"), "--config-dir", str(cfg), "--json", "--no-pager"]
        status = cli.main(args)
        monkeypatch.undo()
    finally:
        for rival in rivals:
            rival.close()
    document = json.loads(capsys.readouterr().out)
    assert status == EXIT_OK
    assert [(p["port"], p["state"], [h["pid"] for h in p["taken_by"]]) for p in document["ports"]] == [
        (port, "released", [os.getpid()]) for port in ports
    ]
    assert scans.count("/proc") == 1


def test_under_systemd_only_released_or_failed_ports_are_probed_in_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """systemd_report: four released ports in use by this process are named
    from one scan of /proc; the port of a socket that is starting is not
    probed at all (a bind while systemd binds it fails its unit, F14)."""
    from portreserve import cli, net

    ports = free_ports(5, ("tcp",))
    runtime = tmp_path / "run"
    (runtime / "systemd").mkdir(parents=True)
    (runtime / "systemd" / "private").touch()  # a user manager runs
    write_map(runtime / "systemd" / "generator", {f"n{i}": [(p, "tcp")] for i, p in enumerate(ports)})
    cfg = write_config(tmp_path / "cfg", {f"n{i}": f"{p}/tcp\n" for i, p in enumerate(ports)})
    starting = f"portreserve-{ports[4]}-tcp.socket"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "systemctl").write_text(
        "#!/bin/sh\n"
        'for unit; do case "$unit" in\n'
        f"  {starting}) printf 'Id=%s\\nLoadState=loaded\\nActiveState=activating\\n\\n' \"$unit\";;\n"
        "  *.socket) printf 'Id=%s\\nLoadState=loaded\\nActiveState=inactive\\n"
        'ActiveEnterTimestamp=@1764652621\\n\\n\' "$unit";;\n'
        "esac; done\n"
    )
    (bindir / "systemctl").chmod(0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    rivals = [socket.create_server(("", port)) for port in ports[:4]]
    scans: list[str] = []
    probed: list[tuple[int, str]] = []
    real_scandir, real_bindable = os.scandir, net.bindable

    def counting_scandir(path: str = ".") -> Iterator[os.DirEntry[str]]:
        scans.append(os.fspath(path))
        return real_scandir(path)

    def recording_bindable(port: tuple[int, str], ipv6: bool) -> bool:
        probed.append(port)
        return real_bindable(port, ipv6)

    try:
        monkeypatch.setattr(os, "scandir", counting_scandir)
        monkeypatch.setattr(net, "bindable", recording_bindable)
        status = cli.main(["status", "--user", "--config-dir", str(cfg), "--json", "--no-pager"])
        monkeypatch.undo()
    finally:
        for rival in rivals:
            rival.close()
    document = json.loads(capsys.readouterr().out)
    assert status == EXIT_OK, document
    states = {p["port"]: (p["state"], [h["pid"] for h in p["taken_by"]]) for p in document["ports"]}
    assert states == {**{p: ("released", [os.getpid()]) for p in ports[:4]}, ports[4]: ("activating", [])}
    assert scans.count("/proc") == 1
    assert sorted(probed) == sorted((p, "tcp") for p in ports[:4])
