"""What each command imports: every module is milliseconds in the start path
of portrelease (ExecStartPre= of every consumer) and of the generator (every
boot and daemon-reload), and memory for the whole life of the holder.

Checked in fresh interpreters started the way the installed commands are
(Makefile: portrelease `/usr/bin/python3 -IS`, the generator and the holder
`python3 -I`), by the difference of sys.modules, and for real runs with
`-X importtime`, which lists every module the process imported.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import (
    ROOT,
    Reaper,
    child_env,
    control_socket,
    start_holder,
    systemd_sockets,
    user_runtime,
)

SYSTEM_PYTHON = "/usr/bin/python3"

RELEASE_FORBIDDEN = {
    "socket",  # the module; _socket, its C core, is what portrelease uses
    "subprocess",
    "argparse",
    "typing",
    "dataclasses",
    "enum",
    "re",
    "pathlib",
    "json",
    "selectors",
    "jeepney",
    "systemd",
}
GENERATOR_FORBIDDEN = {"subprocess", "socket", "jeepney", "systemd", "dataclasses", "json", "selectors"}
HOLDER_FORBIDDEN = {"logging", "subprocess", "dataclasses", "pathlib"}


def new_modules(flags: list[str], module: str) -> set[str]:
    """Top-level names of the modules that importing `module` adds, in a
    fresh `/usr/bin/python3 FLAGS` with this tree on sys.path."""
    code = (
        "import sys, json\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "before = set(sys.modules)\n"
        f"import {module}\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    result = subprocess.run(
        [SYSTEM_PYTHON, *flags, "-c", code], capture_output=True, text=True, timeout=60, cwd="/", check=True
    )
    return set(json.loads(result.stdout))


def top_level(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def imported(importtime_log: str) -> set[str]:
    """Module names from `-X importtime` lines: 'import time: self | cumulative | name'."""
    found = set()
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                found.add(name)
    return found


def test_portrelease_imports_stay_lean() -> None:
    added = new_modules(["-IS"], "portreserve.release")
    assert "portreserve.release" in added, "the check ran"
    assert "_socket" in added, "control: the C socket module is what it uses"
    assert top_level(added) & RELEASE_FORBIDDEN == set(), sorted(added)


def test_generator_imports_stay_lean() -> None:
    added = new_modules(["-I"], "portreserve.generator")
    assert "portreserve.generator" in added
    assert top_level(added) & GENERATOR_FORBIDDEN == set(), sorted(added)


def test_a_real_portrelease_run_imports_stay_lean(reaper: Reaper, workdir: Path) -> None:
    """Not just the import: a whole release through a real holder, under the
    installed command's interpreter flags."""
    [(port, socks)] = systemd_sockets(1, ("tcp", "udp"))
    gen, ctl, env = user_runtime(workdir)
    holder = start_holder(
        reaper,
        workdir,
        [socks["tcp"], socks["udp"]],
        {"web": [(port, "tcp"), (port, "udp")]},
        control=control_socket(ctl),
        generator_dir=gen,
    )
    holder.wait_ready()
    shim = f"import sys\nsys.path.append({str(ROOT)!r})\nfrom portreserve.release import entry\nentry()\n"
    result = subprocess.run(
        [SYSTEM_PYTHON, "-IS", "-X", "importtime", "-c", shim, "--user", "-v", "web"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**child_env(), **env},
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    assert f"web: released {port}/tcp {port}/udp" in result.stdout, "control: it did the whole release"
    modules = imported(result.stderr)
    assert "portreserve.release" in modules and "_socket" in modules
    assert top_level(modules) & RELEASE_FORBIDDEN == set(), sorted(modules)


@pytest.mark.parametrize("with_manager", [False, True], ids=["no-manager", "manager"])
def test_the_holder_imports_stay_lean(reaper: Reaper, workdir: Path, with_manager: bool) -> None:
    """A real holder, from its start to its exit, serving a request; with
    $INVOCATION_ID it also loads the D-Bus side (manager.py, jeepney).
    Modules the interpreter's own start-up imports (site) are not counted:
    they are measured in the same run."""
    [(port, socks)] = systemd_sockets(1, ("tcp",))
    ctl = control_socket(workdir / "ctl")
    extra = {"INVOCATION_ID": "0" * 32} if with_manager else {}
    args = ["-d", "--manager-socket", str(workdir / "no-manager")] if with_manager else ["-d"]
    holder = start_holder(
        reaper,
        workdir,
        [socks["tcp"]],
        {"web": [(port, "tcp")]},
        control=ctl,
        command=[SYSTEM_PYTHON, "-X", "importtime"],
        args=args,
        env=extra,
    )
    holder.wait_ready()
    if with_manager:
        # No manager answers here: requests wait for it; .status does not.
        assert holder.ask(".status").ports == {f"{port}/tcp": "held"}
        holder.proc.send_signal(signal.SIGTERM)
    else:
        assert holder.ask("web").ports == {f"{port}/tcp": "free"}
    assert holder.wait_exit() == 0, holder.stderr()

    baseline = subprocess.run(
        [SYSTEM_PYTHON, "-X", "importtime", "-c", "pass"], capture_output=True, text=True, env=child_env(), cwd="/"
    )
    modules = imported(holder.stderr()) - imported(baseline.stderr)
    assert "portreserve.holder" in modules
    if with_manager:
        assert "portreserve.manager" in modules and "jeepney" in modules
    assert top_level(modules) & HOLDER_FORBIDDEN == set(), sorted(modules)
