"""The holder: keeps the reserved sockets, and is the one place where a
reservation is released.

Under systemd it adopts the sockets of the generated .socket units (and the
control socket of portreserve.socket) through sd_listen_fds, and watches the
service manager over one D-Bus connection (manager.py):

* whatever stops one of its socket units (portrelease, systemctl stop of the
  socket, its grouping unit or portreserve.target, isolate, shutdown), it
  drops its own copy as soon as the unit leaves "active", because systemd
  keeps a copy of its own and only both closing frees the port;
* a release request (one datagram on the control socket, a name or '*')
  stops the name's units on that connection and is answered only when a
  fresh socket can bind every one of the name's ports, IPv4 and IPv6, or with
  what still holds them.  The answer is about the ports: "nothing held by me"
  is never taken as "free".

Standalone (no systemd) it binds the configured ports itself, creates the
control socket, and holds an exclusive lock on SOCKET.lock for its whole life
(let go of only after the socket file is removed), so that two holders started
at once cannot remove each other's socket.  Either way it exits once it holds
nothing and no request waits.  main() is its whole life, from the options
cli.py parsed to the exit status.  It never blocks: the manager connection,
the notify socket and the journal are all written without waiting
(docs/design.md, "Never block").
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import selectors
import signal
import socket
import struct
import time
from collections.abc import Callable

from . import log, names, net, paths, protocol, sd
from .names import Port

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs memory
if TYPE_CHECKING:
    from .config import Config
    from .manager import Connection


# SO_LINGER {on, 0 s}: close() sends a RST, so a client of a reserved port sees
# ECONNRESET at once instead of waiting for a timeout.
_LINGER_RESET = struct.pack("ii", 1, 0)

# How long the holder keeps trying to free a port for one request before it
# answers that something still holds it.  portrelease waits 5 s by default:
# longer here, so that a request whose sender gave up still ends in a
# consistent state (units stopped, copies closed).
REQUEST_DEADLINE = 30.0
# Between two bind checks of a port that should be free (a process forked by
# PID 1 can hold a copy of its fds for a moment, docs/design.md).
RECHECK_SECONDS = 0.002
# Between two looks at ports let go of outside any request (an admin's stop),
# until they can be bound or REQUEST_DEADLINE passed.
WATCH_SECONDS = 0.05
# How long a port found free answers "free" to other requests without being
# probed again.
FREED_GRACE = 2.0
# Restarts of a stop job that did not take (replaced, or lost in a reload).
MAX_STOP_TRIES = 5


class Shutdown(Exception):
    pass


class Held:
    __slots__ = ("port", "sock", "listening")

    def __init__(self, port: Port, sock: socket.socket, listening: bool) -> None:
        self.port = port
        self.sock = sock
        self.listening = listening  # TCP sockets from systemd listen: the holder resets connections


class Request:
    """One release request, until it is answered."""

    __slots__ = ("name", "address", "who", "ports", "pending", "outcomes", "deadline", "units", "created")

    def __init__(self, name: str, address: str | None, who: str, deadline: float) -> None:
        self.name = name
        self.address = address
        self.who = who  # the sender, for the log
        # The name's ports, once the holder knows which they are (begin()).
        self.ports: set[Port] | None = None
        self.pending: set[Port] = set()  # the ports without an outcome yet
        self.created = time.monotonic()
        self.outcomes: dict[Port, str] = {}
        self.deadline = deadline
        self.units: list[str] = []  # grouping units to stop along with the sockets


def raise_fd_limit(needed: int) -> None:
    # 1000 reservations in both protocols are 2000 fds, past the default soft
    # limit of 1024; accept() and bind checks need a few more.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + 64
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def port_of_socket(sock: socket.socket) -> Port | None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    proto = {socket.SOCK_STREAM: "tcp", socket.SOCK_DGRAM: "udp"}.get(sock.type)
    if proto is None:
        return None
    return sock.getsockname()[1], proto


def is_listening(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))


class Holder:
    def __init__(self, owners: dict[str, list[Port]] | None = None) -> None:
        self.control: socket.socket | None = None
        self.held: dict[Port, Held] = {}
        # Which name owns which ports: the generator's map (systemd) or the
        # configuration (standalone).
        self.owners: dict[str, list[Port]] = owners or {}
        # Under systemd: reads the generator's map (None: missing, or not
        # changed since the last read).  Until it has been read once, the
        # owners are unknown, not "nobody": PID 1 removes the map at every
        # daemon-reload until the generator has written it again
        # (docs/design.md F18), and a holder may start in that window.
        self.owners_source: Callable[[], dict[str, list[Port]] | None] | None = None
        self.owners_known = True
        self.selector = selectors.DefaultSelector()
        self.wakeup: tuple[int, int] | None = None
        try:
            self.wakeup = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            signal.set_wakeup_fd(self.wakeup[1])
            self.selector.register(self.wakeup[0], selectors.EVENT_READ, self._on_wakeup)
        except (OSError, ValueError):  # not the main thread (a test), or no fds
            self.wakeup = None
        self.requests: list[Request] = []
        # The manager's view: socket unit -> ActiveState.  None: no manager
        # (standalone, or fds from systemd-socket-activate).
        self.manager: Connection | None = None
        self.view: dict[str, str] | None = None
        self.synced = False
        self.stop_jobs: dict[str, str] = {}  # unit -> job path (or "" while StopUnit is unanswered)
        # Jobs whose JobRemoved came before the answer to our StopUnit.
        self.finished_jobs: set[str] = set()
        # Something changed: move the requests on once this loop round is done
        # (not once per signal: a '*' of thousands of sockets brings thousands).
        self.dirty = False
        self.stop_tries: dict[str, int] = {}
        # Ports we let go of (or had stopped), not yet seen free: until when a
        # copy may still be closing (a process forked by PID 1, F8).  Watched
        # even when no request waits, so that an entry never outlives the
        # moment it could be bound: a port that its service took after that is
        # "in use", not "still closing".
        self.releasing: dict[Port, float] = {}
        self.freed: dict[Port, float] = {}  # port -> when a probe found it free
        self.ipv6 = net.has_ipv6()
        self.closing = False
        self.next_check: float | None = None
        self.reconnect_at: float | None = None
        self.manager_fd: int | None = None  # registered in the selector
        # One fd kept in reserve: at the fd limit, accept() fails with EMFILE
        # and the pending connection would make the listener readable forever
        # (a busy loop); closing the reserve lets us accept and reset it.
        self.reserve_fd: int | None = None
        self.status_sent = ""

    # -- adopting ------------------------------------------------------------

    def attach_control(self, control: socket.socket) -> None:
        control.setblocking(False)
        protocol.enable_credentials(control)
        self.control = control
        self.selector.register(control, selectors.EVENT_READ, self._on_control)

    def hold(self, sock: socket.socket, port: Port) -> None:
        sock.setblocking(False)
        if port in self.held:
            # The same port twice (an fd passed again): keep the first.
            sock.close()
            return
        if port[1] == "udp":
            # systemd sets SO_REUSEADDR on every socket it binds; for UDP that
            # lets a second SO_REUSEADDR socket share the port.  Clearing it on
            # our copy (the same socket systemd holds) closes the hole.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        entry = Held(port, sock, port[1] == "tcp" and is_listening(sock))
        self.held[port] = entry
        if port[1] == "udp" or entry.listening:
            # The entry itself as the key's data (a closure per socket would
            # cost memory for nothing): step() tells it from the callbacks.
            self.selector.register(sock, selectors.EVENT_READ, entry)

    def adopt(self, fds: dict[int, str]) -> None:
        """Take the fds systemd passed.  Reserved sockets are recognised by
        what they are (their port), not by their names."""
        for fd, name in sorted(fds.items()):
            sock = socket.socket(fileno=fd)
            if name == names.CONTROL_FDNAME or sock.family == socket.AF_UNIX:
                if self.control is not None or sock.type != socket.SOCK_DGRAM:
                    log.warning(f"ignoring fd {fd} ({name}): not the control socket")
                    sock.close()
                    continue
                self.attach_control(sock)
                continue
            port = port_of_socket(sock)
            if port is None:
                log.warning(f"ignoring fd {fd} ({name}): not a TCP or UDP socket")
                sock.close()
                continue
            self.hold(sock, port)

    def bind_all(self, config: Config) -> None:
        for port, owners in config.owners().items():
            try:
                # No SO_REUSEADDR and, for TCP, no listen(): bound but not
                # listening, so the kernel itself refuses connections, as the
                # original did.
                sock = socket.socket(fileno=net.bind_port(port, self.ipv6).detach())
            except OSError as e:
                log.error(
                    f"cannot reserve {net.port_text(port)} for {', '.join(o.name for o in owners)}: "
                    f"{e.strerror}, {net.describe_holders(port)}"
                )
                continue
            self.hold(sock, (port[0], str(port[1])))

    def drop(self, port: Port) -> None:
        entry = self.held.pop(port, None)
        if entry is None:
            return
        if port[1] == "udp" or entry.listening:
            self.selector.unregister(entry.sock)
        entry.sock.close()
        self.releasing[port] = time.monotonic() + REQUEST_DEADLINE

    # -- the manager ---------------------------------------------------------

    def watch_manager(self, path: str) -> None:
        from . import manager

        # Signals of other objects than our socket units are dropped unparsed.
        prefix = f"{manager.UNIT_PATH}/{manager.label_escape(names.SOCKET_PREFIX)}"
        suffix = manager.label_escape(names.SOCKET_SUFFIX)
        self.view = {}
        self.manager = manager.Connection(
            path,
            on_signal=self._on_manager_signal,
            interesting=lambda p: p.startswith(prefix) and p.endswith(suffix),
            on_ready=self._on_manager_ready,
            on_lost=self._on_manager_lost,
        )
        self._connect()

    def _connect(self) -> None:
        assert self.manager is not None
        self.reconnect_at = None
        if self.manager.connect():
            self.manager_fd = self.manager.fileno()
            self.selector.register(self.manager_fd, self._manager_events(), self._on_manager_io)
        else:
            # Not there (yet), or its backlog is full at a busy boot: retry.
            self.reconnect_at = time.monotonic() + 0.1

    def _manager_events(self) -> int:
        assert self.manager is not None
        return selectors.EVENT_READ | (selectors.EVENT_WRITE if self.manager.wants_write() else 0)

    def _on_manager_io(self) -> None:
        assert self.manager is not None
        self.manager.on_writable()
        if self.manager.sock is not None:
            self.manager.on_readable()

    def _on_manager_ready(self) -> None:
        self._sync()

    def _sync(self) -> None:
        """The state of every reservation socket unit, in one call."""
        assert self.manager is not None
        self.manager.list_units([f"{names.SOCKET_PREFIX}*{names.SOCKET_SUFFIX}"], self._on_units_listed)

    def _on_units_listed(self, ok: bool, body: tuple[object, ...]) -> None:
        if not ok or self.view is None:
            log.warning(f"cannot list the socket units: {body}")
            return
        self.view = {}
        for row in body[0]:  # type: ignore[attr-defined]
            unit, active = row[0], row[3]
            if names.port_of_socket_unit(unit) is not None:
                self.view[unit] = active
        self.synced = True
        for port in list(self.held):
            if self.view.get(names.socket_unit(*port)) not in names.HOLDING_STATES:
                # Stopped before we could see it (or never a unit of ours).
                self.drop(port)
        self.drop_orphans()
        self.dirty = True

    def drop_orphans(self) -> None:
        """Ports that no name reserves any more (its file was removed, then
        daemon-reload): systemd keeps such a socket unit active, "not-found",
        and nothing would ever release it; portrelease no longer knows the
        name.  Let go of them and stop their units."""
        self.refresh_owners()
        self._drop_unowned()

    def _drop_unowned(self) -> None:
        if self.owners_source is None or not self.owners_known:
            return
        owned = {p for ports in self.owners.values() for p in ports}
        for port in [p for p in self.held if p not in owned]:
            log.info(f"{net.port_text(port)} is no longer reserved by any name, releasing it")
            self.drop(port)
            self.stop(names.socket_unit(*port))

    def _forget_manager_fd(self) -> None:
        # The connection closed its socket already: its fd number is free and
        # the next socket (the reconnection's, likely) may get it.
        if self.manager_fd is not None:
            try:
                self.selector.unregister(self.manager_fd)
            except (KeyError, ValueError):
                pass
            self.manager_fd = None

    def _on_manager_lost(self, why: str) -> None:
        log.warning(f"lost the connection to the service manager ({why}), reconnecting")
        self._forget_manager_fd()
        self.synced = False
        self.stop_jobs.clear()
        if self.manager is not None and not self.closing:
            self.reconnect_at = time.monotonic() + 0.1

    def _on_manager_signal(self, path: str, member: str, body: tuple[object, ...]) -> None:
        if member == "PropertiesChanged":
            from .manager import UNIT_IFACE, unit_of_object_path  # loaded with the connection

            interface, changed = body[0], body[1]
            if interface != UNIT_IFACE or "ActiveState" not in changed:  # type: ignore[operator]
                return

            unit = unit_of_object_path(path)
            state = changed["ActiveState"][1]  # type: ignore[index]
            if self.view is not None:
                self.view[unit] = state
            port = names.port_of_socket_unit(unit)
            if port is not None and state not in ("active", "activating") and port in self.held:
                # Whatever stopped it, systemd is closing its copy: close ours.
                self.drop(port)
                log.debug(f"{unit} stopped, dropped {net.port_text(port)}")
        elif member == "JobRemoved":
            _id, job, unit, result = (str(x) for x in body)
            if self.stop_jobs.get(unit) == job:
                del self.stop_jobs[unit]
                if result != "done":
                    log.info(f"stop job of {unit} ended with '{result}'")
            elif self.stop_jobs.get(unit) == "":
                # Done before PID 1's answer to StopUnit reached us.
                if len(self.finished_jobs) > 4096:
                    self.finished_jobs.clear()
                self.finished_jobs.add(job)
        elif member == "Reloading" and body and not body[0]:
            # After a reload, jobs and states may have changed under us.
            self.stop_jobs.clear()
            self._sync()
            return
        self.dirty = True

    def stop(self, unit: str) -> None:
        """Ask the manager to stop a unit, once at a time."""
        if self.manager is None or unit in self.stop_jobs:
            return
        tries = self.stop_tries.get(unit, 0) + 1
        if tries > MAX_STOP_TRIES:
            return
        self.stop_tries[unit] = tries
        self.stop_jobs[unit] = ""

        def stopped(ok: bool, body: tuple[object, ...]) -> None:
            if self.stop_jobs.get(unit) != "":
                return
            if ok and str(body[0]) in self.finished_jobs:
                self.finished_jobs.discard(str(body[0]))
                del self.stop_jobs[unit]
            elif ok:
                self.stop_jobs[unit] = str(body[0])
            else:
                del self.stop_jobs[unit]
                log.warning(f"cannot stop {unit}: {body}")
            self.dirty = True

        self.manager.stop_unit(unit, stopped)

    # -- events --------------------------------------------------------------

    def _on_traffic(self, entry: Held) -> None:
        sock = entry.sock
        if sock.fileno() < 0:
            return  # released earlier in the same select() round
        for _ in range(64):  # bounded: never starve the control socket
            try:
                if entry.listening:
                    conn, _addr = sock.accept()
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                    conn.close()
                else:
                    sock.recv(1)  # a datagram is consumed whole, whatever its size
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE) and self.reserve_fd is not None:
                    self._reset_with_reserve(sock)
                    continue
                # Aborted connections, no memory, no fds even with the reserve:
                # nothing to do now; the listener stays readable and we come back.
                log.debug(f"{net.port_text(entry.port)}: {e}")
                return

    def _reset_with_reserve(self, sock: socket.socket) -> None:
        assert self.reserve_fd is not None
        os.close(self.reserve_fd)
        self.reserve_fd = None
        try:
            conn, _addr = sock.accept()
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            conn.close()
        except OSError:
            pass
        finally:
            self.reserve_fd = _open_reserve()

    def _on_control(self) -> None:
        assert self.control is not None
        for _ in range(256):  # bounded: leave room for the manager's signals
            try:
                data, creds, address, truncated = protocol.receive(self.control)
            except (BlockingIOError, InterruptedError):
                return
            self.handle(data, creds, address, truncated)

    def handle(self, data: bytes, creds: protocol.Credentials | None, address: str | None, truncated: bool) -> None:
        who = f"pid {creds.pid} uid {creds.uid}" if creds else "unknown sender"
        if truncated:
            log.warning(f"refusing oversized request from {who}")
            return self.answer(address, protocol.Reply.refused("request too long"))
        if not protocol.authorized(creds):
            log.warning(f"refusing request from {who}: not permitted")
            return self.answer(address, protocol.Reply.refused("permission denied"))
        name = protocol.parse_request(data)
        if name is None:
            log.warning(f"refusing malformed request from {who}")
            return self.answer(address, protocol.Reply.refused("malformed request"))
        if name == protocol.STATUS:
            return self.answer(address, protocol.Reply.held(sorted(self.held)))
        if address is not None and any(r.address == address and r.name == name for r in self.requests):
            # portrelease asks again every second until answered: the same
            # request, not a new one (that would probe afresh, F14, and reset
            # the stop tries).
            return
        request = Request(name, address, who, time.monotonic() + REQUEST_DEADLINE)
        self.requests.append(request)
        self.dirty = True
        self.refresh_owners()
        if self.owners_known or name == protocol.ALL:  # '*': everything held, whoever owns it
            self.begin(request)
        else:
            # Answering now would say "nothing reserved" for a name whose
            # ports we may hold: progress() begins it once the map is back.
            log.debug(f"release {name!r} for {who} waits for the map of the reservations")

    def begin(self, request: Request) -> None:
        """The request's ports, from the owners.  Close our copies at once,
        have the manager stop the units: the name's grouping unit (or
        portreserve.target for '*'), whose stop takes its sockets along
        (PartOf=); sockets still active after that are stopped one by one."""
        if request.name == protocol.ALL:
            ports = {p for ports in self.owners.values() for p in ports} | set(self.held)
        else:
            ports = set(self.owners.get(request.name, ()))
        request.ports = ports
        request.pending = set(ports)
        # The time to free them counts from now, not from the request's
        # arrival (it may have waited for the map).
        request.deadline = time.monotonic() + REQUEST_DEADLINE
        listed = " ".join(map(net.port_text, sorted(ports))) or "no ports"
        log.debug(f"release {request.name!r} for {request.who}: {listed}")
        released = [p for p in ports if p in self.held]
        for port in released:
            self.drop(port)
        if released:
            log.info(
                f"released {' '.join(map(net.port_text, sorted(released)))} for {request.name}",
                PORTRESERVE_NAME=request.name,
            )
        if self.manager is not None:
            request.units = (
                ([names.ALL_UNIT] if request.name == protocol.ALL else [names.group_unit(request.name)])
                if ports
                else []
            )
            for port in ports:
                self.stop_tries.pop(names.socket_unit(*port), None)
            for unit in request.units:
                self.stop_tries.pop(unit, None)
                self.stop(unit)

    # -- answering -----------------------------------------------------------

    def watch_releasing(self, now: float, busy: set[Port]) -> None:
        """Forget the ports we let go of once they can be bound (or after the
        deadline); those that systemd still holds stay, and so do those that
        a probe of this round found bound (busy)."""
        for port, until in list(self.releasing.items()):
            if now >= until:
                del self.releasing[port]
                continue
            if port in busy:
                continue
            state = self.view.get(names.socket_unit(*port)) if self.view is not None else None
            if state in names.HOLDING_STATES:
                continue
            try:
                free = net.bindable(port, self.ipv6)
            except OSError:
                continue  # out of fds for a moment: look again next time
            if free:
                del self.releasing[port]

    def progress(self) -> None:
        """Move every waiting request on; answer those that are done."""
        self.dirty = False
        now = time.monotonic()
        waiting = False
        busy: set[Port] = set()  # probed in this round, not bindable: probed once
        if not self.owners_known:
            self.refresh_owners()
        for request in list(self.requests):
            if request.ports is None:
                if self.owners_known:
                    self.begin(request)
                elif now >= request.deadline:
                    self.requests.remove(request)
                    self.answer(request.address, protocol.Reply.refused("the map of the reservations is missing"))
                    continue
                else:
                    waiting = True
                    continue
            if self.evaluate(request, now, busy):
                self.requests.remove(request)
                self.answer(request.address, protocol.Reply.outcomes(request.outcomes))
            else:
                waiting = True
        if self.releasing:
            self.watch_releasing(now, busy)
        # Only a request with ports needs the fast pace; ports let go of and
        # the map awaited are looked at now and then.
        pace = RECHECK_SECONDS if any(r.ports is not None for r in self.requests) else WATCH_SECONDS
        self.next_check = now + pace if (waiting or self.releasing) else None

    def evaluate(self, request: Request, now: float, busy: set[Port]) -> bool:
        """True once every port of the request has an outcome.  busy: the
        ports a probe of this round found bound (added to here), not probed
        again in the same round."""
        managed = self.manager is not None
        if managed and not self.synced and now < request.deadline:
            return False
        grouped = managed and any(unit in self.stop_jobs for unit in request.units)
        for port in list(request.pending):
            unit = names.socket_unit(*port)
            state = self.view.get(unit) if (managed and self.view is not None) else None
            if state in names.HOLDING_STATES:
                self.releasing[port] = now + REQUEST_DEADLINE
                if not grouped:
                    self.stop(unit)
                if now >= request.deadline:
                    request.outcomes[port] = protocol.BUSY
                continue
            seen = self.freed.get(port)
            if seen is not None and request.created <= seen and now - seen < FREED_GRACE:
                # Found free, while this request waited, for another one: not
                # probed again.  A probe is a bind, and the service that asked
                # first may be binding the port right now (docs/design.md F14).
                # A request that comes later is told the truth of its moment.
                request.outcomes[port] = protocol.FREE
                continue
            try:
                free = port not in busy and self.bindable(port)
            except OSError as e:
                # No memory for the probe, or the like: try again at the next check.
                log.debug(f"cannot check {net.port_text(port)}: {e}")
                if now >= request.deadline:
                    request.outcomes[port] = protocol.BUSY
                continue
            if not free:
                busy.add(port)
            if free:
                request.outcomes[port] = protocol.FREE
                self.releasing.pop(port, None)
                if len(self.freed) > 4096:
                    self.freed = {p: t for p, t in self.freed.items() if now - t < FREED_GRACE}
                self.freed[port] = now
            elif port in self.releasing and now < request.deadline:
                continue  # we just let go of it: a copy may still be closing
            elif port in self.releasing:
                request.outcomes[port] = protocol.BUSY
            elif state == "failed":
                request.outcomes[port] = protocol.TAKEN  # never reserved: someone had it first
            else:
                request.outcomes[port] = protocol.IN_USE  # released earlier; its service has it now
        request.pending.difference_update(request.outcomes)
        return not request.pending

    def bindable(self, port: Port) -> bool:
        """net.bindable(), also at the fd limit: the probe socket then takes
        the reserve fd's place (EMFILE would otherwise end the holder)."""
        try:
            return net.bindable(port, self.ipv6)
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE) or self.reserve_fd is None:
                raise
        os.close(self.reserve_fd)
        try:
            return net.bindable(port, self.ipv6)
        except OSError:
            return False  # cannot tell now: checked again, 'busy' at the deadline
        finally:
            self.reserve_fd = _open_reserve()

    def answer(self, address: str | None, reply: protocol.Reply) -> None:
        if address is None or self.control is None:
            return  # the original's portrelease does not wait for an answer
        try:
            self.control.sendto(reply.encode(), socket.MSG_DONTWAIT, address)
        except OSError as e:
            # The client gave up, or its buffer is full: its loss, not ours.
            log.debug(f"cannot answer {address!r}: {e}")

    def refresh_owners(self) -> bool:
        """Read the map again if it changed; whether the owners are known."""
        if self.owners_source is not None:
            found = self.owners_source()
            if found is not None:
                first = not self.owners_known
                self.owners = found
                self.owners_known = True
                if first and self.synced:
                    # The sync with the manager skipped the orphans, the
                    # owners being unknown then: whoever reads the map first
                    # (a request, or progress()) drops them now.
                    self._drop_unowned()
        return self.owners_known

    # -- main loop -----------------------------------------------------------

    def notify_status(self) -> None:
        text = f"STATUS=Holding {len(self.held)} port(s)"
        if text != self.status_sent and sd.notify(text):
            self.status_sent = text

    def timeout(self) -> float | None:
        if self.dirty:
            return 0.0  # something changed outside the loop's callbacks (drain): look now
        deadlines = [t for t in (self.next_check, self.reconnect_at) if t is not None]
        if sd.pending():
            deadlines.append(time.monotonic() + 0.01)  # the notify socket was full: try again soon
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def run(self) -> None:
        self.reserve_fd = _open_reserve()
        self.notify_status()  # step() sends it only after the first event
        while self.held or self.requests:
            self.step()
        # Holding nothing, nobody waiting: answer what is queued, then leave.
        # A request that arrives after this is kept by systemd's copy of the
        # control socket and starts the next holder, which answers it.
        self.drain()
        log.info("holding nothing, exiting")
        sd.notify("STOPPING=1\nSTATUS=Holding nothing")

    def check_stop(self) -> None:
        if _stop_signal is not None:
            raise Shutdown(_stop_signal)

    def _on_wakeup(self) -> None:
        # A signal arrived (its handler ran already): empty the wakeup pipe;
        # step() looks at what the handler recorded.
        assert self.wakeup is not None
        try:
            while os.read(self.wakeup[0], 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def step(self) -> None:
        self.check_stop()
        if self.manager is not None and self.manager.sock is not None:
            self.selector.modify(self.manager.fileno(), self._manager_events(), self._on_manager_io)
        for key, _mask in self.selector.select(self.timeout()):
            if isinstance(key.data, Held):
                self._on_traffic(key.data)
            else:
                key.data()
        # Every request read in this round is queued now: a stop here tells
        # each of them to ask again (Holder.shutdown), none is lost.
        self.check_stop()
        now = time.monotonic()
        if self.reconnect_at is not None and now >= self.reconnect_at:
            self._forget_manager_fd()
            self._connect()
        if self.dirty or (self.next_check is not None and now >= self.next_check):
            self.progress()
        self.notify_status()
        sd.flush()

    def drain(self) -> None:
        while True:
            if self.control is not None:
                self._on_control()
            if not self.requests:
                return
            while self.requests:
                self.step()

    def shutdown(self) -> None:
        """SIGTERM: the requests still waiting are told to ask again (the
        next holder, or portrelease itself, finishes them)."""
        self.closing = True
        for request in self.requests:
            self.answer(request.address, protocol.Reply.retry())
        self.requests.clear()

    def close(self) -> None:
        for port in list(self.held):
            entry = self.held.pop(port)
            entry.sock.close()
        if self.manager is not None:
            self.manager.close()
        self.selector.close()
        if self.wakeup is not None:
            signal.set_wakeup_fd(-1)
            for fd in self.wakeup:
                os.close(fd)
            self.wakeup = None
        if self.reserve_fd is not None:
            os.close(self.reserve_fd)
            self.reserve_fd = None


def _open_reserve() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def lock_control(path: str) -> int:
    """An exclusive lock on PATH.lock, held for the standalone holder's life
    (the fd, inherited across daemonize()): two holders started at once
    would otherwise each remove the other's socket file, and the one holding
    the ports could end unreachable.  The lock is let go of only after the
    socket file is removed."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FileExistsError(errno.EEXIST, f"another holder is starting or running on {path}") from None
    return fd


def create_control_socket(path: str) -> socket.socket:
    """The standalone holder's control socket (under systemd: portreserve.socket)."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        probe.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        pass  # stale or absent
    else:
        raise FileExistsError(errno.EEXIST, f"another holder is listening on {path}")
    finally:
        probe.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    return sock


# The signal that asked us to stop, if one did.  The handler only records it:
# raised from the handler, Shutdown could land between reading a request and
# queueing it, and that request would get no answer at all.  The loop looks
# at it at safe points (Holder.step), woken by signal.set_wakeup_fd().
_stop_signal: str | None = None


def install_signal_handlers() -> None:
    def stop(signum: int, _frame: object) -> None:
        global _stop_signal
        _stop_signal = signal.Signals(signum).name

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def holder_from_systemd(fds: dict[int, str], map_dir: str, manager_socket: str | None) -> Holder:
    raise_fd_limit(len(fds))
    holder = Holder()
    holder.owners_source = _map_reader(map_dir)
    holder.owners_known = False
    holder.refresh_owners()
    holder.adopt(fds)
    if manager_socket is not None:
        holder.watch_manager(manager_socket)
    return holder


def _map_reader(directory: str) -> Callable[[], dict[str, list[Port]] | None]:
    """Reads the generator's map again whenever it changed (daemon-reload)."""
    seen: list[object] = [None]

    def read() -> dict[str, list[Port]] | None:
        try:
            st = os.stat(f"{directory}/{names.MAP_FILE}")
        except OSError:
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key == seen[0]:
            return None
        seen[0] = key
        return names.read_map(directory)

    return read


def holder_standalone(config: Config, control_path: str) -> Holder:
    owners = config.ports_by_name()
    raise_fd_limit(sum(len(p) for p in owners.values()))
    holder = Holder(owners)
    holder.attach_control(create_control_socket(control_path))
    holder.bind_all(config)
    return holder


# -- the holder's life ------------------------------------------------------------


def daemonize() -> int | None:
    """Fork to the background once the ports are held; the parent returns the
    exit status to use, the child None."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        ok = os.read(read_end, 1) == b"1"
        os.close(read_end)
        return 0 if ok else 1
    os.close(read_end)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.write(write_end, b"1")
    os.close(write_end)
    return None


def standalone_config(user: bool, config_dirs: list[str] | None, services_file: str) -> Config:
    """The configuration, read by the holder itself (no systemd) exactly as the
    generator would read it; every problem is logged, none stops the others."""
    from .config import gather

    config = gather(config_dirs or paths.config_dirs(user), services_file, user, required=bool(config_dirs))
    for error in config.errors:
        log.warning(str(error))
    return config


def main(
    *,
    user: bool,
    debug: bool = False,
    control_path: str | None = None,
    config_dirs: list[str] | None = None,
    services_file: str = paths.SERVICES_FILE,
    generator_dir: str | None = None,
    manager_socket: str | None = None,
) -> int:
    """Run the holder to its end: 0 once it holds nothing (or was stopped), 1
    when it could not start.  With fds from a service manager it holds those;
    without, it reads the configuration, binds every port and (unless debug)
    goes to the background once they are all held."""
    install_signal_handlers()
    fds = sd.listen_fds_with_names()
    managed = bool(fds)
    control = control_path or paths.control_socket(user)
    log.setup(debug=debug, journal=managed and not debug)
    holder = None
    lock = None
    try:
        if managed:
            # Started by a service manager (not, say, by systemd-socket-activate):
            # watch it, it holds the other copy of every socket.
            manager = None
            if os.environ.get("INVOCATION_ID"):
                manager = manager_socket or paths.manager_socket(user)
            holder = holder_from_systemd(fds, generator_dir or paths.generator_dir(user), manager)
        else:
            lock = lock_control(control)
            holder = holder_standalone(standalone_config(user, config_dirs, services_file), control)
        for port in sorted(holder.held):
            log.debug(f"holding {net.port_text(port)}")
        if not managed and not debug:
            status = daemonize()
            if status is not None:
                os._exit(status)  # the child owns the sockets now
        sd.notify("READY=1")
        holder.run()
    except Shutdown as e:
        log.info(f"stopping on {e}")
        # READY=1 too: a Type=notify service that exits before it would
        # fail with 'protocol', though stopping early is a clean stop.
        sd.notify("READY=1\nSTOPPING=1")
        if holder is not None:
            holder.shutdown()
    except OSError as e:
        log.error(f"cannot start: {e}")
        return 1
    finally:
        if holder is not None:
            holder.close()
            if not managed and holder.control is not None:
                try:
                    os.unlink(control)
                except OSError:
                    pass
        if lock is not None:
            os.close(lock)  # after the socket file is gone: the next holder binds a new one
        sd.flush()
    return 0
