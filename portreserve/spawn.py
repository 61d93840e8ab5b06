"""Running systemctl, the one way the package does it: without the subprocess
module (5 ms to import, 2 MB), and with one wording for every failure.

A command that cannot run or exits non-zero raises CommandError, whose text
("systemctl stop failed (exit status 5): ...") callers print as it is.
"""

from __future__ import annotations

import os
import select
import time


class CommandError(Exception):
    """A command that could not run (status None) or exited non-zero; detail:
    why it could not run, or its stderr when it was kept."""

    def __init__(self, argv: list[str], status: int | None, detail: str = "", waited: float | None = None) -> None:
        super().__init__(argv, status, detail)
        self.argv, self.status, self.detail = argv, status, detail
        self.waited = waited  # set when it was stopped for not ending in time

    def __str__(self) -> str:
        program = os.path.basename(self.argv[0])
        verb = next((a for a in self.argv[1:] if not a.startswith("-")), "")
        if self.waited is not None:
            return f"{program} {verb}".rstrip() + f" did not end within {self.waited:.1f} s"
        if self.status is None:
            return f"cannot run {program}: {self.detail}"
        how = f"killed by signal {-self.status}" if self.status < 0 else f"exit status {self.status}"
        text = f"{program} {verb}".rstrip() + f" failed ({how})"
        return f"{text}: {self.detail}" if self.detail else text


def find_program(name: str) -> str:
    for directory in (*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/bin"):
        path = os.path.join(directory or ".", name)
        if os.access(path, os.X_OK):
            return path
    return name


def run(argv: list[str], stdout: bool = False, stderr: bool = False, deadline: float | None = None) -> str:
    """Run a command with stdin closed; its stdout when asked for (else ours).
    stderr=True keeps its stderr for the CommandError (else it goes to ours).
    deadline (time.monotonic()): past it the command is killed and
    CommandError raised (systemctl waits for PID 1, which answers nothing
    while it reloads)."""
    actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)
    ]
    pipes: dict[int, int] = {}  # our read end -> the child's fd
    for wanted, child_fd in ((stdout, 1), (stderr, 2)):
        if wanted:
            read_end, write_end = os.pipe()
            pipes[read_end] = write_end
            actions.append((os.POSIX_SPAWN_DUP2, write_end, child_fd))
    try:
        pid = os.posix_spawn(find_program(argv[0]), argv, os.environ, file_actions=actions)
    except OSError as e:
        for read_end in pipes:
            os.close(read_end)
        raise CommandError(argv, None, e.strerror or str(e)) from None
    finally:
        for write_end in pipes.values():
            os.close(write_end)
    started = time.monotonic()
    out = {fd: b"" for fd in pipes}
    # Both pipes at once (a child blocked writing one of them never exits),
    # and the child's end (its pidfd).
    exited = os.pidfd_open(pid)
    open_ = [*pipes, exited]
    try:
        while open_:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                os.kill(pid, 9)  # not reaped yet: the pid is still ours
                os.waitpid(pid, 0)
                raise CommandError(argv, None, waited=time.monotonic() - started)
            readable, _, _ = select.select(open_, [], [], left)
            for fd in readable:
                chunk = b"" if fd == exited else os.read(fd, 65536)
                if chunk:
                    out[fd] += chunk
                else:
                    open_.remove(fd)
    finally:
        for fd in (*pipes, exited):
            os.close(fd)
    _, wait_status = os.waitpid(pid, 0)
    status = os.waitstatus_to_exitcode(wait_status)
    texts = [out[fd].decode("utf-8", "replace") for fd in pipes]
    out_text = texts[0] if stdout else ""
    err_text = texts[-1].strip() if stderr else ""
    if status != 0:
        raise CommandError(argv, status, err_text)
    return out_text


def systemctl(user: bool, *args: str, stdout: bool = False, stderr: bool = False, deadline: float | None = None) -> str:
    """`systemctl [--user] --no-ask-password ARGS`; raises CommandError."""
    return run(["systemctl", *(["--user"] if user else []), "--no-ask-password", *args], stdout, stderr, deadline)


def show(
    user: bool, units: list[str], properties: list[str], *options: str, deadline: float | None = None
) -> dict[str, dict[str, str]]:
    """`systemctl show` for many units in one call: {unit: {property: value}}.
    options: e.g. --timestamp=unix.  Raises CommandError, with systemctl's
    complaint in it (not on our stderr: `status -q` says nothing)."""
    if not units:
        return {}
    argv = ["show", *options, f"--property=Id,{','.join(properties)}", "--", *units]
    output = systemctl(user, *argv, stdout=True, stderr=True, deadline=deadline)
    shown: dict[str, dict[str, str]] = {}
    for block in output.split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in props:
            shown[props["Id"]] = props
    return shown
