"""Boot a real systemd as PID 1 in a throwaway root, for integration tests.

Usage::

    from boot import boot

    result = boot(
        tmp_path,
        files={"/etc/portreserve/cups": "ipp\\n",
               "/usr/local/bin/x": ("#!/bin/sh\\n...", 0o755)},
        symlinks={"/etc/portreserve/masked": "/dev/null"},
        install=destdir,                 # tree made by `make install DESTDIR=...`
        driver="#!/bin/bash\\nset -eu\\n... > /results/x\\n",
        driver_after=["multi-user.target"],
        timeout=60,
    )
    assert result.read("x") == "..."

How it works (docs/design.md, "The test harness", says why):

* The host runs ``unshare --mount --pid --net --uts --ipc --cgroup --fork`` on
  ``tests/harness/inner.sh`` (its parameters in ``BOOT_*`` environment
  variables), from inside a fresh cgroup-v2 group
  ``portreserve-boot-<pytest pid>-...``: the guest's cgroup namespace is rooted
  there, its systemd creates its slices below it, and nothing of the guest can
  run outside it.
* ``inner.sh`` builds the root: tmpfs + overlay with ``lowerdir=/`` (the guest can
  write anywhere; the host root is never modified), copies the DESTDIR tree and
  the test's files in, and gives the guest
  - its own small /dev: a nodev tmpfs with a few safe nodes bound in, a private
    devpts, a pty as /dev/console and a FIFO as /dev/kmsg (both drained by the
    host into console.log / kmsg.log),
  - a read-only sysfs and its own cgroup2 mount,
  - /proc with /proc/sys read-only except /proc/sys/net (systemd-sysctl & co
    cannot change the host kernel),
  - the results directory at /results,
  then pivots into the root and execs systemd with host-kernel capabilities
  (modules, clock, raw I/O, ...) dropped from its bounding set.
* systemd boots ``boot-test.target`` (basic.target plus what the test asks
  for); ``boot-driver.service`` is ordered after it and runs the test's driver
  through ``tests/harness/wrapper.sh``, which records the exit status, dumps the journal and
  finally creates /results/done.
* The host polls for /results/done, then SIGKILLs the namespace's PID 1 (that
  ends every process in the PID namespace; killing ``unshare`` would not), waits
  for ``unshare``, kills whatever is left in the cgroup and removes it.  The
  mounts lived only in the namespace's mount namespace and vanish with it;
  teardown checks that no mount, process or cgroup of the guest is left.
* If the test process is SIGKILLed, death signals still end the guest
  (pytest -> unshare via pdeathsig -> PID 1 via ``--kill-child``); the empty
  cgroup is removed by the next boot().
"""

from __future__ import annotations

import itertools
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BootError", "BootResult", "boot", "host_leftovers", "DEFAULT_MASKS"]

FileContent = str | bytes
FileSpec = FileContent | tuple[FileContent, int]

SYSTEMD = "/lib/systemd/systemd"
TEST_TARGET = "boot-test.target"
DRIVER_UNIT = "boot-driver.service"
HARNESS_DIR = "/usr/lib/boot-harness"  # where driver + wrapper live in the guest
CGROUP_PREFIX = "portreserve-boot-"
POLL_SECONDS = 0.05
# How long teardown waits for a killed guest to be gone before it reports a
# leftover: a ceiling against hanging, not a speed test (it is done in well
# under a second unless the machine is very busy).
TEARDOWN_SECONDS = 60.0
TAIL_LINES = 80

# Units that make no sense in a container test root, or that hang there while
# holding copies of PID 1's fds (docs/design.md F8: a getty stuck between fork and exec
# kept a released port bound).
DEFAULT_MASKS: tuple[str, ...] = (
    "getty.target",
    "getty-static.service",
    "console-getty.service",
    "container-getty@.service",
    "getty@.service",
    "serial-getty@.service",
    "postgresql.service",
    "postgresql@.service",
    # Timers of the host image; never useful in a boot that lasts seconds.
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "man-db.timer",
    # Pseudo file systems the tests never need; fewer mounts, quieter journal.
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-kernel-config.mount",
    "sys-fs-fuse-connections.mount",
)

