"""The adapter seam (`shim.adapters`), with the sample Bank and a BK speaking bank.v1 on real servers.

The adapters are in tests/shim/_adapters.py; the sample's own adapters over BK's native interface
are tested in tests/sample_ledger/test_adapter.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

import sample_ledger
from comparators import DescriptorRegistry, DiffKind, Exchange, Outcome, Verdict, compare
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim.adapters import load_adapters
from shim.config import Config, Upstream, build, load_file, load_rules_file, parse
from shim.errors import ConfigError, NeedsDescriptors
from shim.parts import load_rules
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests.backends import Behaviour, scripted_server
from tests.shim import _adapters

REGISTRY = DescriptorRegistry.from_files([Path(sample_ledger.__file__).parent / "bank.binpb"])
BALANCE = "bank.v1.Ledger/GetBalance"
ENTRIES = "bank.v1.Ledger/StreamLedgerEntries"
SESSION = "bank.v1.Ledger/TradeSession"
BOOK = "bank.v1.Ledger/BookTrades"
HERE = "tests.shim._adapters"
# the sample's rules: decimal formatting and each side's clock are not differences
RULES, LOCATIONS = load_rules_file(Path(sample_ledger.__file__).parent / "rules.toml")


@contextlib.asynccontextmanager
async def _bk_primary(
    ledgers: tuple[RunningLedger, RunningLedger], adapters: dict[str, str]
) -> AsyncIterator[Any]:
    """A Bank stub on a shim in bk-primary mode whose methods `adapters` are served by these adapters."""
    bank, bk = ledgers
    methods = adapted(**adapters)
    async with (
        running_shim(bank.address, bk.address, mode="bk-primary", registry=REGISTRY, methods=methods) as (
            shim,
            _,
        ),
        aio.insecure_channel(shim.address) as channel,
    ):
        yield pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]


def adapted(**by_method: str) -> dict[str, MethodSettings]:
    return {name: MethodSettings(adapter=f"{HERE}:{adapter}") for name, adapter in by_method.items()}


@pytest.fixture(autouse=True)
def probe() -> _adapters.Probe:
    return _adapters.reset()


async def _open(address: str, account: str = "A1") -> None:
    async with aio.insecure_channel(address) as channel:
        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        await stub.OpenAccount(
            pb.OpenAccountRequest(account_id=account, currency="USD", initial_deposit="100")
        )


async def test_an_adapted_answer_reaches_the_client_in_bk_primary_mode_and_the_rest_goes_through(
    ledgers: tuple[RunningLedger, RunningLedger], probe: _adapters.Probe
) -> None:
    """bk-primary: the adapter answers GetBalance (from BK); OpenAccount, without one, reaches BK as
    sent; Bank is mirrored and compared; the adapter's stub calls carry the client's deadline."""
    bank, bk = ledgers
    methods = adapted(**{BALANCE: "balance_plus_one"})
    async with running_shim(
        bank.address,
        bk.address,
        mode="bk-primary",
        registry=REGISTRY,
        methods=methods,
        rules=RULES,
        rule_locations=LOCATIONS,
    ) as (shim, sink):
        async with aio.insecure_channel(shim.address) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(
                pb.OpenAccountRequest(account_id="A1", currency="USD", initial_deposit="5")
            )
            balance = await stub.GetBalance(pb.GetBalanceRequest(account_id="A1"), timeout=30)
        await sink.wait_for(2)
        await shim.drain()
    assert balance.currency == "USD+1"
    assert balance.cash == "5"
    assert "A1" in bk.servicer.book.accounts
    assert "A1" in bank.servicer.book.accounts
    assert isinstance(probe.requests[0], pb.GetBalanceRequest)  # the adapter's own generated class
    assert probe.timeouts[0] is not None
    assert 0 < probe.timeouts[0] <= 31
    by_method = {c.method: c for c in sink.comparisons}
    assert by_method["/" + BALANCE].verdict is Verdict.MISMATCH
    assert [d.path for d in by_method["/" + BALANCE].real_differences] == ["currency"]
    assert not by_method["/" + BALANCE].exchange.primary_is_bank


async def test_in_shadow_mode_the_adapter_serves_the_mirror_and_the_client_gets_banks_answer(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """shadow: the client's answer is Bank's; the adapted BK answer is compared with it."""
    bank, bk = ledgers
    async with running_shim(
        bank.address, bk.address, registry=REGISTRY, adapters=HERE, rules=RULES, rule_locations=LOCATIONS
    ) as (shim, sink):  # the module's ADAPTERS mapping
        await _open(shim.address)
        async with aio.insecure_channel(shim.address) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            balance = await stub.GetBalance(pb.GetBalanceRequest(account_id="A1"))
        await sink.wait_for(2)
    assert balance.currency == "USD"
    comparison = next(c for c in sink.comparisons if c.method == "/" + BALANCE)
    assert [(d.path, d.bank, d.bk) for d in comparison.real_differences] == [("currency", "USD", "USD+1")]


async def test_a_raising_adapter_is_an_adapter_error_in_shadow_mode_and_the_client_gets_banks_answer(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """shadow: an adapter that raises never reaches the client; the comparison is an `error` with one
    adapter-error difference."""
    bank, bk = ledgers
    methods = adapted(**{BALANCE: "raising"})
    async with running_shim(bank.address, bk.address, registry=REGISTRY, methods=methods) as (shim, sink):
        await _open(shim.address)
        async with aio.insecure_channel(shim.address) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            first = await stub.GetBalance(pb.GetBalanceRequest(account_id="A1"))
            second = await stub.GetBalance(pb.GetBalanceRequest(account_id="A1"))
        await sink.wait_for(3)
        await shim.drain()
        errors = shim.counters.get("adapter_errors", "/" + BALANCE)
    assert first.cash == second.cash == "100.00"  # Bank's answers, every time
    compared = [c for c in sink.comparisons if c.method == "/" + BALANCE]
    assert len(compared) == 2
    assert errors == 2
    for comparison in compared:
        assert comparison.verdict is Verdict.ERROR
        (difference,) = comparison.differences
        assert difference.kind is DiffKind.ADAPTER_ERROR
        assert difference.bank == "OK"
        assert difference.bk == (
            "adapter tests.shim._adapters.raising for bank.v1.Ledger/GetBalance "
            "raised ValueError: no such rate table"
        )


@pytest.mark.parametrize(
    ("adapter", "message"),
    [
        ("raising", "raised ValueError: no such rate table"),
        ("wrong_type", "returned bank.v1.Account, not bank.v1.Balance"),
    ],
)
async def test_a_failing_adapter_is_internal_with_a_clear_message_in_bk_primary_mode(
    ledgers: tuple[RunningLedger, RunningLedger], adapter: str, message: str
) -> None:
    """bk-primary: an adapter that raises or answers the wrong type is INTERNAL naming the adapter;
    the comparison records the adapter error; the shim goes on serving."""
    bank, bk = ledgers
    methods = adapted(**{BALANCE: adapter})
    async with running_shim(
        bank.address, bk.address, mode="bk-primary", registry=REGISTRY, methods=methods
    ) as (shim, sink):
        await _open(shim.address)
        async with aio.insecure_channel(shim.address) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(aio.AioRpcError) as failed:
                await stub.GetBalance(pb.GetBalanceRequest(account_id="A1"))
            account = await stub.GetAccount(pb.GetAccountRequest(account_id="A1"))
        await sink.wait_for(3)
    assert failed.value.code() is grpc.StatusCode.INTERNAL
    assert failed.value.details() == f"adapter {HERE}.{adapter} for {BALANCE} {message}"
    assert account.account_id == "A1"
    comparison = next(c for c in sink.comparisons if c.method == "/" + BALANCE)
    assert comparison.differences[0].kind is DiffKind.ADAPTER_ERROR


async def test_abort_and_bks_own_errors_reach_the_client_with_their_rich_details(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """An adapter's Abort is the client's status (with its google.rpc.Status); a BK error the adapter
    lets through reaches the client as BK sent it."""
    bank, bk = ledgers
    async with (
        running_shim(
            bank.address,
            bk.address,
            mode="bk-primary",
            registry=REGISTRY,
            methods={
                **adapted(**{BALANCE: "aborting"}),
                "bank.v1.Ledger/GetAccount": MethodSettings(adapter=f"{HERE}:balance_plus_one"),
            },
        ) as (shim, _),
        aio.insecure_channel(shim.address) as channel,
    ):
        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(aio.AioRpcError) as aborted:
            await stub.GetBalance(pb.GetBalanceRequest(account_id="A1"))
        balance_via_account = channel.unary_unary(
            "/bank.v1.Ledger/GetAccount",
            request_serializer=pb.GetBalanceRequest.SerializeToString,
            response_deserializer=pb.Balance.FromString,
        )
        with pytest.raises(aio.AioRpcError) as refused:  # BK: no such account
            await balance_via_account(pb.GetBalanceRequest(account_id="nobody"))
    assert (aborted.value.code(), aborted.value.details()) == (grpc.StatusCode.NOT_FOUND, "account closed")
    assert _violations(aborted.value) == [("account_id", "gone")]
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # as the sample BK refuses it
    assert _violations(refused.value) == [("account_id", "does not reference a registered account")]


def _violations(error: aio.AioRpcError) -> list[tuple[str, str]]:
    raw = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(raw)
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    return [(v.field, v.description) for v in bad.field_violations]


async def test_the_client_s_metadata_and_deadline_reach_bk_through_the_adapter() -> None:
    """A stub from `bk.stub(...)` carries the client's request metadata and the time left of its
    deadline to BK."""
    seen: list[tuple[dict[str, Any], float | None]] = []

    async def behaviour(
        requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> list[bytes]:
        async for _ in requests:
            pass
        seen.append((dict(context.invocation_metadata() or ()), context.time_remaining()))
        return [pb.Balance(account_id="A1", currency="EUR").SerializeToString()]

    bk = await scripted_server(behaviour)
    bank = await scripted_server(behaviour)
    try:
        methods = adapted(**{BALANCE: "balance_plus_one"})
        async with (
            running_shim(
                f"127.0.0.1:{bank.port}",
                f"127.0.0.1:{bk.port}",
                mode="bk",
                registry=REGISTRY,
                methods=methods,
            ) as (shim, _),
            aio.insecure_channel(shim.address) as channel,
        ):
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            balance = await stub.GetBalance(
                pb.GetBalanceRequest(account_id="A1"), metadata=(("x-trace", "t-42"),), timeout=20
            )
    finally:
        await bk.stop()
        await bank.stop()
    assert balance.currency == "EUR+1"
    assert len(seen) == 1  # bk mode: BK alone answers; Bank is not asked
    metadata, remaining = seen[0]
    assert metadata["x-trace"] == "t-42"
    assert remaining is not None
    assert 0 < remaining <= 21


async def test_streams_are_adapted_message_by_message(
    ledgers: tuple[RunningLedger, RunningLedger], probe: _adapters.Probe
) -> None:
    """A server stream's first answer reaches the client before the adapter makes its second; a bidi
    stream's each request reaches the adapter while the client waits for its answer; a client
    stream's requests all reach the adapter."""
    async with _bk_primary(
        ledgers, {ENTRIES: "entries_in_step", SESSION: "session_echo", BOOK: "count_orders"}
    ) as stub:
        call = stub.StreamLedgerEntries(pb.StreamLedgerEntriesRequest(account_id="A1"))
        first = await call.read()
        probe.go_on.set()  # only now can the adapter make the second entry
        second = await call.read()
        assert await call.read() is aio.EOF
        session = stub.TradeSession()
        events = []
        for n in range(3):
            order = pb.PostTradeRequest(account_id="A1", client_order_id=f"o{n}")
            await session.write(pb.TradeSessionRequest(order=order))
            events.append(await session.read())  # answered before the next order is written
        await session.done_writing()
        assert await session.read() is aio.EOF
        summary = await stub.BookTrades(iter([pb.PostTradeRequest(account_id="A1")] * 4))
    assert (first.sequence, second.sequence) == (1, 2)
    assert [e.rejected.client_order_id for e in events] == ["o0", "o1", "o2"]
    assert summary.booked == 4


