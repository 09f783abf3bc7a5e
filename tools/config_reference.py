"""Write the config reference (docs/config-reference.md) from the settings' own declarations.

    python tools/config_reference.py            # rewrite docs/config-reference.md
    python tools/config_reference.py --check    # exit 1 when it is not what the declarations say

Each feature declares the settings of its table next to its code (`shim.settings`); `shim.config`
lists the tables, and the groups of top-level settings (`shim.serving_settings`,
`shim.descriptor_settings`). `tests/test_docs.py` runs the check, so the reference cannot drift from them.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "config-reference.md"

_HEAD = """# Config reference

Every setting of the config file, table by table: its type, its default and what it does. This page is
written by `python tools/config_reference.py` from the settings' declarations (each feature declares
its own, next to its code), and a test checks that it is current. [Config file](config.md) shows how
they fit together in an example. A setting marked *reloads* changes in a running shim when its config
is reloaded (SIGHUP, see [Reloading the config](config.md#reloading-the-config)); any other needs a
restart.
"""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _table(*classes: type[Any]) -> list[str]:
    from shim.settings import declared

    rows = ["| key | type | default | what |", "|---|---|---|---|"]
    for key, decl, default in (row for cls in classes for row in declared(cls)):
        shown = decl.shown or f"`{decl.kind.show(default)}`"
        what = decl.help + (" *(reloads)*" if decl.reloadable else "")
        rows.append(f"| `{key}` | {_cell(decl.kind.name)} | {_cell(shown)} | {_cell(what)} |")
    return rows


def _summary(cls: type[Any]) -> str:
    """The first paragraph of the table's docstring, its `docs/PAGE.md` made links."""
    doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
    return re.sub(r"`docs/([\w-]+\.md)`", r"[\1](\1)", doc)


def render() -> str:
    from shim.config import GROUPS, RELOADABLE_TABLES, SECTIONS, TABLES, Config, Upstream

    # the Config's own top-level settings, then those it groups (config.serving, ...): all top-level keys
    lines = [_HEAD.rstrip(), "", "## Top level", "", *_table(Config, *GROUPS), ""]
    lines += [
        "Tables whose keys are names, or that hold more than settings, each read by its own parser:",
        "",
    ]
    lines += ["| key | what | see |", "|---|---|---|"]
    for name, (what, page) in TABLES.items():
        see = "[below](#upstreams)" if name == "upstreams" else f"[{page}]({page})"
        what += " *(reloads)*" if name in RELOADABLE_TABLES else ""
        lines.append(f"| `{name}` | {_cell(what)} | {see} |")
    lines += ["", "## `[upstreams]`", "", _summary(Upstream), "", *_table(Upstream)]
    for cls in SECTIONS:
        lines += ["", f"## `[{cls.SECTION}]`", "", _summary(cls), "", *_table(cls)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--check", action="store_true", help="exit 1 when docs/config-reference.md is stale")
    check = args.parse_args(argv).check
    text = render()
    if check:
        if not TARGET.is_file() or TARGET.read_text(encoding="utf-8") != text:
            print(
                f"{TARGET.relative_to(ROOT)} is stale: run python tools/config_reference.py", file=sys.stderr
            )
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
