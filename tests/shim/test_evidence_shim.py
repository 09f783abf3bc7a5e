"""Evidence from a running shim: stored comparisons with correlation ids, noise from a second Bank call,
and redacted values that reach no log, no diff log and no store."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from grpc import aio
from rich.console import Console

import sample_ledger
from comparators import DescriptorRegistry, Verdict
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from shim import logs
from shim import report as render
from shim.evidence import build_report
from shim.routing import MethodSettings
from shim.sinks import DiffLog
from shim.store import Store
from shim.testing import running_shim
from tests.backends import Running, called_method, scripted_server

REGISTRY = DescriptorRegistry.from_files([Path(sample_ledger.__file__).parent / "bank.binpb"])
OPEN_ACCOUNT, GET_BALANCE, DEPOSIT = (
    "/bank.v1.Ledger/OpenAccount",
    "/bank.v1.Ledger/GetBalance",
    "/bank.v1.Ledger/Deposit",
)


class Ledger:
    """A scripted ledger: OpenAccount echoes the owner (BK: in capitals), GetBalance answers a random
    `currency` each time (a request id of sorts) and cash "10" (BK: "11" on every tenth call),
    Deposit answers a balance. Counts the calls per method."""

    def __init__(self, bk: bool) -> None:
        self.bk = bk
        self.calls: dict[str, int] = {}
        self.fail_owner = ""  # BK: OpenAccount of this owner fails UNAVAILABLE
        self.second_read = asyncio.Event()  # Bank: the second GetBalance has arrived ...
        self.release_second_read: asyncio.Event | None = None  # ... and waits for this, when set

    async def __call__(
        self, requests: AsyncIterator[bytes], context: aio.ServicerContext[Any, Any]
    ) -> list[bytes]:
        (raw,) = [r async for r in requests]
        method = called_method()
        self.calls[method] = self.calls.get(method, 0) + 1
        if method == OPEN_ACCOUNT:
            request = pb.OpenAccountRequest.FromString(raw)
            if self.bk and request.owner_name == self.fail_owner:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "BK is down")
            owner = request.owner_name.upper() if self.bk else request.owner_name
            return [pb.Account(account_id=request.account_id, owner_name=owner).SerializeToString()]
        if method == GET_BALANCE:
            if self.calls[method] == 2 and self.release_second_read is not None:
                self.second_read.set()
                await self.release_second_read.wait()
            cash = "11" if self.bk and self.calls[method] % 10 == 0 else "10"
            return [pb.Balance(account_id="A", currency=uuid.uuid4().hex, cash=cash).SerializeToString()]
        return [pb.Balance(account_id="A", cash="1").SerializeToString()]


@pytest.fixture
async def sides() -> AsyncIterator[tuple[Ledger, Running, Ledger, Running]]:
    bank, bk = Ledger(bk=False), Ledger(bk=True)
    bank_server, bk_server = await scripted_server(bank), await scripted_server(bk)
    yield bank, bank_server, bk, bk_server
    await bank_server.stop()
    await bk_server.stop()


def _open_request(owner: str) -> bytes:
    return pb.OpenAccountRequest(account_id="A", owner_name=owner).SerializeToString()


async def test_comparisons_are_stored_with_the_callers_correlation_id(
    sides: tuple[Ledger, Running, Ledger, Running], tmp_path: Path
) -> None:
    """Each comparison lands in the store with the value of the configured request metadata key."""
    _, bank, _, bk = sides
    async with (
        running_shim(
            bank.address,
            bk.address,
            registry=REGISTRY,
            store={"url": str(tmp_path / "shim.db"), "correlation_header": "x-request-id"},
        ) as (shim, sink),
        aio.insecure_channel(shim.address) as channel,
    ):
        call = channel.unary_unary(GET_BALANCE)
        for n in range(3):
            await call(
                pb.GetBalanceRequest(account_id="A").SerializeToString(),
                metadata=(("x-request-id", f"req-{n}"),),
            )
        await sink.wait_for(3)
        await shim.drain()  # every sink has it, the store's too
        assert shim.store is not None
        await shim.store.flush()
        rows = await shim.store.select(
            "SELECT correlation_id, method, verdict FROM comparisons ORDER BY correlation_id"
        )
    assert [row[0] for row in rows] == ["req-0", "req-1", "req-2"]
    assert {row[1] for row in rows} == {GET_BALANCE}


async def test_reads_sampled_for_noise_ask_bank_again_and_writes_never_do(
    sides: tuple[Ledger, Running, Ledger, Running], tmp_path: Path
) -> None:
    """With noise.reads = 1 every mirrored read is asked of Bank a second time; what differs between
    Bank's two answers (the random currency) is the comparison's noise, stored with source "bank";
    writes are never asked twice."""
    bank_ledger, bank, _, bk = sides
    async with (
        running_shim(
            bank.address,
            bk.address,
            registry=REGISTRY,
            store={"url": str(tmp_path / "shim.db")},
            noise={"reads": 1.0},
        ) as (shim, sink),
        aio.insecure_channel(shim.address) as channel,
    ):
        for _ in range(10):
            await channel.unary_unary(GET_BALANCE)(pb.GetBalanceRequest(account_id="A").SerializeToString())
        await sink.wait_for(10)  # a write while a read is asked again would void that sample
        await channel.unary_unary(DEPOSIT)(pb.DepositRequest(account_id="A", amount="1").SerializeToString())
        comparisons = await sink.wait_for(11)
        await shim.drain()
        assert shim.store is not None
        await shim.store.flush()
        paths = await shim.store.select(
            "SELECT source, path, count(*) FROM comparison_paths GROUP BY source, path ORDER BY source, path"
        )
        report = await build_report(  # the ten reads asked twice are enough here
            shim.store,
            since=0.0,
            until=time.time() + 1,
            relative=0.2,
            absolute=0.0003,
            min_sampled=10,
        )
    reads = [c for c in comparisons if c.method == GET_BALANCE]
    (write,) = [c for c in comparisons if c.method == DEPOSIT]
    assert bank_ledger.calls == {GET_BALANCE: 20, DEPOSIT: 1}  # each read twice, the write once
    assert all(c.noise_sampled for c in reads)
    assert all([d.path for d in c.noise] == ["currency"] for c in reads)
    assert not write.noise_sampled
    assert not write.noise
    assert shim.counters.get("noise_calls") == 10
    assert sorted(d.path for d in reads[9].real_differences) == ["cash", "currency"]  # BK's tenth: cash too
    assert paths == [("bank", "currency", 10), ("bk", "cash", 1), ("bk", "currency", 10)]
    # in the report, the random field is noise: only the call where BK's cash differs is a real mismatch
    balance = report.method(GET_BALANCE)
    assert balance is not None
    assert (balance.compared, balance.real_mismatches, balance.noise_mismatches) == (10, 1, 9)
    classes = {p.path: (p.classification, p.bk_rate, p.noise_rate) for p in balance.paths}
    assert classes == {"currency": ("noise", 1.0, 1.0), "cash": ("real", 0.1, 0.0)}


async def test_a_write_on_the_key_while_bank_is_asked_again_voids_the_noise_sample(
    sides: tuple[Ledger, Running, Ledger, Running], tmp_path: Path
) -> None:
    """Bank's second answer to a read is no evidence of noise when a write on the read's key came in
    between: the sample is discarded (counted), and the comparison is not noise-sampled."""
    bank_ledger, bank, _, bk = sides
    bank_ledger.release_second_read = asyncio.Event()
    by_account = MethodSettings(key=("account_id",))
    methods = {"bank.v1.Ledger/GetBalance": by_account, "bank.v1.Ledger/Deposit": by_account}
    async with (
        running_shim(
            bank.address,
            bk.address,
            registry=REGISTRY,
            store={"url": ":memory:"},
            noise={"reads": 1.0},
            methods=methods,
        ) as (shim, sink),
        aio.insecure_channel(shim.address) as channel,
    ):
        await channel.unary_unary(GET_BALANCE)(pb.GetBalanceRequest(account_id="A").SerializeToString())
        await asyncio.wait_for(bank_ledger.second_read.wait(), timeout=10)
        await channel.unary_unary(DEPOSIT)(pb.DepositRequest(account_id="A", amount="1").SerializeToString())
        bank_ledger.release_second_read.set()
        (read,) = await sink.wait_for(1, where=lambda c: c.method == GET_BALANCE)
    assert not read.noise_sampled
    assert read.noise == ()
    assert shim.counters.get("noise_discarded", GET_BALANCE) == 1


def _bytes_of(folder: Path) -> bytes:
    """Every file of a folder (the diff log, the store and its WAL), as one string of bytes."""
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())


def _hide_all(text_or_bytes: bytes, secrets_: Iterator[str]) -> list[str]:
    return [s for s in secrets_ if s.encode() in text_or_bytes]


async def test_redacted_values_reach_no_log_no_diff_log_and_no_store(
    sides: tuple[Ledger, Running, Ledger, Running], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Owner names are redacted: the comparison still sees that BK's differ from Bank's (keyed hashes,
    equal values hash alike), but neither the names nor their BK spelling appear in the shim's log,
    the diff log, the store file (payloads kept), the routing keys taken from them, or a report."""
    _, bank, bk_ledger, bk = sides
    monkeypatch.setenv("SHIM_REDACT_KEY", "test-key")
    owners = ["Zelda Quixotic", "Ygritte Vortigern"]
    bk_ledger.fail_owner = owners[1]  # a missed write: its key (an owner name) goes out of step
    secrets_ = [*owners, *(o.upper() for o in owners)]
    log = io.StringIO()
    logs.configure(log)
    diff_path = tmp_path / "diff.jsonl"
    store_path = tmp_path / "shim.db"
    try:
        with diff_path.open("w", encoding="utf-8") as diff_stream:
            async with (
                running_shim(
                    bank.address,
                    bk.address,
                    registry=REGISTRY,
                    store={"url": str(store_path), "payloads": True},
                    redact={
                        "fields": ("bank.v1.Account.owner_name", "bank.v1.OpenAccountRequest.owner_name")
                    },
                    methods={"bank.v1.Ledger/OpenAccount": MethodSettings(key=("owner_name",))},
                    sinks=[DiffLog(diff_stream)],
                ) as (shim, sink),
                aio.insecure_channel(shim.address) as channel,
            ):
                answers = [await channel.unary_unary(OPEN_ACCOUNT)(_open_request(o)) for o in owners]
                comparisons = await sink.wait_for(2)
                await shim.drain()
                assert shim.store is not None
                await shim.store.flush()
                assert shim.steps is not None
                marked = list(shim.steps.keys)
    finally:
        structlog.reset_defaults()
    assert [pb.Account.FromString(a).owner_name for a in answers] == owners  # the client sees Bank's answer
    # the comparisons come as they are made, not as the calls were: the first owner's is the one Bank
    # and BK both answered
    (first,) = [c for c in comparisons if owners[0].encode() in c.exchange.requests[0]]
    assert first.verdict is Verdict.MISMATCH
    (difference,) = first.real_differences
    assert difference.path == "owner_name"
    assert str(difference.bank).startswith("redacted:")
    assert str(difference.bk).startswith("redacted:")
    assert difference.bank != difference.bk
    assert len(marked) == 1
    assert marked[0].startswith("redacted:")  # the routing key, hashed
    everything = _bytes_of(tmp_path) + log.getvalue().encode()
    assert b"redacted:" in everything
    assert "key out of step" in log.getvalue()
    assert _hide_all(everything, iter(secrets_)) == []
    # nor in any report made from the store: terminal, JSON, HTML
    store = Store.open(str(store_path))
    await store.start()
    try:
        report = await build_report(
            store, since=0.0, until=time.time() + 1, relative=0.2, absolute=0.0003, min_sampled=20
        )
    finally:
        await store.close()
    printed = io.StringIO()
    render.terminal(report, Console(file=printed, width=200))
    shown = [printed.getvalue(), json.dumps(render.to_json(report)), render.html(report)]
    assert all("redacted:" in text for text in shown[1:])
    assert _hide_all("".join(shown).encode(), iter(secrets_)) == []
    rows = [json.loads(line) for line in diff_path.read_text().splitlines()]
    assert rows
    assert all("Zelda" not in json.dumps(row) for row in rows)


