"""`shim resync`: the keys out of step, and putting keys back in step once both books agree.

    shim resync --config shim.toml [--list]         each key out of step: since, the write, the last check
    shim resync --config shim.toml KEY ...          verify each key, and clear the marks of those in step
    shim resync --config shim.toml --force KEY ...  clear without verifying (recorded as forced; a key
                                                    marked again meanwhile is kept, and said so)

Verifying reads the key's state from both sides with the config's `[reconcile]
reads` and compares them with the rules and the id map, exactly as a running
shim checks a key out of step (`shim.verify`); the check is stored either way.
A key whose sides differ, or that could not be read, keeps its mark, and the
command says why. Exit status: 0 when every key named is in step now, 1 when
one is still out of step, 2 when nothing could be done (a bad config, a store
that cannot be opened). Keys, methods and reasons are printed with their control
characters escaped (`shim.terminal_text`).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from shim.errors import ShimError
from shim.store import NO_KEY, Store, shown_key
from shim.terminal_text import printable
from shim.units import parse_duration

if TYPE_CHECKING:  # the commands that need grpc import it when they run
    from shim.reconcile import Sweep

EVERY_KEY = "*"  # an older shim's mark on every key (shim.steps)
_NO_KEY_HINT = (
    "what they changed cannot be placed on a key: once `shim reconcile` finds the books equal, clear it"
    " with shim resync --force ''"
)

EXIT_OUT_OF_STEP = 1


def add_parser(commands: Any) -> None:  # the `shim` parser's sub-commands
    resync = commands.add_parser(
        "resync",
        help="list the keys out of step, or verify keys and put those both books agree on back in step",
        description="Without KEY (or with --list): each key out of step, since when, the write it missed, and"
        " its last check. With KEY: each key is verified (both sides read with the config's [reconcile]"
        " reads) and put back in step when they agree; --force clears without verifying. Exit 0 when every"
        " key named is in step, 1 when one is not, 2 for a bad flag, config or store.",
    )
    resync.add_argument("--config", metavar="FILE", help="the shim's config file (its [store], [reconcile])")
    resync.add_argument("--store", metavar="URL", help="the store (overrides the config's)")
    resync.add_argument("--bank", metavar="HOST:PORT", help="Bank, for verifying (overrides the config's)")
    resync.add_argument("--bk", metavar="HOST:PORT", help="BK, for verifying (overrides the config's)")
    resync.add_argument(
        "--adapters", metavar="MODULE", help="BK speaks its own interface: the adapters in MODULE.ADAPTERS"
    )
    resync.add_argument(
        "--timeout", metavar="DURATION", default="30s", help='each read\'s deadline (default "30s")'
    )
    resync.add_argument(
        "--list", action="store_true", help="list the keys out of step (the default without KEY)"
    )
    resync.add_argument(
        "--force", action="store_true", help="clear the marks without verifying (recorded as forced)"
    )
    resync.add_argument(
        "keys",
        nargs="*",
        metavar="KEY",
        help='routing keys to verify and resync ("*": an older shim\'s mark; "": the writes with no key,'
        " cleared with --force once shim reconcile finds the books equal)",
    )


async def run(args: argparse.Namespace, url: str) -> int:
    if args.force and (args.list or not args.keys):
        raise ShimError("--force clears the keys named (shim resync KEY... --force): a listing clears none")
    store = Store.open(url, create=False)
    await store.start()
    try:
        if args.keys and not args.list:
            return await _resync(args, store)
        await _list(store)
        return 0
    finally:
        await store.close()


async def _list(store: Store) -> None:
    marks = await store.marks.out_of_step()
    if not marks:
        print(f"no key is out of step ({printable(store.url)})")
        return
    checks = await store.marks.last_verifications()
    for mark in marks:
        key, method, reason = printable(mark.key), printable(mark.method.lstrip("/")), printable(mark.reason)
        if mark.key == NO_KEY:
            key = shown_key(NO_KEY)
            reason += f" ({_NO_KEY_HINT})"
        elif mark.side == "bk":  # marked while BK answered: its clients spoke BK's ids
            key += " (BK's id)"
        line = f"{key}\tsince {_when(mark.since)}\t{method}: {reason}"
        if mark.replica:
            line += f"\tmarked by {printable(mark.replica)}"
        checked = checks.get(mark.key)
        if checked is not None:
            at, result, detail = checked
            line += f"\tlast check {_when(at)}: {printable(result)}{_detail(result, detail)}"
        print(line)


async def _resync(args: argparse.Namespace, store: Store) -> int:
    from shim.evidence.record import replica_name
    from shim.verify import IN_STEP, Verification, store_verification, verify_once

    # each key's mark and its generation, read before anything else: a mark put on the key from then on, by
    # any replica, keeps the key marked (said "marked again meanwhile, kept")
    held = await store.marks.marked(args.keys)
    marks = {key: mark for key, (mark, _) in held.items()}
    replica = replica_name()
    if args.force:
        kept = 0
        for key in args.keys:
            mark = marks.get(key)
            if mark is None:
                print(f"{printable(shown_key(key))}: was not out of step")
                continue
            if not await store.marks.clear(key, mark.since, held[key][1]):  # marked again meanwhile
                kept += 1
                print(f"{printable(shown_key(key))}: marked again meanwhile, kept (not cleared)")
                continue
            store_verification(store, replica, Verification(key, time.time(), mark, "forced", "[]", True))
            print(f"{printable(shown_key(key))}: in step again (forced, not verified)")
        await store.flush()
        return EXIT_OUT_OF_STEP if kept else 0
    named = [key for key in args.keys if key in marks]
    for key in args.keys:
        if key not in marks:
            print(f"{printable(shown_key(key))}: was not out of step")
    if EVERY_KEY in named:
        raise ShimError('the "*" mark names no key that could be read: clear it with --force')
    if NO_KEY in named:
        raise ShimError(f"the writes out of step with no key name no key that could be read: {_NO_KEY_HINT}")
    if not named:
        return 0
    if not args.config:
        raise ShimError(
            "verifying a key reads both sides with the config's [reconcile] reads: give --config FILE"
            " (or --force to clear without verifying)"
        )
    sweep, close = await _sweep(args, store)
    still = 0
    try:
        for key in named:
            mark = marks[key]
            result, detail = await verify_once(sweep.marked, key, mark, store, replica)
            if result == IN_STEP:
                cleared = await store.marks.clear(key, mark.since, held[key][1], mark.side)
                outcome = "in step again" if cleared else "marked again meanwhile, kept"
                print(f"{printable(key)}: verified in step: {outcome}")
                still += not cleared
            else:
                still += 1
                print(f"{printable(key)}: still out of step, {printable(result)}{_detail(result, detail)}")
    finally:
        await close()
        await store.flush()
    if still:
        print("(when BK's book is right for a key anyway: shim resync --force KEY)")
    return EXIT_OUT_OF_STEP if still else 0


async def _sweep(args: argparse.Namespace, store: Store) -> tuple[Sweep, Callable[[], Awaitable[None]]]:
    from shim.cli.reconcile import sides_of
    from shim.ids import IdBook

    sides = sides_of(args, "nothing says how to read a key (--force clears without verifying)")
    timeout = parse_duration("--timeout", args.timeout)
    ids = (
        IdBook(sides.fields, store, sides.counters, sealer=sides.sealer) if sides.fields is not None else None
    )
    return sides.sweep(ids, (), timeout), sides.close


def _when(at: object) -> str:
    """A stored time as the list shows it; one that is no time (a row written by hand) as it is stored."""
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(at)))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        return printable(repr(at))


def _detail(result: str, detail: str) -> str:
    """A check's detail, in one line: the first differences, or why it could not conclude (control
    characters escaped: the detail holds what each side answered)."""
    if result in ("in-step", "forced"):
        return ""
    try:
        differences = json.loads(detail)
    except ValueError:
        return f": {printable(detail)}"
    if not isinstance(differences, list):
        return f": {printable(detail)}"
    shown = [
        printable(
            f"{str(d.get('method', '')).rpartition('/')[2]} {d.get('path')}"
            f" {d.get('bank')!r} -> {d.get('bk')!r}"
        )
        for d in differences[:3]
        if isinstance(d, dict)
    ]
    more = f" and {len(differences) - 3} more" if len(differences) > 3 else ""
    return ": " + "; ".join(shown) + more if shown else ""


__all__ = ["add_parser", "run"]
