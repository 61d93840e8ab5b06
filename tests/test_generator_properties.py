"""Property tests of the whole path: config files -> units -> map -> the name a
release request carries.  Hostile input everywhere: file names as arbitrary
bytes, lines of arbitrary bytes beside valid ones.

Example counts add up to more than 10 000 per run (see EXAMPLES).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from genhelp import run_generator, verify
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from portreserve import generator, names, protocol, units
from portreserve.config import (
    MAX_SOCKETS,
    UNIT_NAME_MAX,
    Port,
    Proto,
    gather,
    load_config,
    parse_entry,
    parse_file,
    parse_services,
)

EXAMPLES = {
    "whole_path": 2000,
    "generator_process": 150,
    "entries": 4200,
    "names": 2500,
    "services": 1200,
    "verify": 12,
}
assert sum(EXAMPLES.values()) >= 10_000

SERVICES_TEXT = "ipp 631/tcp\nldaps 636/tcp\nldaps 636/udp\nhuge 99999/tcp\nsctponly 9/sctp\n"
SERVICES = parse_services(SERVICES_TEXT)
SERVICE_PORTS = {"ipp": [Port(631, Proto.TCP)], "ldaps": [Port(636, Proto.TCP), Port(636, Proto.UDP)]}


# Thousands of small trees: on a tmpfs, as the generator's real output is.
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None


def slow(name: str) -> settings:
    return settings(
        max_examples=EXAMPLES[name],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# -- strategies -------------------------------------------------------------------

PORTS = st.integers(1, 65535)
PROTO_SUFFIX = st.sampled_from(["", "/tcp", "/udp", "/TCP"])


@st.composite
def valid_line(draw: st.DrawFn) -> tuple[str, list[Port]]:
    """A line the generator must reserve, and the ports it names."""
    suffix = draw(PROTO_SUFFIX)
    protos = [Proto.TCP, Proto.UDP] if not suffix else [Proto(suffix[1:].lower())]
    kind = draw(st.sampled_from(["port", "range", "service"]))
    if kind == "port":
        number = draw(PORTS)
        zeros = "0" * draw(st.integers(0, 3))
        text, ports = f"{zeros}{number}", [Port(number, p) for p in protos]
    elif kind == "range":
        low = draw(st.integers(1, 65535 - 8))
        high = low + draw(st.integers(0, 7))
        text, ports = f"{low}-{high}", [Port(n, p) for n in range(low, high + 1) for p in protos]
    else:
        service = draw(st.sampled_from(sorted(SERVICE_PORTS)))
        if suffix == "/udp" and service == "ipp":
            suffix, protos = "/tcp", [Proto.TCP]
        text, ports = service, [p for p in SERVICE_PORTS[service] if p.proto in protos]
    blank = draw(st.sampled_from(["", " ", "\t", "\r"]))
    comment = draw(st.sampled_from(["", " # a comment", "#"]))
    return f"{blank}{text}{suffix}{blank}{comment}", ports


# Named functions, not lambdas: Debian's hypothesis 6.67 re-reads a lambda's
# source at every draw (it cost 20 ms an example).


def encoded_valid(line: tuple[str, list[Port]]) -> tuple[bytes, list[Port] | None]:
    return line[0].encode(), line[1]


def one_line_bytes(data: bytes) -> tuple[bytes, list[Port] | None]:
    return data.replace(b"\n", b" "), None


def one_line_text(text: str) -> tuple[bytes, list[Port] | None]:
    return text.replace("\n", " ").encode("utf-8", "surrogatepass"), None


def plain(text: str) -> tuple[bytes, list[Port] | None]:
    return text.encode(), None


def file_name_bytes(data: bytes) -> bytes:
    return data.replace(b"/", b"_").replace(b"\0", b"_")


def file_name_text(text: str) -> bytes:
    return file_name_bytes(text.encode("utf-8", "replace"))


def not_dot(name: bytes) -> bool:
    return name not in (b".", b"..")


def as_surrogates(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


LINE = st.one_of(
    valid_line().map(encoded_valid),
    st.binary(max_size=40).map(one_line_bytes),
    st.text(max_size=20).map(one_line_text),
    st.sampled_from(["-5", "5000-", "9" * 5000, "0", "65536", "huge", "sctponly", "a b", "1-65535", "/tcp", "-"]).map(
        plain
    ),
)

# File names: any bytes but '/' and NUL, as the kernel allows, up to NAME_MAX.
FILE_NAME = st.one_of(
    st.binary(min_size=1, max_size=255).map(file_name_bytes),
    st.text(min_size=1, max_size=80).map(file_name_text),
    st.sampled_from([b"cups", b" lead", b"trail ", b"a\nb", b"caf\xe9", b"*", b"-", b"x" * 235, b"x" * 236]),
).filter(not_dot)

FILES = st.dictionaries(FILE_NAME, st.lists(LINE, max_size=6), max_size=5)


def acceptable(name: str) -> bool:
    """Our own statement of which file names make a reservation (README)."""
    if not name or "." in name or "~" in name or name == "*":
        return False
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    if any(c < 0x20 or c == 0x7F for c in encoded) or any(0x80 <= ord(c) < 0xA0 for c in name):
        return False
    return len(names.group_unit(name)) <= UNIT_NAME_MAX


def write_config(directory: str, files: dict[bytes, list[tuple[bytes, list[Port] | None]]]) -> None:
    os.makedirs(directory, exist_ok=True)
    for name, lines in files.items():
        with open(os.path.join(os.fsencode(directory), name), "wb") as f:
            f.write(b"\n".join(text for text, _ in lines))


def check_tree(out: str, config_names: dict[str, list[Port]]) -> None:
    """What every generated tree must satisfy."""
    listing = set(os.listdir(out))
    mapped = names.read_map(out)
    assert mapped is not None
    assert mapped == {n: [(p.number, str(p.proto)) for p in ports] for n, ports in config_names.items()}
    for name, ports in config_names.items():
        group = names.group_unit(name)
        assert group in listing and len(group) <= UNIT_NAME_MAX
        assert names.name_of_group_unit(group) == name
        assert names.unescape(names.escape(name)) == name
        # The release request: portrelease sends the name as UTF-8 text.
        request = name.encode("utf-8")
        assert 0 < len(request) <= protocol.MAX_REQUEST and name not in (protocol.ALL, protocol.STATUS)
        for port in ports:
            assert units.socket_unit(port) in listing
    for entry in listing:
        path = os.path.join(out, entry)
        if os.path.isfile(path):
            text = open(path, "rb").read().decode("utf-8")  # UTF-8 clean, or this raises
            assert all(c == "\n" or c >= " " for c in text), entry
            if entry.endswith(".socket"):
                assert "\nFileDescriptorName=portreserve-port\n" in text


# -- the whole path, in process -----------------------------------------------------


@slow("whole_path")
@given(FILES, FILES)
@example({b"x" * 236: [(b"700", None)], b"a\nb": [(b"701", None)]}, {})
def test_whole_path(vendor: dict[bytes, list[tuple[bytes, list[Port] | None]]], admin: dict[bytes, list]) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory(prefix="portreserve-prop-", dir=SCRATCH) as tmp:
        dirs = [os.path.join(tmp, "vendor"), os.path.join(tmp, "etc")]
        write_config(dirs[0], vendor)
        write_config(dirs[1], admin)
        services = os.path.join(tmp, "services")
        with open(services, "w") as f:
            f.write(SERVICES_TEXT)
        config = gather(dirs, services)
        files, links = generator.generate(config, units.Scope())
        out = os.path.join(tmp, "out")
        generator.write_tree(out, files, links)

        # Which files count: admin over vendor, acceptable names only.
        chosen = {**vendor, **admin}
        effective = {os.fsdecode(n): lines for n, lines in chosen.items() if acceptable(os.fsdecode(n))}
        got = {r.name: list(r.ports) for r in config.reservations}
        assert set(got) == set(effective)
        errors_at = {(e.path, e.line) for e in config.errors}
        for name, lines in effective.items():
            source = next(r.source for r in config.reservations if r.name == name)
            for lineno, (_, ports) in enumerate(lines, start=1):
                if ports is not None:  # a valid line: reserved, never reported
                    assert (source, lineno) not in errors_at
                    assert set(ports) <= set(got[name])
        # Refused names are reported, naming the file.
        for raw in chosen:
            decoded = os.fsdecode(raw)
            if decoded not in effective and "." not in decoded and "~" not in decoded:
                assert any(e.path.endswith(decoded) and e.line is None for e in config.errors)
        assert len(config.owners()) <= MAX_SOCKETS
        check_tree(out, got)


# -- the generator process: never fails ----------------------------------------------


@slow("generator_process")
@given(FILES)
def test_generator_process_exits_0_on_anything(files: dict[bytes, list]) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory(prefix="portreserve-prop-", dir=SCRATCH) as tmp:
        write_config(os.path.join(tmp, "etc"), files)
        out = os.path.join(tmp, "out")
        result = run_generator("--config-dir", os.path.join(tmp, "etc"), out)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        # The process wrote what the same code reads in this process (the
        # process reads /etc/services, as gather() does by default).
        config = gather([os.path.join(tmp, "etc")])
        check_tree(out, {r.name: list(r.ports) for r in config.reservations})


# -- parsing pieces ------------------------------------------------------------------


@settings(max_examples=EXAMPLES["entries"], deadline=None)
@given(st.one_of(st.text(), st.binary().map(as_surrogates)), st.integers(1, 65535))
def test_entries_and_lines_never_raise(text: str, lowest: int) -> None:
    ports, message = parse_entry(text, SERVICES)
    assert (ports == []) == (message is not None) or (ports == [] and message is None)
    assert all(1 <= p.number <= 65535 and p.proto in ("tcp", "udp") for p in ports)
    data = text.encode("utf-8", "surrogateescape")
    found, errors = parse_file("f", data, SERVICES, lowest)
    assert len(found) == len(set(found)) and all(p.number >= lowest for p in found)
    assert all(len(str(e)) < 400 for e in errors)


@settings(max_examples=EXAMPLES["names"], deadline=None)
@given(st.text(min_size=1, max_size=300))
def test_escape_round_trips_and_map_too(name: str) -> None:
    escaped = names.escape(name)
    assert names.unescape(escaped) == name
    assert escaped.isascii() and " " not in escaped and "\n" not in escaped
    entries = [(name, [(631, "tcp")]), ("other", [])]
    assert names.parse_map(names.format_map(entries)) == {name: [(631, "tcp")], "other": []} or name == "other"


@settings(max_examples=EXAMPLES["services"], deadline=None)
@given(st.text(max_size=400))
def test_services_never_raise(text: str) -> None:
    services = parse_services(text + "\nx 9999999999999/tcp\n" + "y " + "9" * 5000 + "/udp\n")
    for ports in services.values():
        assert all(isinstance(n, int) and n >= 0 for n in ports.values())
    for name in list(services)[:20]:
        parse_entry(name, services)


# -- a sample through systemd's own verifier ---------------------------------------------


@slow("verify")
@given(FILES)
@example({b" lead": [(b"631", None)], b"back\\slash\\": [(b"700/udp", None)], b"100%": [(b"701", None)]})
def test_a_sample_of_trees_passes_systemd_analyze_verify(files: dict[bytes, list]) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory(prefix="portreserve-verify-", dir=SCRATCH) as tmp:
        write_config(os.path.join(tmp, "etc"), files)
        out = Path(tmp) / "out"
        config = load_config([os.path.join(tmp, "etc")], SERVICES)
        files_, links = generator.generate(config, units.Scope())
        generator.write_tree(str(out), files_, links)
        assert verify(out, Path(tmp)) == []
        shutil.rmtree(out)
