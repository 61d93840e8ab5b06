"""Shared helpers for the holder, standalone and portrelease tests.

Everything here works with real sockets and real processes: sockets made the
way systemd makes them, the holder started with real LISTEN_FDS, a real
NOTIFY_SOCKET, real control-socket datagrams with real (or forged)
SCM_CREDENTIALS.  Nothing is mocked.

Conventions:

* Child processes never see the test's own environment changes: their
  environment is built here (``child_env``) and passed explicitly, or set in the
  child after fork (``preexec_fn``).  ``os.environ`` of the test process is never
  modified.
* Every process a helper starts is registered with a ``Reaper`` (see the
  ``reaper`` fixture in the test modules) that kills it by pid at teardown.
* AF_UNIX paths are limited to 108 bytes and pytest's ``tmp_path`` can be
  longer, so sockets live in a short private directory (``short_dir``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import itertools
import os
import random
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from portreserve.names import CONTROL_FDNAME, RESERVED_FDNAME

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}

# Candidate ports: high, but below the kernel's ephemeral range (32768-60999 by
# default), so an outgoing connection elsewhere cannot grab a port between the
# moment a test picks it and the moment the holder binds it.
PORT_RANGE = (20000, 32000)

# INVOCATION_ID too: with it the holder would look for a service manager to watch.
HOLDER_ENV_DROP = (
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "INVOCATION_ID",
)


# -- environment ---------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child: ours minus systemd's variables, with the
    source tree importable."""
    env = {k: v for k, v in os.environ.items() if k not in HOLDER_ENV_DROP}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


