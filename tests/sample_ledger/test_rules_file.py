"""sample_ledger/rules.toml against real answers: every benign difference tolerated by name, every bug real.

Each case makes the same calls on a fresh sample Bank and BK, compares their last
answers (as the shim would: raw bytes, status and trailers) under the rules file,
and checks which rules tolerated what.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message

from comparators import (
    Comparison,
    DescriptorRegistry,
    Exchange,
    Outcome,
    Verdict,
    build_rules,
    compare,
)
from comparators.ids import IdFields, pair_up
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from shim._outcome import snapshot
from shim.config import load_file, load_rules_file
from shim.units import parse_duration
from tests.sample_ledger._support import BUY, SELL, Connected, order

SAMPLE = Path(__file__).resolve().parents[2] / "sample_ledger"
LEDGER = "/bank.v1.Ledger/"

# the rules file's names for the benign differences, numbered as in sample_ledger's docstring (trade
# ids and page tokens, 1 and 6, are not tolerated by rule: shim.toml declares them as ids to map)
DECIMALS, BY_SYMBOL, SETTLED, CLOCK, VENUE, WORDING = (
    "decimal formatting",
    "positions by symbol",
    "settled trades in any order",
    "server clock",
    "venue (BK only)",
    "error wording",
)


REGISTRY = DescriptorRegistry.from_files([SAMPLE / "bank.binpb"])
SPECS, LOCATIONS = load_rules_file(SAMPLE / "rules.toml")
RULES = build_rules(SPECS, REGISTRY, parse_duration, LOCATIONS)
IDS = IdFields(load_file(SAMPLE / "shim.toml")["ids"], REGISTRY)


def test_the_rules_file_builds_against_the_sample_descriptors() -> None:
    """rules.toml is valid for bank.binpb: one rule per benign difference (two for error wording), by name."""
    names = [binding.rule.name for binding in RULES.bindings]
    assert names == [DECIMALS, BY_SYMBOL, SETTLED, CLOCK, VENUE, WORDING, WORDING]


# ---- the same calls on both sides ----------------------------------------------------------


async def _call(channel: grpc.aio.Channel, method: str, requests: tuple[bytes, ...]) -> Outcome:
    """The Outcome of one call with raw bytes both ways, as the shim sees it (errors included)."""
    info = REGISTRY.method(method)
    assert info is not None
    make = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }[info.client_streaming, info.server_streaming]
    call = make(method)(iter(requests) if info.client_streaming else requests[0])
    received: list[bytes] = []
    try:
        if info.server_streaming:
            async for item in call:
                received.append(item)
        else:
            received.append(await call)
    except grpc.aio.AioRpcError:
        pass
    return await snapshot(call, tuple(received), 0.0)


def _answers(method: str, outcome: Outcome) -> list[message.Message]:
    info = REGISTRY.method(method)
    assert info is not None
    cls = REGISTRY.message_class(info.output_type)
    return [cls.FromString(raw) for raw in outcome.messages]


@dataclass
class Twins:
    """A Bank and a BK on their own clocks (1.5 s apart, so that every server timestamp differs).

    Like the shim, it learns which BK id is which Bank id from the answers it compares, and hands
    each comparison the pairs of the ids in BK's answer.
    """

    bank: Connected
    bk: Connected
    pairs: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, BK id) -> Bank id

    def __post_init__(self) -> None:
        self.bank.running.servicer.book.clock = lambda: 1_700_000_000_123_456_789
        self.bk.running.servicer.book.clock = lambda: datetime(2023, 11, 14, 22, 13, 21, 623_456, tzinfo=UTC)

    async def both(self, step: Callable[[Connected], Awaitable[Any]]) -> None:
        for ledger in (self.bank, self.bk):
            await step(ledger)

    async def compare(self, name: str, *requests: message.Message) -> Comparison:
        """Call `name` with `requests` on both sides; the comparison of the answers under rules.toml."""
        method = LEDGER + name
        raw = tuple(r.SerializeToString() for r in requests)
        bank, bk = await _call(self.bank.channel, method, raw), await _call(self.bk.channel, method, raw)
        bank_ids = IDS.find(method, "response", _answers(method, bank), requests[0])
        bk_ids = IDS.find(method, "response", _answers(method, bk), requests[0])
        for left, right in pair_up(bank_ids, bk_ids):
            self.pairs.setdefault((right.kind, right.value), left.value)
        ids = tuple(
            (f.kind, self.pairs[(f.kind, f.value)], f.value)
            for f in bk_ids
            if (f.kind, f.value) in self.pairs
        )
        return compare(Exchange(method, raw, bank, bk, ids=ids), REGISTRY, RULES, IDS)


@pytest.fixture
def twins(bank: Connected, bk: Connected) -> Twins:
    return Twins(bank, bk)


Scenario = Callable[[Twins], Awaitable[Comparison]]


async def _opened(twins: Twins, *accounts: str) -> None:
    for ledger in (twins.bank, twins.bk):
        for account in accounts or ("A1",):
            await ledger.open(account, deposit="100000")


async def _traded(twins: Twins) -> None:
    """A1 opened, then 10 AAPL at 100.5 and 3 KO at 10 bought (Bank lists AAPL first, BK KO first)."""
    await _opened(twins)
    await twins.compare("PostTrade", order("A1", "AAPL", BUY, "10", "100.5"))
    await twins.compare("PostTrade", order("A1", "KO", BUY, "3", "10"))


async def open_account(twins: Twins) -> Comparison:
    request = pb.OpenAccountRequest(account_id="A1", owner_name="Ada", initial_deposit="250")
    return await twins.compare("OpenAccount", request)


async def post_trade(twins: Twins) -> Comparison:
    await _opened(twins)
    return await twins.compare("PostTrade", order("A1", "AAPL", BUY, "10", "100.5"))


async def get_portfolio(twins: Twins) -> Comparison:
    await _traded(twins)
    return await twins.compare("GetPortfolio", pb.GetPortfolioRequest(account_id="A1"))


async def get_balance(twins: Twins) -> Comparison:
    await _opened(twins)  # cash "100000.00" in Bank, "100000" in BK
    return await twins.compare("GetBalance", pb.GetBalanceRequest(account_id="A1"))


async def list_trades(twins: Twins) -> Comparison:
    await _traded(twins)
    return await twins.compare("ListTrades", pb.ListTradesRequest(account_id="A1", page_size=1))


async def list_accounts(twins: Twins) -> Comparison:
    await _opened(twins, "A", "B")
    return await twins.compare("ListAccounts", pb.ListAccountsRequest(page_size=1))


async def settle_trades(twins: Twins) -> Comparison:
    await _traded(twins)
    return await twins.compare("SettleTrades", pb.SettleTradesRequest(account_id="A1"))


async def stream_entries(twins: Twins) -> Comparison:
    await _traded(twins)
    return await twins.compare("StreamLedgerEntries", pb.StreamLedgerEntriesRequest(account_id="A1"))


async def bad_request(twins: Twins) -> Comparison:
    await _opened(twins)
    return await twins.compare("PostTrade", order("A1", "AAPL", BUY, "lots", "-1"))


async def already_exists(twins: Twins) -> Comparison:
    await _opened(twins)
    return await twins.compare("OpenAccount", pb.OpenAccountRequest(account_id="A1", owner_name="Ada"))


async def book_trades(twins: Twins) -> Comparison:
    await _opened(twins)
    orders = [order("A1", "AAPL", BUY, "10", "100.5"), order("A1", "KO", BUY, "2", "10")]
    return await twins.compare("BookTrades", *orders)


def _session(*orders: pb.PostTradeRequest) -> list[pb.TradeSessionRequest]:
    return [pb.TradeSessionRequest(order=o) for o in orders]


async def trade_session(twins: Twins) -> Comparison:
    await _opened(twins)
    orders = _session(
        order("A1", "AAPL", BUY, "10", "100.5", "o-1"), order("A1", "AAPL", BUY, "0", "1", "o-2")
    )
    return await twins.compare("TradeSession", *orders)


BENIGN: list[Any] = [
    pytest.param(open_account, {CLOCK}, id="open-account"),
    pytest.param(post_trade, {DECIMALS, CLOCK, VENUE}, id="post-trade"),
    pytest.param(get_portfolio, {DECIMALS, CLOCK}, id="portfolio-in-another-order"),
    pytest.param(get_balance, {DECIMALS, CLOCK}, id="balance"),
    pytest.param(list_trades, {DECIMALS, CLOCK, VENUE}, id="list-trades-page"),
    pytest.param(list_accounts, {CLOCK}, id="list-accounts-page"),
    pytest.param(settle_trades, {CLOCK}, id="settlement"),
    pytest.param(stream_entries, {DECIMALS, CLOCK}, id="ledger-entries-stream"),
    pytest.param(book_trades, {DECIMALS}, id="book-trades-client-stream"),
    pytest.param(trade_session, {DECIMALS, CLOCK, VENUE, WORDING}, id="trade-session-bidi-stream"),
    pytest.param(bad_request, {WORDING}, id="bad-request-wording"),
    pytest.param(already_exists, {WORDING}, id="already-exists-wording"),
]


@pytest.mark.parametrize(("scenario", "names"), BENIGN)
async def test_benign_differences_are_tolerated_by_name(
    twins: Twins, scenario: Scenario, names: set[str]
) -> None:
    """Bank's and BK's real answers differ only in the benign ways; rules.toml tolerates each of those
    differences, by the rule the docstring's difference names, so the verdict is a match."""
    comparison = await scenario(twins)
    assert comparison.real_differences == ()
    assert comparison.verdict is Verdict.MATCH
    assert {d.rule for d in comparison.differences} == names


