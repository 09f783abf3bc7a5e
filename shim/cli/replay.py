"""`shim replay RECORDING`: a recording of Bank's traffic sent to a BK build, BK's answers compared with
Bank's recorded ones into a new store that `shim report` and `shim gate` read (`docs/replay.md`)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from shim.replay import MIN_SPEED
from shim.terminal_text import printable


def speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not math.isfinite(value) or value < MIN_SPEED:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a speed from {MIN_SPEED:g} up (1: the recorded pace, 2: twice it, 0.5: half it;"
            f" at {MIN_SPEED:g} a recorded minute takes over 16 hours)"
        )
    return value


def add_parser(commands: Any) -> None:  # the `shim` parser's sub-commands
    replay = commands.add_parser(
        "replay",
        help="send a recording to a BK build and compare its answers with Bank's recorded ones",
        description="Sends each recorded call to BK, in the recorded order on each key (keys in parallel),"
        " and compares BK's answers with Bank's recorded answers under the config's ids, rules and"
        " redaction, into a new store (--store) that `shim report` and `shim gate` read. The store is"
        " written under a temporary name and renamed once every call is compared; a replay that fails"
        " leaves none. Exit 0 once replayed (judge the store with `shim gate`), 2 for bad input: a"
        " truncated or corrupt recording, one from another service, a BK that is down.",
    )
    replay.add_argument("recording", metavar="RECORDING", help="the recording file (.jsonl or .jsonl.gz)")
    replay.add_argument(
        "--config",
        metavar="FILE",
        required=True,
        help="the shim's config: descriptors, methods' keys, ids, rules, redaction",
    )
    bk = replay.add_mutually_exclusive_group(required=True)
    bk.add_argument(
        "--bk",
        metavar="HOST:PORT",
        help="the BK build to replay against, already serving (a connection within 5 s)",
    )
    bk.add_argument(
        "--bk-command",
        metavar="CMD",
        help='start BK with this command ("{port}" in it: a free port), wait until it serves, stop it after',
    )
    replay.add_argument(
        "--store",
        metavar="URL",
        required=True,
        help="the new store to write (a SQLite file); a file already there is refused unless it is empty or a"
        " shim store that holds nothing",
    )
    replay.add_argument(
        "--speed",
        metavar="S",
        type=speed,
        help="keep the recorded timing, S times faster, S from 0.001 (1: the recorded pace; default: as fast"
        " as the order on each key allows)",
    )
    replay.add_argument(
        "--key", metavar="K", help="replay key K's history alone (with the writes that have no key)"
    )
    replay.add_argument(
        "--until",
        metavar="CORRELATION_ID",
        help="stop after the call with this correlation id (an id not in the recording: an error)",
    )
    replay.add_argument(
        "--seed",
        metavar="CMD",
        help="a shell command giving BK its starting state, run once BK serves ({bk} and $SHIM_BK: its"
        " address); it must exit 0",
    )
    replay.add_argument(
        "--truncated",
        action="store_true",
        help="accept a recording with no end line (its calls up to where it stops); for FILE with only"
        " FILE.partial there (its shim was killed), read FILE.partial",
    )


async def run(args: argparse.Namespace) -> int:
    from shim.replay.run import Options, replay

    done = await replay(
        Options(
            recording=Path(args.recording),
            config=Path(args.config),
            store=args.store,
            bk=args.bk or "",
            bk_command=args.bk_command or "",
            speed=args.speed or 0.0,
            key=args.key or "",
            until=args.until or "",
            seed=args.seed or "",
            truncated=args.truncated,
        )
    )
    summary = done.summary
    verdicts = summary.by_verdict()
    rate = summary.sent / summary.seconds if summary.seconds > 0 else 0.0
    print(
        f"replay: {summary.sent} calls replayed from {printable(str(done.recording))} against BK at"
        f" {done.bk} in {summary.seconds:.1f}s ({rate:.0f} calls/s)"
    )
    print("replay: " + (", ".join(f"{n} {verdict}" for verdict, n in sorted(verdicts.items())) or "no calls"))
    if summary.tainted_from_start:
        print(f"replay: mismatches count as tainted: {summary.tainted_from_start}")
    if summary.answered_by_bk:
        print(
            f"replay: {summary.answered_by_bk} calls skipped: their recorded answers are BK's (recorded while"
            " BK was primary), not Bank's; they were sent to BK to keep its book in step, and prove nothing"
        )
    print(
        f"replay: store written to {printable(str(done.store))};"
        f" judge it with: shim gate --store {printable(str(done.store))}"
    )
    return 0
