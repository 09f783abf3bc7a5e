"""`shim demo`: the sample Bank and BK, the shim in shadow mode between a
realistic workload and them, and a per-method summary of what differed.

With `--bk native`, BK serves only its own interface (`bk.v1.Journal`) and the
shim reaches it through the sample's adapters (`sample_ledger.adapter`).

Everything runs in this process on free loopback ports; nothing is left behind
but the diff log file.

Over 400 lines: one command, from start to verdict, read top to bottom.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import grpc
import structlog
from grpc import aio
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

import shim
from comparators import DescriptorRegistry
from sample_ledger._attribution import ADAPTER_BUG, ADAPTER_TITLE, TITLES, Attribution
from sample_ledger._money import from_shares
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger._proto.bk.v1 import journal_pb2 as bk_pb
from sample_ledger._proto.bk.v1 import journal_pb2_grpc as bk_grpc
from sample_ledger.server import serve
from sample_ledger.workload import run_workload
from shim import report as render
from shim.config import build as build_config
from shim.config import load_file, load_rules_file, merged
from shim.evidence import build_report
from shim.gate import evaluate
from shim.sinks import DiffLog, Summary
from shim.store import OutOfStep, Store
from shim.terminal_text import cell, printable

CONFIG = "shim.toml"  # beside bank.binpb and rules.toml, which it names
ADAPTERS = "sample_ledger.adapter"  # Bank's interface over BK's native one (--bk native)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shim demo", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--calls", type=int, default=3000, help="client calls to drive (default 3000)")
    parser.add_argument("--seed", type=int, default=7, help="workload seed (default 7)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent client workers (default 8)")
    parser.add_argument(
        "--diff-log", metavar="FILE", help="where the diff log goes (default: a temporary file)"
    )
    parser.add_argument(
        "--html", metavar="FILE", help="where the HTML report goes (default: the temporary folder)"
    )
    parser.add_argument(
        "--bk",
        choices=("compatible", "native"),
        default="compatible",
        help="compatible: BK speaks Bank's interface (the default); native: BK speaks its own "
        f"interface (bk.v1.Journal) and the shim reaches it through the adapters in {ADAPTERS}",
    )
    parser.add_argument("--rules", metavar="FILE", help="comparison rules (default: the sample's rules.toml)")
    parser.add_argument(
        "--no-rules",
        action="store_true",
        help="compare field by field with no rules (every benign difference shows)",
    )
    return parser


async def _run(
    args: argparse.Namespace,
    console: Console,
    settings: dict[str, Any],
    rules_label: str,
    diff_path: Path,
    diff_stream: TextIO,
) -> int:
    native = args.bk == "native"
    bank, bk = await serve("bank"), await serve("bk-native" if native else "bk")
    summary, attribution = Summary(), Attribution()
    if native:
        settings = {**settings, "adapters": ADAPTERS}
    config = build_config(
        {
            **settings,
            "bank": shim.Upstream("bank", bank.address),
            "bk": shim.Upstream("bk", bk.address, timeout=settings["bk"].timeout),
            "listen": "127.0.0.1:0",
        }
    )
    try:
        running = await shim.start(config, sinks=[DiffLog(diff_stream), summary, attribution])
    except BaseException:
        await bank.stop()
        await bk.stop()
        raise
    speaks = f"its own interface, through the adapters in {ADAPTERS}" if native else "Bank's interface"
    console.print(
        f"Bank on {bank.address}, BK ({speaks}) on {bk.address}, shim (shadow mode) on {running.address}\n"
        f"config: {escape(str(args.config_path))}; rules: {escape(rules_label)}\n"
        f"diff log: {escape(str(diff_path))}",
        soft_wrap=True,  # the paths printed whole, never folded: the terminal wraps the lines
    )
    started, began = time.perf_counter(), time.time() - 1
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
                    channel,
                    args.calls,
                    seed=args.seed,
                    concurrency=args.concurrency,
                    on_call=on_call,
                )
        elapsed = time.perf_counter() - started
        await asyncio.wait_for(running.drain(), timeout=60)
        out_of_step = running.steps.keys if running.steps is not None else {}
        books = await _books(bank.address), await (_native_books if native else _books)(bk.address)
    finally:
        await running.stop(grace=1.0)
        await bank.stop()
        await bk.stop()
    titles = {**TITLES, ADAPTER_BUG: ADAPTER_TITLE} if native else TITLES
    unexplained = _print_summary(console, summary, attribution, elapsed, args.calls, titles)
    _print_out_of_step(console, out_of_step)
    astray = _print_books(console, *books, out_of_step)
    page = Path(args.html) if args.html else Path(config.store.url).parent / "report.html"
    await _evidence(console, config, page, began)
    console.print(
        f"Every comparison that did not match is also a JSON line in {escape(str(diff_path))}",
        soft_wrap=True,
    )
    return 1 if (unexplained and not args.no_rules) or astray else 0


async def _evidence(console: Console, config: shim.Config, page: Path, began: float) -> None:
    """The stored evidence of the run: the HTML report, and what `shim gate` says of it."""
    store = Store.open(config.store.url)
    await store.start()
    try:
        report = await build_report(
            store,
            since=began,
            until=time.time() + 1,
            relative=config.noise.relative,
            absolute=config.noise.absolute,
            min_sampled=config.noise.min_sampled,
            registry=DescriptorRegistry.from_files(
                config.descriptors.descriptor_sets
            ),  # each example's request
        )
    finally:
        await store.close()
    result = evaluate(
        report,
        min_compared=config.gate.min_compared,
        min_answered=config.gate.min_answered,
        max_mismatch_rate=config.gate.max_mismatch_rate,
        max_unproven_rate=config.gate.max_unproven_rate,
        required_methods=config.gate.methods,
    )
    try:
        await asyncio.to_thread(page.write_text, render.html(report, result), encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"shim demo: error: cannot write the HTML report {page}: {exc.strerror}") from exc
    failed = {c.method for c in result.failed}
    console.print(
        f"\n[bold]The evidence[/] ({sum(m.calls for m in report.methods):,} comparisons in "
        f"{escape(config.store.url)}): "
        f"open {escape(str(page))} in a browser.\n"
        f"[bold]shim gate[/] (per method: at least {config.gate.min_compared} "
        f"clean comparisons, {min(config.gate.min_answered, config.gate.min_compared)} of them answered by"
        f" Bank, at most {config.gate.max_mismatch_rate:.2%} real mismatches among them and "
        f"{config.gate.max_unproven_rate:.2%} unproven calls): "
        + (
            "[green]PASS[/]"
            if result.passed
            else f"[red]FAIL[/] for {len(failed)} of {len(report.methods)} methods "
            f"({', '.join(sorted(escape(printable(m.rsplit('/', 1)[-1])) for m in failed if m))}):"
            " BK is not ready to be primary"
        ),
        highlight=False,
        soft_wrap=True,
    )


Book = dict[str, tuple[dict[str, Decimal], Counter[int]]]  # account: positions, trades by status


async def _books(address: str) -> Book:
    """Each account's positions and its trades counted by status, asked of one ledger directly."""
    books: Book = {}
    async with aio.insecure_channel(address) as channel:
        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]  # generated, untyped
        accounts: list[str] = []
        token = ""
        while True:
            page = await stub.ListAccounts(pb.ListAccountsRequest(page_size=100, page_token=token))
            accounts += [a.account_id for a in page.accounts]
            token = page.next_page_token
            if not token:
                break
        for account in accounts:
            portfolio = await stub.GetPortfolio(pb.GetPortfolioRequest(account_id=account))
            statuses: Counter[int] = Counter()
            token = ""
            while True:
                trades = await stub.ListTrades(
                    pb.ListTradesRequest(account_id=account, page_size=100, page_token=token)
                )
                statuses.update(t.status for t in trades.trades)
                token = trades.next_page_token
                if not token:
                    break
            positions = {p.symbol: Decimal(p.quantity) for p in portfolio.positions if Decimal(p.quantity)}
            books[account] = (positions, statuses)
    return books


