"""`shim demo`: the sample Bank and BK, the shim in shadow mode between a
realistic workload and them, and a per-method summary of what differed.

Everything runs in this process on free loopback ports; nothing is left behind
but the diff log file.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import TextIO

import grpc
from grpc import aio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import shim
from comparators import Comparison
from sample_ledger.server import serve
from sample_ledger.workload import run_workload
from shim.sinks import DiffLog, Summary

DESCRIPTOR_SET = "bank.binpb"


@dataclass
class PlantedBug:
    title: str
    hits: int = 0
    example: str = ""


@dataclass
class PlantedBugs:
    """Recognises the package's planted bugs among the comparisons (see the package docstring)."""

    bugs: dict[str, PlantedBug] = field(
        default_factory=lambda: {
            "fee": PlantedBug("1. fee rounding (BK half-even, Bank half-up)"),
            "account": PlantedBug("2. unknown account (BK INVALID_ARGUMENT, Bank NOT_FOUND)"),
            "oversell": PlantedBug("3. oversell (BK books it, Bank FAILED_PRECONDITION)"),
        }
    )

    def __call__(self, comparison: Comparison) -> None:
        method = comparison.method.rsplit("/", 1)[-1]
        for diff in comparison.real_differences:
            if diff.path == "status.code":
                if (diff.bank, diff.bk) == ("NOT_FOUND", "INVALID_ARGUMENT"):
                    self._hit("account", f"{method}: status {diff.bank} vs {diff.bk}")
                elif (diff.bank, diff.bk) == ("FAILED_PRECONDITION", "OK"):
                    self._hit("oversell", f"{method}: status {diff.bank} vs {diff.bk}")
            elif diff.path.endswith("fee") and _differs_as_decimal(diff.bank, diff.bk):
                self._hit("fee", f"{method}: {diff.path} {diff.bank!r} vs {diff.bk!r}")

    def _hit(self, key: str, example: str) -> None:
        bug = self.bugs[key]
        bug.hits += 1
        bug.example = bug.example or example


def _differs_as_decimal(left: object, right: object) -> bool:
    try:
        return Decimal(str(left or "0")) != Decimal(str(right or "0"))
    except InvalidOperation:
        return False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shim demo", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--calls", type=int, default=3000, help="client calls to drive (default 3000)")
    parser.add_argument("--seed", type=int, default=7, help="workload seed (default 7)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent client workers (default 8)")
    parser.add_argument(
        "--diff-log", metavar="FILE", help="where the diff log goes (default: a temporary file)"
    )
    return parser


async def _run(
    args: argparse.Namespace, console: Console, descriptor_set: Path, diff_path: Path, diff_stream: TextIO
) -> int:
    bank, bk = await serve("bank"), await serve("bk")
    summary, planted = Summary(), PlantedBugs()
    config = shim.Config(
        bank=shim.Upstream("bank", bank.address),
        bk=shim.Upstream("bk", bk.address, timeout=5.0),
        listen="127.0.0.1:0",
        mode="shadow",
        descriptor_sets=(str(descriptor_set),),
    )
    try:
        running = await shim.start(config, sinks=[DiffLog(diff_stream), summary, planted])
    except BaseException:
        await bank.stop()
        await bk.stop()
        raise
    console.print(
        f"Bank on {bank.address}, BK on {bk.address}, shim (shadow mode) on {running.address}; "
        f"diff log: {diff_path}"
    )
    started = time.perf_counter()
    try:
        async with aio.insecure_channel(running.address) as channel:
            with Progress(
                TextColumn("[bold]calls through the shim"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("calls", total=args.calls)

                def on_call(method: str, code: grpc.StatusCode) -> None:
                    progress.advance(task)

                await run_workload(
                    channel, args.calls, seed=args.seed, concurrency=args.concurrency, on_call=on_call
                )
        elapsed = time.perf_counter() - started
        await asyncio.wait_for(running.drain(), timeout=30)
    finally:
        await running.stop(grace=1.0)
        await bank.stop()
        await bk.stop()
    _print_summary(console, summary, planted, elapsed, args.calls)
    console.print(f"\nEvery difference is a JSON line in {diff_path}")
    return 0


def _print_summary(
    console: Console, summary: Summary, planted: PlantedBugs, elapsed: float, calls: int
) -> None:
    table = Table(
        title=f"{calls} calls in {elapsed:.1f}s: Bank answered, BK was compared", title_justify="left"
    )
    for column in ("method", "calls", "matched", "mismatched", "shadow errors", "skipped"):
        table.add_column(column, justify="left" if column == "method" else "right")
    methods = summary.methods()
    for method, tally in methods.items():
        table.add_row(
            method.rsplit("/", 1)[-1],
            str(tally.calls),
            str(tally.matched),
            f"[red]{tally.mismatched}[/]" if tally.mismatched else "0",
            str(tally.shadow_errors),
            str(tally.skipped),
        )
    console.print(table)
    console.print("[bold]Top differing paths[/] (one example each, Bank → BK):")
    for method, tally in methods.items():
        if not tally.paths:
            continue
        console.print(f"  [bold]{method.rsplit('/', 1)[-1]}[/]")
        for path, count in tally.paths.most_common(3):
            example = tally.examples[path]
            console.print(
                f"    {path}  {count} calls  {_short(example.bank)} → {_short(example.bk)}", highlight=False
            )
    console.print(
        "\nComparison here is field by field, without semantic rules: benign differences of a rewrite "
        "(id formats, decimal formatting, timestamps, list order) count as mismatches too."
    )
    console.print("\n[bold]Planted bugs in BK that the comparison caught:[/]")
    for bug in planted.bugs.values():
        mark = "[green]caught[/]" if bug.hits else "[red]not seen[/]"
        line = f"  {mark} {bug.title}: {bug.hits} differences"
        console.print(line + (f", e.g. {bug.example}" if bug.example else ""), highlight=False)


def _short(value: object, width: int = 28) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.calls <= 0:
        raise SystemExit("shim demo: error: --calls must be positive")
    diff_path = Path(args.diff_log or Path(tempfile.mkdtemp(prefix="shim-demo-")) / "diff-log.jsonl")
    try:
        diff_stream = diff_path.open("w", encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"shim demo: error: cannot write the diff log {diff_path}: {exc.strerror}") from exc
    with resources.as_file(resources.files("sample_ledger") / DESCRIPTOR_SET) as descriptor_set, diff_stream:
        return asyncio.run(_run(args, Console(), descriptor_set, diff_path, diff_stream))
