"""Comparisons per second of the comparator engine, against decoding baselines measured in the same run.

Over 400 lines: one benchmark, read top to bottom: the realistic answers it builds, their expected
verdicts, and its two parts.

    python bench/compare.py [--quick]

Part 1, throughput on one core: realistic answers of the sample ledger (a
ListTradesResponse of 50 trades, a Portfolio of 50 positions) as Bank sends
them, against three BK variants: the same bytes; only the benign differences
the sample rules tolerate (decimals normalised, positions in another order,
timestamps a few ms apart, venue set), with trade ids in BK's format and
another page token, which the sample's [ids] pair through the id map; and those
plus 3 real differences (3 amounts a cent apart). The verdicts are asserted
before anything is timed. Each case runs in a single thread loop, best of
several repeats, beside two baselines on the same pair of messages: decoding
both (ParseFromString), and decoding both, turning them into dicts
(MessageToDict) and diffing those with DeepDiff.

Part 2, off the event loop: an asyncio loop runs a probe that sleeps 1 ms in a
loop and records how late it wakes up, while differing-case exchanges are
compared by one worker: a ThreadPoolExecutor(1) (what shim.pipeline does) or a
ProcessPoolExecutor(1) (the worker builds its own registry and rules once;
exchanges go pickled; "process" sends the whole Comparison back,
"process-lean" only the differences, the parent re-attaching its exchange).
Once as a burst (a backlog for the worker), once paced at half of what one
core compares, as calls would arrive; and an idle loop as the baseline.
Prints throughput and the loop's wake-up lateness for each, and which executor
to use.

Ends with one JSON line holding every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import functools
import gc
import json
import multiprocessing
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from deepdiff import DeepDiff
from google.protobuf import json_format, message, timestamp_pb2

from comparators import (
    Comparison,
    DescriptorRegistry,
    Difference,
    Exchange,
    Outcome,
    RuleSet,
    Verdict,
    build_rules,
    compare,
)
from comparators.ids import IdFields
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from shim.config import Upstream, build, load_file, load_rules_file
from shim.parts import load_ids as ids_of
from shim.units import parse_duration

ROOT = Path(__file__).resolve().parent.parent
DESCRIPTORS = ROOT / "sample_ledger" / "bank.binpb"
RULES = ROOT / "sample_ledger" / "rules.toml"

LIST_TRADES = "/bank.v1.Ledger/ListTrades"
GET_PORTFOLIO = "/bank.v1.Ledger/GetPortfolio"
ACCOUNT = "ACC-000417"
SIZE = 50
REAL = 3  # real differences planted in the differing case
TARGETS = {"identical": 50_000.0, "differing": 2_000.0}  # comparisons per second, from the issue

CENT = Decimal("0.01")
FOUR = Decimal("0.0001")
EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z


# -- realistic answers -----------------------------------------------------------------------


def load() -> tuple[DescriptorRegistry, RuleSet, IdFields]:
    """The descriptors, rules and id fields the shim would run the sample ledger with."""
    registry = DescriptorRegistry.from_files([DESCRIPTORS])
    specs, locations = load_rules_file(RULES)
    return registry, build_rules(specs, registry, parse_duration, locations), _ids(registry)


def _ids(registry: DescriptorRegistry) -> IdFields:
    """Where the sample's ids sit ([ids] of its config): its trade ids and page tokens are compared
    through the id map, so each exchange carries the pairs the map would know."""
    settings = load_file(ROOT / "sample_ledger" / "shim.toml")
    fields = ids_of(build({**settings, "bank": Upstream("bank", "127.0.0.1:1")}), registry)
    assert fields is not None
    return fields


def bank_money(value: Decimal) -> str:
    """Bank: money with exactly 2 decimals ("1005.00")."""
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def bank_price(value: Decimal) -> str:
    """Bank: prices with at least 2 decimals ("100.50", "10.125")."""
    exponent = value.as_tuple().exponent
    return str(value.quantize(CENT)) if isinstance(exponent, int) and exponent > -2 else str(value)


def bank_quantity(value: Decimal) -> str:
    """Bank: quantities as integers when whole, else with as few decimals as needed."""
    return bk_decimal(value)


def bk_decimal(value: Decimal) -> str:
    """BK: every decimal normalised, no trailing zeros, no exponent ("100.5", "1005", "0")."""
    return format(value.normalize(), "f")


def timestamp(nanos: int) -> timestamp_pb2.Timestamp:
    seconds, fraction = divmod(nanos, 1_000_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=fraction)


@dataclass(frozen=True)
class TradeRow:
    number: int
    symbol: str
    side: int
    quantity: Decimal
    price: Decimal
    fee: Decimal
    notional: Decimal
    booked_ns: int  # Bank's clock
    bk_delay_ns: int  # how much later BK's clock read


@dataclass(frozen=True)
class PositionRow:
    symbol: str
    quantity: Decimal
    average_price: Decimal
    cost_basis: Decimal


def symbols(rng: random.Random, count: int) -> list[str]:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    seen: set[str] = set()
    while len(seen) < count:
        seen.add("".join(rng.choice(letters) for _ in range(rng.choice((3, 4, 4, 5)))))
    return sorted(seen)


def trade_rows(rng: random.Random, names: list[str]) -> list[TradeRow]:
    rows = []
    clock = EPOCH * 1_000_000_000
    for number in range(1, SIZE + 1):
        clock += rng.randrange(1, 90) * 1_000_000_000 + rng.randrange(1_000_000_000)
        lots = rng.choice((rng.randrange(1, 500), rng.randrange(1, 5000)))
        quantity = Decimal(lots) / rng.choice((1, 1, 1, 2, 4))
        price = Decimal(rng.randrange(100, 500_000)) / rng.choice((100, 100, 1000, 10))
        rows.append(
            TradeRow(
                number=number,
                symbol=rng.choice(names),
                side=rng.choice((pb.SIDE_BUY, pb.SIDE_BUY, pb.SIDE_SELL)),
                quantity=quantity,
                price=price,
                fee=(quantity * Decimal("0.005")).quantize(CENT, rounding=ROUND_HALF_UP),
                notional=(quantity * price).quantize(CENT, rounding=ROUND_HALF_UP),
                booked_ns=clock,
                bk_delay_ns=rng.randrange(1_000_000, 6_000_000),
            )
        )
    return rows


def position_rows(rng: random.Random, names: list[str]) -> list[PositionRow]:
    order = list(names)
    rng.shuffle(order)  # Bank: the order the symbols were first acquired in
    rows = []
    for symbol in order:
        quantity = Decimal(rng.randrange(1, 20_000)) / rng.choice((1, 1, 2, 4))
        average = (Decimal(rng.randrange(100, 500_000_000)) / 1_000_000).quantize(FOUR, ROUND_HALF_UP)
        cost_basis = (quantity * average).quantize(CENT, ROUND_HALF_UP)
        rows.append(PositionRow(symbol, quantity, average, cost_basis))
    return rows


def bank_trades(rows: list[TradeRow]) -> pb.ListTradesResponse:
    return pb.ListTradesResponse(
        trades=[
            pb.Trade(
                trade_id=f"T{row.number:08d}",
                account_id=ACCOUNT,
                symbol=row.symbol,
                side=row.side,  # type: ignore[arg-type]
                quantity=bank_quantity(row.quantity),
                price=bank_price(row.price),
                fee=bank_money(row.fee),
                notional=bank_money(row.notional),
                client_order_id=f"ord-{row.number:06d}",
                booked_at=timestamp(row.booked_ns),
                status=pb.TRADE_STATUS_BOOKED,
            )
            for row in rows
        ],
        next_page_token="50",
    )


def bk_trades(rows: list[TradeRow], rng: random.Random, off_by_a_cent: set[int]) -> pb.ListTradesResponse:
    """BK's answer: same trades, BK's formats and clock; the fees of `off_by_a_cent` one cent lower."""
    trades = []
    for index, row in enumerate(rows):
        fee = row.fee - CENT if index in off_by_a_cent else row.fee
        booked = (row.booked_ns + row.bk_delay_ns) // 1000 * 1000  # BK's clock: microseconds
        trades.append(
            pb.Trade(
                trade_id="trd_" + rng.randbytes(6).hex(),
                account_id=ACCOUNT,
                symbol=row.symbol,
                side=row.side,  # type: ignore[arg-type]
                quantity=bk_decimal(row.quantity),
                price=bk_decimal(row.price),
                fee=bk_decimal(fee),
                notional=bk_decimal(row.notional),
                client_order_id=f"ord-{row.number:06d}",
                booked_at=timestamp(booked),
                status=pb.TRADE_STATUS_BOOKED,
                venue="XNYS",
            )
        )
    token = base64.urlsafe_b64encode(trades[-1].trade_id.encode()).decode()  # BK's opaque page token
    return pb.ListTradesResponse(trades=trades, next_page_token=token)


def bank_portfolio(rows: list[PositionRow], as_of_ns: int) -> pb.Portfolio:
    return pb.Portfolio(
        account_id=ACCOUNT,
        positions=[
            pb.Position(
                account_id=ACCOUNT,
                symbol=row.symbol,
                quantity=bank_quantity(row.quantity),
                average_price=str(row.average_price),  # exactly 4 decimals
                cost_basis=bank_money(row.cost_basis),
            )
            for row in rows
        ],
        as_of=timestamp(as_of_ns),
    )


def bk_portfolio(rows: list[PositionRow], as_of_ns: int, off_by_a_cent: set[str]) -> pb.Portfolio:
    """BK's answer: positions sorted by symbol descending, BK's formats and clock."""
    positions = [
        pb.Position(
            account_id=ACCOUNT,
            symbol=row.symbol,
            quantity=bk_decimal(row.quantity),
            average_price=bk_decimal(row.average_price),
            cost_basis=bk_decimal(row.cost_basis + CENT if row.symbol in off_by_a_cent else row.cost_basis),
        )
        for row in sorted(rows, key=lambda r: r.symbol, reverse=True)
    ]
    return pb.Portfolio(account_id=ACCOUNT, positions=positions, as_of=timestamp(as_of_ns // 1000 * 1000))


def outcome(answer: message.Message, latency: float) -> Outcome:
    return Outcome(
        code=0,
        initial_metadata=(("content-type", "application/grpc"),),
        messages=(answer.SerializeToString(),),
        latency=latency,
    )


def exchange(method: str, request: message.Message, bank: message.Message, bk: message.Message) -> Exchange:
    pairs: list[tuple[str, str, str]] = []
    if isinstance(bank, pb.ListTradesResponse) and isinstance(bk, pb.ListTradesResponse):
        pairs += [("trade", b.trade_id, k.trade_id) for b, k in zip(bank.trades, bk.trades, strict=True)]
        pairs.append(("page", bank.next_page_token, bk.next_page_token))
    return Exchange(
        ids=tuple(pairs),
        method=method,
        requests=(request.SerializeToString(),),
        primary=outcome(bank, 0.0042),
        shadow=outcome(bk, 0.0061),
        primary_is_bank=True,
        is_write=False,
        routing_key=ACCOUNT,
        started_at=EPOCH + 3600.0,
        correlation_id="c0ffee00-0000-4000-8000-000000000001",
    )


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "identical", "benign" or "differing"
    exchange: Exchange
    output_type: str


def cases(seed: int = 20260101) -> list[Case]:
    """Both answers, each as Bank sends it against BK's three variants."""
    rng = random.Random(seed)
    names = symbols(rng, SIZE)
    trades = trade_rows(rng, names)
    positions = position_rows(rng, names)
    bad_trades = set(rng.sample(range(SIZE), REAL))
    bad_positions = set(rng.sample(names, REAL))
    as_of = EPOCH * 1_000_000_000 + 7 * 3600 * 1_000_000_000 + 123_456_789
    bk_as_of = as_of + 3_217_000
    bank_t, bank_p = bank_trades(trades), bank_portfolio(positions, as_of)
    variants: dict[tuple[str, str, str], tuple[message.Message, message.Message, dict[str, Any]]] = {
        ("trades", LIST_TRADES, "bank.v1.ListTradesResponse"): (
            pb.ListTradesRequest(account_id=ACCOUNT, page_size=SIZE),
            bank_t,
            {
                "identical": bank_t,
                "benign": bk_trades(trades, rng, set()),
                "differing": bk_trades(trades, rng, bad_trades),
            },
        ),
        ("portfolio", GET_PORTFOLIO, "bank.v1.Portfolio"): (
            pb.GetPortfolioRequest(account_id=ACCOUNT),
            bank_p,
            {
                "identical": bank_p,
                "benign": bk_portfolio(positions, bk_as_of, set()),
                "differing": bk_portfolio(positions, bk_as_of, bad_positions),
            },
        ),
    }
    return [
        Case(f"{label} {kind}", kind, exchange(method, request, bank, bk), output_type)
        for (label, method, output_type), (request, bank, answers) in variants.items()
        for kind, bk in answers.items()
    ]


