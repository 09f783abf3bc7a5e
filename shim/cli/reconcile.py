"""`shim reconcile --config FILE`: the sweep of `shim.reconcile`, with a progress bar and a verdict.

Exit status: 0 only when both sides were read and hold the same state for every
key; 1 when they are not shown to agree: any key differs or could not be read or
compared on either side (each is listed, with its differences or why it went
unread); 2 when the sweep could not run (a side unreachable, a bad config, no
key at all to read: an empty listing on both sides, keys file or store; a listing
that pages but whose page token is not named, or whose page tokens go round).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from grpc import aio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from comparators import DescriptorRegistry
from comparators.files import read_regular
from comparators.ids import IdFields
from comparators.rules import RuleSet
from shim import config as config_mod
from shim.adapters import AdaptedChannel, Channel, load_adapters
from shim.channels import upstream_channel
from shim.errors import ShimError
from shim.ids import IdBook
from shim.metrics import Counters
from shim.parts import load_ids, load_redactor, load_registry, load_rules, load_sealer
from shim.reconcile import KeyResult, ReconcileError, ReconcileSettings, Result, Sweep, check
from shim.store import NO_KEY, OutOfStep, Sealer, Store, StoreError, shown_url
from shim.terminal_text import cell, printable
from shim.units import parse_duration

EXIT_DIFFERENT = 1
EXIT_FAILED = 2
FROM_STORE = "keys of the stored traffic"


@dataclass
class Sides:
    """What reading keys from both sides takes, from a config and the command's flags."""

    config: config_mod.Config
    reconcile: ReconcileSettings
    registry: DescriptorRegistry
    rules: RuleSet
    fields: IdFields | None
    bank: aio.Channel
    bk_raw: aio.Channel
    bk: Channel  # with the adapters in front, when BK speaks its own interface
    counters: Counters
    sealer: Sealer | None = None  # the id kinds whose fields are redacted: their stored ids sealed

    def sweep(self, ids: IdBook | None, marks: Sequence[OutOfStep], timeout: float) -> Sweep:
        return Sweep(self.reconcile, self.registry, self.rules, self.bank, self.bk, ids, marks, timeout)

    async def close(self) -> None:
        await self.bank.close()
        await self.bk_raw.close()


def sides_of(args: argparse.Namespace, missing: str) -> Sides:
    """The config (`--config`, with `--bank`, `--bk`, `--store`, `--adapters` over it), checked, and a channel
    to each side; `missing` says what a config without [reconcile] cannot do."""
    settings = config_mod.load_file(args.config)
    for name in ("bank", "bk"):
        target = getattr(args, name)
        if target:
            current = settings.get(name)
            settings[name] = replace(current, target=target) if current else config_mod.Upstream(name, target)
    if getattr(args, "store", None):
        settings = config_mod.merged(settings, {"store": {"url": args.store}})
    if args.adapters:
        settings["adapters"] = args.adapters
    settings["mode"] = "shadow" if settings.get("bk") is not None else "bank"
    config = config_mod.build(settings)
    config.check_sides()
    if config.reconcile is None:
        raise ShimError(f"{args.config} has no [reconcile] table: {missing}")
    if config.bk is None:
        raise ShimError("no BK upstream: give --bk HOST:PORT or [upstreams.bk] target")
    registry = load_registry(config.descriptors.descriptor_sets)
    check(config.reconcile, registry)
    assert registry is not None
    rules = load_rules(config, registry)
    fields = load_ids(config, registry)
    sealer = load_sealer(config, fields, load_redactor(config, registry))  # the stored ids of redacted fields
    adapters = load_adapters(config.method_adapters, config.adapters, registry)
    counters = Counters()
    bank = upstream_channel(config.bank, config)
    bk_raw = upstream_channel(config.bk, config)
    size = config.serving.max_message_size
    bk: Channel = (
        AdaptedChannel(bk_raw, adapters, registry, counters, max_message_size=size) if adapters else bk_raw
    )
    return Sides(config, config.reconcile, registry, rules, fields, bank, bk_raw, bk, counters, sealer)


