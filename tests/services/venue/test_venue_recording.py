"""Recording the venue's calls (a second service, its own interface): in `bank` mode with no BK, through
the Python data plane and through Envoy, every call kind is kept with Bank's answer, on its keys; with
sampling, each account's history is whole or absent; recorded into the store and exported, the same
calls as a file recording holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from grpc import aio

from shim.dataplane import envoy as envoy_process
from shim.recording.format import Recording
from shim.recording.recorder import key_sampled
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests.services.venue.client import VenueClient
from tests.services.venue.messages import BUY, REGISTRY, message_class, new
from tests.services.venue.server import Served
from tests.shim._chain import chained, export, same_as_file

VENUE = "/venue.v1.Venue/"
KEYED = {
    f"venue.v1.Venue/{name}": MethodSettings(key=("account",))
    for name in ("OpenAccount", "Trade", "SubmitBatch", "StreamFills", "GetAccount")
}
PLANES = [
    "python",
    pytest.param("envoy", marks=pytest.mark.skipif(envoy_process.binary() is None, reason="no Envoy binary")),
]


def _order(account: str, quantity: int) -> Any:
    return new("NewOrder", symbol="XYZ", side=BUY, quantity=quantity, limit_price="10.00")


async def _work(client: VenueClient, account: str) -> dict[str, Any]:
    got: dict[str, Any] = {"open": await client.open_account(account, "100000.00")}
    async with client.session() as session:
        got["acks"] = [
            await session.send(new("TradeRequest", account=account, new=_order(account, n))) for n in (1, 2)
        ]
    got["batch"] = await client.submit_batch(
        new("NewOrderRequest", account=account, order=_order(account, 3)) for _ in range(2)
    )
    got["fills"] = await client.stream_fills(account)
    got["account"] = await client.get_account(account)
    return got


@pytest.mark.parametrize("dataplane", PLANES)
async def test_every_call_kind_of_the_venue_is_recorded(bank: Served, tmp_path: Path, dataplane: str) -> None:
    path = tmp_path / "venue.jsonl"
    async with (
        running_shim(
            bank.address, dataplane=dataplane, registry=REGISTRY, methods=KEYED, record={"path": str(path)}
        ) as (shim, _),
        aio.insecure_channel(shim.address) as channel,
    ):
        got = await _work(VenueClient(channel), "V1")
    recording = Recording(path)
    assert recording.check().whole
    calls = list(recording.calls())
    assert [c.method.removeprefix(VENUE) for c in calls] == [
        "OpenAccount",
        "Trade",
        "SubmitBatch",
        "StreamFills",
        "GetAccount",
    ]
    assert all(c.keys == ("V1",) and c.code == 0 for c in calls)
    assert [c.is_write for c in calls] == [True, True, True, False, False]
    opened, trade, batch, fills, account = calls
    ack, summary, fill, acc = (
        message_class(n).FromString for n in ("TradeAck", "BatchSummary", "Fill", "Account")
    )
    assert [acc(m) for m in opened.responses] == [got["open"]]
    assert len(trade.requests) == 2
    assert [ack(m) for m in trade.responses] == got["acks"]
    assert len(batch.requests) == 2
    assert [summary(m) for m in batch.responses] == [got["batch"]]
    # a session's interleaving (each ack came after its own order) is kept where the shim sees the messages
    # as they pass; Envoy's copies trail them, so through Envoy a session is kept whole, as a batch is
    if dataplane == "python":
        assert trade.answers_after == (1, 2)
        first, second = trade.request_times
        assert 0 <= first <= second < trade.latency + 1.0
    else:
        assert (trade.request_times, trade.answers_after) == ((), ())
    assert (batch.request_times, batch.answers_after) == ((), ())  # answered once whole: one place
    assert (opened.request_times, opened.answers_after) == ((), ())  # one request: nothing to interleave
    assert [fill(m) for m in fills.responses] == got["fills"]
    assert len(got["fills"]) > 0
    assert [acc(m) for m in account.responses] == [got["account"]]


async def test_sampled_venue_accounts_are_recorded_whole(bank: Served, tmp_path: Path) -> None:
    path = tmp_path / "venue.jsonl"
    accounts = [f"W{n}" for n in range(12)]
    async with (
        running_shim(
            bank.address, registry=REGISTRY, methods=KEYED, record={"path": str(path), "sample": 0.4}
        ) as (shim, _),
        aio.insecure_channel(shim.address) as channel,
    ):
        for account in accounts:
            await _work(VenueClient(channel), account)
    by_key: dict[str, int] = {}
    for call in Recording(path).calls():
        for key in call.keys:
            by_key[key] = by_key.get(key, 0) + 1
    sampled = {a for a in accounts if key_sampled(a, 0.4)}
    assert 0 < len(sampled) < len(accounts)
    assert by_key == dict.fromkeys(sampled, 5)


@pytest.mark.parametrize("dataplane", PLANES)
async def test_the_venue_recorded_into_the_store_exports_what_a_file_recording_holds(
    bank: Served, tmp_path: Path, dataplane: str
) -> None:
    file, out, store = tmp_path / "venue.jsonl", tmp_path / "exported.jsonl", str(tmp_path / "shim.db")
    async with (
        chained(bank.address, REGISTRY, file, store, methods=KEYED, dataplane=dataplane) as (front, _),
        aio.insecure_channel(front.address) as channel,
    ):
        for account in ("X1", "X2"):
            await _work(VenueClient(channel), account)
    code, _, err = await export(store, out)
    assert (code, err) == (0, ""), err
    calls = same_as_file(out, file)
    assert [c.method.removeprefix(VENUE) for c in calls] == [
        "OpenAccount",
        "Trade",
        "SubmitBatch",
        "StreamFills",
        "GetAccount",
    ] * 2
    assert [c.keys for c in calls] == [("X1",)] * 5 + [("X2",)] * 5