def check(case: Case, comparison: Comparison) -> None:
    """The verdict each case must get under the sample rules, or the benchmark measures the wrong thing."""
    real = comparison.real_differences
    tolerated = [d for d in comparison.differences if d.rule]
    where = f"{case.name}: {comparison.verdict} {[(d.path, d.kind.value, d.bank, d.bk) for d in real][:5]}"
    if case.kind == "identical":
        assert comparison.verdict is Verdict.MATCH, where
        assert not comparison.differences, where
    elif case.kind == "benign":
        assert comparison.verdict is Verdict.MATCH, where
        assert not real, where
        assert comparison.decoded, where
        rules = {d.rule for d in tolerated}
        expected = (
            {"decimal formatting", "server clock", "venue (BK only)"}  # ids and tokens: paired by the id map
            if case.output_type.endswith("ListTradesResponse")
            else {"decimal formatting", "server clock"}
        )
        assert expected <= rules, f"{case.name}: tolerated by {rules}"
    else:
        assert comparison.verdict is Verdict.MISMATCH, where
        assert len(real) == REAL, where
        field = "fee" if case.output_type.endswith("ListTradesResponse") else "cost_basis"
        assert all(d.path.endswith(f".{field}") for d in real), where


# -- timing -----------------------------------------------------------------------------------