# The harness's own shell scripts (shellcheck runs on them in `make lint`).
HARNESS = Path(__file__).resolve().parent / "harness"
INNER_SCRIPT = HARNESS / "inner.sh"  # run by unshare: builds the root, execs systemd
WRAPPER_SCRIPT = HARNESS / "wrapper.sh"  # run by boot-driver.service around the driver

_counter = itertools.count()


class BootError(AssertionError):
    """The guest did not boot, timed out, or its driver failed.

    Subclasses AssertionError so pytest reports it as a test failure; the message
    carries the journal and console tails.
    """


@dataclass
class BootResult:
    results_dir: Path  # host side of the guest's /results
    journal: str  # `journalctl -b` of the guest (or console output if none)
    console: str  # everything written to the guest's /dev/console
    kmsg: str  # everything written to the guest's /dev/kmsg (generators log there)
    driver_log: str  # stdout+stderr of the driver script
    driver_rc: int | None  # exit status of the driver script
    boot_seconds: float  # namespace start -> driver start
    total_seconds: float  # namespace start -> teardown finished
    scratch: Path = field(repr=False, default=Path())  # tmp dir of this boot

    def read(self, name: str) -> str:
        """Text of a file the driver wrote to /results/<name>."""
        return (self.results_dir / name).read_text()


# --------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------


def boot(
    tmp_path: Path,
    *,
    files: Mapping[str, FileSpec] | None = None,
    symlinks: Mapping[str, str] | None = None,
    install: Path | None = None,
    driver: str = "#!/bin/bash\ntrue\n",
    driver_after: Sequence[str] = (),
    mask: Sequence[str] = (),
    timeout: float = 60,
    check: bool = True,
) -> BootResult:
    """Boot systemd in a throwaway root, run `driver` in it, tear it all down.

    files:        guest path -> content (str/bytes) or (content, mode).
    symlinks:     guest path -> link target.
    install:      a DESTDIR tree copied over the guest root first.
    driver:       script (bash unless its #! says otherwise) run by
                  boot-driver.service once boot-test.target is reached; it
                  writes its findings to /results.
    driver_after: extra units the driver Wants= and is ordered After=.
    mask:         extra units to mask (on top of DEFAULT_MASKS).
    check:        raise BootError when the driver exits non-zero.

    Raises BootError (an AssertionError) when the boot fails or times out, or
    the driver fails and `check` is true.  Never leaves anything on the host.
    """
    _require_root()
    _reap_stale_guests()
    scratch = Path(tmp_path) / f"boot-{next(_counter)}"
    if any(c in str(scratch) for c in ",:"):
        raise ValueError(f"overlayfs cannot take ',' or ':' in its paths: {scratch}")
    scratch.mkdir(parents=True)
    results = scratch / "results"
    results.mkdir()
    stage = scratch / "stage"
    _stage_guest_files(stage, files or {}, symlinks or {}, driver, driver_after, mask)

    guest = _Guest(scratch, stage, results, install)
    try:
        guest.start()
        outcome = guest.wait_for_driver(timeout)
    finally:
        problems = guest.teardown()
    result = _collect(guest, results, scratch)
    print(
        f"\n[boot] driver started {result.boot_seconds:.2f}s after unshare, "
        f"total {result.total_seconds:.2f}s ({scratch})"
    )
    failure = None
    if outcome != "done":
        failure = outcome
    elif check and result.driver_rc != 0:
        failure = f"driver exited with {result.driver_rc}"
    if problems:
        failure = "; ".join([f"teardown left something behind: {', '.join(problems)}", *filter(None, [failure])])
    if failure:
        raise BootError(_failure_message(failure, result, guest))
    return result


# --------------------------------------------------------------------------
# Preconditions and leftovers of earlier runs
# --------------------------------------------------------------------------


def _require_root() -> None:
    # Tests that need a boot must fail loudly, not skip, when they cannot boot.
    if os.geteuid() != 0:
        raise BootError("boot harness needs root (mount/pid/net namespaces, overlayfs)")
    for tool in ("unshare", "setpriv", "tar", "nsenter"):
        if shutil.which(tool) is None:
            raise BootError(f"boot harness needs `{tool}` (util-linux / tar)")
    if not os.access(SYSTEMD, os.X_OK):
        raise BootError(f"boot harness needs {SYSTEMD}")
    _cgroup2_dir()  # raises if there is no cgroup2 hierarchy


