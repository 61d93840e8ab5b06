#!/usr/bin/env python3
"""How boot time grows with the number of reserved sockets (the host cap).

Boots the real systemd 252 (tests/boot.py) once per count with that many
reserved sockets (port ranges, TCP and UDP alternating by range) and prints,
per count: generator time, unit load time, when sockets.target was reached,
how many socket units are active, and how portreserve.service fared (a
$LISTEN_FDNAMES over 128 KiB makes it fail with 203/EXEC).  The generator's cap
is raised in the installed copy so counts above it can be measured.

Usage (root): .venv/bin/python benchmarks/socket_cap.py [COUNT...]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from boot import BootError, boot  # noqa: E402

DRIVER = (REPO / "benchmarks" / "socket_cap.sh").read_text()


def files_for(count: int) -> dict[str, str]:
    lines, port, proto = [], 10000, "tcp"
    left = count
    while left:
        n = min(left, 1000)
        lines.append(f"{port}-{port + n - 1}/{proto}")
        left -= n
        if proto == "tcp":
            proto = "udp"  # the same range in UDP: distinct sockets
        else:
            proto, port = "tcp", port + 1000
    return {"/etc/portreserve/bulk": "\n".join(lines) + "\n"}


def main() -> int:
    counts = [int(a) for a in sys.argv[1:]] or [0, 1000, 2000, 4000, 6000, 7600, 8000]
    with tempfile.TemporaryDirectory(prefix="portreserve-cap-") as tmp:
        dest = Path(tmp) / "dest"
        subprocess.run(["make", "-s", "install", f"DESTDIR={dest}", "PREFIX=/usr"], cwd=REPO, check=True)
        config_py = dest / "usr/lib/python3/dist-packages/portreserve/config.py"
        text = config_py.read_text()
        config_py.write_text(re.sub(r"(?m)^MAX_SOCKETS = \d+", "MAX_SOCKETS = 1_000_000", text))
        subprocess.run(["/usr/bin/python3", "-m", "compileall", "-q", str(config_py.parent)], check=True)
        for count in counts:
            work = Path(tmp) / f"n{count}"
            work.mkdir()
            try:
                result = boot(work, files=files_for(count), install=dest, driver=DRIVER, timeout=600)
                figures = json.loads(result.read("cap.json"))
            except (BootError, OSError, ValueError) as e:
                figures = {"error": str(e)[:2000]}
            print(json.dumps({"sockets": count, **figures}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