def rate(fn: Callable[[], object], repeats: int, budget: float) -> float:
    """Calls per second of `fn` in one thread: the best of `repeats` timed loops of about `budget` s each."""
    number, elapsed = 1, 0.0
    while elapsed < budget / 10:  # calibrate
        number *= 2
        elapsed = _loop(fn, number)
    number = max(1, round(number * budget / elapsed))
    best = min(_loop(fn, number) for _ in range(repeats))
    return number / best


def _loop(fn: Callable[[], object], number: int) -> float:
    started = time.perf_counter()
    for _ in range(number):
        fn()
    return time.perf_counter() - started


def decode_both(cls: type[message.Message], left: bytes, right: bytes) -> Callable[[], object]:
    def run() -> object:
        a, b = cls(), cls()
        a.ParseFromString(left)
        b.ParseFromString(right)
        return a, b

    return run


def deepdiff_both(cls: type[message.Message], left: bytes, right: bytes) -> Callable[[], object]:
    def run() -> object:
        a, b = cls(), cls()
        a.ParseFromString(left)
        b.ParseFromString(right)
        return DeepDiff(json_format.MessageToDict(a), json_format.MessageToDict(b))

    return run


def single_core(
    all_cases: list[Case],
    registry: DescriptorRegistry,
    rules: RuleSet,
    ids: IdFields,
    repeats: int,
    budget: float,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]]]:
    rows: dict[str, dict[str, Any]] = {}
    baselines: dict[str, dict[str, float]] = {}
    for case in all_cases:
        cls = registry.message_class(case.output_type)
        if case.output_type not in baselines:
            same_type = [c for c in all_cases if c.output_type == case.output_type]
            differing = next(c for c in same_type if c.kind == "differing")
            d_left = differing.exchange.primary.messages[0]
            d_right = differing.exchange.shadow.messages[0]  # type: ignore[union-attr]
            baselines[case.output_type] = {
                "decode_per_s": rate(decode_both(cls, d_left, d_right), repeats, budget),
                "deepdiff_per_s": rate(deepdiff_both(cls, d_left, d_right), repeats, budget),
                "bytes": float(len(d_left) + len(d_right)),
            }
        comparison = compare(case.exchange, registry, rules, ids)
        per_s = rate(functools.partial(compare, case.exchange, registry, rules, ids), repeats, budget)
        base = baselines[case.output_type]
        target = TARGETS.get(case.kind, TARGETS["differing"])
        rows[case.name] = {
            "kind": case.kind,
            "verdict": comparison.verdict.value,
            "real": len(comparison.real_differences),
            "tolerated": len(comparison.differences) - len(comparison.real_differences),
            "per_s": per_s,
            "us": 1e6 / per_s,
            "x_decode": base["decode_per_s"] / per_s,  # engine time in units of decoding both messages
            "vs_deepdiff": per_s / base["deepdiff_per_s"],  # how many times faster than the DeepDiff route
            "target": target,
            "meets": per_s >= target,
        }
    return rows, baselines