_STATUSES = {
    bk_pb.EXECUTION_STATE_LIVE: pb.TRADE_STATUS_BOOKED,
    bk_pb.EXECUTION_STATE_REVERSED: pb.TRADE_STATUS_CANCELLED,
    bk_pb.EXECUTION_STATE_CLEARED: pb.TRADE_STATUS_SETTLED,
}


async def _native_books(address: str) -> Book:
    """The same, asked of a BK that speaks only its own interface (bk.v1.Journal)."""
    books: Book = {}
    async with aio.insecure_channel(address) as channel:
        journal = bk_grpc.JournalStub(channel)  # type: ignore[no-untyped-call]  # generated, untyped
        clients: list[str] = []
        offset = 0
        while True:
            page = await journal.ScanClients(bk_pb.ScanClientsRequest(limit=100, offset=offset))
            clients += [c.number for c in page.clients]
            offset = page.next_offset
            if not offset:
                break
        for client in clients:
            view = await journal.Holdings(bk_pb.HoldingsRequest(client=client))
            statuses: Counter[int] = Counter()
            offset = 0
            while True:
                scan = bk_pb.ScanExecutionsRequest(client=client, limit=100, offset=offset)
                executions = await journal.ScanExecutions(scan)
                statuses.update(_STATUSES[e.state] for e in executions.executions)
                offset = executions.next_offset
                if not offset:
                    break
            shares = {h.instrument: from_shares(h.shares) for h in view.holdings}
            books[client] = ({symbol: q for symbol, q in shares.items() if q}, statuses)
    return books


