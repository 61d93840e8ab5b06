"""spawn: the one way the package runs systemctl, and the one wording of its failures."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from portreserve import spawn

REPO = Path(__file__).resolve().parent.parent


def test_stdout_is_returned_when_asked_for() -> None:
    assert spawn.run(["sh", "-c", "echo out; echo err >&2"], stdout=True, stderr=True) == "out\n"


def test_a_failure_names_the_command_its_verb_and_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "systemctl"
    fake.write_text("#!/bin/sh\necho 'Failed to stop x.socket: Access denied' >&2\nexit 5\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(spawn.CommandError) as e:
        spawn.systemctl(True, "stop", "--", "x.socket")
    assert e.value.status == 5
    assert str(e.value) == "systemctl stop failed (exit status 5)"  # its stderr went to ours


def test_kept_stderr_becomes_the_detail() -> None:
    with pytest.raises(spawn.CommandError) as e:
        spawn.run(["sh", "-c", "echo 'Job for x.socket failed.' >&2; exit 1"], stderr=True)
    assert e.value.detail == "Job for x.socket failed."
    assert str(e.value).endswith("failed (exit status 1): Job for x.socket failed.")


def test_a_program_that_cannot_run() -> None:
    with pytest.raises(spawn.CommandError) as e:
        spawn.run(["/nonexistent/systemctl", "show"], stdout=True, stderr=True)
    assert e.value.status is None
    assert str(e.value) == "cannot run systemctl: No such file or directory"


def test_large_output_on_both_pipes_does_not_deadlock() -> None:
    # Each more than a pipe's 64 KiB: read one pipe to its end before the
    # other and the child blocks on the full one forever (seen: that version
    # hangs here).  In a child process, so that a hang fails the test at its
    # timeout instead of stalling the suite.
    code = f"""
import sys
import time
sys.path.insert(0, {str(REPO)!r})
from portreserve import spawn
script = "head -c 300000 /dev/zero | tr '\\\\0' e >&2; head -c 300000 /dev/zero | tr '\\\\0' o"
try:
    spawn.run(["sh", "-c", script + "; exit 3"], stdout=True, stderr=True)
except spawn.CommandError as e:
    print(e.status, len(e.detail))
print(len(spawn.run(["sh", "-c", script], stdout=True, stderr=True)))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["3", "300000", "300000"], result.stderr


def test_systemctl_options_come_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "systemctl"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" >> "$0.argv"; echo >> "$0.argv"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    spawn.systemctl(True, "stop", "--", "a.socket")
    spawn.systemctl(False, "daemon-reload")
    seen = [block.split("\n") for block in (tmp_path / "systemctl.argv").read_text().split("\n\n") if block]
    assert seen == [
        ["--user", "--no-ask-password", "stop", "--", "a.socket"],
        ["--no-ask-password", "daemon-reload"],
    ]


def test_a_command_killed_by_a_signal_says_so() -> None:
    with pytest.raises(spawn.CommandError) as e:
        spawn.run(["sh", "-c", "kill -TERM $$"])
    assert e.value.status == -15
    assert str(e.value).endswith("failed (killed by signal 15)")  # not "exit status -15"


@pytest.mark.parametrize("piped", [True, False])
def test_a_command_past_its_deadline_is_killed_and_said_so(tmp_path: Path, piped: bool) -> None:
    """systemctl waits for PID 1, which answers nothing while it reloads
    (docs/design.md F18): past the caller's deadline the command is killed
    (and reaped), whether or not its output is read."""
    fake = tmp_path / "systemctl"
    fake.write_text("#!/bin/sh\necho partial\nexec sleep 600\n")
    fake.chmod(0o755)
    before = set(children())  # an earlier test's child not reaped yet is not this one
    with pytest.raises(spawn.CommandError) as e:
        spawn.run([str(fake), "show"], stdout=piped, stderr=piped, deadline=time.monotonic() + 0.5)
    assert e.value.waited is not None and e.value.waited > 0
    assert str(e.value).startswith("systemctl show did not end within ")
    assert set(children()) - before == set(), "killed and reaped"


def children() -> list[int]:
    """The pids whose parent is this process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            found.append(int(stat.parent.name))
    return found


def test_a_command_that_ends_in_time_is_not_disturbed_by_its_deadline() -> None:
    out = spawn.run(["sh", "-c", "echo out"], stdout=True, deadline=time.monotonic() + 600)
    assert out == "out\n"
