"""Tests of the boot harness itself (tests/boot.py), with trivial units only."""

from __future__ import annotations

import errno
import math
import os
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from boot import BootError, boot, host_leftovers

pytestmark = pytest.mark.boot


def test_trivial_boot_returns_results_and_leaves_nothing(tmp_path: Path) -> None:
    # The guest's systemd-tmpfiles empties /tmp at boot (tmp.conf: "D /tmp"):
    # it must do so in the overlay only.  The canary is in the host's /tmp
    # itself, wherever pytest's tmp_path is (--basetemp).
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="boot-canary-") as host_tmp:
        canary = Path(host_tmp) / "canary"
        canary.write_text("host file\n")
        driver = f"""#!/bin/bash
set -eu
echo hello from $(hostname) > /results/hello
if [ -e {canary} ]; then echo present; else echo gone; fi > /results/canary
"""
        result = boot(tmp_path, driver=driver)
        host_canary = canary.read_text()

    assert result.read("hello").startswith("hello from ")
    assert result.read("canary").strip() == "gone"  # the guest did clean its /tmp
    assert host_canary == "host file\n"  # ... and the host's is untouched
    # The wrapper recorded when the driver started: after the namespace did.
    # (How fast a boot is belongs to `make bench`, not to a test.)
    assert math.isfinite(result.boot_seconds) and result.boot_seconds > 0, result.boot_seconds
    assert "Reached target boot-test.target" in result.journal
    assert "running in system mode" in result.console  # PID 1's own early log
    # Nothing of the guest survives on the host: no mount, no process, no cgroup.
    assert host_leftovers() == []
    overlays = subprocess.run(
        # findmnt exits 1 when it finds nothing
        ["findmnt", "-rn", "-t", "overlay", "-o", "TARGET,OPTIONS"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    assert str(tmp_path) not in overlays
    ps = subprocess.run(["ps", "-eo", "pid=,comm="], capture_output=True, text=True, check=True).stdout
    ours = f"portreserve-boot-{os.getpid()}-"
    for line in ps.splitlines():
        pid, comm = line.split(None, 1)
        if comm.strip() != "systemd" or pid == "1":
            continue
        # Another test process may be booting its own guest right now: only
        # a systemd in a cgroup of this process's guests is a leftover.
        try:
            cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        assert ours not in cgroup, f"leftover guest systemd {pid}"


def test_failing_driver_raises_with_journal_tail(tmp_path: Path) -> None:
    with pytest.raises(BootError) as excinfo:
        boot(tmp_path, driver="#!/bin/bash\necho marker-7d3f >&2\nexit 1\n")

    message = str(excinfo.value)
    assert "driver exited with 1" in message
    assert "guest journal" in message
    assert "marker-7d3f" in message  # the driver's output, via driver.log and journal
    assert "systemd[1]:" in message  # proof that it is the guest's journal
    assert host_leftovers() == []


def test_failing_driver_without_check_returns_its_status(tmp_path: Path) -> None:
    result = boot(tmp_path, driver="#!/bin/bash\necho partial > /results/partial\nexit 3\n", check=False)

    assert result.driver_rc == 3
    assert result.read("partial") == "partial\n"
    assert host_leftovers() == []


def test_files_land_and_guest_has_own_network(tmp_path: Path) -> None:
    # Hold 631 on the host while the guest binds it too: only works with a
    # network namespace of its own.
    host_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        host_sock.bind(("0.0.0.0", 631))
        host_sock.listen()
        host_holds = True
    except OSError as e:
        assert e.errno == errno.EADDRINUSE  # something on the host has it; fine too
        host_holds = False
    holder = (
        "[Unit]\nDescription=test port holder\n"
        "[Service]\n"
        "ExecStart=/usr/bin/python3 -c 'import socket, time; "
        's = socket.socket(); s.bind(("0.0.0.0", 631)); s.listen(); time.sleep(600)\'\n'
    )
    # The driver records what it found either way; the test judges it.
    driver = """#!/bin/bash
set -u
systemctl is-active holder.service > /results/state
echo "nobody listens on 631" > /results/port
for _ in $(seq 200); do
    if python3 -c 'import socket; socket.create_connection(("127.0.0.1", 631), 1)' 2>/dev/null; then
        echo connected > /results/port; break
    fi
    sleep 0.05
done
"""
    try:
        result = boot(
            tmp_path,
            files={"/etc/systemd/system/holder.service": holder},
            symlinks={
                "/etc/systemd/system/boot-test.target.wants/holder.service":
                    "/etc/systemd/system/holder.service",
            },
            driver=driver,
        )  # fmt: skip
        if host_holds:
            # The host's socket is untouched: still bound and listening here.
            with socket.create_connection(("127.0.0.1", 631), timeout=1):
                pass
    finally:
        host_sock.close()

    assert result.read("state").strip() == "active"
    assert result.read("port").strip() == "connected"


def test_generator_in_etc_runs_at_boot(tmp_path: Path) -> None:
    generator = """#!/bin/sh
# systemd passes normal, early and late output directories.
set -e
cat > "$1/from-generator.service" <<EOF
[Unit]
Description=unit written by a test generator
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'echo generated > /results/generated'
EOF
mkdir -p "$1/boot-test.target.wants"
ln -s ../from-generator.service "$1/boot-test.target.wants/from-generator.service"
echo "<6>test-generator: wrote from-generator.service" > /dev/kmsg
"""
    driver = """#!/bin/bash
set -eu
systemctl show -p LoadState -p ActiveState -p FragmentPath from-generator.service > /results/show
"""
    result = boot(
        tmp_path,
        files={"/etc/systemd/system-generators/test-generator": (generator, 0o755)},
        driver=driver,
    )

    show = dict(line.split("=", 1) for line in result.read("show").splitlines())
    assert show["LoadState"] == "loaded"
    assert show["ActiveState"] == "active"
    assert show["FragmentPath"] == "/run/systemd/generator/from-generator.service"
    assert result.read("generated").strip() == "generated"
    # Generators log to /dev/kmsg (systemd.generator(7)); the harness keeps it.
    assert "test-generator: wrote from-generator.service" in result.kmsg


def test_install_tree_and_symlinks_land_without_breaking_the_root(tmp_path: Path) -> None:
    # A DESTDIR tree as `make install` makes it; /lib/... must go through the
    # merged-/usr symlink (/lib -> usr/lib), not replace it.
    destdir = tmp_path / "destdir"
    (destdir / "lib/systemd/system").mkdir(parents=True)
    (destdir / "lib/systemd/system/from-destdir.service").write_text("[Service]\nExecStart=/bin/true\n")
    (destdir / "usr/local/bin").mkdir(parents=True)
    (destdir / "usr/local/bin/hello").write_text("#!/bin/sh\necho installed\n")
    (destdir / "usr/local/bin/hello").chmod(0o755)
    driver = """#!/bin/bash
set -eu
{
    hello
    readlink /lib
    readlink /etc/portreserve/masked
    cat /etc/portreserve/cups
    stat -c %a /tmp
    systemctl show -P LoadState from-destdir.service
} > /results/out
"""
    result = boot(
        tmp_path,
        install=destdir,
        files={"/etc/portreserve/cups": "ipp\n"},
        symlinks={"/etc/portreserve/masked": "/dev/null"},
        driver=driver,
    )

    assert result.read("out").splitlines() == ["installed", "usr/lib", "/dev/null", "ipp", "1777", "loaded"]
