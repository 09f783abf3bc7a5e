"""`shim ids`: the id pairs the store holds, and forgetting those that name nothing any more.

    shim ids list   --config shim.toml [--kind K] [--limit N]   counts per kind, then the newest pairs
    shim ids forget --config shim.toml --kind K ID ...          the pairs and unpaired ids naming ID
    shim ids forget --config shim.toml --kind K --all           every pair of kind K
    shim ids forget --config shim.toml --all                    every pair of every kind

Exit status 0, or 2 for a bad flag or a store that cannot be opened. Ids are printed with their
control characters escaped (`shim.terminal_text`). The ids of a kind whose fields are redacted are stored
sealed (`shim.store._sealing`): they are listed as their hashes, as the comparisons show them, with the
redaction key in the environment (`[redact] key_env`), or as "(sealed)" without it; `forget` finds them
by the id as it was, with the key.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from comparators.redact import keyed_hash
from shim import config as config_mod
from shim.errors import ShimError
from shim.pipeline import RedactSettings
from shim.store import SIDES, Sealer, Store, StoreError, sealed
from shim.terminal_text import printable


def add_parser(commands: Any) -> None:  # the `shim` parser's sub-commands
    ids = commands.add_parser("ids", help="list the id pairs the store holds, or forget some")
    actions = ids.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="counts per kind, then the most recently learned pairs")
    forget = actions.add_parser(
        "forget",
        help="forget pairs (and unpaired ids) that name nothing any more, e.g. after both test services"
        " restarted empty; they are learned again from the next answers",
    )
    for parser in (listing, forget):
        parser.add_argument("--config", metavar="FILE", help="the shim's config file (its [store])")
        parser.add_argument("--store", metavar="URL", help="the store (overrides the config's)")
        parser.add_argument("--kind", metavar="K", help="only ids of this kind ([ids.K])")
    listing.add_argument(
        "--limit",
        metavar="N",
        type=int,
        default=50,
        help="the most pairs (and unpaired ids) listed (default 50)",
    )
    forget.add_argument("--side", choices=SIDES, help="the IDs are this side's (default: either)")
    forget.add_argument("--all", action="store_true", help="every pair of --kind (of every kind without it)")
    forget.add_argument("values", nargs="*", metavar="ID", help="the ids to forget, Bank's or BK's")


def _key(settings: Mapping[str, Any]) -> bytes:
    """The redaction key, from the environment variable the config names ([redact] key_env); b"" without."""
    return os.environ.get(config_mod.section(settings, RedactSettings).key_env, "").encode()


def _shown(key: bytes, kind: str, value: str) -> str:
    """A stored id as listed: a sealed one as its hash (or "(sealed)" when the key does not open it)."""
    if not sealed(value):
        return value
    if not key:
        return "(sealed)"
    try:
        return keyed_hash(key, Sealer(key, (kind,), str).open(kind, value))
    except StoreError:
        return "(sealed under another key)"


async def run(args: argparse.Namespace, url: str, settings: Mapping[str, Any] | None = None) -> int:
    if args.action == "forget" and bool(args.values) == bool(args.all):
        raise ShimError("shim ids forget: give the IDs to forget, or --all (not both)")
    if args.action == "forget" and args.values and not args.kind:
        raise ShimError("shim ids forget: IDs need their --kind")
    if args.action == "list" and args.limit < 0:
        raise ShimError(f"--limit: {args.limit} is not a count")
    key = _key(settings or {})
    store = Store.open(url, create=False)
    await store.start()
    try:
        if args.action == "forget":
            if key and args.kind:  # the ids given as they were, found sealed too
                store.pairs.seal_with(Sealer(key, (args.kind,), str))
            pairs, unpaired = await store.pairs.forget(args.kind, args.values, args.side)
            which = f"of kind {printable(args.kind)}" if args.kind else "of every kind"
            print(f"forgot {_count(pairs, 'pair')} and {_count(unpaired, 'unpaired id')} {which}")
            print("running shims keep the pairs they hold in memory until they restart")
            return 0
        await _list(store, args.kind, args.limit, key)
        return 0
    finally:
        await store.close()


async def _list(store: Store, kind: str | None, limit: int, key: bytes) -> None:
    counts = await store.pairs.counts()
    if kind:
        counts = {k: v for k, v in counts.items() if k == kind}
    if not counts:
        print(f"no id pair is stored{f' of kind {printable(kind)}' if kind else ''} ({printable(store.url)})")
        return
    print("; ".join(f"{printable(k)}: {_count(p, 'pair')}, {u:,} unpaired" for k, (p, u) in counts.items()))
    pairs = await store.pairs.recent(limit, kind)
    if pairs:
        print("kind\tbank id\tbk id\towner\tlearned")
        for pair in pairs:
            shown = [_shown(key, pair.kind, value) for value in (pair.bank_id, pair.bk_id, pair.owner)]
            fields = (pair.kind, shown[0], shown[1], shown[2] or "-")
            print("\t".join(printable(f) for f in fields) + f"\t{_when(pair.learned_at)}")
    unpaired = await store.pairs.recent_unpaired(limit, kind)
    if unpaired:
        print("unpaired (minted by one side, the other's unknown):")
        for u in unpaired:
            fields = (u.kind, u.side, _shown(key, u.kind, u.value), _shown(key, u.kind, u.owner) or "-")
            print("\t".join(printable(f) for f in fields) + f"\t{_when(u.at)}")


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


__all__ = ["add_parser", "run"]