def print_table(rows: dict[str, dict[str, Any]], baselines: dict[str, dict[str, float]]) -> None:
    print(f"comparisons per second, one thread, best of repeats ({SIZE}-element answers, sample rules)")
    header = (
        f"{'case':<22} {'verdict':<9} {'real':>4} {'tol':>4} {'per s':>10} {'µs':>9} "
        f"{'x decode':>9} {'vs deepdiff':>11} {'target':>8}  ok"
    )
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        print(
            f"{name:<22} {row['verdict']:<9} {row['real']:>4} {row['tolerated']:>4} {row['per_s']:>10,.0f} "
            f"{row['us']:>9.1f} {row['x_decode']:>9.2f} {row['vs_deepdiff']:>10.1f}x {row['target']:>8,.0f}  "
            f"{'yes' if row['meets'] else 'NO'}"
        )
    for output_type, base in baselines.items():
        short = output_type.rsplit(".", 1)[-1]
        for label, key in (("decode both", "decode_per_s"), ("decode+dict+deepdiff", "deepdiff_per_s")):
            per_s = base[key]
            print(
                f"{'  baseline':<11}{short[:11]:<11} {label:<20} {per_s:>10,.0f} {1e6 / per_s:>9.1f}"
                f"   ({base['bytes']:.0f} bytes of answers)"
            )
    print("x decode: the comparison's time / decoding both answers (the baseline);")
    print("vs deepdiff: how many times faster than decode + MessageToDict + DeepDiff of the same pair")


