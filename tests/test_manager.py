"""The holder with a service manager that does not answer (PID 1 busy, or
restarting): real holder process, a real AF_UNIX stream socket in place of
the manager's private bus socket.  The holder must keep serving what does
not need the manager, and never block on it."""

from __future__ import annotations

import select
import signal
import socket
from pathlib import Path

from helpers import (
    Client,
    Reaper,
    alive,
    control_socket,
    start_holder,
    systemd_sockets,
    tcp_attempt,
    wait_until,
)
from hypothesis import given, settings
from hypothesis import strategies as st

INVOCATION = {"INVOCATION_ID": "0123456789abcdef0123456789abcdef"}  # started by a manager


def test_a_manager_that_never_answers_blocks_nothing(reaper: Reaper, workdir: Path) -> None:
    [(port, socks)] = systemd_sockets(1, ("tcp",))
    bus = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bus.bind(str(workdir / "private"))
    bus.listen(16)
    holder = start_holder(
        reaper,
        workdir,
        [socks["tcp"]],
        {"web": [(port, "tcp")]},
        control=control_socket(workdir / "ctl"),
        args=["-d", "--manager-socket", str(workdir / "private")],
        env=INVOCATION,
        keep=True,
    )
    holder.wait_ready()
    conn, _ = bus.accept()  # connected; it sent its AUTH, nobody answers
    conn.settimeout(5)
    assert conn.recv(64).startswith(b"\0AUTH EXTERNAL "), "it speaks D-Bus to the manager"

    # What needs no manager still works at once.
    assert holder.ask(".status").ports == {f"{port}/tcp": "held"}
    assert tcp_attempt(port)[0] == "reset"
    # A release waits for the manager's view of the units (no answer yet) ...
    waiting = Client(holder.control_path)
    waiting.send(b"web")
    # Requests are read in the order they were sent: once .status is
    # answered, "web" has been read and handled.
    assert holder.ask(".status").head == "OK", "still serving meanwhile"
    # A holder that answered without the manager would have done it in the
    # same loop round; the correct one answers at its deadline (30 s) at the
    # earliest.  Whatever the load, the window below cannot reach that.
    early = select.select([waiting.sock], [], [], 1.0)[0]
    assert not early, waiting.sock.recv(4096)
    # ... and a stop tells it to ask again, it is not left to time out.
    holder.proc.send_signal(signal.SIGTERM)
    assert waiting.receive(timeout=10) == "RETRY\n"
    assert holder.wait_exit() == 0, holder.stderr()
    assert "Traceback" not in holder.stderr()
    for sock in (conn, bus, waiting.sock, socks["tcp"]):
        sock.close()


def test_a_lost_manager_connection_is_made_again(reaper: Reaper, workdir: Path) -> None:
    """The manager closes the connection (daemon-reexec): the holder connects
    again, and meanwhile keeps holding and serving."""
    [(port, socks)] = systemd_sockets(1, ("tcp",))
    bus = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bus.bind(str(workdir / "private"))
    bus.listen(16)
    holder = start_holder(
        reaper,
        workdir,
        [socks["tcp"]],
        {"web": [(port, "tcp")]},
        control=control_socket(workdir / "ctl"),
        args=["-d", "--manager-socket", str(workdir / "private")],
        env=INVOCATION,
    )
    holder.wait_ready()
    bus.settimeout(10)
    first, _ = bus.accept()
    first.close()
    second, _ = bus.accept()  # raises TimeoutError if it never comes back
    assert wait_until(lambda: "lost the connection to the service manager" in holder.stderr(), 5), holder.stderr()
    assert holder.ask(".status").ports == {f"{port}/tcp": "held"}
    assert alive(holder.pid) and holder.held() == {f"{port}/tcp"}
    holder.proc.send_signal(signal.SIGTERM)
    assert holder.wait_exit() == 0, holder.stderr()
    second.close()
    bus.close()


def test_unit_object_paths_are_systemds() -> None:
    """The holder follows its socket units by object path: the form systemd
    252 gives them (seen in the boots' signals: portreserve_2d631_2dtcp_2esocket)."""
    from portreserve import manager, names

    unit = names.socket_unit(631, "tcp")
    path = f"{manager.UNIT_PATH}/{manager.label_escape(unit)}"
    assert path == "/org/freedesktop/systemd1/unit/portreserve_2d631_2dtcp_2esocket"
    assert manager.unit_of_object_path(path) == unit
    assert manager.label_escape("portreserve@a b.target") == "portreserve_40a_20b_2etarget"


@settings(max_examples=500)
@given(st.text(min_size=1))
def test_object_path_labels_round_trip(unit: str) -> None:
    from portreserve import manager

    label = manager.label_escape(unit)
    assert label.isascii() and all(c.isalnum() or c == "_" for c in label)
    assert manager.unit_of_object_path(f"{manager.UNIT_PATH}/{label}") == unit
