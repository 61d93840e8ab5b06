"""Run lintian on the built .deb without installing lintian on the host.

On Debian 12, installing lintian upgrades perl (its XS modules want a newer
perl-base than many hosts have), and `make deps` never upgrades anything.  So
this downloads lintian and what it needs (`apt-get download`, nothing is
installed), boots a throwaway root (tests/boot.py: an overlay of /, nothing
of it reaches the host), installs them there, and runs lintian on
dist/deb/*.changes (tests/guest/lintian.sh does that in the guest).  Exit
status: lintian's (non-zero on an error).

Usage (root): python3 tests/lintian_guest.py [DIST_DIR]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from boot import boot  # noqa: E402

DRIVER = (Path(__file__).resolve().parent / "guest" / "lintian.sh").read_text()


def closure(package: str) -> list[str]:
    """What `apt-get install` would install or upgrade for package on this host."""
    plan = subprocess.run(
        ["apt-get", "install", "-s", "--no-install-recommends", package],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split()[1] for line in plan.splitlines() if line.startswith("Inst ")]


def main(argv: list[str]) -> int:
    dist = Path(argv[0] if argv else "dist") / "deb"
    changes = sorted(dist.glob("*.changes"))
    if not changes:
        print(f"lintian: no .changes in {dist}: run make deb first", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="lintian-", dir="/var/tmp") as tmp:
        debs = Path(tmp) / "debs"
        debs.mkdir()
        packages = closure("lintian")
        download = ["apt-get", "download", *packages]
        if subprocess.run(download, cwd=debs, capture_output=True).returncode != 0:
            # Stale package lists (a fresh machine): refresh them, nothing else.
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(download, cwd=debs, check=True, capture_output=True)
        files: dict[str, str | bytes | tuple[str | bytes, int]] = {
            f"/opt/lintian-debs/{deb.name}": deb.read_bytes() for deb in debs.glob("*.deb")
        }
        files.update({f"/opt/dist/{f.name}": f.read_bytes() for f in dist.iterdir() if f.is_file()})
        result = boot(Path(tmp) / "boot", files=files, driver=DRIVER, timeout=600, check=False)
        print(result.read("lintian.txt"), end="")
        rc_file = result.results_dir / "lintian.rc"
        if not rc_file.exists():
            print(result.read("dpkg.log")[-3000:], file=sys.stderr)
            return 1
        return int(rc_file.read_text().strip() or 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
