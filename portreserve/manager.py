"""The holder's live view of the service manager: one D-Bus connection to its
private socket, never blocking.

PID 1 listens on /run/systemd/private (a user manager on
$XDG_RUNTIME_DIR/systemd/private) from the first moment of boot, without
dbus-daemon; the protocol there is peer-to-peer D-Bus (no Hello()).  jeepney
(python3-jeepney) provides the message (de)serialisation and the SASL
exchange; the I/O is ours, driven by the holder's selector, so that a busy
PID 1 delays our answers but never stalls the holder (docs/design.md,
"Never block").

After Manager.Subscribe(), PID 1 sends every unit's PropertiesChanged and
JobRemoved signals to this connection.  The holder only cares about its own
socket units: signals for other objects are dropped after parsing the header.

It also owns the D-Bus object paths of units (label_escape,
unit_of_object_path), as systemd escapes them.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from jeepney.auth import BEGIN, AuthenticationError, Authenticator
from jeepney.low_level import Header, HeaderFields, Message, MessageType, Parser
from jeepney.wrappers import DBusAddress, new_method_call

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_IFACE = "org.freedesktop.systemd1.Manager"
UNIT_IFACE = "org.freedesktop.systemd1.Unit"

Reply = Callable[[bool, tuple[object, ...]], None]


class Connection:
    """A non-blocking D-Bus connection to the service manager.

    The owner polls `fileno()` for `wants_write()`/read readiness and calls
    `on_readable()` / `on_writable()`.  Calls made before the connection is up
    are queued.  `on_signal(path, member, body)` receives PropertiesChanged on
    unit paths that `interesting(path)` accepts, and every JobRemoved and
    Reloading signal of the manager.
    """

    def __init__(
        self,
        path: str,
        on_signal: Callable[[str, str, tuple[object, ...]], None],
        interesting: Callable[[str], bool],
        on_ready: Callable[[], None],
        on_lost: Callable[[str], None],
    ) -> None:
        self.path = path
        self.on_signal = on_signal
        self.interesting = interesting
        self.on_ready = on_ready
        self.on_lost = on_lost
        self.sock: socket.socket | None = None
        self.auth: Authenticator | None = None
        self.parser = Parser()
        self.outgoing = bytearray()
        self.queued: list[bytes] = []  # serialised calls waiting for the connection
        self.pending: dict[int, Reply] = {}
        self.serial = 0
        self.ready = False

    # -- connecting ----------------------------------------------------------

    def connect(self) -> bool:
        """Start connecting; False when it failed at once (no manager here).
        EAGAIN (PID 1's backlog is full at a busy boot) counts as a failure
        too: the caller retries later."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            return False
        self.sock = sock
        # A new connection starts clean: nothing left of the one that was lost.
        self.parser = Parser()
        self.outgoing.clear()
        self.ready = False
        self.auth = Authenticator()
        self._flush_auth()
        return True

    def _flush_auth(self) -> None:
        assert self.auth is not None
        data = self.auth.data_to_send()
        if data:
            self.outgoing += data

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def wants_write(self) -> bool:
        return bool(self.outgoing)

    # -- I/O -----------------------------------------------------------------

    def on_writable(self) -> None:
        if self.sock is None or not self.outgoing:
            return
        try:
            sent = self.sock.send(self.outgoing)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            return self._lost(f"send: {e.strerror}")
        del self.outgoing[:sent]

    def on_readable(self) -> None:
        if self.sock is None:
            return
        for _ in range(16):  # bounded: the holder has other sockets to serve
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                return self._lost(f"recv: {e.strerror}")
            if not data:
                return self._lost("the service manager closed the connection")
            if not self.ready:
                rest = self._authenticate(data)
                if rest is None:
                    return
                data = rest
            self.parser.add_data(data)
            self._dispatch()

    def _authenticate(self, data: bytes) -> bytes | None:
        """Feed the SASL exchange; returns bytes that follow it, None while
        (or when) it is not done."""
        assert self.auth is not None
        head, sep, rest = data.partition(b"\r\n")
        try:
            self.auth.feed(head + sep)
        except AuthenticationError as e:
            self._lost(f"authentication refused: {e}")
            return None
        self._flush_auth()
        if not self.auth.authenticated:
            return None
        # The Authenticator has nothing more to send once it succeeded: BEGIN
        # is ours to send (as jeepney's own blocking client does).
        self.outgoing += BEGIN
        self.ready = True
        for call in self.queued:
            self.outgoing += call
        self.queued.clear()
        self.call(MANAGER_PATH, MANAGER_IFACE, "Subscribe", "", ())
        self.on_ready()
        return rest

    def _dispatch(self) -> None:
        buf = self.parser.buf
        while True:
            if self.parser.next_msg_size is None:
                if buf.bytes_buffered < 16:
                    return
                self.parser.next_msg_size = _msg_size(buf.peek(16))
            size = self.parser.next_msg_size
            if buf.bytes_buffered < size:
                return
            raw = buf.read(size)
            self.parser.next_msg_size = None
            self._handle(raw)

    def _handle(self, raw: bytes) -> None:
        if raw[1] == 4:  # a signal: most are about units that are none of ours
            if b"portreserve" not in raw and b"Reloading" not in raw:
                return
            if b"PropertiesChanged" in raw and b"systemd1.Unit\0" not in raw:
                return  # another interface's properties (Socket, Service ...)
        header, _ = Header.from_buffer(raw)
        kind = header.message_type
        fields = header.fields
        if kind in (MessageType.method_return, MessageType.error):
            callback = self.pending.pop(fields.get(HeaderFields.reply_serial, -1), None)
            if callback is not None:
                body = Message.from_buffer(raw).body
                callback(kind is MessageType.method_return, body)
            return
        if kind is not MessageType.signal:
            return
        path = fields.get(HeaderFields.path, "")
        member = fields.get(HeaderFields.member, "")
        if path == MANAGER_PATH:
            if member not in ("JobRemoved", "Reloading"):
                return
        elif member != "PropertiesChanged" or not self.interesting(path):
            return
        self.on_signal(path, member, Message.from_buffer(raw).body)

    def _lost(self, why: str) -> None:
        callbacks = list(self.pending.values())
        self.close()
        for callback in callbacks:
            callback(False, ("connection lost",))
        self.on_lost(why)

    def close(self) -> None:
        """Close the connection; calls still unanswered are forgotten."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.ready = False
        self.outgoing.clear()
        self.pending.clear()

    # -- calls ---------------------------------------------------------------

    def call(
        self,
        path: str,
        interface: str,
        method: str,
        signature: str,
        body: tuple[object, ...],
        reply: Reply | None = None,
    ) -> None:
        message = new_method_call(
            DBusAddress(path, bus_name=SYSTEMD, interface=interface), method, signature or None, body
        )
        self.serial += 1
        if reply is not None:
            self.pending[self.serial] = reply
        else:
            # No reply wanted: tell PID 1 not to send one.
            message.header.flags |= 1  # NO_REPLY_EXPECTED
        data = message.serialise(serial=self.serial)
        if self.ready:
            self.outgoing += data
        else:
            self.queued.append(data)

    def stop_unit(self, unit: str, reply: Reply) -> None:
        self.call(MANAGER_PATH, MANAGER_IFACE, "StopUnit", "ss", (unit, "replace"), reply)

    def list_units(self, patterns: list[str], reply: Reply) -> None:
        """ListUnitsByPatterns: one call for the state of every unit that matches."""
        self.call(MANAGER_PATH, MANAGER_IFACE, "ListUnitsByPatterns", "asas", ([], patterns), reply)


# A unit's D-Bus object: UNIT_PATH/LABEL, the unit name escaped as systemd's
# bus_label_escape() does (every byte but [A-Za-z0-9] as _XX, in lower case hex).
UNIT_PATH = f"{MANAGER_PATH}/unit"
_LABEL_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_HEX_DIGITS = frozenset("0123456789abcdef")


def label_escape(text: str) -> str:
    """A piece of a label, escaped as bus_label_escape() escapes it: every byte
    but [A-Za-z0-9] as _XX.  Only for pieces after a label's first character
    (the holder's prefix and suffix matches): systemd also escapes a digit
    that starts a label, which this does not."""
    return "".join(chr(b) if b in _LABEL_SAFE else f"_{b:02x}" for b in text.encode())


def unit_of_object_path(path: str) -> str:
    """The unit name of an object path under UNIT_PATH (bus_label_unescape())."""
    label = path.rsplit("/", 1)[1]
    out = bytearray()
    i = 0
    while i < len(label):
        if label[i] == "_" and i + 2 < len(label) and _HEX_DIGITS.issuperset(label[i + 1 : i + 3]):
            out.append(int(label[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(ord(label[i]))
            i += 1
    return out.decode("utf-8", "replace")


def _msg_size(head: bytes) -> int:
    endian = "<" if head[:1] == b"l" else ">"
    body_length = int.from_bytes(head[4:8], "little" if endian == "<" else "big")
    fields_length = int.from_bytes(head[12:16], "little" if endian == "<" else "big")
    header = 16 + fields_length
    header += -header % 8
    return header + body_length


__all__ = ["UNIT_IFACE", "UNIT_PATH", "Connection", "label_escape", "unit_of_object_path"]