def _print_books(console: Console, bank: Book, bk: Book, marks: dict[str, OutOfStep]) -> int:
    """Bank's and BK's books side by side; returns how many accounts in step differ (none should)."""
    differ = {a for a in bank.keys() | bk.keys() if bank.get(a) != bk.get(a)}
    in_step = [a for a in bank if a not in marks and "*" not in marks]
    astray = sorted(a for a in differ if a in in_step)
    cancelled = sum(statuses[pb.TRADE_STATUS_CANCELLED] for _, statuses in bank.values())
    console.print(
        f"\n[bold]The books, asked directly after the run[/]: {len(in_step) - len(astray)} of "
        f"{len(in_step)} accounts in step hold the same positions and trades in BK as in Bank. "
        f"Clients cancelled {cancelled} trades by Bank's ids; BK cancelled its own. "
        f"{len(differ - set(astray))} of {len(marks)} accounts out of step differ.",
        highlight=False,
    )
    if astray:
        console.print(cell(f"  accounts in step whose books differ: {', '.join(astray[:10])}", "red"))
    return len(astray)


def _print_summary(
    console: Console,
    summary: Summary,
    attribution: Attribution,
    elapsed: float,
    calls: int,
    titles: dict[int, str],
) -> int:
    table = Table(
        title=f"{calls} calls in {elapsed:.1f}s: Bank answered, BK was compared", title_justify="left"
    )
    for column in (
        "method",
        "calls",
        "matched",
        "real mismatches",
        "tolerated diffs",
        "tainted",
        "shadow errors",
        "skipped",
        "errors",
    ):
        table.add_column(column, justify="left" if column == "method" else "right")
    methods = summary.methods()
    tolerated: Counter[str] = Counter()
    for method, tally in methods.items():
        tolerated.update(tally.tolerated)
        table.add_row(
            cell(method.rsplit("/", 1)[-1]),
            str(tally.calls),
            str(tally.matched),
            f"[red]{tally.mismatched}[/]" if tally.mismatched else "0",
            str(sum(tally.tolerated.values())),
            str(tally.tainted),
            str(tally.shadow_errors),
            str(tally.skipped),
            f"[red]{tally.errors}[/]" if tally.errors else "0",
        )
    console.print(table)
    if tolerated:
        by_rule = "; ".join(f"{rule} {count:,}" for rule, count in tolerated.most_common())
        console.print(
            f"[bold]Tolerated[/]: {sum(tolerated.values()):,} differences ({by_rule})", highlight=False
        )
    console.print("[bold]Real differences, top paths[/] (calls; one example, Bank → BK):")
    for method, tally in methods.items():
        if not tally.paths:
            continue
        console.print(Text.assemble("  ", cell(method.rsplit("/", 1)[-1], "bold")))
        for path, count in tally.paths.most_common(3):
            example = tally.examples[path]
            console.print(cell(f"    {path}  {count}  {_short(example.bank)} → {_short(example.bk)}"))
    explained, unexplained, examples = attribution.attribute()
    console.print("\n[bold]Calls with real differences, by the planted bug in BK that explains them:[/]")
    for bug, title in titles.items():
        mark = ("caught", "green") if explained[bug] else ("not seen", "red")
        for_example = f", e.g. {examples[bug]}" if bug in examples else ""
        console.print(Text.assemble("  ", mark, cell(f" {title}: {explained[bug]} calls{for_example}")))
    style = "red" if unexplained else "green"
    console.print(f"  [{style}]unexplained: {len(unexplained)} calls[/]")
    for account, diffs in unexplained[:5]:
        first = diffs[0]
        console.print(cell(f"    {account or '-'}: {first.path} {first.bank!r} → {first.bk!r}"))
    return len(unexplained)