# -- off the event loop -----------------------------------------------------------------------

_WORKER: tuple[DescriptorRegistry, RuleSet, IdFields] | None = None
CHUNK = 25  # exchanges submitted per turn of the loop, as calls complete in bursts


def _worker_init() -> None:
    global _WORKER
    _WORKER = load()


def _worker_ready() -> bool:
    return _WORKER is not None


def _worker_compare(item: Exchange) -> Comparison:
    """In the worker process: the whole Comparison goes back, the exchange's bytes with it."""
    assert _WORKER is not None
    return compare(item, *_WORKER)


def _worker_compare_lean(item: Exchange) -> tuple[Verdict, tuple[Difference, ...], str, bool]:
    """In the worker process: only what the parent does not have goes back."""
    assert _WORKER is not None
    result = compare(item, *_WORKER)
    return result.verdict, result.differences, result.reason, result.decoded


def _rebuild(item: Exchange, lean: tuple[Verdict, tuple[Difference, ...], str, bool]) -> Comparison:
    verdict, differences, reason, decoded = lean
    return Comparison(item, verdict, differences, reason, decoded)


async def _probe(samples: list[tuple[float, float]], stop: asyncio.Event, interval: float = 0.001) -> None:
    """Sleeps `interval` in a loop; records (when it woke, how late)."""
    while not stop.is_set():
        asked = time.perf_counter()
        await asyncio.sleep(interval)
        woke = time.perf_counter()
        samples.append((woke, woke - asked - interval))


Submit = Callable[[asyncio.AbstractEventLoop, Exchange], "asyncio.Future[Any]"]


