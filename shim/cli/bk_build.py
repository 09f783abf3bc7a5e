"""`shim bk-build`: tell the store which build of BK is in service, or list the builds declared.

    shim bk-build --config shim.toml NAME --reason "..."   BK runs NAME from now on
    shim bk-build --config shim.toml                      the builds declared, newest first

The gate judges no evidence from before the build in service was declared: an older build's answers
prove nothing about this one's, its matches no more than its mismatches. Declare a build once every BK
instance runs it. The declaration is kept in the store that every replica, `shim gate`, `shim report`
and a promotion read; it is audited (who, why). Exit status: 0 done, 2 for a bad flag, config or store.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from shim.admin import default_who
from shim.cli.store_args import store_flags
from shim.errors import ConfigError
from shim.store import BkBuild, Store
from shim.terminal_text import printable

MAX_NAME = 200  # characters of a build's name


def _name(text: str) -> str:
    name = text.strip()
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a build's name (1 to {MAX_NAME} printable characters)"
        )
    return name


def add_parser(commands: Any) -> None:  # the `shim` parser's sub-commands
    build = commands.add_parser(
        "bk-build",
        help="declare the build of BK in service (the gate judges only the evidence after it), or list them",
        description="With NAME: record that BK runs the build NAME from now on; the gate (shim gate, a"
        " promotion, the report's verdict) then judges no evidence from before it. Declare it once every BK"
        " instance runs the build. Without NAME: the builds declared, newest first.",
    )
    store_flags(build)
    build.add_argument(
        "name", nargs="?", type=_name, metavar="NAME", help='e.g. "bk 2.4.1" or an image digest'
    )
    build.add_argument("--reason", help="why (audited; needed with NAME)")
    build.add_argument("--who", default=default_who(), help="who declares it (audited; default: the user)")
    build.add_argument("--limit", type=int, default=20, help="the most builds listed (default 20)")


async def run(args: argparse.Namespace, url: str) -> int:
    from shim.evidence import rfc3339

    if args.name is not None and not (args.reason or "").strip():
        raise ConfigError("a build is declared with --reason (audited)")
    store = Store.open(url, create=False)
    await store.start()
    try:
        if args.name is None:
            builds = await store.builds.history(args.limit)
            if not builds:
                print("no build of BK declared: the gate judges the whole of its window ([gate] window)")
            for build in builds:  # stored text: control characters escaped
                print(
                    f"{rfc3339(build.at)}  {printable(build.build)}  by {printable(build.who)}:"
                    f" {printable(build.reason)}"
                )
            return 0
        now = time.time()
        before = await store.builds.in_service(now)
        await store.builds.declare(BkBuild(now, args.name, args.who, args.reason.strip()))
    finally:
        await store.close()
    was = "" if before is None else f" (was {printable(before.build)}, declared {rfc3339(before.at)})"
    print(
        f"BK build {printable(args.name)} declared {rfc3339(now)}{was}:"
        " the gate judges the evidence from now on"
    )
    return 0