async def test_positions_pair_by_symbol_whatever_their_order(twins: Twins) -> None:
    """Bank and BK list the positions in different orders; the differences inside them are at
    `positions[symbol=S]`, never at an index."""
    comparison = await get_portfolio(twins)
    paths = {d.path for d in comparison.differences if d.path.startswith("positions")}
    assert paths == {
        f"positions[symbol={symbol}].{field}"
        for symbol in ("AAPL", "KO")
        for field in ("average_price", "cost_basis")
    }


# ---- the planted bugs stay real ----------------------------------------------------------------


async def fee_rounding(twins: Twins) -> Comparison:
    await _opened(twins)
    return await twins.compare("PostTrade", order("A1", "AAPL", BUY, "5", "10"))


async def fee_rounding_in_cash(twins: Twins) -> Comparison:
    await _opened(twins)
    await twins.both(lambda ledger: ledger.trade("A1", "AAPL", BUY, "1", "10"))
    return await twins.compare("GetBalance", pb.GetBalanceRequest(account_id="A1"))


async def unknown_account(twins: Twins) -> Comparison:
    return await twins.compare("GetBalance", pb.GetBalanceRequest(account_id="ghost"))


async def oversell(twins: Twins) -> Comparison:
    await _traded(twins)
    return await twins.compare("PostTrade", order("A1", "KO", SELL, "10", "11"))


