"""The manual pages match the code: every option a command's --help prints is in
its page, every page has the sections a manual page needs, and they render
without groff warnings.

The commands are the real ones, run through this interpreter from the source
tree: `python -m portreserve`, portreserve.release's main and the generator's.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from helpers import PORTRELEASE, PORTRESERVE, PYTHON, ROOT, run

MAN = ROOT / "man"
GENERATOR = [PYTHON, "-c", "import sys; from portreserve.generator import main; sys.exit(main())"]
COMMANDS = {
    "portreserve.8": PORTRESERVE,
    "portrelease.8": PORTRELEASE,
    "portreserve-generator.8": GENERATOR,
}
PAGES = sorted(p.name for p in MAN.iterdir())
REQUIRED = ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "FILES", "EXAMPLES", "SEE ALSO"]


def page_text(page: str) -> str:
    """The page's source as a reader sees the words: no font escapes, plain hyphens."""
    text = (MAN / page).read_text()
    text = re.sub(r"\\f[BIRP]", "", text)
    return text.replace("\\-", "-").replace("\\(aq", "'")


def help_text(argv: list[str]) -> str:
    result = run([*argv, "--help"])
    assert result.returncode == 0, result.stderr
    return result.stdout


def options_in_help(text: str) -> set[str]:
    """Every -x and --long option argparse lists under "options:"."""
    found: set[str] = set()
    section = False
    for line in text.splitlines():
        if line.rstrip().endswith(":") and not line.startswith(" "):
            section = line.startswith("options")
            continue
        if section and line.startswith("  "):
            # The option column: up to two blanks before the help text.
            column = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
            found.update(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", column))
    return found


def subcommands(text: str) -> list[str]:
    """The commands listed under portreserve's COMMAND positional."""
    found = []
    section = False
    for line in text.splitlines():
        if line.strip() == "COMMAND":
            section = True
        elif section and re.match(r"^ {4}\S", line):
            found.append(line.split()[0])
        elif section and line and not line.startswith(" "):
            break
    return found


def help_of_every_command() -> list[tuple[str, list[str]]]:
    cases = []
    for page, argv in COMMANDS.items():
        cases.append((page, argv))
        if argv is PORTRESERVE:
            cases += [(page, [*argv, sub]) for sub in subcommands(help_text(argv))]
    return cases


def test_the_help_parser_finds_options() -> None:
    # The parser below must not pass by finding nothing.
    text = help_text(PORTRESERVE)
    assert {"-h", "--help", "--user", "--system", "-d", "--debug", "--version"} <= options_in_help(text)
    assert {"hold", "status", "reload"} <= set(subcommands(text))


@pytest.mark.parametrize(
    "page, argv", help_of_every_command(), ids=lambda v: v if isinstance(v, str) else " ".join(v[3:]) or "main"
)
def test_every_option_in_help_is_in_the_man_page(page: str, argv: list[str]) -> None:
    options = options_in_help(help_text(argv))
    assert options, "no options found in --help"
    text = page_text(page)
    missing = sorted(o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text))
    command = " ".join([page.removesuffix(".8"), *argv[3:]])
    assert not missing, f"{page} does not mention {missing}, which `{command} --help` lists"


def test_every_portreserve_command_is_in_the_man_page() -> None:
    text = page_text("portreserve.8")
    for command in subcommands(help_text(PORTRESERVE)):
        assert re.search(rf"^\.B {re.escape(command)}$", text, re.M), command


@pytest.mark.parametrize("page", PAGES)
def test_page_has_the_required_sections(page: str) -> None:
    lines = (MAN / page).read_text().splitlines()
    sections = [line[4:].strip().strip('"') for line in lines if line.startswith(".SH ")]
    missing = [s for s in REQUIRED if s not in sections]
    assert not missing, f"{page} lacks {missing}; has {sections}"


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_warnings(page: str) -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.fail("groff is not installed (Debian package groff-base)")
    result = subprocess.run(
        [groff, "-man", "-Tutf8", "-ww", "-z", str(MAN / page)], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize("page", PAGES)
def test_page_names_the_current_version(page: str) -> None:
    from portreserve import __version__

    header = (MAN / page).read_text().splitlines()[0]
    assert f'"portreserve {__version__}"' in header


def test_pages_cover_every_command_and_the_configuration() -> None:
    assert set(PAGES) == {"portreserve.8", "portrelease.8", "portreserve-generator.8", "portreserve.5"}


@pytest.mark.parametrize(
    "argv, expected",
    [
        (PORTRESERVE, "portreserve "),
        (PORTRELEASE, "portrelease "),
        # The installed generator is this script (make install fills in its paths).
        ([PYTHON, str(ROOT / "generators" / "portreserve-generator")], "portreserve-generator "),
    ],
    ids=["portreserve", "portrelease", "portreserve-generator"],
)
def test_every_command_has_version(argv: list[str], expected: str) -> None:
    from portreserve import __version__

    result = run([*argv, "--version"])
    assert (result.returncode, result.stdout) == (0, f"{expected}{__version__}\n"), result.stderr


def test_italics_only_on_placeholders() -> None:
    # `.BI -t, --timeout " SECONDS"` once set "--timeout" in italics: in a .BI
    # line the words alternate, so an option name may only be in bold places.
    for page in PAGES:
        for line in (MAN / page).read_text().splitlines():
            if line.startswith(".BI "):
                words = re.findall(r'"[^"]*"|\S+', line[4:])
                italic = words[1::2]
                assert not any(w.lstrip('" ').startswith("\\-") for w in italic), f"{page}: {line}"


def test_man_dir_is_the_one_installed() -> None:
    # make install, the .deb and the RPM install man/*.5 and man/*.8.
    makefile = (ROOT / "Makefile").read_text()
    assert "man/*.5" in makefile and "man/*.8" in makefile
