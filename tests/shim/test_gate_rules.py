"""The gate and the rules the comparisons were judged under.

A match is evidence only under the rules that made it one: a difference a rule tolerated is a real one once
that rule is withdrawn. Real sample Bank and BK on free ports, the shim in front, its store a SQLite file,
`shim gate` run as a real process.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc import aio

import sample_ledger
from comparators import DescriptorRegistry, Verdict
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim.books import judged_by
from shim.config import load_rules_file
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests.helpers import run_shim, until

REGISTRY = DescriptorRegistry.from_files([Path(sample_ledger.__file__).parent / "bank.binpb"])
KEYED = {
    name: MethodSettings(key=("account_id",))
    for name in ("bank.v1.Ledger/OpenAccount", "bank.v1.Ledger/GetBalance")
}
SAMPLE_RULES = (Path(sample_ledger.__file__).parent / "rules.toml").read_text()
WORDING = 'path = "status"\nrule = "status"\ndetails = "ignore"\n'
# the same rule, as an operator loosened it while BK's unknown-account bug (planted bug 2) was being fixed
LOOSENED = WORDING + 'equivalent = [["NOT_FOUND", "INVALID_ARGUMENT"]]\n'
# ... and the BadRequest BK adds to that refusal
BK_DETAILS = '\n[[rules]]\npath = "status.rich_details"\nrule = "bk-may-add"\nname = "bk details"\n'
LOOSE = ("--min-compared", "1", "--max-unproven-rate", "0.5")


def _rules(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


async def test_matches_made_by_a_rule_since_withdrawn_do_not_pass_the_gate(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """A status rule holding Bank's NOT_FOUND equivalent to BK's INVALID_ARGUMENT makes BK's unknown-account
    answers matches. The operator then withdraws both (the shim restarted with the tightened
    rules, nothing called since): under the rules now in force, every one of those calls is a real
    difference, so the matches it made prove nothing and the gate does not pass on them."""
    assert WORDING in SAMPLE_RULES
    bank, bk = ledgers
    store = tmp_path / "shim.db"
    loose = _rules(tmp_path, "loose.toml", SAMPLE_RULES.replace(WORDING, LOOSENED) + BK_DETAILS)
    strict = _rules(tmp_path, "strict.toml", SAMPLE_RULES)
    rules, locations = load_rules_file(loose)
    async with running_shim(
        bank.address,
        bk.address,
        registry=REGISTRY,
        methods=KEYED,
        rules=rules,
        rule_locations=locations,
        store={"url": str(store)},
    ) as (shim, sink):
        async with aio.insecure_channel(shim.address) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="A1", initial_deposit="10"))
            for _ in range(5):
                with pytest.raises(aio.AioRpcError) as refused:
                    await stub.GetBalance(pb.GetBalanceRequest(account_id="NOPE"))
                assert refused.value.code() is grpc.StatusCode.NOT_FOUND  # Bank's answer, untouched
            await sink.wait_for(6)
        await shim.drain()
    assert [c.verdict for c in sink.comparisons] == [Verdict.MATCH] * 6  # the loosened rules tolerated BK's
    rules, locations = load_rules_file(strict)
    async with running_shim(  # started again with the rule withdrawn; no call since
        bank.address,
        bk.address,
        registry=REGISTRY,
        methods=KEYED,
        rules=rules,
        rule_locations=locations,
        store={"url": str(store)},
    ):
        pass
    config = _rules(tmp_path, "shim.toml", f'[store]\nurl = "{store}"\n\n{SAMPLE_RULES}')
    judged = run_shim("gate", "--config", config, *LOOSE)
    assert judged.returncode == 1, judged.stdout + judged.stderr
    assert "gate: the rules that judge the comparisons changed at" in judged.stdout
    assert "the evidence from before it is not judged" in judged.stdout


async def test_a_reload_of_other_rules_restarts_the_gate_s_evidence(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """Rules reloaded while the shim runs (SIGHUP) are recorded as a change at once: the evidence from before
    is not judged. The same rules reloaded record nothing."""
    bank, bk = ledgers
    loose, locations = load_rules_file(
        _rules(tmp_path, "loose.toml", SAMPLE_RULES.replace(WORDING, LOOSENED) + BK_DETAILS)
    )
    strict, strict_locations = load_rules_file(_rules(tmp_path, "strict.toml", SAMPLE_RULES))
    async with running_shim(
        bank.address,
        bk.address,
        registry=REGISTRY,
        methods=KEYED,
        rules=loose,
        rule_locations=locations,
        store={"url": str(tmp_path / "shim.db")},
    ) as (shim, _):
        store = shim.books.store
        assert store is not None
        assert await store.judging.changed() is None  # the first rules of a new store
        assert shim.reconfigure(replace(shim.config, rules=loose, rule_locations=locations)) == []
        same = await store.judging.changed()
        before = time.time()
        assert shim.reconfigure(replace(shim.config, rules=strict, rule_locations=strict_locations)) == []
        await until(lambda: shim.books.judging == judged_by(shim.config), "the new rules taken")
        for _ in range(200):
            changed = await store.judging.changed()
            if changed is not None:
                break
            await asyncio.sleep(0.01)
    assert same is None
    assert changed is not None
    assert changed[0] >= before