async def unknown_account_in_session(twins: Twins) -> Comparison:
    return await twins.compare("TradeSession", *_session(order("ghost", "AAPL", BUY, "3", "10", "o-1")))


async def oversell_in_session(twins: Twins) -> Comparison:
    await _opened(twins)
    return await twins.compare("TradeSession", *_session(order("A1", "KO", SELL, "3", "10", "o-1")))


BUGS: list[Any] = [
    pytest.param(fee_rounding, {("fee", "0.03", "0.02")}, id="1-fee-rounding"),
    pytest.param(
        fee_rounding_in_cash,
        {("cash", "99989.99", "99990"), ("unsettled_cash", "-10.01", "-10")},
        id="1-fee-rounding-in-cash",
    ),
    pytest.param(
        unknown_account,
        {("status.code", "NOT_FOUND", "INVALID_ARGUMENT"), ("status.rich_details", None, "decoded")},
        id="2-unknown-account",
    ),
    pytest.param(
        unknown_account_in_session,
        {("[0].rejected.code", "NOT_FOUND", "INVALID_ARGUMENT")},
        id="2-unknown-account-in-a-session",
    ),
    pytest.param(
        oversell_in_session,
        {("[0].rejected", "decoded", None), ("[0].booked", None, "decoded")},
        id="3-oversell-in-a-session",
    ),
    pytest.param(
        oversell,
        {("status.code", "FAILED_PRECONDITION", "OK"), ("<messages>", 0, 1)},
        id="3-oversell",
    ),
]


def _brief(value: object) -> object:
    """A value as the table writes it: a whole message as "decoded"."""
    return "decoded" if isinstance(value, dict) else value


@pytest.mark.parametrize(("scenario", "real"), BUGS)
async def test_planted_bugs_stay_real_differences(
    twins: Twins, scenario: Scenario, real: set[tuple[str, object, object]]
) -> None:
    """Under rules.toml each planted bug is a mismatch whose real differences are exactly the bug's."""
    comparison = await scenario(twins)
    assert comparison.verdict is Verdict.MISMATCH
    found = {(d.path, _brief(d.bank), _brief(d.bk)) for d in comparison.real_differences}
    assert found == real
