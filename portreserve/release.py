"""portrelease: give a reserved port to the service that asks for it.

It runs in ExecStartPre= of every consumer, so it is lean on purpose: under
`python3 -IS` it imports only _socket, os, select, sys, time and this
package's import-free modules (names, net, paths, protocol, spawn;
tests/test_imports.py keeps out socket, subprocess, argparse, typing and the
like; argparse only to print help or a usage error).

Under systemd the work is the holder's: portrelease reads the generator's map
to learn the name's ports; if a fresh socket can bind them all already, there
is nothing to do; otherwise it sends one request per name to the holder,
which stops the units and answers once the ports can be bound (protocol.py).
With no control socket at all (no holder, no portreserve.socket) it stops the
name's socket units itself (`systemctl stop --no-block`) and waits for the
ports.  Standalone (--socket, or no map: also under systemd, for the moment of a
daemon-reload when PID 1 has removed it, docs/design.md F18) it asks the
holder the same way; a holder that never answers (the original C
portreserve) is recognised after 0.1 s, and the ports from the
configuration are checked instead.
"""

from __future__ import annotations

import _socket as socket
import os
import select
import sys
import time

from . import __version__, names, net, paths, protocol, spawn
from .names import Port

# Not typing.TYPE_CHECKING: importing typing would cost several milliseconds
# (mypy treats any name TYPE_CHECKING as true).  collections.abc alone pulls in
# collections, operator, keyword, reprlib: 1 ms for an annotation.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Against a holder that never answers (the original C portreserve): after
# this long without an answer, look at the ports instead.
OLD_HOLDER_GRACE = 0.1
# Without an answer after this long, a request is sent again (the holder may
# have been killed after reading it; the next one would never see it).
RESEND_SECONDS = 1.0


DESCRIPTION = (
    "Release the ports that portreserve holds for the named services (the file names in "
    "/etc/portreserve/), or for every service with '*'.  Returns once a fresh process can bind "
    "every one of those ports, IPv4 and IPv6.  Nothing reserved, or nothing running, is a quiet "
    "success.  Typical use, in the service's unit: ExecStartPre=-/usr/sbin/portrelease NAME"
)
EPILOG = (
    "Run as root it acts on the system's reservations; run by another user who has a session "
    "($XDG_RUNTIME_DIR set), on that user's own (systemctl --user, $XDG_CONFIG_HOME/portreserve/). "
    "A system service with User= must run it as root: ExecStartPre=-+/usr/sbin/portrelease NAME. "
    "A port that another process took before it could be reserved is reported on stderr, naming "
    "that process; the exit status stays 0, as the original's. "
    "Exit status: 0 released or nothing to release, 1 a port could not be freed in time or the "
    "holder refused, 2 usage error."
)


class Options:
    """What the command line asks for (the attributes of argparse's Namespace)."""

    names: list[str]
    verbose: bool = False
    timeout: float = 5.0
    user: bool | None = None
    socket: str | None = None