def _cgroup2_mount() -> Path:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        if after.split()[0] == "cgroup2":
            return Path(before.split()[4])
    raise BootError("boot harness needs a cgroup2 hierarchy mounted on the host")


def _cgroup2_dir() -> Path:
    """Host directory of the cgroup-v2 group this process is in."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return _cgroup2_mount() / line[3:].lstrip("/")
    raise BootError("this process is in no cgroup2 group")


def _reap_stale_guests() -> None:
    """Kill and remove guests whose test process died without tearing down.

    Only groups named by this harness for a process that no longer exists are
    touched (a SIGKILLed pytest cannot run its finally blocks).
    """
    parent = _cgroup2_dir()
    for group in parent.glob(CGROUP_PREFIX + "*"):
        owner = group.name[len(CGROUP_PREFIX) :].split("-")[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            _kill_cgroup(group)
            _remove_cgroup(group, wait=2.0)


# --------------------------------------------------------------------------
# What goes into the guest
# --------------------------------------------------------------------------


def _stage_path(stage: Path, guest_path: str) -> Path:
    if not guest_path.startswith("/") or ".." in Path(guest_path).parts:
        raise ValueError(f"guest paths must be absolute and plain: {guest_path!r}")
    path = stage / guest_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write(stage: Path, guest_path: str, spec: FileSpec) -> None:
    content, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
    path = _stage_path(stage, guest_path)
    if path.is_symlink() or path.exists():
        path.unlink()
    data = content.encode() if isinstance(content, str) else content
    path.write_bytes(data)
    path.chmod(mode)


def _link(stage: Path, guest_path: str, target: str) -> None:
    path = _stage_path(stage, guest_path)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)


def _stage_guest_files(
    stage: Path,
    files: Mapping[str, FileSpec],
    symlinks: Mapping[str, str],
    driver: str,
    driver_after: Sequence[str],
    mask: Sequence[str],
) -> None:
    """Build the tree that is copied over the guest root before boot.

    The test's files come first so the harness's own units always win.
    """
    stage.mkdir()
    for guest_path, spec in files.items():
        _write(stage, guest_path, spec)
    for guest_path, target in symlinks.items():
        _link(stage, guest_path, target)
    for unit in (*DEFAULT_MASKS, *mask):
        _link(stage, f"/etc/systemd/system/{unit}", "/dev/null")
    _write(stage, "/etc/systemd/system/" + TEST_TARGET, _test_target(driver_after))
    _write(stage, "/etc/systemd/system/" + DRIVER_UNIT, _driver_unit(driver_after))
    _write(stage, f"{HARNESS_DIR}/driver", (driver, 0o755))
    _write(stage, f"{HARNESS_DIR}/wrapper", (WRAPPER_SCRIPT.read_text(), 0o755))
    # journald also copies everything to /dev/console, which the host reads:
    # the log survives even when the driver never gets to dump the journal.
    _write(stage, "/etc/systemd/journald.conf.d/boot-harness.conf", _JOURNALD_CONF)


def _test_target(driver_after: Sequence[str]) -> str:
    wants = " ".join([DRIVER_UNIT, *driver_after])
    return (
        "[Unit]\n"
        "Description=Boot harness test target\n"
        "Requires=basic.target\n"
        "After=basic.target\n"
        f"Wants={wants}\n"
        "AllowIsolate=yes\n"
    )


def _driver_unit(driver_after: Sequence[str]) -> str:
    after = " ".join(["basic.target", TEST_TARGET, *driver_after])
    wants = f"Wants={' '.join(driver_after)}\n" if driver_after else ""
    return (
        "[Unit]\n"
        "Description=Boot harness test driver\n"
        f"After={after}\n"
        f"{wants}"
        "\n[Service]\n"
        "Type=oneshot\n"
        # The host enforces the timeout; systemd must not kill the driver first.
        "TimeoutStartSec=infinity\n"
        f"ExecStart=/bin/bash {HARNESS_DIR}/wrapper\n"
        # journald forwards it to the console as well
        "StandardOutput=journal\n"
        "StandardError=inherit\n"
    )


_JOURNALD_CONF = """\
[Journal]
ForwardToConsole=yes
TTYPath=/dev/console
MaxLevelConsole=debug
"""

# --------------------------------------------------------------------------
# Running and tearing down one guest
# --------------------------------------------------------------------------


class _LogDrain:
    """Copies what the guest writes to /dev/console and /dev/kmsg into files.

    /dev/console is a pty: systemd must be able to acquire it as a terminal
    (on a regular file it gives up and logs to /dev/null).  /dev/kmsg is a
    FIFO: generators are told to log there (systemd.generator(7)), and many
    writers must not overwrite each other as they would in a plain file.
    Both must be drained all the time, or writers in the guest block.
    """

    def __init__(self, console_log: Path, kmsg_fifo: Path, kmsg_log: Path) -> None:
        self.master, self.slave = os.openpty()  # the slave stays open: no EIO on reads
        self.console_path = os.ttyname(self.slave)
        os.mkfifo(kmsg_fifo, 0o600)
        # O_RDWR: opening never blocks, and the guest's writers never see ENXIO.
        self.kmsg_fd = os.open(kmsg_fifo, os.O_RDWR | os.O_NONBLOCK)
        self._sinks = {self.master: console_log.open("wb"), self.kmsg_fd: kmsg_log.open("wb")}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="boot-log-drain", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        fds = list(self._sinks)
        while True:
            ready, _, _ = select.select(fds, [], [], POLL_SECONDS)
            if not ready and self._stop.is_set():
                return
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:  # EIO on the pty after a hangup
                    time.sleep(POLL_SECONDS)
                    continue
                self._sinks[fd].write(data)
                self._sinks[fd].flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for fd, sink in self._sinks.items():
            sink.close()
            os.close(fd)
        os.close(self.slave)


class _Guest:
    def __init__(self, scratch: Path, stage: Path, results: Path, install: Path | None) -> None:
        self.scratch = scratch
        self.stage = stage
        self.results = results
        self.install = install
        self.root = scratch / "root"  # mount point of the scratch tmpfs
        self.cgroup = _cgroup2_dir() / f"{CGROUP_PREFIX}{os.getpid()}-{scratch.name}-{os.urandom(3).hex()}"
        self.console_log = scratch / "console.log"
        self.kmsg_fifo = scratch / "kmsg.fifo"
        self.kmsg_log = scratch / "kmsg.log"
        self.unshare_log = scratch / "unshare.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid1: int | None = None
        self.logs: _LogDrain | None = None
        self.started = 0.0
        self.finished = 0.0
        self.journal_fallback = ""

    # -- start -------------------------------------------------------------

    def start(self) -> None:
        if self.install is not None and not Path(self.install).is_dir():
            raise BootError(f"install tree {self.install} is not a directory")
        self.root.mkdir()
        self.logs = _LogDrain(self.console_log, self.kmsg_fifo, self.kmsg_log)
        env = {
            **os.environ,
            "BOOT_SCRATCH": str(self.root),
            "BOOT_STAGE": str(self.stage),
            "BOOT_INSTALL": str(self.install) if self.install is not None else "",
            "BOOT_RESULTS": str(self.results),
            "BOOT_CONSOLE": self.logs.console_path,
            "BOOT_KMSG": str(self.kmsg_fifo),
            "BOOT_SYSTEMD": SYSTEMD,
            "BOOT_TARGET": TEST_TARGET,
        }
        self.cgroup.mkdir()
        # The shell joins the group, then becomes unshare: every process of the
        # guest is born inside the group, and the cgroup namespace is rooted there.
        # Should this test process die without tearing down (SIGKILL), the
        # death signals take the guest with it: pytest -> unshare (pdeathsig)
        # -> the namespace's PID 1 (--kill-child); _reap_stale_guests() removes
        # the empty cgroup at the next boot.
        cmd = [
            "/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"',
            str(self.cgroup / "cgroup.procs"),
            "setpriv", "--pdeathsig", "KILL", "--",
            "unshare", "--mount", "--pid", "--net", "--uts", "--ipc", "--cgroup",
            "--fork", "--kill-child=KILL", "/bin/bash", str(INNER_SCRIPT),
        ]  # fmt: skip
        self.started = time.time()
        with self.unshare_log.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # Own session: a Ctrl-C in the terminal reaches pytest (which
                # tears down) but not unshare.
                start_new_session=True,
            )
        self.pid1 = self._find_pid1()

    def _find_pid1(self) -> int | None:
        """The namespace's PID 1 is unshare's (only) child."""
        assert self.proc is not None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.proc.poll() is None:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            try:
                pids = children.read_text().split()
            except OSError:
                pids = []
            if pids:
                return int(pids[0])
            time.sleep(0.005)
        return None

    # -- wait --------------------------------------------------------------

    def wait_for_driver(self, timeout: float) -> str:
        """'done', or why not."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        done = self.results / "done"
        while True:
            if done.exists():
                return "done"
            if self.proc.poll() is not None:
                return f"the namespace ended early (unshare exit status {self.proc.returncode})"
            if time.monotonic() > deadline:
                self.journal_fallback = self._dump_journal_from_outside()
                return f"timeout: no /results/done after {timeout}s"
            time.sleep(POLL_SECONDS)

    def _dump_journal_from_outside(self) -> str:
        """The driver never dumped the journal; read it from inside the guest."""
        if self.pid1 is None:
            return ""
        cmd = ["nsenter", "-t", str(self.pid1), "-m", "-p", "--",
               "journalctl", "-b", "--no-pager", "-o", "short-monotonic"]  # fmt: skip
        try:
            out = subprocess.run(cmd, capture_output=True, timeout=10, check=False)
        except subprocess.TimeoutExpired:
            return "(journalctl inside the guest timed out)"
        return out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")

    # -- teardown ----------------------------------------------------------

    def teardown(self) -> list[str]:
        """Kill the guest and verify nothing is left; returns problems found."""
        problems: list[str] = []
        try:
            if self.pid1 is not None and _in_cgroup(self.pid1, self.cgroup):
                # SIGKILL to a PID namespace's init ends every process in it;
                # unshare exits once the kernel has reaped them all.
                os.kill(self.pid1, signal.SIGKILL)
            elif self.cgroup.exists():
                # PID 1 unknown: kill the whole group, unshare included.
                _kill_cgroup(self.cgroup)
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=TEARDOWN_SECONDS)
                except subprocess.TimeoutExpired:
                    problems.append("unshare did not exit after its namespace was killed")
            # Only now: cgroup.kill also kills unshare, which would orphan a
            # PID 1 that is still busy killing its namespace.
            if self.cgroup.exists() and _cgroup_populated(self.cgroup):
                _kill_cgroup(self.cgroup)
            if self.proc is not None and self.proc.poll() is None:
                self.proc.wait(timeout=TEARDOWN_SECONDS)
            if self.cgroup.exists() and not _remove_cgroup(self.cgroup, wait=TEARDOWN_SECONDS):
                problems.append(f"could not remove cgroup {self.cgroup}")
        finally:
            if self.logs is not None:
                self.logs.close()
            self.finished = time.time()
        problems += self._leftovers()
        return problems

    def _leftovers(self) -> list[str]:
        found: list[str] = []
        mounts = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True).stdout
        found += [f"leftover mount {m}" for m in mounts.splitlines()
                  if m.startswith(str(self.scratch))]  # fmt: skip
        overlays = subprocess.run(
            ["findmnt", "-rn", "-t", "overlay", "-o", "TARGET,OPTIONS"],
            capture_output=True, text=True,
        ).stdout  # fmt: skip
        found += [f"leftover overlay {m}" for m in overlays.splitlines()
                  if str(self.scratch) in m]  # fmt: skip
        if self.pid1 is not None and Path(f"/proc/{self.pid1}").exists():
            if _in_cgroup(self.pid1, self.cgroup):
                found.append(f"guest PID 1 ({self.pid1}) still running")
        return found