async def _loaded_loop(
    submit: Submit | None, items: list[Exchange], pace: float | None, idle: float
) -> dict[str, Any]:
    """The probe's lateness while `items` are submitted and compared, and the comparisons per second.

    `pace` None: a burst, CHUNK exchanges per turn of the loop, so the worker has a backlog;
    else that many exchanges per second, as calls would arrive.
    """
    loop = asyncio.get_running_loop()
    samples: list[tuple[float, float]] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(samples, stop))
    finished = loop.create_future()
    done = wrong = 0

    def count(future: asyncio.Future[Any]) -> None:
        """Like the pipeline: count the verdict and let the comparison go (kept, they would load the GC)."""
        nonlocal done, wrong
        result = future.result()
        wrong += not (isinstance(result, Comparison) and result.verdict is Verdict.MISMATCH)
        done += 1
        if done == len(items):
            finished.set_result(None)

    def send(batch: list[Exchange]) -> None:
        for item in batch:
            submit(loop, item).add_done_callback(count)  # type: ignore[misc]

    await asyncio.sleep(0.05)  # the probe is running before the load arrives
    started = time.perf_counter()
    if submit is None:
        await asyncio.sleep(idle)
    elif pace is None:
        for first in range(0, len(items), CHUNK):
            send(items[first : first + CHUNK])
            await asyncio.sleep(0)
        await finished
    else:
        sent = 0
        while sent < len(items):
            due = min(len(items), int((time.perf_counter() - started) * pace) + 1)
            send(items[sent:due])
            sent = max(sent, due)
            await asyncio.sleep(0.001)
        await finished
    ended = time.perf_counter()
    stop.set()
    await probe
    assert wrong == 0, f"{wrong} comparisons were not the expected mismatch"
    seconds = ended - started
    lateness = sorted(late for woke, late in samples if started <= woke <= ended) or [seconds]
    q = statistics.quantiles(lateness, n=100, method="inclusive") if len(lateness) > 1 else lateness * 99
    return {
        "seconds": seconds,
        "per_s": done / seconds if done else None,
        "wakeups_per_s": len(lateness) / seconds,
        "p50_ms": q[49] * 1e3,
        "p99_ms": q[98] * 1e3,
        "max_ms": lateness[-1] * 1e3,
        "stalled": sum(late for late in lateness if late > 0.010) / seconds,  # share of time >10 ms late
    }


def off_loop(
    items: list[Exchange],
    pace: float,
    registry: DescriptorRegistry,
    rules: RuleSet,
    ids: IdFields,
    seconds: float,
) -> dict[str, dict[str, Any]]:
    """Idle loop, then a burst of `items` and `seconds` at `pace` per second, on a thread and on processes."""
    threads = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="compare")
    processes = concurrent.futures.ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init
    )
    paced = [items[i % len(items)] for i in range(round(pace * seconds))]
    try:
        assert processes.submit(_worker_ready).result(timeout=60)  # started and initialised: not timed
        processes.submit(_worker_compare, items[0]).result()
        threads.submit(compare, items[0], registry, rules, ids).result()

        def on_thread(loop: asyncio.AbstractEventLoop, item: Exchange) -> asyncio.Future[Any]:
            return loop.run_in_executor(threads, compare, item, registry, rules, ids)

        def on_process(loop: asyncio.AbstractEventLoop, item: Exchange) -> asyncio.Future[Any]:
            return loop.run_in_executor(processes, _worker_compare, item)

        def on_process_lean(loop: asyncio.AbstractEventLoop, item: Exchange) -> asyncio.Future[Any]:
            done = loop.create_future()

            def rebuilt(future: asyncio.Future[Any]) -> None:
                error = future.exception()
                if error is not None:
                    done.set_exception(error)
                else:
                    done.set_result(_rebuild(item, future.result()))

            loop.run_in_executor(processes, _worker_compare_lean, item).add_done_callback(rebuilt)
            return done

        plan: list[tuple[str, Submit | None, list[Exchange], float | None]] = [
            ("idle", None, [], None),
            ("burst thread", on_thread, items, None),
            ("burst process", on_process, items, None),
            ("burst process-lean", on_process_lean, items, None),
            ("paced thread", on_thread, paced, pace),
            ("paced process-lean", on_process_lean, paced, pace),
        ]
        runs = {}
        for name, submit, load_, rate_ in plan:
            gc.collect()
            runs[name] = asyncio.run(_loaded_loop(submit, load_, rate_, seconds))
        return runs
    finally:
        threads.shutdown()
        processes.shutdown()


