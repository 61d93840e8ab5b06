"""The packages and `make install`, without booting anything.

`make deb` and `make rpm` are run for real (into a temporary dist directory)
and their contents compared; a `make install` into a temporary prefix is run
the way a /usr/local install runs, with its own shims.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, child_env

from portreserve import __version__


def make(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["make", "-s", "-C", str(ROOT), *args], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dist")
    make("deb", f"DIST={path}")
    make("rpm", f"DIST={path}")
    return path


def deb_files(deb: Path) -> dict[str, str]:
    """{path: mode string} of every entry, as `dpkg-deb -c` lists it."""
    out = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    files = {}
    for line in out.splitlines():
        fields = line.split()
        files[fields[5].removeprefix(".")] = fields[0]
    return files


def rpm_files(rpm: Path) -> dict[str, str]:
    out = subprocess.run(["rpm", "-qlpv", str(rpm)], capture_output=True, text=True, check=True).stdout
    return {line.split()[8]: line.split()[0] for line in out.splitlines()}


def deb_path(dist: Path) -> Path:
    return dist / f"portreserve_{__version__}_all.deb"


def rpm_path(dist: Path) -> Path:
    return dist / f"portreserve-{__version__}-1.noarch.rpm"


def test_versions_agree() -> None:
    changelog = (ROOT / "debian" / "changelog").read_text().splitlines()[0]
    assert changelog.startswith(f"portreserve ({__version__})")
    spec = (ROOT / "portreserve.spec").read_text()
    assert re.search(rf"^Version:\s+{re.escape(__version__)}$", spec, re.M)


def test_deb_has_the_commands_generator_units_and_pages(dist: Path) -> None:
    files = deb_files(deb_path(dist))
    expected = {
        "/usr/sbin/portreserve",
        "/usr/sbin/portrelease",
        "/lib/systemd/system-generators/portreserve-generator",
        "/usr/lib/systemd/user-generators/portreserve-generator",
        "/usr/lib/python3/dist-packages/portreserve/release.py",
        "/usr/share/man/man5/portreserve.5.gz",
        "/usr/share/man/man8/portreserve.8.gz",
        "/usr/share/man/man8/portrelease.8.gz",
        "/usr/share/man/man8/portreserve-generator.8.gz",
        "/usr/share/doc/portreserve/copyright",
        *(f"/lib/systemd/system/{u.name}" for u in (ROOT / "units" / "system").iterdir()),
        *(f"/usr/lib/systemd/user/{u.name}" for u in (ROOT / "units" / "user").iterdir()),
    }
    assert expected <= files.keys(), sorted(expected - files.keys())
    assert files["/usr/sbin/portreserve"].startswith("-rwxr-xr-x")
    assert files["/lib/systemd/system-generators/portreserve-generator"].startswith("-rwxr-xr-x")


def test_deb_ships_etc_portreserve_empty_and_no_conffile(dist: Path) -> None:
    files = deb_files(deb_path(dist))
    assert files["/etc/portreserve/"].startswith("d")
    assert not [f for f in files if f.startswith("/etc/") and f not in ("/etc/", "/etc/portreserve/")]
    control = subprocess.run(["dpkg-deb", "-I", str(deb_path(dist))], capture_output=True, text=True, check=True).stdout
    assert "conffiles" not in control


def test_deb_ships_no_bytecode(dist: Path) -> None:
    # dh_python3 compiles at installation (py3compile in the postinst).
    assert not [f for f in deb_files(deb_path(dist)) if "__pycache__" in f or f.endswith(".pyc")]


def test_deb_depends_on_what_the_code_imports(dist: Path) -> None:
    depends = subprocess.run(
        ["dpkg-deb", "-f", str(deb_path(dist)), "Depends"], capture_output=True, text=True, check=True
    ).stdout
    assert {"python3", "python3-systemd", "python3-xdg", "python3-jeepney"} <= {
        d.strip().split()[0] for d in depends.split(",")
    }


def test_deb_maintainer_scripts_enable_and_start_nothing(dist: Path, tmp_path: Path) -> None:
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", str(deb_path(dist)), str(control)], check=True)
    scripts = {p.name: p.read_text() for p in control.iterdir() if p.name in ("postinst", "prerm", "postrm")}
    assert set(scripts) == {"postinst", "prerm", "postrm"}
    text = "\n".join(scripts.values())
    assert "deb-systemd-helper enable" not in text and "deb-systemd-invoke start" not in text
    assert "systemctl --system daemon-reload" in scripts["postinst"]
    assert "systemctl --system daemon-reload" in scripts["postrm"]
    assert "stop portreserve.target" in scripts["prerm"]
    for name in scripts:
        result = subprocess.run(["sh", "-n", str(control / name)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_rpm_has_the_same_files_as_the_deb(dist: Path) -> None:
    """Same commands, modules, units, generators and pages, in Fedora's places."""
    debian_to_fedora = [
        ("/lib/systemd/system/", "/usr/lib/systemd/system/"),
        ("/lib/systemd/system-generators/", "/usr/lib/systemd/system-generators/"),
        ("/usr/lib/python3/dist-packages/", "/usr/lib/python3.11/site-packages/"),
    ]

    def normal(path: str) -> str | None:
        path = path.rstrip("/") + "/"
        for old, new in debian_to_fedora:
            if path.startswith(old):
                path = new + path[len(old) :]
        path = path.rstrip("/")
        path = path.removesuffix(".gz")
        # Each distribution's doc directory holds its own files (copyright, changelog).
        if path.startswith("/usr/share/doc") or "__pycache__" in path:
            return None
        return path

    # Files and symlinks; the directories differ by nature (the .deb lists
    # every one, the RPM those it owns) and are checked below.
    deb = {p for p, mode in deb_files(deb_path(dist)).items() if not mode.startswith("d")}
    rpm = {p for p, mode in rpm_files(rpm_path(dist)).items() if not mode.startswith("d")}
    assert {p for p in map(normal, deb) if p} == {p for p in map(normal, rpm) if p}