@contextlib.contextmanager
def short_dir() -> Iterator[Path]:
    """A private directory with a short path, for AF_UNIX sockets."""
    path = Path(tempfile.mkdtemp(prefix="prt-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- processes -------------------------------------------------------------------


def process_state(pid: int) -> str | None:
    """The one-letter state from /proc/PID/stat, None when the pid is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that may never reap it is dead)."""
    return process_state(pid) not in (None, "Z", "X")


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def pids_with_arg(text: str) -> list[int]:
    """Pids whose command line contains `text` as one argument (used to find a
    daemonized holder by its unique --socket path)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if os.fsencode(text) in args and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


class Reaper:
    """Kills, by pid, everything a test started."""

    def __init__(self) -> None:
        self.popens: list[subprocess.Popen[bytes]] = []
        self.pids: list[int] = []
        self.markers: list[str] = []

    def popen(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.popens.append(proc)
        return proc

    def pid(self, pid: int) -> None:
        self.pids.append(pid)

    def marker(self, text: str) -> None:
        """Also kill any process whose command line holds this argument."""
        self.markers.append(text)

    def cleanup(self) -> list[int]:
        """Kill what is left; returns the pids that were still running."""
        leftovers = []
        for proc in self.popens:
            if proc.poll() is None:
                leftovers.append(proc.pid)
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        pids = list(self.pids)
        for marker in self.markers:
            pids += pids_with_arg(marker)
        for pid in dict.fromkeys(pids):
            if alive(pid):
                leftovers.append(pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                wait_gone(pid, 10)
        return leftovers


# -- ports and sockets ----------------------------------------------------------


def systemd_socket(proto: str, port: int) -> socket.socket:
    """A socket made like systemd makes ListenStream=/ListenDatagram=PORT with
    BindIPv6Only=both: [::] dual-stack, SO_REUSEADDR on, TCP listening."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET6, kind | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
        if kind == socket.SOCK_STREAM:
            sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return sock


def plain_bind(proto: str, port: int, family: int = socket.AF_INET6, host: str | None = None) -> socket.socket:
    """Bind like a fresh server without SO_REUSEADDR; raises OSError."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(family, kind | socket.SOCK_CLOEXEC)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
    except BaseException:
        sock.close()
        raise
    return sock


def free_ports(count: int, protos: Sequence[str] = ("tcp", "udp")) -> list[int]:
    """Port numbers that nothing binds right now for any of `protos`, IPv4 or
    IPv6.  Picked at random (parallel test runs rarely collide) and checked by
    binding [::] dual-stack."""
    chosen: list[int] = []
    candidates = random.sample(range(*PORT_RANGE), min(count * 4 + 64, PORT_RANGE[1] - PORT_RANGE[0]))
    for port in candidates:
        if len(chosen) == count:
            break
        probes = []
        try:
            for proto in protos:
                probes.append(plain_bind(proto, port))
        except OSError:
            continue
        else:
            chosen.append(port)
        finally:
            for probe in probes:
                probe.close()
    if len(chosen) < count:
        raise RuntimeError(f"found only {len(chosen)} of {count} free ports")
    return chosen


def systemd_sockets(count: int, protos: Sequence[str] = ("tcp",)) -> list[tuple[int, dict[str, socket.socket]]]:
    """`count` port numbers, each bound systemd-style for every protocol in
    `protos`; returns [(port, {proto: socket})]."""
    result: list[tuple[int, dict[str, socket.socket]]] = []
    for port in random.sample(range(*PORT_RANGE), PORT_RANGE[1] - PORT_RANGE[0]):
        if len(result) == count:
            return result
        socks: dict[str, socket.socket] = {}
        try:
            for proto in protos:
                socks[proto] = systemd_socket(proto, port)
        except OSError:
            for sock in socks.values():
                sock.close()
            continue
        result.append((port, socks))
    raise RuntimeError(f"found only {len(result)} of {count} free ports")


def bind_errno(
    proto: str, port: int, family: int, host: str | None = None, reuseaddr: bool = False, v6only: bool = False
) -> int:
    """Try to bind a rival socket; 0 on success (the socket is closed again),
    else the errno."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind | socket.SOCK_CLOEXEC) as sock:
        if reuseaddr:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        try:
            sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        except OSError as e:
            return e.errno or -1
    return 0


# The rivals a reserved port must turn away: any address family, wildcard and
# loopback addresses, with and without SO_REUSEADDR.
RIVALS = [
    (socket.AF_INET, "0.0.0.0"),
    (socket.AF_INET, "127.0.0.1"),
    (socket.AF_INET6, "::"),
    (socket.AF_INET6, "::1"),
]


def rival_results(proto: str, port: int, reuseaddr: bool) -> dict[str, int]:
    """{"family host": errno or 0} for every rival (IPv6 rivals v6only, so the
    IPv4 and IPv6 halves are checked separately)."""
    out = {}
    for family, host in RIVALS:
        key = f"{'IPv4' if family == socket.AF_INET else 'IPv6'} {host}"
        out[key] = bind_errno(proto, port, family, host, reuseaddr=reuseaddr, v6only=family == socket.AF_INET6)
    return out


def tcp_attempt(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> tuple[str, float]:
    """Connect and read: ('refused'|'reset'|'eof'|'data'|'timeout', seconds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    start = time.monotonic()
    with socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
            outcome = "data" if sock.recv(1) else "eof"
        except ConnectionRefusedError:
            outcome = "refused"
        except ConnectionResetError:
            outcome = "reset"
        except TimeoutError:
            outcome = "timeout"
    return outcome, time.monotonic() - start


def socket_inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def socket_inodes_of(pid: int) -> set[int]:
    """Inodes of every socket the process has open."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def udp_rx_queue(inode: int) -> int | None:
    """Bytes queued for reading on the UDP socket with this inode (rx_queue in
    /proc/net/udp6 or /proc/net/udp); None when no such socket."""
    for table in ("/proc/net/udp6", "/proc/net/udp"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[9]) == inode:
                return int(fields[4].split(":")[1], 16)
    return None


def blocked_sending_to_unix_peer(pid: int) -> bool:
    """Is the process asleep in sendmsg() on a full AF_UNIX datagram queue?"""
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text()
        syscall = Path(f"/proc/{pid}/syscall").read_text().split()[0]
    except (OSError, IndexError):
        return False
    sendmsg = {"x86_64": "46", "aarch64": "211"}.get(os.uname().machine)
    return wchan == "unix_wait_for_peer" or syscall == sendmsg


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# -- sd_notify --------------------------------------------------------------------


class NotifyListener:
    """A NOTIFY_SOCKET like the service manager's, recording every message with
    its sender's pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.messages: list[tuple[int, dict[str, str]]] = []

    def close(self) -> None:
        self.sock.close()

    def _receive(self, timeout: float) -> bool:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data, ancdata, _flags, _addr = self.sock.recvmsg(65536, socket.CMSG_SPACE(UCRED.size))
        except TimeoutError:
            return False
        pid = -1
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = UCRED.unpack_from(payload)[0]
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.messages.append((pid, fields))
        return True

    def wait_for(
        self, key: str, value: str | None = None, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None
    ) -> tuple[int, dict[str, str]]:
        """The first message carrying KEY (=VALUE); fails early if `proc` exits."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for message in self.messages[seen:]:
                if key in message[1] and (value is None or message[1][key] == value):
                    return message
            seen = len(self.messages)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {key}={value or '*'} within {timeout} s; got {self.messages}")
            if proc is not None and proc.poll() is not None and not self._receive(0.05):
                raise AssertionError(f"process exited with {proc.returncode} before {key}; got {self.messages}")
            self._receive(min(remaining, 0.1))

    def fill(self) -> int:
        """Fill our receive queue from another socket, so that the next
        sd_notify() blocks until we read; returns how many we queued."""
        count = 0
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as filler:
            filler.setblocking(False)
            try:
                while True:
                    filler.sendto(b"FILLER=1", str(self.path))
                    count += 1
            except BlockingIOError:
                return count

    def statuses(self) -> list[str]:
        return [fields["STATUS"] for _pid, fields in self.messages if "STATUS" in fields]


# -- the control socket ---------------------------------------------------------------


def control_socket(path: Path) -> socket.socket:
    """The control socket as portreserve.socket makes it: ListenDatagram=PATH,
    SocketMode=0600, PassCredentials=yes."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    return sock


class Client:
    """A portrelease-like client: an autobound datagram socket that can send
    requests (with forged credentials if asked) and read the answers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind("")  # autobind, so the holder can answer

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes, creds: tuple[int, int, int] | None = None) -> None:
        ancdata = [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, UCRED.pack(*creds))] if creds else []
        self.sock.sendmsg([data], ancdata, 0, str(self.path))

    def receive(self, timeout: float = 5.0) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(1 << 20).decode("utf-8", "surrogateescape")

    def ask(self, text: str | bytes, timeout: float = 5.0) -> str:
        self.send(text.encode() if isinstance(text, str) else text)
        return self.receive(timeout)


def ask(path: Path, text: str | bytes, timeout: float = 5.0) -> str:
    with Client(path) as client:
        return client.ask(text, timeout)


OUTCOMES = ("free", "in-use", "taken", "busy", "held")


@dataclasses.dataclass
class Answer:
    """A reply of the holder, parsed strictly by the protocol's rules
    (protocol.py's docstring), independently of protocol.Reply.decode."""

    head: str  # OK, RETRY, or ERR reason
    ports: dict[str, str]  # 'PORT/PROTO' -> outcome
    more: int = 0  # '+N': freed ports not listed


def parse_reply(reply: str) -> Answer:
    """Raises ValueError for anything the protocol does not allow."""
    if not reply.endswith("\n"):
        raise ValueError(f"reply without its final newline: {reply!r}")
    head, *lines = reply[:-1].split("\n")
    if head.startswith("ERR "):
        if lines or not head[4:]:
            raise ValueError(f"bad ERR reply: {reply!r}")
        return Answer(head, {})
    if head not in ("OK", "RETRY") or (head == "RETRY" and lines):
        raise ValueError(f"bad reply: {reply!r}")
    answer = Answer(head, {})
    seen_free = False
    for i, line in enumerate(lines):
        if line.startswith("+"):
            if i != len(lines) - 1 or not line[1:].isdigit() or int(line[1:]) <= 0:
                raise ValueError(f"bad '+N' line {line!r} in {reply!r}")
            answer.more = int(line[1:])
            continue
        spec, _, outcome = line.partition(" ")
        number, _, proto = spec.partition("/")
        if not (number.isdigit() and 0 < int(number) < 65536 and proto in ("tcp", "udp") and outcome in OUTCOMES):
            raise ValueError(f"bad port line {line!r} in {reply!r}")
        if spec in answer.ports:
            raise ValueError(f"{spec} twice in {reply!r}")
        if outcome == "free":
            seen_free = True
        elif seen_free:
            raise ValueError(f"freed ports must come last: {reply!r}")
        answer.ports[spec] = outcome
    return answer


# -- the holder under "systemd" (LISTEN_FDS) ------------------------------------------

Port = tuple[int, str]


def spec(port: Port) -> str:
    return f"{port[0]}/{port[1]}"


def port_of(sock: socket.socket) -> Port:
    return sock.getsockname()[1], "tcp" if sock.type == socket.SOCK_STREAM else "udp"


def fresh_bind_errno(port: Port) -> int:
    """Can a fresh server bind the port now, IPv4 and IPv6 ([::] dual-stack,
    no SO_REUSEADDR)?  0, or the errno."""
    return bind_errno(port[1], port[0], socket.AF_INET6)


def write_map(directory: Path, owners: dict[str, list[Port]]) -> Path:
    """The generator's reservation map, written with the generator's own code."""
    from portreserve import names

    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (names.MAP_FILE + ".tmp")
    tmp.write_text(names.format_map(list(owners.items())))
    tmp.rename(directory / names.MAP_FILE)  # replaced at once, as the holder may read it any time
    return directory


@dataclasses.dataclass
class Holder:
    proc: subprocess.Popen[bytes]
    log: Path
    notify: NotifyListener
    control: Path | None
    generator_dir: Path
    inodes: dict[str, int]  # 'PORT/PROTO' -> inode of the socket passed for it

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def control_path(self) -> Path:
        assert self.control is not None, "started without a control socket"
        return self.control

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def held(self) -> set[str]:
        """The passed sockets the holder still has open, by its /proc fds."""
        try:
            open_ = socket_inodes_of(self.pid)
        except FileNotFoundError:
            return set()
        return {key for key, inode in self.inodes.items() if inode in open_}

    def wait_ready(self, timeout: float = 15.0) -> dict[str, str]:
        try:
            pid, fields = self.notify.wait_for("READY", "1", timeout, self.proc)
        except AssertionError as e:
            raise AssertionError(f"{e}\nholder stderr:\n{self.stderr()}") from None
        assert pid == self.pid, f"READY=1 came from pid {pid}, not the holder's main pid {self.pid}"
        return fields

    def wait_exit(self, timeout: float = 10.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"holder still running after {timeout} s\n{self.stderr()}") from None

    def ask(self, text: str | bytes, timeout: float = 5.0) -> Answer:
        return parse_reply(ask(self.control_path, text, timeout))

    def assert_released(self, ports: Iterable[Port]) -> None:
        """Released: not among the holder's fds, and bindable by a fresh socket."""
        for port in ports:
            assert spec(port) not in self.held(), f"{spec(port)} still held by the holder"
            assert fresh_bind_errno(port) == 0, f"{spec(port)}: {errno_name(fresh_bind_errno(port))}"


_SERIAL = itertools.count()


def _move_fds(fds: Sequence[int]) -> None:
    """In the child: put `fds` at 3, 4, ... as systemd does, inheritable.

    Each fd is first duplicated above the target range, so that placing one
    never overwrites another still to be placed."""
    floor = 3 + len(fds) + 16
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in fds]
    for target, fd in enumerate(moved, start=3):
        os.dup2(fd, target, inheritable=True)
    for fd in moved:
        os.close(fd)
    # Nothing else is inherited, as from systemd (our own stdio aside).
    os.closerange(3 + len(fds), resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def start_holder(
    reaper: Reaper,
    workdir: Path,
    sockets: Sequence[socket.socket],
    owners: dict[str, list[Port]] | None = None,
    *,
    control: socket.socket | None = None,
    keep: bool = False,
    fdname: str = RESERVED_FDNAME,
    generator_dir: Path | None = None,
    nofile_soft: int | None = None,
    args: Sequence[str] = ("-d",),
    command: Sequence[str] | None = None,
    notify: NotifyListener | None = None,
    env: dict[str, str] | None = None,
) -> Holder:
    """Start `portreserve hold` the way systemd starts portreserve.service:
    the sockets at fds 3.. (the control socket last) with LISTEN_FDS,
    LISTEN_FDNAMES and LISTEN_PID (set in the child, to the child's own pid),
    NOTIFY_SOCKET to a listener of ours, the generator's map of `owners` in
    `generator_dir` (default: a new directory in workdir).

    The test's own copies of the reserved sockets are closed once the child
    has them (Popen returns after exec), as systemd-socket-activate does,
    unless `keep`: then the test plays PID 1, whose copy keeps the port bound
    until it closes it.  The control socket is never closed here.
    `nofile_soft` sets the child's RLIMIT_NOFILE soft limit, like systemd's
    LimitNOFILE= (default 1024) does.  `command` replaces the interpreter and
    its first arguments (e.g. to run it under unshare); `notify` is a
    NotifyListener of the test's (say, one whose queue it filled); `env`
    adds to the child's environment.
    """
    serial = next(_SERIAL)
    notify = notify or NotifyListener(workdir / f"notify-{serial}")
    log = workdir / f"holder-{serial}.log"
    gen = write_map(generator_dir or workdir / f"gen-{serial}", owners or {}) if owners is not None else generator_dir
    if gen is None:
        gen = workdir / f"gen-{serial}"  # no map at all
    passed = [(sock, fdname) for sock in sockets]
    if control is not None:
        passed.append((control, CONTROL_FDNAME))
    inodes = {spec(port_of(sock)): socket_inode(sock) for sock in sockets if sock.family != socket.AF_UNIX}
    fds = [sock.fileno() for sock, _name in passed]
    fdnames = ":".join(name for _sock, name in passed)
    environ = child_env(**(env or {}))

    def preexec() -> None:
        _move_fds(fds)
        # Now, in the child: os.environ is the child's and exec uses it.
        os.environ.clear()
        os.environ.update(environ)
        os.environ["LISTEN_PID"] = str(os.getpid())
        os.environ["LISTEN_FDS"] = str(len(fds))
        os.environ["LISTEN_FDNAMES"] = fdnames
        os.environ["NOTIFY_SOCKET"] = str(notify.path)
        if nofile_soft is not None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile_soft, hard))

    argv = [
        *(command or [PYTHON]),
        "-m",
        "portreserve",
        "hold",
        # --socket is not used under systemd (the control socket is the one
        # passed): a path in workdir, so that nothing outside it is touched.
        "--socket",
        str(workdir / f"unused-{serial}"),
        "--generator-dir",
        str(gen),
        *args,
    ]
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(
            argv,
            preexec_fn=preexec,
            close_fds=False,  # _move_fds put the sockets where the child expects them
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            cwd=workdir,
        )
    reaper.popen(proc)
    if not keep:
        for sock in sockets:
            sock.close()
    return Holder(proc, log, notify, Path(control.getsockname()) if control is not None else None, gen, inodes)


