"""The traffic generator: call counts, mix, determinism, one call per account at a time, and speed."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
import pytest

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.workload import WorkloadStats, run_workload
from tests.sample_ledger._support import Connected, connected

ALL_METHODS = {
    "OpenAccount",
    "GetAccount",
    "ListAccounts",
    "Deposit",
    "PostTrade",
    "CancelTrade",
    "GetPosition",
    "GetPortfolio",
    "GetBalance",
    "ListTrades",
    "SettleTrades",
    "StreamLedgerEntries",
    "BookTrades",
    "TradeSession",
}


def _account_of(request: Any) -> str:
    if isinstance(request, pb.TradeSessionRequest):
        return request.order.account_id
    return str(getattr(request, "account_id", ""))


class AccountTracker(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Client interceptor noting every account that ever had two calls in flight at once."""

    def __init__(self) -> None:
        self.in_flight: Counter[str] = Counter()
        self.overlapping: set[str] = set()

    def _start(self, requests: Iterable[Any]) -> set[str]:
        accounts = {_account_of(r) for r in requests}
        accounts.discard("")
        for account in accounts:
            self.in_flight[account] += 1
            if self.in_flight[account] > 1:
                self.overlapping.add(account)
        return accounts

    def _finish(self, accounts: set[str]) -> None:
        for account in accounts:
            self.in_flight[account] -= 1

    async def _awaited(self, accounts: set[str], call: Any) -> Any:
        try:
            await call
        except grpc.aio.AioRpcError:
            pass  # the caller's own await raises it again
        finally:
            self._finish(accounts)
        return call

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        accounts = self._start([request])
        return await self._awaited(accounts, await continuation(details, request))

    async def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        requests = list(request_iterator)
        accounts = self._start(requests)
        return await self._awaited(accounts, await continuation(details, iter(requests)))

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        accounts = self._start([request])
        return self._streamed(accounts, await continuation(details, request))

    async def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        requests = list(request_iterator)
        accounts = self._start(requests)
        return self._streamed(accounts, await continuation(details, iter(requests)))

    async def _streamed(self, accounts: set[str], call: Any) -> AsyncIterator[Any]:
        try:
            async for item in call:
                yield item
        finally:
            self._finish(accounts)


async def _run(ledger: Connected, calls: int, **options: Any) -> WorkloadStats:
    return await run_workload(ledger.channel, calls, **options)


async def test_workload_makes_exactly_the_calls_asked_and_reports_each(bank: Connected) -> None:
    """run_workload makes `calls` calls, counts them by method and code, and reports each to on_call."""
    reported: list[tuple[str, grpc.StatusCode]] = []
    stats = await _run(bank, 1200, seed=3, on_call=lambda method, code: reported.append((method, code)))
    assert stats.total == 1200 == len(reported) == sum(stats.counts.values())
    assert Counter((m, c.name) for m, c in reported) == Counter(stats.counts)
    assert {method for method, _ in stats.counts} == ALL_METHODS
    assert stats.count("OpenAccount") == 1200 // 60
    assert stats.count(code="OK") + stats.count("PostTrade", "FAILED_PRECONDITION") + stats.count(
        code="NOT_FOUND"
    ) == (stats.total)


async def test_workload_counts_bk_answers_without_raising(bk: Connected) -> None:
    """Against BK the unknown-account calls come back INVALID_ARGUMENT (planted bug 2) and are counted."""
    stats = await _run(bk, 1000, seed=5)
    assert stats.total == 1000
    assert stats.count(code="INVALID_ARGUMENT") > 0
    assert stats.count(code="NOT_FOUND") == 0


async def test_workload_is_deterministic_for_a_seed() -> None:
    """Two runs with one seed against fresh Banks give the same counts; another seed gives other counts."""
    results = []
    for seed in (21, 21, 22):
        async with connected("bank") as ledger:
            results.append((await _run(ledger, 500, seed=seed)).counts)
    assert results[0] == results[1]
    assert results[0] != results[2]


async def test_workload_never_has_two_calls_in_flight_on_one_account() -> None:
    """With 8 workers, no account ever has two calls in flight (checked by a client interceptor)."""
    async with connected("bank") as ledger:
        tracker = AccountTracker()
        async with grpc.aio.insecure_channel(ledger.running.address, interceptors=[tracker]) as channel:
            stats = await run_workload(channel, 800, seed=9, concurrency=8)
            assert stats.total == 800
            assert tracker.overlapping == set()
            assert sum(tracker.in_flight.values()) == 0
            stub = pb_grpc.LedgerStub(channel)
            request = pb.GetAccountRequest(account_id="W9-00000")
            await asyncio.gather(stub.GetAccount(request), stub.GetAccount(request))
            assert tracker.overlapping == {"W9-00000"}  # the tracker does see overlaps


@pytest.mark.parametrize("kind", ["bank", "bk"])
async def test_three_thousand_calls_finish_well_under_twenty_seconds(kind: str) -> None:
    """3,000 workload calls take well under 20 s, and against Bank show the documented mix of calls."""
    async with connected(kind) as ledger:
        started = time.perf_counter()
        stats = await _run(ledger, 3000, seed=11)
        elapsed = time.perf_counter() - started
    assert stats.total == 3000
    assert elapsed < 10, elapsed
    if kind == "bank":
        _assert_documented_mix(stats)


def _assert_documented_mix(stats: WorkloadStats) -> None:
    """PostTrade is the largest share, reads about a quarter, oversells ~3% and unknown accounts ~1%."""
    share = {method: stats.count(method) / stats.total for method in ALL_METHODS}
    assert 0.38 < share["PostTrade"] < 0.55
    reads = share["GetBalance"] + share["GetPosition"] + share["GetPortfolio"] + share["GetAccount"]
    assert 0.2 < reads < 0.33
    assert 0.02 < stats.count("PostTrade", "FAILED_PRECONDITION") / stats.total < 0.045
    assert 0.005 < stats.count(code="NOT_FOUND") / stats.total < 0.02
    for method in ["ListTrades", "Deposit"]:
        assert 0.03 < share[method] < 0.08, method
    for method in ["CancelTrade", "SettleTrades", "StreamLedgerEntries", "BookTrades", "TradeSession"]:
        assert 0.01 < share[method] < 0.045, method
    assert 0.004 < share["ListAccounts"] < 0.02


async def test_workload_of_zero_calls_does_nothing(bank: Connected) -> None:
    """Asking for no calls makes none and reports an empty count."""
    stats = await _run(bank, 0)
    assert (stats.total, dict(stats.counts)) == (0, {})
    assert bank.running.servicer.book.accounts == {}