def _print_out_of_step(console: Console, marks: dict[str, OutOfStep]) -> None:
    if not marks:
        console.print("\n[bold]Keys out of step[/]: none; BK got every write Bank applied, and did the same.")
        return
    # grouped by what happened, without each error's own details
    reasons = Counter(
        f"{m.method.rsplit('/', 1)[-1]}: {re.sub(r' [(][^)]*[)]', '', m.reason)}" for m in marks.values()
    )
    console.print(
        f"\n[bold]Keys out of step[/]: {len(marks)} (a write one side applied and the other did not; "
        "later mismatches on them are [bold]tainted[/], not counted as real):",
        highlight=False,
    )
    for reason, count in reasons.most_common(3):
        console.print(cell(f"  {count} keys: {reason}"))
    console.print("  Once BK's book is brought in line for a key: shim resync KEY", highlight=False)


def _short(value: object, width: int = 28) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # the summary tells what the shim's warnings would (keys out of step, ...), once
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    if args.calls <= 0:
        raise SystemExit("shim demo: error: --calls must be positive")
    workdir = Path(tempfile.mkdtemp(prefix="shim-demo-"))
    diff_path = Path(args.diff_log or workdir / "diff-log.jsonl")
    try:
        diff_stream = diff_path.open("w", encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"shim demo: error: cannot write the diff log {diff_path}: {exc.strerror}") from exc
    package = resources.files("sample_ledger")
    with resources.as_file(package / CONFIG) as config_path, diff_stream:
        args.config_path = config_path
        try:
            settings = load_file(config_path)  # the sample's descriptors, routing keys, ids and rules
            settings = merged(
                settings, {"store": {"url": str(workdir / "shim.db")}}
            )  # fresh ledgers: a fresh id map
            rules_label = f"{config_path.parent / 'rules.toml'}"
            if args.no_rules:
                settings["rules"], settings["rule_locations"], rules_label = (), (), "none"
            elif args.rules:
                settings["rules"], settings["rule_locations"] = load_rules_file(args.rules)
                rules_label = args.rules
            return asyncio.run(_run(args, Console(), settings, rules_label, diff_path, diff_stream))
        except shim.ShimError as exc:
            raise SystemExit(f"shim demo: error: {exc}") from exc