async def reconcile(args: argparse.Namespace) -> int:
    timeout = parse_duration("--timeout", args.timeout)
    sides = sides_of(args, "nothing says what to sweep")
    config, fields, counters = sides.config, sides.fields, sides.counters
    assert config.reconcile is not None
    store = await _store(config.store.url, named=bool(getattr(args, "store", None)))
    console = Console(stderr=True)
    try:
        ids = None
        marks: list[OutOfStep] = []
        if store is not None:
            marks = await store.marks.out_of_step()
            if fields is not None:
                ids = IdBook(fields, store, counters, sealer=sides.sealer)
        sweep = sides.sweep(ids, marks, timeout)
        keys, source = await _keys(args, config.reconcile, store, marks)
        with Progress(
            TextColumn("[bold]keys read from both sides"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,  # a bar only where someone watches: never a stray line in a log
        ) as progress:
            task = progress.add_task("keys", total=None)
            result = await sweep.run(
                lambda done, total: progress.update(task, completed=done, total=total),
                keys=keys,
                marked=source == FROM_STORE,  # the keys out of step, as the accounts their marks name
            )
    except ReconcileError as exc:
        print(f"shim: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await sides.close()
        if store is not None:
            await store.close()
    no_key = next((mark for mark in marks if mark.key == NO_KEY), None)
    if args.json:
        print(json.dumps(_as_json(result, no_key), indent=2))
    else:
        _print(Console(), result, source)
        if no_key is not None:
            # every key: those the listing lists (the stored traffic's miss the keys of writes the shim
            # never saw, a stretch in bank mode's on Envoy, say)
            _print_no_key(Console(), no_key, whole=result.agree and keys is None)
    return 0 if result.agree else EXIT_DIFFERENT  # a key not read is not shown to agree


def _print_no_key(console: Console, mark: OutOfStep, whole: bool) -> None:
    """The mark of the writes out of step with no key: what the sweep says about it."""
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mark.since))
    what = f"Writes with no key are out of step since {since} ({mark.method.lstrip('/')}: {mark.reason}). "
    then = (
        "Both books agree on every key swept: once no such write is under way, clear that mark with"
        " shim resync --force ''"
        if whole
        else "They are cleared with shim resync --force '' once a sweep of every key finds the books equal"
    )
    console.print(Text(printable(what + then)), highlight=False)