# -- the command-line tools -------------------------------------------------------------

PORTRELEASE = [PYTHON, "-c", "import sys; from portreserve.release import main; sys.exit(main())"]
PORTRESERVE = [PYTHON, "-m", "portreserve"]


def run(
    argv: Sequence[str], timeout: float = 30.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(**(env or {})),
        stdin=subprocess.DEVNULL,
        cwd=ROOT,  # `python -m` puts the cwd first on sys.path: make it this tree
    )


def portrelease(
    *args: str, timeout: float = 30.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run([*PORTRELEASE, *args], timeout=timeout, env=env)


def portreserve(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return run([*PORTRESERVE, *args], timeout=timeout)


def write_config(directory: Path, files: Mapping[str, Iterable[str] | str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        text = lines if isinstance(lines, str) else "".join(f"{line}\n" for line in lines)
        (directory / name).write_text(text)
    return directory


def errno_name(number: int) -> str:
    return errno.errorcode.get(number, str(number)) if number else "bound"


def user_runtime(runtime: Path) -> tuple[Path, Path, dict[str, str]]:
    """A user manager's runtime layout under `runtime` ($XDG_RUNTIME_DIR):
    (generator dir, control socket path, environment for `portrelease --user`),
    so that portrelease takes its under-systemd path against a test holder."""
    gen = runtime / "systemd" / "generator"
    gen.mkdir(parents=True, exist_ok=True)
    (runtime / "portreserve").mkdir(exist_ok=True)
    return gen, runtime / "portreserve" / "socket", {"XDG_RUNTIME_DIR": str(runtime)}
