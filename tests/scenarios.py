"""Boot drivers made of scenarios (tests/guest/*.sh), as the Python side sees them.

A driver sources tests/guest/lib.sh, defines one ``scenario_NAME`` shell
function per behaviour, lists them in the order they run in ``SCENARIOS=(...)``
and runs them with ``run_scenarios "${SCENARIOS[@]}"``.  Inside a scenario,
``check CHECK CMD...`` (or ``repeat COUNT CHECK CMD...``, which runs CMD COUNT
times) records /results/checks/NAME.CHECK, and run_scenarios records
/results/scenarios/NAME once the function returned.

The tests derive everything from the driver's text: one test per scenario
function, and the checks each scenario must have recorded are the ``check``
and ``repeat`` lines of its function.  No name is written a second time on the
Python side.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from boot import BootResult

GUEST = Path(__file__).resolve().parent / "guest"
# Where the drivers find lib.sh in the guest (their `source` line).
LIB_IN_GUEST = "/usr/local/lib/boot-tests/lib.sh"
PORTCHECK_IN_GUEST = "/usr/local/bin/portcheck"

_FUNCTION = re.compile(r"^scenario_(\w+)\(\) \{\n(.*?)^\}$", re.MULTILINE | re.DOTALL)
_RUN_LIST = re.compile(r"^SCENARIOS=\(\n(.*?)\n\)", re.MULTILINE | re.DOTALL)
_CHECK = re.compile(r"^\s*(?:check|repeat\s+\d+)\s+(\S+)", re.MULTILINE)
_NUMBER = re.compile(r"^s(\d+)_")


def rpcbind_rival(ports: str, result: str) -> str:
    """A unit shaped like Debian's rpcbind.service (DefaultDependencies=no,
    only After=systemd-tmpfiles-setup.service) that tries to bind every port
    and writes what it got to `result`."""
    return textwrap.dedent(
        f"""\
        [Unit]
        Description=rival shaped like rpcbind
        DefaultDependencies=no
        After=systemd-tmpfiles-setup.service
        [Service]
        Type=oneshot
        RemainAfterExit=yes
        ExecStart=/bin/sh -c '{PORTCHECK_IN_GUEST} rival {ports} > {result}'
        """
    )


def guest_tools() -> dict[str, str | bytes | tuple[str | bytes, int]]:
    """The files every driver needs in the guest: lib.sh and portcheck."""
    return {
        PORTCHECK_IN_GUEST: ((GUEST / "portcheck").read_text(), 0o755),
        LIB_IN_GUEST: (GUEST / "lib.sh").read_text(),
    }


@dataclass(frozen=True)
class Driver:
    path: Path

    @cached_property
    def text(self) -> str:
        return self.path.read_text()

    @cached_property
    def bodies(self) -> dict[str, str]:
        """scenario name -> body of its function, in the order they are defined."""
        return {m.group(1): m.group(2) for m in _FUNCTION.finditer(self.text)}

    @property
    def scenarios(self) -> list[str]:
        return list(self.bodies)

    @cached_property
    def run_list(self) -> list[str]:
        """The SCENARIOS=(...) array: what the driver runs, in order."""
        listed = _RUN_LIST.search(self.text)
        if listed is None:
            raise ValueError(f"{self.path}: no SCENARIOS=( ... ) list")
        return listed.group(1).split()

    def checks(self, scenario: str) -> list[str]:
        """The checks the scenario's function records, as written in it."""
        return _CHECK.findall(self.bodies[scenario])

    @staticmethod
    def number(scenario: str) -> int | None:
        """17 for s17_something; None for a scenario without a number."""
        m = _NUMBER.match(scenario)
        return int(m.group(1)) if m else None


def assert_scenario(result: BootResult, driver: Driver, scenario: str) -> None:
    """The scenario ran to its end and every check of its function recorded "ok"."""
    checks_dir = result.results_dir / "checks"
    recorded = {p.name[len(scenario) + 1 :]: p.read_text() for p in checks_dir.glob(f"{scenario}.*")}
    problems = [f"check {c} never ran" for c in driver.checks(scenario) if c not in recorded]
    problems += [f"{c}: {text}" for c, text in sorted(recorded.items()) if not text.startswith("ok")]
    if not (result.results_dir / "scenarios" / scenario).exists():
        problems.append(f"scenario {scenario} did not run to its end")
    if problems:
        raise AssertionError(
            "\n".join(problems)
            + f"\n--- driver log (tail) ---\n{result.driver_log[-3000:]}"
            + f"\n--- journal (tail) ---\n{result.journal[-6000:]}"
        )
