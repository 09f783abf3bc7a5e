"""Bank and BK side by side behind the shim: concurrent writes reach BK in Bank's per-key order,
reads are sampled, and a stuck shadow call holds only the calls behind it on its key."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

import sample_ledger
from comparators import Comparison, DescriptorRegistry, Verdict
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger, serve
from shim.config import load_file, load_rules_file
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests.backends import scripted_server

HERE = Path(sample_ledger.__file__).parent
REGISTRY = DescriptorRegistry.from_files([HERE / "bank.binpb"])
RULES, RULE_LOCATIONS = load_rules_file(HERE / "rules.toml")
IDS = load_file(HERE / "shim.toml")["ids"]  # the sample's trade ids and page tokens
BY_ACCOUNT = MethodSettings(key=("account_id",))
METHODS = {
    f"bank.v1.Ledger/{name}": BY_ACCOUNT
    for name in ("OpenAccount", "Deposit", "PostTrade", "GetBalance", "GetPortfolio")
}
DEPOSIT = "/bank.v1.Ledger/Deposit"
GET_BALANCE = "/bank.v1.Ledger/GetBalance"
SYMBOLS = ("AAPL", "KO", "INTC")


def _settings(**overrides: Any) -> dict[str, Any]:
    """running_shim settings: the ledger's descriptors, its comparison rules, accounts as keys."""
    return {
        "registry": REGISTRY,
        "rules": RULES,
        "rule_locations": RULE_LOCATIONS,
        "ids": IDS,
        "methods": METHODS,
        "shadow_timeout": 30,
        **overrides,
    }


def _stub(channel: aio.Channel) -> Any:
    return pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]  # generated, untyped


async def _open(stub: Any, accounts: Sequence[str]) -> None:
    for account in accounts:
        await stub.OpenAccount(
            pb.OpenAccountRequest(account_id=account, owner_name=account, initial_deposit="100000000")
        )


async def _client(stub: Any, accounts: Sequence[str], calls: int, seed: int) -> None:
    """One client's calls, one after another: deposits and BUYs on `accounts`, picked at random.

    BUY quantities are 3 mod 4, so that no fee lands on BK's planted rounding bug,
    and nothing is ever sold, so that no oversell is ever tried.
    """
    rng = random.Random(seed)
    for _ in range(calls):
        account = rng.choice(accounts)
        if rng.random() < 0.5:
            amount = f"{rng.randint(1, 99_999)}.{rng.randint(0, 99):02d}"
            await stub.Deposit(pb.DepositRequest(account_id=account, amount=amount, reference="wire"))
        else:
            await stub.PostTrade(
                pb.PostTradeRequest(
                    account_id=account,
                    symbol=rng.choice(SYMBOLS),
                    side=pb.SIDE_BUY,
                    quantity=str(4 * rng.randint(0, 24) + 3),
                    price=f"{rng.randint(1, 500)}.{rng.randint(0, 9999):04d}",
                )
            )


async def _state(
    address: str, accounts: Sequence[str]
) -> dict[str, tuple[Decimal, Decimal, dict[str, Decimal]]]:
    """Each account's cash, unsettled cash and positions, asked of one ledger directly."""
    async with aio.insecure_channel(address) as channel:
        stub = _stub(channel)
        state = {}
        for account in accounts:
            balance = await stub.GetBalance(pb.GetBalanceRequest(account_id=account))
            portfolio = await stub.GetPortfolio(pb.GetPortfolioRequest(account_id=account))
            positions = {p.symbol: Decimal(p.quantity) for p in portfolio.positions}
            state[account] = (Decimal(balance.cash), Decimal(balance.unsettled_cash), positions)
        return state


def _not_matching(comparisons: Sequence[Comparison]) -> list[str]:
    return [
        f"{c.method} {c.exchange.routing_key}: {c.verdict} {c.reason} {c.real_differences}"
        for c in comparisons
        if c.verdict is not Verdict.MATCH
    ]


CLIENTS, CALLS = 8, 40


@pytest.mark.parametrize(
    ("strict", "shared"),
    [
        pytest.param(True, True, id="strict-ordering-shared-accounts"),
        pytest.param(False, False, id="own-accounts-per-client"),
    ],
)
async def test_concurrent_writes_leave_bank_and_bk_in_the_same_state(
    ledgers: tuple[RunningLedger, RunningLedger], strict: bool, shared: bool
) -> None:
    """Concurrent clients writing through the shim leave every account the same in Bank and BK, and
    every mirrored answer (running balances included) matches Bank's: BK saw each account's calls in
    Bank's order (by strict ordering when clients share accounts, by the lanes when they do not)."""
    bank, bk = ledgers
    accounts_of = (
        [[f"SHARED-{i}" for i in range(5)]] * CLIENTS
        if shared
        else [[f"OWN-{c}-{i}" for i in range(2)] for c in range(CLIENTS)]
    )
    accounts = sorted({a for own in accounts_of for a in own})
    async with (
        running_shim(bank.address, bk.address, **_settings(ordering={"strict": strict})) as (shim, sink),
        aio.insecure_channel(shim.address) as channel,
    ):
        stub = _stub(channel)
        await _open(stub, accounts)
        await asyncio.gather(*(_client(stub, accounts_of[c], CALLS, seed=c) for c in range(CLIENTS)))
        await shim.drain()
        comparisons = await sink.wait_for(len(accounts) + CLIENTS * CALLS)
    assert _not_matching(comparisons) == []
    bank_state, bk_state = await _state(bank.address, accounts), await _state(bk.address, accounts)
    assert bk_state == bank_state
    assert all(positions for _, _, positions in bank_state.values())  # trades were booked