def recommend(runs: dict[str, dict[str, Any]]) -> str:
    thread, process = runs["burst thread"], runs["burst process-lean"]
    paced_thread, paced_process = runs["paced thread"], runs["paced process-lean"]
    speed = process["per_s"] / thread["per_s"]
    figures = (
        f"burst: process-lean {process['per_s']:,.0f}/s vs thread {thread['per_s']:,.0f}/s ({speed:.2f}x), "
        f"loop stalled up to {process['max_ms']:,.0f} ms vs {thread['max_ms']:,.0f} ms; "
        f"paced: loop p99 {paced_process['p99_ms']:.2f} ms vs {paced_thread['p99_ms']:.2f} ms"
        f" (idle {runs['idle']['p99_ms']:.2f} ms)"
    )
    responsive = (
        process["max_ms"] * 3 < thread["max_ms"] or paced_process["p99_ms"] * 1.5 < paced_thread["p99_ms"]
    )
    # the loop serves the clients: its responsiveness outweighs comparison throughput, within 2x
    if speed >= 1.2 or (speed >= 0.5 and responsive):
        return f"recommendation: ProcessPoolExecutor(1), results without the exchange: {figures}"
    return f"recommendation: ThreadPoolExecutor(1): {figures}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter timings (noisier figures)")
    parser.add_argument("--seconds", type=float, default=2.5, help="about how long each executor run lasts")
    args = parser.parse_args()
    repeats, budget = (3, 0.1) if args.quick else (5, 0.25)
    registry, rules, ids = load()
    all_cases = cases()
    for case in all_cases:
        check(case, compare(case.exchange, registry, rules, ids))
    print(f"python {sys.version.split()[0]}; verdicts checked for {len(all_cases)} cases")
    rows, baselines = single_core(all_cases, registry, rules, ids, repeats, budget)
    print_table(rows, baselines)

    differing = [c.exchange for c in all_cases if c.kind == "differing"]
    capacity = statistics.harmonic_mean([rows[c.name]["per_s"] for c in all_cases if c.kind == "differing"])
    count = max(200, min(20_000, round(capacity * args.seconds)))
    pace = round(capacity / 2)
    runs = off_loop([differing[i % 2] for i in range(count)], pace, registry, rules, ids, args.seconds)
    print()
    print(
        f"off the event loop, one worker; differing cases; a task sleeps 1 ms in a loop and records how late"
        f" it wakes (GIL switch interval {sys.getswitchinterval() * 1e3:.0f} ms).\n"
        f"burst: {count} exchanges submitted {CHUNK} per loop turn; paced: {pace}/s (half of one core's"
        f" capacity) for {args.seconds:g} s. process-lean: the worker sends back the differences, not the"
        f" exchange."
    )
    print(
        f"{'run':<19} {'per s':>7} {'seconds':>7} {'wakes/s':>7} {'p50 ms':>7} {'p99 ms':>8} {'max ms':>8}"
        f" {'stalled':>7}"
    )
    for name, run in runs.items():
        per_s = f"{run['per_s']:>7,.0f}" if run["per_s"] else f"{'-':>7}"
        print(
            f"{name:<19} {per_s} {run['seconds']:>7.2f} {run['wakeups_per_s']:>7.0f} {run['p50_ms']:>7.2f}"
            f" {run['p99_ms']:>8.2f} {run['max_ms']:>8.1f} {run['stalled']:>7.0%}"
        )
    print("stalled: share of the run the loop spent more than 10 ms late")
    line = recommend(runs)
    print(line)
    summary = {
        "cases": rows,
        "baselines": baselines,
        "executors": {"burst_exchanges": count, "paced_per_s": pace, **runs},
        "recommendation": line.split(":", 2)[1].strip(),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