async def test_each_differing_path_shows_its_call_with_the_request_when_payloads_are_kept(
    sides: tuple[Ledger, Running, Ledger, Running], tmp_path: Path
) -> None:
    """With store.payloads, a path's example carries the call's first request, decoded with the
    descriptors, in the JSON and on the page; without descriptors (or payloads), the page says so."""
    _, bank, _, bk = sides
    store = str(tmp_path / "shim.db")
    settings = {"methods": {"bank.v1.Ledger/OpenAccount": MethodSettings(key=("account_id",))}}
    async with (
        running_shim(
            bank.address, bk.address, registry=REGISTRY, store={"url": store, "payloads": True}, **settings
        ) as (
            shim,
            sink,
        ),
        aio.insecure_channel(shim.address) as channel,
    ):
        await channel.unary_unary(OPEN_ACCOUNT)(_open_request("ada lovelace"))
        await sink.wait_for(1)
        await shim.drain()
    opened = Store.open(store)
    await opened.start()
    try:
        report = await build_report(
            opened,
            since=0,
            until=time.time() + 1,
            relative=0.2,
            absolute=0.0003,
            min_sampled=20,
            registry=REGISTRY,
        )
        bare = await build_report(
            opened, since=0, until=time.time() + 1, relative=0.2, absolute=0.0003, min_sampled=20
        )
    finally:
        await opened.close()
    (path,) = report.methods[0].paths
    assert (path.path, path.example_bank, path.example_bk) == ("owner_name", "ada lovelace", "ADA LOVELACE")
    assert path.example_key == "A"
    assert path.example_request == {"account_id": "A", "owner_name": "ada lovelace"}
    example = render.to_json(report)["methods"][0]["paths"][0]["example"]
    assert (example["key"], example["request"]) == ("A", {"account_id": "A", "owner_name": "ada lovelace"})
    assert "&#34;owner_name&#34;: &#34;ada lovelace&#34;" in render.html(report)
    assert bare.methods[0].paths[0].example_request is None  # no descriptors: not decoded
    assert "request not shown" in render.html(bare)