async def test_an_adapter_failing_mid_stream_ends_the_stream_internal_after_what_it_sent(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """The answers an adapter yielded before it raised reach the client; then INTERNAL."""
    async with _bk_primary(ledgers, {ENTRIES: "entries_then_raise"}) as stub:
        call = stub.StreamLedgerEntries(pb.StreamLedgerEntriesRequest(account_id="A1"))
        got = [(await call.read()).sequence]
        with pytest.raises(aio.AioRpcError) as failed:
            await call.read()
    assert got == [1]
    assert failed.value.code() is grpc.StatusCode.INTERNAL
    assert "raised RuntimeError: lost the journal" in (failed.value.details() or "")


def _balance_server(headers: tuple[tuple[str, str | bytes], ...]) -> Behaviour:
    """A GetBalance that answers A1's balance of 5, with these headers."""

    async def behaviour(
        requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> list[bytes]:
        _ = [r async for r in requests]
        if headers:
            await context.send_initial_metadata(headers)
        return [pb.Balance(account_id="A1", cash="5", currency="USD").SerializeToString()]

    return behaviour


@pytest.mark.parametrize("adapter", ["balance_with_metadata", "plain_balance_with_metadata"])
async def test_an_adapter_gives_the_client_the_headers_and_trailers_bank_would(
    adapter: str, probe: _adapters.Probe
) -> None:
    """bk-primary: the client gets the headers and trailers the adapter gave, and Bank's (mirrored) are
    compared with them: the same keys match; a key the adapter leaves out is a difference."""
    sent: tuple[tuple[str, str | bytes], ...] = (("x-page", "2"), ("x-raw-bin", b"\x00\x01"))
    probe.headers, probe.trailers = sent, (("x-left", "9"),)
    bank, bk = await scripted_server(_balance_server(sent)), await scripted_server(_balance_server(()))
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                mode="bk-primary",
                registry=REGISTRY,
                methods=adapted(**{BALANCE: adapter}),
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            call = stub.GetBalance(pb.GetBalanceRequest(account_id="A1"))
            assert (await call).cash == "5"
            assert tuple(await call.initial_metadata()) == sent
            assert tuple(await call.trailing_metadata()) == (("x-left", "9"),)
            probe.headers = (("x-page", "2"),)
            assert (await stub.GetBalance(pb.GetBalanceRequest(account_id="A1"))).cash == "5"
            first, second = await sink.wait_for(2)
    finally:
        await bank.stop()
        await bk.stop()
    assert (first.verdict, first.differences) == (Verdict.MATCH, ())
    assert [(d.path, d.kind) for d in second.differences] == [("metadata.x-raw-bin", DiffKind.REMOVED)]


async def test_metadata_gRPC_could_not_send_or_headers_after_the_first_answer_are_adapter_errors(
    ledgers: tuple[RunningLedger, RunningLedger], probe: _adapters.Probe
) -> None:
    """Headers with a key that is not lowercase end the call INTERNAL naming the adapter and the key;
    headers after the first answer end the stream after what it sent."""
    probe.headers = (("Bad Key", "v"),)
    async with _bk_primary(
        ledgers, {BALANCE: "balance_with_metadata", ENTRIES: "entries_then_headers"}
    ) as stub:
        with pytest.raises(aio.AioRpcError) as refused:
            await stub.GetBalance(pb.GetBalanceRequest(account_id="A1"))
        call = stub.StreamLedgerEntries(pb.StreamLedgerEntriesRequest(account_id="A1"))
        got = [(await call.read()).sequence]
        with pytest.raises(aio.AioRpcError) as late:
            await call.read()
    assert refused.value.code() is grpc.StatusCode.INTERNAL
    assert refused.value.details() == (
        f"adapter {HERE}.balance_with_metadata for {BALANCE} raised ValueError: invalid initial metadata:"
        " key 'Bad Key': keys are lowercase ASCII letters, digits, '-', '_' and '.'"
    )
    assert got == [1]
    assert late.value.code() is grpc.StatusCode.INTERNAL
    assert "raised RuntimeError: initial metadata is sent once, before the first answer" in (
        late.value.details() or ""
    )


async def test_a_client_that_cancels_cancels_the_adapter(
    ledgers: tuple[RunningLedger, RunningLedger], probe: _adapters.Probe
) -> None:
    """bk-primary: the client's cancel reaches the adapter serving it."""
    async with _bk_primary(ledgers, {BALANCE: "waiting"}) as stub:
        call = stub.GetBalance(pb.GetBalanceRequest(account_id="A1"))
        await asyncio.wait_for(probe.started.wait(), 10)
        call.cancel()
        await asyncio.wait_for(probe.cancelled.wait(), 10)
    assert probe.cancelled.is_set()


async def test_a_request_the_descriptors_cannot_decode_is_internal_not_an_adapter_error(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """Undecodable request bytes: INTERNAL naming the request type; the adapter is not blamed."""
    bank, bk = ledgers
    methods = adapted(**{BALANCE: "balance_plus_one"})
    async with running_shim(bank.address, bk.address, mode="bk", registry=REGISTRY, methods=methods) as (
        shim,
        _,
    ):
        async with aio.insecure_channel(shim.address) as channel:
            raw = channel.unary_unary("/" + BALANCE)
            with pytest.raises(aio.AioRpcError) as failed:
                await raw(b"\xff\xff\xff")
        errors = shim.counters.get("adapter_errors", "/" + BALANCE)
    assert failed.value.code() is grpc.StatusCode.INTERNAL
    assert failed.value.details() == "cannot decode the request as bank.v1.GetBalanceRequest"
    assert errors == 0


@pytest.mark.parametrize(
    ("per_method", "module", "message"),
    [
        ({BALANCE: "no_such_package.adapters:x"}, "", "cannot import 'no_such_package.adapters'"),
        ({BALANCE: f"{HERE}:missing"}, "", "has no 'missing'"),
        ({BALANCE: "not-dotted"}, "", "is not a dotted path"),
        ({BALANCE: f"{HERE}:NOT_CALLABLE"}, "", "is not callable"),
        ({BALANCE: f"{HERE}:two_arguments_wanted"}, "", "must take (request, bk)"),
        ({"bank.v1.Ledger/Nope": f"{HERE}:raising"}, "", "bank.v1.Ledger/Nope is not a method"),
        ({}, f"{HERE}:NOT_A_MAPPING", "must name a mapping of method names to adapters"),
        ({}, "no_such_package", "cannot import 'no_such_package'"),
        # argparse in a module reading options of its own: SystemExit at import is a start error too
        (
            {},
            "tests.shim._exits_at_import",
            "cannot import 'tests.shim._exits_at_import': it exited (SystemExit",
        ),
        ({BALANCE: "tests.shim._exits_at_import:x"}, "", "it exited (SystemExit: 2) at import"),
    ],
)
def test_every_bad_adapter_setting_is_refused_at_start_with_the_setting_named(
    per_method: dict[str, str], module: str, message: str
) -> None:
    """Adapters are imported and checked at start; each mistake names where it was made."""
    with pytest.raises(ConfigError) as refused:
        load_adapters(per_method, module, REGISTRY)
    assert message in str(refused.value)
    assert ("adapters" if module else "adapter") in str(refused.value)


def test_adapters_need_descriptors_and_a_bk_upstream() -> None:
    """Without descriptors there is nothing to decode Bank's requests with; BK modes need BK."""
    with pytest.raises(NeedsDescriptors, match="descriptors"):  # `shim serve` says why it has none
        load_adapters({BALANCE: f"{HERE}:raising"}, "", None)
    with pytest.raises(ConfigError, match="mode bk-primary needs a BK upstream"):
        Config(bank=Upstream("bank", "127.0.0.1:1"), mode="bk-primary")


def test_adapter_and_rule_modules_beside_the_config_file_are_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module in the config file's folder (an adapter's, a custom rule's) is found by the config loader,
    after every other place Python looks; so is one in the folder of a rules file. Before, only with
    PYTHONPATH."""
    monkeypatch.setattr(sys, "path", [*sys.path])  # the folders added stay this test's
    (tmp_path / "rules").mkdir()
    (tmp_path / "beside_config_adapters.py").write_text("def as_is(request, bk):\n    return bk(request)\n")
    (tmp_path / "rules" / "beside_rules_file.py").write_text("def same(bank, bk):\n    return True\n")
    (tmp_path / "rules" / "more.toml").write_text(
        '[[rules]]\npath = "bank.v1.Balance.as_of"\nrule = "custom"\ncallable = "beside_rules_file:same"\n'
    )
    config_file = tmp_path / "shim.toml"
    config_file.write_text(
        'rules_files = ["rules/more.toml"]\n[upstreams.bank]\ntarget = "127.0.0.1:1"\n'
        f'[methods."{BALANCE}"]\nadapter = "beside_config_adapters:as_is"\n'
    )
    for module in ("beside_config_adapters", "beside_rules_file"):
        monkeypatch.delitem(sys.modules, module, raising=False)  # imported here, then forgotten
    config = build(load_file(config_file))
    adapters = load_adapters(config.method_adapters, config.adapters, REGISTRY)
    assert adapters["/" + BALANCE].__module__ == "beside_config_adapters"
    assert len(load_rules(config, REGISTRY).bindings) == 1
    assert sys.path[-2:] == [str(tmp_path.resolve()), str((tmp_path / "rules").resolve())]


def test_the_config_file_names_adapters_per_method_and_by_module() -> None:
    """`adapters = "module"` and `[methods."M"] adapter = "module:name"` are read; modes are checked."""
    settings = parse(
        {
            "mode": "bk-primary",
            "adapters": "sample_ledger.adapter",
            "upstreams": {"bank": {"target": "127.0.0.1:1"}, "bk": {"target": "127.0.0.1:2"}},
            "methods": {BALANCE: {"adapter": f"{HERE}:raising", "key": ["account_id"]}},
        }
    )
    config = build(settings)
    assert config.adapters == "sample_ledger.adapter"
    assert config.method_adapters == {BALANCE: f"{HERE}:raising"}
    assert config.mode == "bk-primary"
    with pytest.raises(ConfigError, match=r'methods\."bank.v1.Ledger/GetBalance"\.adapter'):
        parse({"methods": {BALANCE: {"adapter": 7}}})
    with pytest.raises(ConfigError, match="mode: 'bk-only' is not one of bank, shadow, bk-primary, bk"):
        build({**settings, "mode": "bk-only"})


@pytest.mark.parametrize("primary_is_bank", [True, False])
def test_an_adapter_error_on_bks_side_is_an_adapter_error_difference(primary_is_bank: bool) -> None:
    """Whichever side is primary, BK's adapter error is one adapter-error difference, not a status
    comparison; the verdict is `error`, even on a key out of step (an adapter bug is never tainted)."""
    bank = Outcome(code=0, messages=(b"",))
    bk = Outcome(code=13, details="adapter x failed", adapter_error="adapter x failed")
    primary, shadow = (bank, bk) if primary_is_bank else (bk, bank)
    started = time.time()
    exchange = Exchange(
        "/p.S/M",
        (b"",),
        primary,
        shadow,
        primary_is_bank=primary_is_bank,
        started_at=started,
        tainted="key 'A1' out of step since 2026-12-01T00:00:00Z: p.S/M Bank applied it (OK), BK ...",
    )
    comparison = compare(exchange, None)
    assert comparison.verdict is Verdict.ERROR
    assert comparison.reason == "adapter x failed"
    assert [(d.kind, d.bank, d.bk) for d in comparison.differences] == [
        (DiffKind.ADAPTER_ERROR, "OK", "adapter x failed")
    ]
