"""User mode: XDG paths from pyxdg, the unprivileged-port rule, the user generator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from portreserve import names, paths
from portreserve.config import Port, Proto, load_config, parse_services

REPO = Path(__file__).resolve().parent.parent
SERVICES = parse_services("http-alt 8080/tcp\nipp 631/tcp\n")


def test_config_dirs_follow_xdg_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", "/home/dev/cfg")
    monkeypatch.setenv("XDG_CONFIG_DIRS", "/etc/xdg:/opt/site")
    # lowest priority first: the last directory wins
    assert paths.config_dirs(user=True) == [
        "/opt/site/portreserve",
        "/etc/xdg/portreserve",
        "/home/dev/cfg/portreserve",
    ]


def test_config_dirs_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("XDG_CONFIG_DIRS", raising=False)
    monkeypatch.setenv("HOME", "/home/dev")
    assert paths.config_dirs(user=True) == ["/etc/xdg/portreserve", "/home/dev/.config/portreserve"]


def test_system_paths_do_not_depend_on_xdg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", "/elsewhere")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/elsewhere/run")
    assert paths.config_dirs(user=False) == ["/usr/lib/portreserve", "/etc/portreserve"]
    assert paths.control_socket(user=False) == "/run/portreserve/socket"
    assert paths.generator_dir(user=False) == "/run/systemd/generator"


def test_runtime_paths_follow_xdg_runtime_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1234")
    assert paths.control_socket(user=True) == "/run/user/1234/portreserve/socket"
    assert paths.generator_dir(user=True) == "/run/user/1234/systemd/generator"


def test_the_manager_socket_follows_xdg_runtime_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1234")
    assert paths.manager_socket(True) == "/run/user/1234/systemd/private"
    assert paths.manager_socket(False) == "/run/systemd/private"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert paths.control_socket(True) == f"/run/user/{os.getuid()}/portreserve/socket"
    assert paths.manager_socket(True) == f"/run/user/{os.getuid()}/systemd/private"


def test_user_file_overrides_and_masks_site_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    site, home = tmp_path / "site", tmp_path / "home"
    (site / "portreserve").mkdir(parents=True)
    (home / "portreserve").mkdir(parents=True)
    (site / "portreserve" / "web").write_text("8080\n")
    (site / "portreserve" / "vite").write_text("5173/tcp\n")
    (home / "portreserve" / "web").write_text("8081/tcp\n")
    os.symlink("/dev/null", home / "portreserve" / "vite")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(site))
    config = load_config(paths.config_dirs(user=True), SERVICES)
    assert {r.name: r.ports for r in config.reservations} == {"web": (Port(8081, Proto.TCP),)}


def test_privileged_lines_are_refused_naming_the_sysctl(tmp_path: Path) -> None:
    (tmp_path / "dev").write_text("ipp\n8080/tcp\n80-90\n9000\n")
    config = load_config([tmp_path], SERVICES, lowest=1024)
    assert config.reservations[0].ports == (Port(8080, Proto.TCP), Port(9000, Proto.TCP), Port(9000, Proto.UDP))
    assert [(e.line, e.message.split(":")[0]) for e in config.errors] == [
        (1, "'ipp' is below net.ipv4.ip_unprivileged_port_start (1024)"),
        (3, "'80-90' is below net.ipv4.ip_unprivileged_port_start (1024)"),
    ]


def test_user_generator_reads_xdg_dirs_and_writes_user_units(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "portreserve").mkdir(parents=True)
    (home / "portreserve" / "dev").write_text("8080/tcp\n5173\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    environ.update(
        PYTHONPATH=str(REPO), SYSTEMD_SCOPE="user", XDG_CONFIG_HOME=str(home), XDG_CONFIG_DIRS=str(tmp_path / "none")
    )
    result = subprocess.run(
        [sys.executable, str(REPO / "generators" / "portreserve-generator"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=environ,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.socket")) == [
        "portreserve-5173-tcp.socket",
        "portreserve-5173-udp.socket",
        "portreserve-8080-tcp.socket",
    ]
    socket_unit = (tmp_path / "out" / "portreserve-8080-tcp.socket").read_text()
    assert "rpcbind" not in socket_unit and "Before=shutdown.target sockets.target\n" in socket_unit
    group = (tmp_path / "out" / "portreserve@dev.target").read_text()
    assert "Exec" not in group, "a grouping unit has no process"
    assert "Wants=portreserve-8080-tcp.socket portreserve-5173-tcp.socket portreserve-5173-udp.socket" in group
    # The owners are in the map, where the user holder and portrelease --user find them.
    assert names.read_map(str(tmp_path / "out")) == {"dev": [(8080, "tcp"), (5173, "tcp"), (5173, "udp")]}
