"""The holder: keeps the reserved sockets until portrelease asks for them.

Under systemd it adopts the sockets of the generated .socket units (and the
control socket of portreserve.socket) through sd_listen_fds; standalone it
reads the configuration and binds everything itself.  Either way it exits
once it holds nothing.
"""

from __future__ import annotations

import errno
import os
import resource
import selectors
import signal
import socket
import struct

from . import log, names, net, protocol, sd

# Under systemd the holder imports neither config (dataclasses, typing, re)
# nor logging nor pathlib: together they would double its memory.  Ports are
# (number, "tcp"|"udp") tuples, which config.Port also is.
TYPE_CHECKING = False  # not typing.TYPE_CHECKING; mypy treats the name as true
if TYPE_CHECKING:
    from .config import Config

Port = tuple[int, str]

# SO_LINGER {on, 0 s}: close() sends a RST, so a client of a reserved port sees
# ECONNRESET at once instead of waiting for a timeout.
_LINGER_RESET = struct.pack("ii", 1, 0)


class Held:
    __slots__ = ("port", "owners", "sock", "listening")

    def __init__(self, port: Port, owners: list[str], sock: socket.socket, listening: bool) -> None:
        self.port = port
        self.owners = owners
        self.sock = sock
        self.listening = listening  # TCP sockets from systemd listen: the holder resets connections


def owners_by_port(held: list[Held]) -> dict[protocol.PortKey, list[str]]:
    """What a reply says: every port with its owners, escaped as in unit names."""
    return {h.port: [names.escape(o) for o in h.owners] for h in held}


class Shutdown(Exception):
    pass


