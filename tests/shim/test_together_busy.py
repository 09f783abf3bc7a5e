"""Two writes on one account in flight at Bank together, on a busy account: which Bank applied first is not
known, so a difference that order made is `tainted`, even once later writes on the account have pushed the
two writes' spans out of what `Together` keeps (its last PER_KEY writes a key) before BK answered them."""

from __future__ import annotations

import asyncio

import pytest
from grpc import aio

from comparators import Verdict
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim.shadow.together import PER_KEY
from shim.testing import running_shim
from tests.backends import forwarding
from tests.helpers import PLANES, until
from tests.shim.test_modes import KEYED, LOCATIONS, REGISTRY, RULES

SETTINGS = {"registry": REGISTRY, "methods": KEYED, "rules": RULES, "rule_locations": LOCATIONS}


@pytest.mark.parametrize("dataplane", PLANES)
async def test_writes_that_raced_at_bank_are_tainted_though_later_writes_pushed_out_their_spans(
    ledgers: tuple[RunningLedger, RunningLedger], dataplane: str
) -> None:
    """Deposit a (5) is held on its way to Bank while deposit b (7) on the same account is answered; then a
    goes on: Bank applied b first. BK, sent them in the order they came, applies a first, and answers each
    half a second late. Before BK answers, PER_KEY more deposits on the account are answered by Bank. a's
    and b's balances differ between the sides (the order), and both are tainted, naming the race; the
    deposits after them, which raced nothing, match. Before, the two spans were gone by the time BK
    answered, and both were real mismatches blamed on a BK with no bug."""
    bank, bk = ledgers
    async with forwarding(bank.address) as (bank_front, bank_at), forwarding(bk.address) as (bk_front, bk_at):
        bk_front.late["/Deposit"] = 0.5
        async with (
            running_shim(bank_at.address, bk_at.address, dataplane=dataplane, **SETTINGS) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="R1", initial_deposit="100"))
            await shim.drain()
            held = bank_front.gated["/Deposit"] = asyncio.Event()
            first = asyncio.ensure_future(stub.Deposit(pb.DepositRequest(account_id="R1", amount="5")))
            await until(lambda: bank_front.arrived == 1, "deposit a held on its way to Bank")
            del bank_front.gated["/Deposit"]
            await stub.Deposit(pb.DepositRequest(account_id="R1", amount="7"))  # b, answered first
            held.set()
            await first
            for _ in range(PER_KEY):
                await stub.Deposit(pb.DepositRequest(account_id="R1", amount="1"))
            await shim.drain()
    deposits = [c for c in sink.comparisons if c.exchange.method.endswith("/Deposit")]
    assert len(deposits) == 2 + PER_KEY
    raced = {c.verdict for c in deposits[:2]}
    assert raced == {Verdict.TAINTED}, [(c.verdict, c.reason, c.differences) for c in deposits[:2]]
    assert all(
        "in flight at the primary together with bank.v1.Ledger/Deposit" in c.reason for c in deposits[:2]
    )
    assert {c.verdict for c in deposits[2:]} == {Verdict.MATCH}
