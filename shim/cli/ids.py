"""`shim ids`: the id pairs the store holds, loading those of data copied before the run, and forgetting
those that name nothing any more.

    shim ids list   --config shim.toml [--kind K] [--limit N]   counts per kind, then the newest pairs
    shim ids import --config shim.toml FILE                     pairs from a CSV file (kind,bank_id,bk_id)
    shim ids forget --config shim.toml --kind K ID ...          the pairs and unpaired ids naming ID
    shim ids forget --config shim.toml --kind K --all           every pair of kind K
    shim ids forget --config shim.toml --all                    every pair of every kind

Exit status 0, 1 when an imported pair conflicts with a stored one (nothing is imported then), or 2 for a
bad flag, a bad file or a store that cannot be opened. Ids are printed with their
control characters escaped (`shim.terminal_text`). The ids of a kind whose fields are redacted are stored
sealed (`shim.store._sealing`): they are listed as their hashes, as the comparisons show them, with the
redaction key in the environment (`[redact] key_env`), or as "(sealed)" without it; `forget` finds them
by the id as it was, with the key.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from comparators.redact import keyed_hash
from shim import config as config_mod
from shim.errors import ShimError
from shim.pipeline import RedactSettings
from shim.store import SIDES, IdPair, Sealer, Store, StoreError, sealed
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
    loading = actions.add_parser(
        "import",
        help="load the pairs of ids of data copied into both sides before the run (each side minted its own"
        " ids for it, so no answer pairs them): a CSV file with the header kind,bank_id,bk_id (and owner,"
        " optional); all or none, a pair conflicting with a stored one refused",
    )
    loading.add_argument("file", metavar="FILE", help='the CSV file ("-": standard input)')
    for parser in (listing, forget, loading):
        parser.add_argument("--config", metavar="FILE", help="the shim's config file (its [store])")
        parser.add_argument("--store", metavar="URL", help="the store (overrides the config's)")
    for parser in (listing, forget):  # (a file to import names each pair's kind)
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
    loaded = _read_pairs(args.file, settings or {}) if args.action == "import" else []
    store = Store.open(url, create=args.action == "import")  # pairs loaded before the first run make it
    await store.start()
    try:
        if args.action == "import":
            return await _import(store, loaded, settings or {}, key)
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


_HEADER = ["kind", "bank_id", "bk_id"]


def _read_pairs(path: str, settings: Mapping[str, Any]) -> list[IdPair]:
    """The pairs of a CSV file: a header naming kind, bank_id, bk_id (and owner, optional), then a pair a
    line; each kind one of the config's [ids] (a kind scoped to one query holds no lasting pair), no value
    empty, no id in two pairs of one kind. A ShimError names the line of the first fault."""
    kinds = {kind.name: kind for kind in settings.get("ids", ())}
    if not kinds:
        raise ShimError("shim ids import: the config declares no id kind ([ids.KIND]): give --config")
    try:
        with (
            open(path, newline="", encoding="utf-8-sig")  # (a spreadsheet's byte order mark)
            if path != "-"
            else contextlib.nullcontext(sys.stdin) as f
        ):
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ShimError(f"shim ids import: cannot read {path}: {exc}") from exc
    if not rows or [c.strip() for c in rows[0][:3]] != _HEADER or rows[0][3:] not in ([], ["owner"]):
        raise ShimError(f"shim ids import: {path} line 1: the header must be kind,bank_id,bk_id (and owner)")
    width, pairs = len(rows[0]), []
    seen: dict[tuple[str, str, str], tuple[int, IdPair]] = {}
    for line, row in enumerate(rows[1:], start=2):
        where = f"shim ids import: {path} line {line}"
        if not row:
            continue
        if len(row) != width or not all(row[:3]):
            raise ShimError(f"{where}: expected {width} values, none of the first three empty")
        if any(value != value.strip() for value in row):  # an id is exact: " A1" names nothing
            raise ShimError(
                f"{where}: a value begins or ends with a space (write kind,bank_id,bk_id with none)"
            )
        kind = kinds.get(row[0])
        if kind is None:
            raise ShimError(
                f"{where}: {printable(row[0])!r} is not an id kind of the config ({', '.join(kinds)})"
            )
        if kind.scope != "global":
            raise ShimError(
                f"{where}: ids of kind {kind.name} are scoped to one query: no pair of them lasts"
            )
        pair = IdPair(row[0], row[1], row[2], row[3] if width > 3 else "")
        for side, value in (("bank", pair.bank_id), ("bk", pair.bk_id)):
            earlier = seen.setdefault((pair.kind, side, value), (line, pair))
            if earlier[1] != pair:
                raise ShimError(f"{where}: {printable(value)} is paired otherwise on line {earlier[0]}")
        pairs.append(pair)
    return list(dict.fromkeys(pairs))


async def _import(store: Store, pairs: list[IdPair], settings: Mapping[str, Any], key: bytes) -> int:
    """Store `pairs`, sealed where the config seals its ids (the kinds whose fields are redacted)."""
    from comparators.ids import IdFields
    from shim.parts import load_registry

    redact = config_mod.section(settings, RedactSettings)
    if redact.fields and not settings.get("descriptor_sets"):
        raise ShimError(
            "shim ids import: with redacted fields, which id kinds the shim stores sealed is told by the"
            " descriptors, and the config names no descriptor_sets (Bank's reflection is not asked here):"
            " name them (shim describe makes a set)"
        )
    registry = load_registry(settings.get("descriptor_sets", ())) if redact.fields else None
    fields = IdFields(tuple(settings["ids"]), registry) if registry is not None else None
    sealed = [k for k in fields.kinds if fields.fields_of(k) & set(redact.fields)] if fields else []
    if sealed and not key:
        raise ShimError(
            f"shim ids import: ids of {', '.join(sealed)} are stored sealed under the redaction key"
            f" (redact.fields), and ${redact.key_env} is not set"
        )
    if sealed:
        store.pairs.seal_with(Sealer(key, sealed, str))
    stored, conflicts = await store.pairs.load(pairs)
    if conflicts:
        said = f"{_count(len(conflicts), 'stored pair')} conflict with the file"
        print(f"shim ids import: {said}; nothing imported:")
        for pair in conflicts[:10]:
            print("\t".join(printable(v) for v in (pair.kind, pair.bank_id, pair.bk_id)))
        return 1
    known = len(pairs) - stored
    print(f"imported {_count(stored, 'pair')} ({known:,} stored already) into {printable(store.url)}")
    print("running shims find them at their next lookup of an id they do not hold")
    return 0


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