def raise_fd_limit(needed: int) -> None:
    # 1000 reservations in both protocols are 2000 fds, past the default soft
    # limit of 1024; accept() needs a few more.
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
    def __init__(self) -> None:
        self.control: socket.socket | None = None
        self.held: list[Held] = []
        self.selector = selectors.DefaultSelector()

    def attach_control(self, control: socket.socket) -> None:
        control.setblocking(False)
        protocol.enable_credentials(control)
        self.control = control
        self.selector.register(control, selectors.EVENT_READ, self._on_control)

    # -- adopting ------------------------------------------------------------

    def hold(self, sock: socket.socket, port: Port, owners: list[str]) -> None:
        sock.setblocking(False)
        if port[1] == "udp":
            # systemd sets SO_REUSEADDR on every socket it binds; for UDP that
            # lets a second SO_REUSEADDR socket share the port.  Clearing it on
            # our copy (the same socket systemd holds) closes the hole.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        entry = Held(port, owners, sock, port[1] == "tcp" and is_listening(sock))
        self.held.append(entry)
        if port[1] == "udp" or entry.listening:
            self.selector.register(sock, selectors.EVENT_READ, lambda: self._on_traffic(entry))

    def adopt(self, fds: dict[int, str]) -> None:
        """Take the fds systemd passed; names are escaped owner lists."""
        for fd, name in sorted(fds.items()):
            sock = socket.socket(fileno=fd)
            if name == protocol.CONTROL_FDNAME or sock.family == socket.AF_UNIX:
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
            self.hold(sock, port, [])  # owners: from the generator's map (being rewritten)

    def bind_all(self, config: Config) -> None:
        ipv6 = net.has_ipv6()
        for port, owners in config.owners().items():
            owner_names = [o.name for o in owners]
            try:
                # No SO_REUSEADDR and, for TCP, no listen(): bound but not
                # listening, so the kernel itself refuses connections, as the
                # original did.
                sock = socket.socket(fileno=net.bind_port(port, ipv6).detach())
            except OSError as e:
                log.error(
                    f"cannot reserve {net.port_text(port)} for {', '.join(owner_names)}: "
                    f"{e.strerror}, {net.describe_holders(port)}"
                )
                continue
            self.hold(sock, port, owner_names)

    # -- events --------------------------------------------------------------

    def _on_traffic(self, entry: Held) -> None:
        sock = entry.sock
        if sock.fileno() < 0:
            # Released (closed) by a request handled earlier in the same
            # select() round: its event is stale.
            return
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
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ECONNABORTED):
                    return
                raise

    def _on_control(self) -> None:
        assert self.control is not None
        while True:
            try:
                data, creds, address, truncated = protocol.receive(self.control)
            except (BlockingIOError, InterruptedError):
                return
            self.handle(data, creds, address, truncated)

    def handle(self, data: bytes, creds: protocol.Credentials | None, address: str | None, truncated: bool) -> None:
        who = f"pid {creds.pid} uid {creds.uid}" if creds else "unknown sender"
        if truncated:
            log.warning(f"refusing oversized request from {who}")
            return self.answer(address, protocol.Reply(False, "request too long", {}))
        if not protocol.authorized(creds):
            log.warning(f"refusing request from {who}: not permitted")
            return self.answer(address, protocol.Reply(False, "permission denied", {}))
        try:
            text = data.decode("utf-8").strip("\0\r\n\t ")
        except UnicodeDecodeError:
            log.warning(f"refusing malformed request from {who}: not UTF-8")
            return self.answer(address, protocol.Reply(False, "malformed request", {}))
        if not text or "\n" in text or "/" in text:
            log.warning(f"refusing malformed request from {who}")
            return self.answer(address, protocol.Reply(False, "malformed request", {}))
        if text == protocol.STATUS:
            return self.answer(address, protocol.Reply(True, "", self.ports()))
        released = self.release(text)
        if released:
            ports = " ".join(net.port_text(h.port) for h in released)
            log.info(f"released {ports} for {text} ({who})", PORTRESERVE_NAME=text)
        else:
            log.debug(f"nothing held for {text} ({who})")
        self.answer(address, protocol.Reply(True, "", owners_by_port(released)))

    def answer(self, address: str | None, reply: protocol.Reply) -> None:
        if address is None or self.control is None:
            return
        try:
            self.control.sendto(reply.encode(), address)
        except OSError as e:
            # The client went away or its buffer is full: its loss, not ours.
            log.debug(f"cannot answer {address!r}: {e}")

    # -- releasing -----------------------------------------------------------

    def release(self, name: str) -> list[Held]:
        """Close every socket the name owns; ports listed by several names are
        released when any of them is."""
        drop = [h for h in self.held if name == protocol.ALL or name in h.owners]
        for entry in drop:
            if entry.port[1] == "udp" or entry.listening:
                self.selector.unregister(entry.sock)
            entry.sock.close()
        self.held = [h for h in self.held if h not in drop]
        if drop:
            self.notify_status()
        return drop

    def ports(self) -> dict[protocol.PortKey, list[str]]:
        return owners_by_port(self.held)

    def names(self) -> set[str]:
        return {o for h in self.held for o in h.owners}

    def notify_status(self) -> None:
        names = self.names()
        sd.notify(f"STATUS=Holding {len(self.held)} port(s) for {len(names)} name(s)")

    # -- main loop -----------------------------------------------------------

    def run(self) -> None:
        while self.held:
            for key, _mask in self.selector.select():
                key.data()
        # Holding nothing: answer whatever is queued on the control socket, so
        # systemd does not start us again for it, then leave.
        if self.control is not None:
            self._on_control()
        log.info("holding nothing, exiting")
        sd.notify("STOPPING=1\nSTATUS=Holding nothing")

    def close(self) -> None:
        for entry in self.held:
            entry.sock.close()
        self.held = []
        self.selector.close()


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


def install_signal_handlers() -> None:
    def stop(signum: int, _frame: object) -> None:
        raise Shutdown(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def holder_from_systemd(fds: dict[int, str]) -> Holder:
    raise_fd_limit(len(fds))
    holder = Holder()
    holder.adopt(fds)
    return holder


def holder_standalone(config: Config, control_path: str) -> Holder:
    raise_fd_limit(len(config.owners()))
    holder = Holder()
    holder.attach_control(create_control_socket(control_path))
    holder.bind_all(config)
    return holder