async def test_reads_are_sampled_at_the_rate_and_writes_always_mirrored(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """With sampling.reads = 0.25, about a quarter of reads are compared and every one of the others is
    counted as not sampled, while every write is compared."""
    bank, bk = ledgers
    clients, deposits, reads_each = 4, 10, 100
    async with (
        running_shim(
            bank.address,
            bk.address,
            **_settings(
                sampling={"reads": 0.25, "by_key": False},
            ),
        ) as (
            shim,
            sink,
        ),
        aio.insecure_channel(shim.address) as channel,
    ):
        stub = _stub(channel)
        await _open(stub, [f"R-{c}" for c in range(clients)])

        async def client(c: int) -> None:
            account = f"R-{c}"
            for i in range(reads_each):
                if i % (reads_each // deposits) == 0:
                    await stub.Deposit(pb.DepositRequest(account_id=account, amount="10.01"))
                await stub.GetBalance(pb.GetBalanceRequest(account_id=account))

        await asyncio.gather(*(client(c) for c in range(clients)))
        await shim.drain()
        reads = clients * reads_each
        not_sampled = shim.counters.get("reads_not_sampled", GET_BALANCE)
        comparisons = await sink.wait_for(clients + clients * deposits + reads - not_sampled)
    compared_reads = sum(c.method == GET_BALANCE for c in comparisons)
    assert sum(c.method == DEPOSIT for c in comparisons) == clients * deposits
    assert compared_reads + not_sampled == reads
    # 400 reads at 0.25: mean 100, standard deviation 8.7; +-45 is over five of them
    assert abs(compared_reads - 100) <= 45
    assert _not_matching(comparisons) == []  # sampled reads still follow the writes before them


class _ScriptedBk:
    """A BK that records which deposit (by reference) reached it when, and holds "a1" until released."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.arrived: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.release = asyncio.Event()

    async def __call__(
        self, requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> list[bytes]:
        (first,) = [r async for r in requests]
        request = pb.DepositRequest.FromString(first)
        reference = request.reference[:2]
        self.events.append(reference)
        self.arrived[reference].set()
        if reference == "a1":
            await self.release.wait()
            self.events.append("a1 answered")
        return [pb.Balance(account_id=request.account_id).SerializeToString()]


@pytest.fixture
async def bank() -> AsyncIterator[RunningLedger]:
    running = await serve("bank")
    async with aio.insecure_channel(running.address) as channel:
        await _open(_stub(channel), ["A", "B"])
    yield running
    await running.stop()


async def _deposit(stub: Any, account: str, reference: str) -> None:
    await stub.Deposit(pb.DepositRequest(account_id=account, amount="1", reference=reference))


async def test_a_stuck_shadow_write_holds_later_writes_on_its_key_only(bank: RunningLedger) -> None:
    """While BK holds a write on account A, the next write on A waits in the shim, a write on B
    reaches BK, and the held write follows once the first is answered."""
    script = _ScriptedBk()
    bk = await scripted_server(script)
    try:
        async with (
            running_shim(bank.address, bk.address, **_settings()) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            stub = _stub(channel)
            await _deposit(stub, "A", "a1")
            await asyncio.wait_for(script.arrived["a1"].wait(), timeout=10)
            await _deposit(stub, "A", "a2")  # the client has Bank's answer; BK's copy waits
            await _deposit(stub, "B", "b1")
            await asyncio.wait_for(script.arrived["b1"].wait(), timeout=10)
            assert script.events == ["a1", "b1"]
            script.release.set()
            comparisons = await sink.wait_for(3)
    finally:
        await bk.stop()
    assert script.events == ["a1", "b1", "a1 answered", "a2"]
    assert all(c.exchange.shadow is not None and c.exchange.shadow.code == 0 for c in comparisons)


async def test_a_write_given_up_while_waiting_still_holds_the_writes_behind_it(bank: RunningLedger) -> None:
    """A write on A that the shim gives up while it waits behind a stuck one (too large to mirror)
    does not let the next write on A overtake the stuck one at BK, and puts A out of step."""
    script = _ScriptedBk()
    bk = await scripted_server(script)
    try:
        async with (
            running_shim(bank.address, bk.address, **_settings(shadow={"max_capture": 300})) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            stub = _stub(channel)
            await _deposit(stub, "A", "a1")
            await asyncio.wait_for(script.arrived["a1"].wait(), timeout=10)
            await _deposit(stub, "A", "a2" + "x" * 500)  # over shadow.max_capture: given up
            (given_up,) = await sink.wait_for(1)
            await _deposit(stub, "A", "a3")
            await _deposit(stub, "B", "b1")
            await asyncio.wait_for(script.arrived["b1"].wait(), timeout=10)
            assert script.events == ["a1", "b1"]
            script.release.set()
            await sink.wait_for(4)
            assert shim.steps is not None
            marks = dict(shim.steps.keys)
    finally:
        await bk.stop()
    assert script.events == ["a1", "b1", "a1 answered", "a3"]
    assert given_up.exchange.shadow is not None
    assert given_up.exchange.shadow.code == grpc.StatusCode.CANCELLED.value[0]
    assert "max_capture" in given_up.exchange.shadow.local
    # its key, read from the request it gave up on (before, none was: the write was counted unkeyed)
    assert list(marks) == ["A"]
    assert "shadow.max_capture request bytes behind" in marks["A"].reason


CANCEL_TRADE = "/bank.v1.Ledger/CancelTrade"
POST_TRADE = "/bank.v1.Ledger/PostTrade"


async def test_a_trade_cancelled_by_banks_id_is_cancelled_at_bk_by_its_own_id(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """Post a trade, then cancel it by the id Bank minted: BK cancels its own trade (asked directly, it is
    CANCELLED under BK's id), the client sees Bank's ids, and both comparisons match on the id fields."""
    bank, bk = ledgers
    methods = {**METHODS, "bank.v1.Ledger/CancelTrade": BY_ACCOUNT}
    async with (
        running_shim(bank.address, bk.address, **_settings(methods=methods)) as (shim, sink),
        aio.insecure_channel(shim.address) as channel,
    ):
        stub = _stub(channel)
        await _open(stub, ["C1"])
        posted = await stub.PostTrade(
            pb.PostTradeRequest(account_id="C1", symbol="KO", side=pb.SIDE_BUY, quantity="3", price="10")
        )
        cancelled = await stub.CancelTrade(pb.CancelTradeRequest(account_id="C1", trade_id=posted.trade_id))
        comparisons = await sink.wait_for(3)
        assert shim.ids is not None
        bk_id = shim.ids.known("bank", "trade", posted.trade_id)
    assert posted.trade_id.startswith("T")  # Bank's id, as Bank minted it
    assert cancelled.trade_id == posted.trade_id
    assert cancelled.status == pb.TRADE_STATUS_CANCELLED
    assert bk_id is not None
    assert bk_id.startswith("trd_")
    async with aio.insecure_channel(bk.address) as direct:
        (bk_trade,) = (await _stub(direct).ListTrades(pb.ListTradesRequest(account_id="C1"))).trades
    assert (bk_trade.trade_id, bk_trade.status) == (bk_id, pb.TRADE_STATUS_CANCELLED)
    by_method = {c.method: c for c in comparisons}
    for method in (POST_TRADE, CANCEL_TRADE):
        comparison = by_method[method]
        assert comparison.verdict is Verdict.MATCH, comparison
        assert not [d for d in comparison.differences if d.path == "trade_id"]
        assert comparison.exchange.ids == (("trade", posted.trade_id, bk_id),)


async def test_a_cancel_naming_a_trade_nobody_minted_is_sent_unchanged_and_compared(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """A cancel naming an id the id map has never seen (not minted through the shim) is sent to BK as it
    is, so both sides' refusals are compared: both answer NOT_FOUND, and the account stays in step."""
    bank, bk = ledgers
    async with (
        running_shim(bank.address, bk.address, **_settings()) as (shim, sink),
        aio.insecure_channel(shim.address) as channel,
    ):
        stub = _stub(channel)
        await _open(stub, ["C2"])
        with pytest.raises(aio.AioRpcError) as refused:
            await stub.CancelTrade(pb.CancelTradeRequest(account_id="C2", trade_id="T99999999"))
        (comparison,) = await sink.wait_for(1, where=lambda c: c.method == CANCEL_TRADE)
        assert shim.steps is not None
        assert shim.steps.keys == {}
        unknown = shim.counters.get("ids_unknown", CANCEL_TRADE)
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    assert comparison.exchange.shadow is not None
    assert comparison.exchange.shadow.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert comparison.exchange.unmapped == ()
    assert comparison.verdict in (Verdict.MATCH, Verdict.MISMATCH)
    assert [d.path for d in comparison.real_differences if d.path != "status.details"] == []
    assert unknown == 1