async def _keys(
    args: argparse.Namespace, settings: ReconcileSettings, store: Store | None, marks: Sequence[OutOfStep]
) -> tuple[list[str] | None, str]:
    """The keys to read (None: those the listing read lists), and where they came from, for the verdict
    (`FROM_STORE`: the keys out of step are read too, each as the side its mark says it is an id of)."""
    if args.keys_file:
        try:
            text = sys.stdin.read() if args.keys_file == "-" else read_regular(args.keys_file).decode("utf-8")
        except OSError as exc:
            raise ShimError(f"cannot read the keys file {args.keys_file}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ShimError(f"the keys file {args.keys_file} is not UTF-8 text") from exc
        keys = [key for key in (line.split("#", 1)[0].strip() for line in text.splitlines()) if key]
        if not keys:  # a sweep of nothing would say "both sides agree"
            raise ShimError(f"the keys file {args.keys_file} names no key")
        return keys, f"keys of {args.keys_file}"
    source = args.keys_from or settings.keys
    if source == "list":
        if not settings.list:
            raise ShimError(
                "[reconcile] names no listing read (list): give --keys-from store or --keys-file FILE"
            )
        return None, settings.list
    if store is None:
        raise ShimError("no store to take the keys from: give --store URL, or --keys-file FILE")
    keys = await _keys_seen(store)
    if not keys and not any(mark.key not in ("*", NO_KEY) for mark in marks):  # a sweep of nothing: "agree"
        raise ShimError(f"the store ({store.url}) names no routing key: give --keys-file FILE")
    return keys, FROM_STORE


async def _keys_seen(store: Store) -> list[str]:
    """Every routing key the stored traffic named (keys = "store"; with the keys out of step)."""
    keys: dict[str, None] = {}
    for joined in await store.comparisons.routing_keys():
        keys.update(dict.fromkeys(k for k in joined.split(",") if k))
    return sorted(keys)


def _existing(url: str) -> bool:
    """Whether the store is there already (opening a SQLite path that is not would make one)."""
    if url == ":memory:":
        return False
    if re.match(r"[a-z][a-z0-9+.-]*://[^/]", url, flags=re.IGNORECASE):  # a server's: the store says
        return True
    rest = url[len("sqlite:") :] if url.lower().startswith("sqlite:") else url
    return Path(rest[2:] if rest.startswith("//") else rest).exists()


async def _store(url: str, named: bool = False) -> Store | None:
    """The config's store, when one is there (its id map and keys out of step); never a new one. A store
    `named` with --store must be there: a path mistyped would sweep without the id map, every key BK
    minted then read as on one side only."""
    if not _existing(url):
        if named and url != ":memory:":  # :memory: says: no store
            raise ShimError(f"no store at {shown_url(url)}: nothing was recorded there (check --store)")
        return None
    try:
        store = Store.open(url, create=False)
        await store.start()
    except StoreError as exc:
        raise ShimError(str(exc)) from exc
    return store


def _as_json(result: Result, no_key: OutOfStep | None) -> dict[str, Any]:
    return {
        "keys": result.keys,
        "reads_per_key": result.reads,
        "seconds": round(result.seconds, 3),
        "differing": [
            {
                "key": r.key,
                "side": r.side,
                "out_of_step": r.out_of_step,
                "marked_by": r.marked_by,
                "differences": [
                    {
                        "method": method,
                        "path": d.path,
                        "kind": d.kind.value,
                        "bank": _plain(d.bank),
                        "bk": _plain(d.bk),
                    }
                    for method, d in r.differences
                ],
            }
            for r in result.differing
        ],
        "unreadable": [
            {
                "key": r.key,
                "side": r.side,
                "reason": r.unreadable,
                "out_of_step": r.out_of_step,
                "marked_by": r.marked_by,
            }
            for r in result.unreadable
        ],
        # the mark of the writes out of step with no key, when the store holds one
        "no_key_out_of_step": None
        if no_key is None
        else {
            "since": no_key.since,
            "method": no_key.method,
            "reason": no_key.reason,
            "marked_by": no_key.replica,
        },
    }


def _plain(value: object) -> object:
    return value if isinstance(value, str | int | float | bool) or value is None else repr(value)


def _key(result: KeyResult) -> str:
    """A key as shown: BK's id of an account no Bank id pairs with says so."""
    return f"{result.key} (BK's id)" if result.side == "bk" else result.key


def _print(console: Console, result: Result, listing: str) -> None:
    if result.agree:
        console.print(
            f"[green]Both sides agree[/]: {result.keys} keys ({listing}), {result.reads} reads each, "
            f"in {result.seconds:.1f} s.",
            highlight=False,
        )
        return
    if result.differing:
        _print_differing(console, result)
    if result.unreadable:
        _print_unreadable(console, result)


def _print_unreadable(console: Console, result: Result) -> None:
    """Keys whose state a read did not show: never counted as agreeing."""
    unreadable = result.unreadable
    table = Table(title=f"{len(unreadable)} of {result.keys} keys could not be read", title_justify="left")
    for column in ("key", "why", "out of step"):
        table.add_column(column)
    for r in unreadable:  # what the sides answered: text, never markup
        table.add_row(cell(_key(r)), cell(r.unreadable), cell(r.out_of_step))
    console.print(table)
    console.print(
        Text.assemble(
            (f"{len(unreadable)} keys could not be read", "red"),
            f": not shown to agree ({result.keys} keys swept, {result.reads} reads each, "
            f"in {result.seconds:.1f} s).",
        ),
        highlight=False,
    )


def _print_differing(console: Console, result: Result) -> None:
    table = Table(title=f"{len(result.differing)} of {result.keys} keys differ", title_justify="left")
    marked_by = Counter(r.marked_by for r in result.differing if r.marked_by)
    columns = ("key", "method", "path", "Bank", "BK", "out of step", *(("marked by",) if marked_by else ()))
    for column in columns:
        table.add_column(column)
    for key_result in result.differing:
        for index, (method, difference) in enumerate(key_result.differences[:5]):
            row = [  # what the sides answered: text, never markup, control characters escaped
                cell(_key(key_result) if index == 0 else ""),
                cell(method.rsplit("/", 1)[-1]),
                cell(difference.path),
                cell(repr(difference.bank)),
                cell(repr(difference.bk)),
                cell(key_result.out_of_step if index == 0 else ""),
            ]
            if marked_by:
                row.append(cell(key_result.marked_by if index == 0 else ""))
            table.add_row(*row)
    console.print(table)
    known = sum(1 for r in result.differing if r.out_of_step)
    by = ", ".join(f"{printable(replica)} {n}" for replica, n in marked_by.most_common())
    console.print(  # replica names come from the store: text, never markup
        Text.assemble(
            (f"{len(result.differing)} keys differ", "red"),
            f" ({known} already known to be out of step{f'; marked by {by}' if by else ''}), "
            f"{result.keys} keys swept, {result.reads} reads each, in {result.seconds:.1f} s.",
        ),
        highlight=False,
    )