def host_leftovers(owner: int | None = None) -> list[str]:
    """What guests started by process `owner` (default: this one) left on the host.

    Looks for overlay mounts of the harness, processes still in a guest's
    cgroup and guest cgroups that were not removed.  Scoped to one owner so
    that boots running concurrently in other test processes do not count.
    """
    owner = os.getpid() if owner is None else owner
    prefix = f"{CGROUP_PREFIX}{owner}-"
    found: list[str] = []
    overlays = subprocess.run(
        # findmnt exits 1 when it finds nothing
        ["findmnt", "-rn", "-t", "overlay", "-o", "TARGET,OPTIONS"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    found += [f"overlay mount: {m}" for m in overlays.splitlines() if "/root/upper" in m]
    for group in _cgroup2_dir().glob(prefix + "*"):
        found.append(f"cgroup: {group}")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cgroup = (proc / "cgroup").read_text()
            comm = (proc / "comm").read_text().strip()
        except OSError:
            continue
        if f"/{prefix}" in cgroup:
            found.append(f"process {proc.name} ({comm}) of a guest")
    return found


def _in_cgroup(pid: int, group: Path) -> bool:
    """Is `pid` inside `group` (or below it)?  Guards every kill by pid."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("0::"):
            # Seen from our cgroup namespace; the group's name is unique.
            return f"/{group.name}" in line[3:] + "/"
    return False


def _cgroup_populated(group: Path) -> bool:
    try:
        return "populated 1" in (group / "cgroup.events").read_text()
    except OSError:
        return False


def _kill_cgroup(group: Path) -> None:
    kill = group / "cgroup.kill"
    if kill.exists():  # Linux >= 5.14
        kill.write_text("1")
        return
    for procs in group.rglob("cgroup.procs"):  # older kernels: pid by pid
        for pid in procs.read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _remove_cgroup(group: Path, wait: float) -> bool:
    """rmdir the group and the sub-groups the guest's systemd made, leaves first.

    Killed processes leave their groups asynchronously: retry until `wait`.
    """
    deadline = time.monotonic() + wait
    while group.exists():
        dirs = sorted(
            (d for d in group.rglob("*") if d.is_dir()),
            key=lambda d: len(d.parts),
            reverse=True,
        )
        try:
            for d in [*dirs, group]:
                d.rmdir()
            return True
        except FileNotFoundError:
            continue
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL_SECONDS)
    return True


# --------------------------------------------------------------------------
# Results and failure messages
# --------------------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _collect(guest: _Guest, results: Path, scratch: Path) -> BootResult:
    console = _read(guest.console_log).replace("\r\n", "\n")
    journal = _read(results / "journal.txt") or guest.journal_fallback
    rc_text = _read(results / "driver.rc").strip()
    start_text = _read(results / ".driver-start").strip()
    boot_seconds = float(start_text) - guest.started if start_text else float("nan")
    return BootResult(
        results_dir=results,
        journal=journal,
        console=console,
        kmsg=_read(guest.kmsg_log),
        driver_log=_read(results / "driver.log"),
        driver_rc=int(rc_text) if rc_text else None,
        boot_seconds=boot_seconds,
        total_seconds=guest.finished - guest.started,
        scratch=scratch,
    )


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _early_console(console: str) -> str:
    """Console lines up to the first one journald forwarded ("[  1.23] ...")."""
    early = itertools.takewhile(lambda line: not line.startswith("["), console.splitlines())
    return _tail("\n".join(early))


def _failure_message(reason: str, result: BootResult, guest: _Guest) -> str:
    parts = [f"boot failed: {reason}"]
    unshare = "\n".join(
        line
        for line in _read(guest.unshare_log).splitlines()
        # unshare 2.38 tries to re-raise its child's SIGKILL and complains;
        # that is our teardown, not a problem.
        if "sigprocmask unblock failed" not in line
    ).strip()
    if unshare:
        parts.append(f"--- unshare / inner.sh output ---\n{_tail(unshare)}")
    if result.driver_log:
        parts.append(f"--- driver.log (tail) ---\n{_tail(result.driver_log)}")
    if result.kmsg:
        parts.append(f"--- guest /dev/kmsg (tail) ---\n{_tail(result.kmsg)}")
    if result.journal:
        # PID 1 logs to the console until journald runs ("generator failed"
        # for one is only there).
        parts.append(f"--- guest console before journald ---\n{_early_console(result.console)}")
        parts.append(f"--- guest journal (tail) ---\n{_tail(result.journal)}")
    else:
        parts.append(f"--- guest console (tail) ---\n{_tail(result.console)}")
    parts.append(f"(all logs: {guest.scratch})")
    return "\n".join(parts)