def test_rpm_owns_the_configuration_directories_and_no_file_in_etc(dist: Path) -> None:
    files = rpm_files(rpm_path(dist))
    assert files["/etc/portreserve"].startswith("d")
    assert files["/usr/lib/portreserve"].startswith("d")
    assert [f for f in files if f.startswith("/etc/")] == ["/etc/portreserve"]


def test_rpm_requires_the_runtime_libraries(dist: Path) -> None:
    out = subprocess.run(["rpm", "-qpR", str(rpm_path(dist))], capture_output=True, text=True, check=True).stdout
    requires = {line.split()[0] for line in out.splitlines()}
    assert {"python3-systemd", "python3-pyxdg", "python3-jeepney", "systemd"} <= requires


# -- make install into a prefix, as a /usr/local install -------------------------


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real install (no DESTDIR) into a fresh prefix: the shims carry its paths."""
    path = tmp_path_factory.mktemp("prefix")
    make("install", f"PREFIX={path}", f"SYSCONFDIR={path}/etc")
    yield path
    make("uninstall", f"PREFIX={path}", f"SYSCONFDIR={path}/etc")


def run_installed(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in child_env().items() if k != "PYTHONPATH"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd="/", stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(
    "command, expected",
    [
        ("sbin/portreserve", "portreserve"),
        ("sbin/portrelease", "portrelease"),
        ("lib/systemd/system-generators/portreserve-generator", "portreserve-generator"),
        ("lib/systemd/user-generators/portreserve-generator", "portreserve-generator"),
    ],
)
def test_installed_commands_find_their_package(prefix: Path, command: str, expected: str) -> None:
    # /usr/bin/python3 -I never searches PREFIX/lib/python3/dist-packages: the
    # shims must add it themselves, or every boot fails with ModuleNotFoundError.
    result = run_installed([str(prefix / command), "--version"])
    assert (result.returncode, result.stdout) == (0, f"{expected} {__version__}\n"), result.stderr


def test_installed_generator_runs_as_systemd_runs_it(prefix: Path, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "cups").write_text("631/tcp\n")
    out = tmp_path / "out"
    generator = prefix / "lib/systemd/system-generators/portreserve-generator"
    result = run_installed([str(generator), "--config-dir", str(config), str(out)])
    assert result.returncode == 0, result.stderr
    assert (out / "portreserve-631-tcp.socket").is_file()
    # The units name the installed commands, not /usr/sbin.
    units = "".join(p.read_text() for p in (prefix / "lib/systemd/system").iterdir())
    assert f"{prefix}/sbin/portreserve" in units and "@SBINDIR@" not in units


def test_install_makes_the_admin_directory_and_uninstall_keeps_it(tmp_path: Path) -> None:
    prefix = tmp_path / "p"
    make("install", f"PREFIX={prefix}", f"SYSCONFDIR={prefix}/etc")
    (prefix / "etc/portreserve/cups").write_text("ipp\n")
    make("uninstall", f"PREFIX={prefix}", f"SYSCONFDIR={prefix}/etc")
    assert (prefix / "etc/portreserve/cups").read_text() == "ipp\n"
    left = sorted(str(p.relative_to(prefix)) for p in prefix.rglob("*") if not p.is_dir())
    assert left == ["etc/portreserve/cups"]


def test_make_deps_refuses_a_plan_that_upgrades(tmp_path: Path) -> None:
    """`make deps` with fake dpkg-query and apt-get on PATH: one package
    missing, and apt's simulated plan upgrading an installed library."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt.log"
    (bin_dir / "dpkg-query").write_text(
        '#!/bin/sh\n[ "$3" = shellcheck ] && exit 1\necho installed\n'  # $3: the package
    )
    (bin_dir / "apt-get").write_text(
        f'#!/bin/sh\necho "$*" >> {log}\n'
        'case "$*" in *" -s "*|*" install -s"*)\n'
        "  echo 'Inst libsystemd0 [252.38-1~deb12u1] (252.39-1~deb12u1 Debian:12/stable [amd64])'\n"
        "  echo 'Inst shellcheck (0.9.0-1 Debian:12/stable [amd64])';;\n"
        "esac\nexit 0\n"
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    result = subprocess.run(["make", "-s", "-C", str(ROOT), "deps"], capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert "would upgrade installed packages: libsystemd0" in result.stderr
    calls = log.read_text().splitlines()
    assert all("DPkg::Lock::Timeout=300" in c for c in calls), calls
    # Simulated, never really installed.
    assert not [c for c in calls if " install " in f" {c} " and " -s " not in f" {c} "], calls
