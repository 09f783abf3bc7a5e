"""Write the command-line reference (docs/cli.md) from the commands' own parsers.

    python tools/cli_reference.py            # rewrite docs/cli.md
    python tools/cli_reference.py --check    # exit 1 when docs/cli.md is not what the parsers say

`tests/test_docs.py` runs the check, so the reference cannot drift from `shim --help`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "cli.md"
_WIDTH = 100

_HEAD = """# Command-line reference

Every command and option, as `shim COMMAND --help` prints them. This page is written by
`python tools/cli_reference.py` from the commands' own parsers, and a test checks that it is current.
A flag overrides the config file's setting of the same name ([Config file](config.md)). `--bank` and `--bk`
give an upstream's target alone: its timeout and TLS settings in the file still hold, and a file may leave
the target out for the flag to give.
"""


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser, str]]:
    """(name, parser, help) of each sub-command, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return [(name, sub, helps.get(name, "")) for name, sub in action.choices.items()]
    return []


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, prefix="")
    return formatter.format_help().strip()


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _options(parser: argparse.ArgumentParser) -> list[str]:
    formatter = argparse.HelpFormatter(parser.prog, width=_WIDTH)
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            metavar = "" if action.nargs == 0 else " " + formatter._format_args(action, action.dest.upper())
            name = ", ".join(f"`{option}{metavar}`" for option in action.option_strings)
        else:
            name = f"`{formatter._format_args(action, action.dest)}`"
        default = action.default
        shown = "" if default in (None, False, argparse.SUPPRESS) or default == [] else f"`{default}`"
        rows.append(f"| {name} | {shown} | {_cell(formatter._expand_help(action)) if action.help else ''} |")
    if not rows:
        return []
    return ["| option | default | what |", "|---|---|---|", *rows]


def _command(lines: list[str], path: str, parser: argparse.ArgumentParser, summary: str, depth: int) -> None:
    lines += ["", f"{'#' * depth} `{path}`", ""]
    if summary:
        lines += [summary[0].upper() + summary[1:] + ".", ""]
    lines += ["```", _usage(parser), "```"]
    options = _options(parser)
    if options:
        lines += ["", *options]
    for name, sub, help_text in _subcommands(parser):
        _command(lines, f"{path} {name}", sub, help_text, depth + 1)


def render() -> str:
    from sample_ledger.demo import parser as demo_parser
    from shim.cli import parser as shim_parser

    parser = shim_parser()
    lines = [_HEAD.rstrip()]
    for name, sub, help_text in _subcommands(parser):
        if name == "demo":  # `shim demo` hands its arguments to the sample's demo, installed with the shim
            sub = demo_parser()
            sub.prog = "shim demo"
        _command(lines, f"shim {name}", sub, help_text, 2)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--check", action="store_true", help="exit 1 when docs/cli.md is stale")
    check = args.parse_args(argv).check
    text = render()
    if check:
        if not TARGET.is_file() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET.relative_to(ROOT)} is stale: run python tools/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