def build_parser() -> argparse.ArgumentParser:
    import argparse  # only for --help and usage errors

    parser = argparse.ArgumentParser(prog="portrelease", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("names", nargs="+", metavar="NAME", help="service name, or '*' for all")
    parser.add_argument("-v", "--verbose", action="store_true", help="say what happened")
    parser.add_argument(
        "-t", "--timeout", type=float, default=5.0, help="seconds to wait for the ports to become free (default 5)"
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--user", dest="user", action="store_true", default=None, help="act on the user's reservations")
    scope.add_argument("--system", dest="user", action="store_false", help="act on the system's reservations")
    parser.add_argument("--socket", help="talk to the holder on this control socket (standalone holder)")
    parser.add_argument("--version", action="version", version=f"portrelease {__version__}")
    return parser


def parse_fast(argv: Sequence[str]) -> Options | None:
    """The common command lines without argparse; None for anything else
    (help, version, errors, unusual spellings), which argparse then handles.
    tests/test_release.py checks that both agree on every form."""
    opts = Options()
    opts.names = []
    scopes = 0
    # argparse takes names between options (parse_intermixed_args), except
    # with '--', where only plain parse_args is right: one run of names.
    option_after_name = interleaved = False
    args = iter(argv)
    for arg in args:
        if arg == "--":
            rest = list(args)
            if interleaved or option_after_name:
                return None
            opts.names += rest
            continue
        if not arg.startswith("-") or arg == "-":
            interleaved = interleaved or option_after_name
        elif opts.names:
            option_after_name = True
        if arg in ("-v", "--verbose"):
            opts.verbose = True
        elif arg in ("-t", "--timeout", "--socket") or arg.startswith(("--timeout=", "--socket=")):
            key, eq, value = arg.partition("=")
            if not eq:
                value = next(args, "-")
                if value.startswith("-"):
                    return None  # argparse decides: an option, or a negative number
            if key == "--socket":
                if not value:
                    return None
                opts.socket = value
                continue
            try:
                opts.timeout = float(value)
            except ValueError:
                return None
        elif arg in ("--user", "--system"):
            opts.user = arg == "--user"
            scopes += 1
        elif arg.startswith("-") and arg != "-":
            return None
        else:
            opts.names.append(arg)
    if not opts.names or scopes > 1:
        return None
    return opts


def parse_slow(argv: Sequence[str]) -> Options:
    """argparse, for what parse_fast leaves; exits on --help and errors.
    Names and options in any order (`portrelease a -v b`), as parse_fast
    takes them; but parse_intermixed_args mishandles '--' (Python 3.11)."""
    if "--" in argv:
        return build_parser().parse_args(argv, namespace=Options())
    return build_parser().parse_intermixed_args(argv, namespace=Options())


def parse_args(argv: Sequence[str]) -> Options:
    opts = parse_fast(argv)
    if opts is None:
        opts = parse_slow(argv)
    if not opts.timeout > 0 or opts.timeout == float("inf"):
        build_parser().error("--timeout must be a positive number of seconds")
    if opts.user is None:
        opts.user = paths.default_user_scope()
    return opts


class Release:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.user = bool(opts.user)
        self.control = opts.socket or paths.control_socket(self.user)
        self.deadline = time.monotonic() + opts.timeout
        self.ipv6 = net.has_ipv6()
        self.status = EXIT_OK
        self.udp_in_use: set[int] | None = None

    def say(self, message: str) -> None:
        if self.opts.verbose:
            print(message)

    def fail(self, message: str) -> None:
        print(f"portrelease: {message}", file=sys.stderr)
        self.status = EXIT_FAILED

    def warn(self, message: str) -> None:
        print(f"portrelease: {message}", file=sys.stderr)

    # -- under systemd -------------------------------------------------------

    def under_systemd(self, rmap: dict[str, list[Port]]) -> int:
        wanted: dict[str, list[Port]] = {}
        for name in self.opts.names:
            if name == protocol.ALL:
                wanted[name] = sorted({p for ports in rmap.values() for p in ports})
            elif name in rmap:
                wanted[name] = rmap[name]
            else:
                self.say(f"{name}: nothing reserved")
        # Nothing to ask when every port can be bound already: the name was
        # released before (the usual case for a second call, or a restart).
        asks = [n for n, ports in wanted.items() if not self.all_free(ports)]
        for name in wanted:
            if name not in asks:
                self.say(f"{name}: {self.ports_text(wanted[name])} free")
        if not asks:
            return self.status
        replies = self.ask(asks)
        if replies is None:
            # No control socket at all: no holder, and no portreserve.socket
            # to start one.  Whatever of these units is still active is
            # stopped here.
            return self.from_units({n: wanted[n] for n in asks})
        for name in asks:
            self.report(name, wanted[name], replies.get(name))
        return self.status

    def all_free(self, ports: list[Port]) -> bool:
        """Could a fresh socket bind every one of these ports?  TCP by a probe
        (with SO_REUSEADDR and no listen(), it cannot disturb systemd binding
        the same port); UDP from /proc, since a UDP probe could: a reservation
        starting at that moment would fail (docs/design.md F14).  /proc is
        read once, and again after self.udp_in_use is set to None."""
        udp = [p for p in ports if p[1] == "udp"]
        if udp:
            if self.udp_in_use is None:
                self.udp_in_use = net.udp_ports_in_use()
            if any(number in self.udp_in_use for number, _proto in udp):
                return False
        return all(net.bindable(p, self.ipv6) for p in ports if p[1] == "tcp")

    def ports_text(self, ports: Sequence[Port]) -> str:
        return " ".join(map(net.port_text, ports)) or "no ports"

    def report(self, name: str, ports: list[Port], reply: protocol.Reply | str | None) -> None:
        if isinstance(reply, str):
            self.fail(reply)
            return
        if reply is None:
            # No answer in time: the ports themselves say whether it worked.
            self.udp_in_use = None
            busy = [p for p in ports if not self.all_free([p])]
            if not busy:
                self.say(f"{name}: released {self.ports_text(ports)} (the holder did not answer)")
                return
            holders = net.describe_many(busy)  # one pass over /proc for all of them
            self.fail(
                f"the holder on {self.control} did not answer within {self.opts.timeout:g} s, and "
                + "; ".join(f"{net.port_text(p)} is still {holders[p]}" for p in busy)
            )
            return
        if not reply.ok:
            self.fail(f"the holder refused '{name}': {reply.error}")
            return
        if not reply.ports and not reply.more:
            self.say(f"{name}: nothing reserved")
            return
        told = [
            p
            for p, o in reply.ports.items()
            if o in (protocol.BUSY, protocol.TAKEN) or (o == protocol.IN_USE and self.opts.verbose)
        ]
        holders = net.describe_many(told) if told else {}
        for port, outcome in sorted(reply.ports.items()):
            where = f"{net.port_text(port)} ({name})"
            if outcome == protocol.BUSY:
                self.fail(f"{where} is still in use after {self.opts.timeout:g} s: {holders[port]}")
            elif outcome == protocol.TAKEN:
                self.warn(f"{where} was never reserved: another process had it first, {holders[port]}")
            elif outcome == protocol.IN_USE:
                self.say(f"{where} was released before and is in use now, {holders.get(port, '')}")
        freed = [p for p, o in reply.ports.items() if o == protocol.FREE]
        if freed or reply.more:
            more = f" and {reply.more} more" if reply.more else ""
            self.say(f"{name}: released {self.ports_text(sorted(freed))}{more}")

    def ask(
        self, asks: list[str], settle: Callable[[list[str]], dict[str, protocol.Reply]] | None = None
    ) -> dict[str, protocol.Reply | str | None] | None:
        """One request per name, all at once; {name: reply, error text, or
        None for no answer in time}; None when no holder can be reached.
        settle: asked, from OLD_HOLDER_GRACE on, about the names still
        without an answer; a reply it returns for one ends the wait for it
        (a holder that never answers, whose ports are free)."""
        replies: dict[str, protocol.Reply | str | None] = dict.fromkeys(asks)
        open_: dict[int, tuple[str, socket.socket]] = {}
        started = time.monotonic()
        try:
            for name in asks:
                sent = self.send(name)
                if sent is None:
                    if not open_ and not any(isinstance(r, str) for r in replies.values()):
                        return None
                    continue
                if isinstance(sent, str):
                    replies[name] = sent
                    continue
                open_[sent.fileno()] = (name, sent)
            # A request the holder read but never answered (it was killed
            # right then) is gone: ask again now and then until the deadline.
            # Asking twice is harmless: the first answer counts.
            resend = {fd: time.monotonic() + RESEND_SECONDS for fd in open_}
            while open_:
                now = time.monotonic()
                left = self.deadline - now
                if left <= 0:
                    break
                for fd, when in resend.items():
                    if fd in open_ and now >= when:
                        name, sock = open_[fd]
                        try:
                            sock.send(name.encode("utf-8", "surrogateescape"))
                        except OSError:
                            pass  # the queue is full: the holder is alive and will get to it
                        resend[fd] = now + RESEND_SECONDS
                wait = min([left, *(when - now for fd, when in resend.items() if fd in open_)])
                if settle is not None:
                    # Look at the ports every OLD_HOLDER_GRACE while no answer comes.
                    wait = min(wait, max(started + OLD_HOLDER_GRACE - now, 0.0) or OLD_HOLDER_GRACE)
                ready, _, _ = select.select(list(open_), [], [], max(0.0, wait))
                for fd in ready:
                    name, sock = open_.pop(fd)
                    try:
                        reply = protocol.Reply.decode(sock.recv(protocol.MAX_REPLY))
                    except OSError as e:
                        replies[name] = f"no answer from the holder on {self.control}: {e.strerror}"
                        sock.close()
                        continue
                    sock.close()
                    if reply.status == "RETRY":
                        # That holder is going away; the next one answers.
                        time.sleep(0.01)
                        again = self.send(name)
                        if isinstance(again, socket.socket):
                            open_[again.fileno()] = (name, again)
                            resend[again.fileno()] = time.monotonic() + RESEND_SECONDS
                        else:
                            replies[name] = again
                        continue
                    replies[name] = reply
                if settle is not None and time.monotonic() - started >= OLD_HOLDER_GRACE:
                    # After the answers that came: an answer beats a guess.
                    settled = settle([name for name, _sock in open_.values()])
                    for fd, (name, sock) in list(open_.items()):
                        if name in settled:
                            replies[name] = settled[name]
                            del open_[fd]
                            sock.close()
        finally:
            for _name, sock in open_.values():
                sock.close()
        return replies

    def send(self, name: str) -> socket.socket | str | None:
        """A socket with the request sent (or, when the holder's queue stayed
        full until the deadline, not sent: no answer will come); an error
        text; None when there is no holder to send it to."""
        sock = protocol.client_socket()
        try:
            # Connected and non-blocking: a blocking sendto() to a datagram
            # socket whose queue is full (net.unix.max_dgram_qlen, 10 by
            # default) waits for the holder to read, past any deadline; a
            # connected socket polls writable only once the queue has room.
            # The holder answers from that same socket, so the answer passes.
            sock.connect(self.control)
            sock.setblocking(False)
            data = name.encode("utf-8", "surrogateescape")
            while True:
                try:
                    sock.send(data)
                    break
                except BlockingIOError:
                    left = self.deadline - time.monotonic()
                    if left <= 0:
                        break
                    select.select([], [sock], [], left)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            return None
        except PermissionError:
            sock.close()
            return (
                f"permission denied on {self.control}: only root may release system reservations "
                "(in a unit with User=, use ExecStartPre=-+/usr/sbin/portrelease NAME; "
                "for your own reservations, --user)"
            )
        except OSError as e:
            sock.close()
            return f"cannot reach the holder on {self.control}: {e.strerror}"
        return sock

    def from_units(self, wanted: dict[str, list[Port]]) -> int:
        """No holder to ask (its control socket is gone): stop whatever of
        these units is active, then wait for the ports."""
        ports = sorted({p for ps in wanted.values() for p in ps})
        units = [names.socket_unit(*p) for p in ports]
        try:
            shown = spawn.show(self.user, units, ["ActiveState"], deadline=self.deadline)
        except spawn.CommandError as e:
            self.fail(str(e))
            return self.status
        active = [u for u in units if shown.get(u, {}).get("ActiveState") in names.HOLDING_STATES]
        if active:
            try:
                # --no-block: a job PID 1 is slow to run must not outlast
                # --timeout; the wait below is bounded by it.
                spawn.systemctl(self.user, "stop", "--no-block", "--", *active, deadline=self.deadline)
            except spawn.CommandError as e:
                # That is the answer (systemctl said why): waiting to the
                # deadline for ports nothing is freeing would only repeat it.
                self.fail(str(e))
                active = []
        stopped = {names.port_of_socket_unit(u) for u in active}
        busy = self.wait([p for p in ports if p in stopped])
        taken = [
            p
            for p in ports
            if p not in stopped
            and shown.get(names.socket_unit(*p), {}).get("ActiveState") == "failed"
            and not net.bindable(p, self.ipv6)
        ]
        holders = net.describe_many(busy + taken) if busy or taken else {}
        for port in busy:
            self.fail(f"{net.port_text(port)} is still in use after {self.opts.timeout:g} s: {holders[port]}")
        for port in taken:
            self.warn(f"{net.port_text(port)} was never reserved: another process had it first, {holders[port]}")
        return self.status

    def wait(self, ports: list[Port]) -> list[Port]:
        """Poll until every port can be bound; the ones that cannot, at the deadline."""
        busy = list(ports)
        while True:
            busy = [p for p in busy if not net.bindable(p, self.ipv6)]
            if not busy or time.monotonic() >= self.deadline:
                return busy
            time.sleep(0.001)

    # -- standalone ----------------------------------------------------------

    def standalone(self) -> int:
        """No map: a holder that binds the ports itself (no systemd), the
        original C portreserve, which never answers, or a systemd holder
        while PID 1 rewrites the map (docs/design.md F18).  Each is asked as
        under systemd (an answer to ask again is asked again); a name
        without an answer after OLD_HOLDER_GRACE whose configured ports can
        all be bound is done."""
        config_ports: dict[str, list[Port]] | None = None

        def configured(name: str) -> list[Port] | None:
            nonlocal config_ports
            if config_ports is None:
                config_ports = self.configured_ports()
            return config_ports.get(name)

        def settle(waiting: list[str]) -> dict[str, protocol.Reply]:
            self.udp_in_use = None  # /proc read once per look, for every name
            free = {n: ports for n in waiting if (ports := configured(n)) is not None and self.all_free(ports)}
            return {n: protocol.Reply.outcomes(dict.fromkeys(ports, protocol.FREE)) for n, ports in free.items()}

        asks = list(dict.fromkeys(self.opts.names))
        replies = self.ask(asks, settle)
        if replies is None:
            if self.opts.socket is None and paths.manager_runs(self.user):
                # No map and no control socket under a service manager: PID 1
                # rewriting the map (F18) with portreserve.socket stopped.  The
                # configuration says which units to stop.
                found = {n: ports for n in asks if (ports := configured(n))}
                return self.from_units(found) if found else self.status
            for name in asks:
                self.say(f"{name}: no holder running on {self.control}, nothing to release")
            return self.status
        for name, reply in replies.items():
            self.report(name, (configured(name) or []) if reply is None else [], reply)
        return self.status

    def configured_ports(self) -> dict[str, list[Port]]:
        """What the configuration says (for a holder that never answers)."""
        from .config import gather

        config = gather(paths.config_dirs(self.user), user=self.user)
        found = config.ports_by_name()
        found[protocol.ALL] = sorted({p for ports in found.values() for p in ports})
        return found

    def run(self) -> int:
        if self.opts.socket is None:
            rmap = names.read_map(paths.generator_dir(self.user))
            if rmap is not None:
                return self.under_systemd(rmap)
        return self.standalone()


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return Release(opts).run()
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    """The installed command: main(), then leave without the interpreter's
    shutdown (module teardown, GC), milliseconds in the start path of every
    consumer, for nothing."""
    try:
        status = main()
    except SystemExit as e:  # argparse: --help, --version, usage errors
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        status = status or EXIT_FAILED
    os._exit(status)
