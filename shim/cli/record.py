"""`shim record`: the recordings kept in the store ([record] into = "store"), listed and exported.

    shim record list   [--config FILE] [--store URL]                                  one line each
    shim record export [--config FILE] [--store URL] [--recording ID] [--truncated] OUT

`export` writes a recording file (`docs/recording-format.md`; OUT ending ".gz": compressed) that
`shim replay` reads as it reads any recording. Exit status 0, or 2 for a bad flag, no store, no
recording (or not that one), one not ended (without --truncated), or an OUT that exists or cannot be
written.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shim.cli.store_args import store_flags
from shim.errors import ShimError
from shim.store import Store
from shim.terminal_text import printable


def add_parser(commands: Any) -> None:  # the `shim` parser's sub-commands
    record = commands.add_parser(
        "record", help="list the recordings kept in the store, or export one to a recording file"
    )
    actions = record.add_subparsers(dest="action", required=True)
    listing = actions.add_parser(
        "list", help="each recording in the store: id, started, ended, calls, lost, why it ended"
    )
    export = actions.add_parser(
        "export",
        help="write a recording of the store to a file that `shim replay` reads",
        description="Writes the recording (the newest without --recording) to OUT, its calls in the order"
        " they arrived (those of several shim processes merged by arrival time); OUT.partial first,"
        " renamed OUT once whole. An OUT that exists is never written over.",
    )
    for parser in (listing, export):
        store_flags(parser)
    export.add_argument("--recording", metavar="ID", help="the recording to export (default: the newest)")
    export.add_argument(
        "--truncated",
        action="store_true",
        help="a recording not ended (still recording, or its shim was killed): write its calls so far to"
        " OUT.partial, with no end line (`shim replay --truncated` reads it)",
    )
    export.add_argument("out", metavar="OUT", help='the recording file to write (".gz": compressed)')


async def run(args: argparse.Namespace, url: str) -> int:
    from shim.recording.format import RecordingError

    store = Store.open(url, create=False)
    await store.start()
    try:
        if args.action == "list":
            return await _list(store)
        return await _export(store, args.recording, Path(args.out), args.truncated)
    except RecordingError as exc:
        raise ShimError(str(exc)) from None
    finally:
        await store.close()


async def _list(store: Store) -> int:
    recordings = await store.recordings.all()
    if not recordings:
        print(f"no recording in store {printable(store.url)}")
        return 0
    print("id\tstarted\tended\tcalls\tlost\treason")
    for r in recordings:
        ended = _when(r.ended) if r.ended is not None else "-"
        fields = (
            printable(r.id),
            _when(r.started),
            ended,
            f"{r.calls}",
            f"{r.lost}",
            printable(r.reason or "-"),
        )
        print("\t".join(fields))
    return 0


async def _export(store: Store, recording_id: str | None, out: Path, truncated: bool) -> int:
    from shim.recording.export import export

    done = await export(store, recording_id, out, truncated)
    recording, path = done.recording, printable(str(done.path))
    if done.whole:
        lost = f", {recording.lost} lost while recording" if recording.lost else ""
        print(f"record: recording {printable(recording.id)}: {done.calls} calls written to {path}{lost}")
    else:
        print(
            f"record: recording {printable(recording.id)} has not ended: its {done.calls} calls so far"
            f" written to {path}, with no end line; replay it with: shim replay --truncated {path}"
        )
    return 0


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


__all__ = ["add_parser", "run"]
