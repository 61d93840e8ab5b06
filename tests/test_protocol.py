"""Hostile request bytes against a real holder, and the reply format.

Whatever a local client sends on the control socket, the holder answers with
a reply that parses by the protocol's rules (helpers.parse_reply, written from
protocol.py's docstring, not from its code), keeps what it holds, and carries
on serving.
"""

from __future__ import annotations

import os
from pathlib import Path

from helpers import (
    Client,
    Port,
    Reaper,
    alive,
    control_socket,
    parse_reply,
    start_holder,
    systemd_sockets,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portreserve import protocol

# Names the holder knows; hypothesis must not release them by chance.
KEEP = ["web", "mail server", "café"]


def expected_refusal(data: bytes, creds: tuple[int, int, int] | None) -> str | None:
    """The ERR reason the protocol prescribes, or None for a valid request."""
    if len(data) > protocol.MAX_REQUEST:
        return "request too long"
    if creds is not None and creds[1] not in (0, os.geteuid()):
        return "permission denied"
    if not data or b"/" in data or b"\0" in data:
        return "malformed request"
    return None


REQUESTS = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=1000, max_size=1100),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"*\n", b" *", b"* ", b".status\n", b"..status", b"\xff*", b"web\0", b"web/", b"\n", b" "]),
)


def test_hostile_requests_never_crash_the_holder_and_every_reply_parses(reaper: Reaper, workdir: Path) -> None:
    pairs = systemd_sockets(len(KEEP), ("tcp", "udp"))
    owners: dict[str, list[Port]] = {name: [(p, "tcp"), (p, "udp")] for name, (p, _s) in zip(KEEP, pairs, strict=True)}
    socks = [s for _p, ss in pairs for s in ss.values()]
    holder = start_holder(reaper, workdir, socks, owners, control=control_socket(workdir / "ctl"))
    holder.wait_ready()
    every = {f"{p}/{proto}" for ports in owners.values() for p, proto in ports}
    counts = {"ok": 0, "err": 0}

    @settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(
        data=REQUESTS.filter(lambda d: d not in (b"*", *(n.encode() for n in KEEP))),
        forged=st.sampled_from([None, "own", "other"]),
    )
    def one(data: bytes, forged: str | None) -> None:
        creds = {None: None, "own": (os.getpid(), os.geteuid(), os.getegid()), "other": (os.getpid(), 4321, 4321)}[
            forged
        ]
        with Client(holder.control_path) as client:
            client.send(data, creds)
            raw = client.receive(timeout=10)
        answer = parse_reply(raw)  # raises on anything the protocol does not allow
        refusal = expected_refusal(data, creds)
        if refusal is not None:
            assert answer.head == f"ERR {refusal}", (data, raw)
            counts["err"] += 1
        elif data == protocol.STATUS.encode():
            assert answer.ports == dict.fromkeys(every, "held"), raw
        else:
            assert (answer.head, answer.ports) == ("OK", {}), (data, raw)  # no such name
            counts["ok"] += 1

    one()
    assert alive(holder.pid), holder.stderr()
    assert holder.held() == every, "nothing was released"
    assert counts["ok"] and counts["err"], counts
    # Still serving, and truly.
    assert holder.ask("mail server").ports == {f"{pairs[1][0]}/tcp": "free", f"{pairs[1][0]}/udp": "free"}
    assert "Traceback" not in holder.stderr()


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.dictionaries(
        st.tuples(st.integers(1, 65535), st.sampled_from(["tcp", "udp"])),
        st.sampled_from(protocol.OUTCOMES[:-1]),
        max_size=700,
    ),
    st.integers(0, 3),
)
def test_every_outcome_reply_parses_by_the_documented_rules(outcomes: dict[Port, str], more: int) -> None:
    """The holder's encoder against the documented format: non-free lines
    first, at most 512 freed ports listed, the rest counted in '+N'."""
    reply = protocol.Reply("OK", ports=outcomes, more=more)
    answer = parse_reply(reply.encode().decode())
    free = [p for p, o in outcomes.items() if o == protocol.FREE]
    assert {k: v for k, v in answer.ports.items() if v != "free"} == {
        f"{n}/{p}": o for (n, p), o in outcomes.items() if o != protocol.FREE
    }
    listed = [k for k, v in answer.ports.items() if v == "free"]
    assert len(listed) == min(len(free), protocol.MAX_FREE_LINES)
    assert len(listed) + answer.more == len(free) + more
    decoded = protocol.Reply.decode(reply.encode())
    assert (decoded.status, decoded.more) == ("OK", answer.more)
