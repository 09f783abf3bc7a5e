"""SIGHUP: `shim serve` reads its config again, applies what can change at run time, refuses a bad one."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import grpc

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from tests.processes import ShimProcess, shim_process
from tests.shim.test_evidence_store import BANK_BINPB, CALL_TIMEOUT, _shadow_args, _sqlite_sql, _until

# the rules that make GetBalance of the sample ledgers match: decimals as numbers, each side's clock
TOLERANT = """
[[rules]]
regex = 'bank\\.v1\\.Balance\\.(cash|unsettled_cash)'
rule = "decimal"
[[rules]]
path = "bank.v1.Balance.as_of"
rule = "timestamp"
tolerance = "2s"
"""


async def _logged(shim: ShimProcess, event: str) -> dict[str, object]:
    """The first log line of `event` (waited for)."""

    async def look() -> list[dict[str, object]]:
        return [json.loads(line) for line in shim.stderr if f'"event": "{event}' in line]

    found = await _until(look, bool, f"a {event!r} log line")
    return found[0]


async def test_sighup_refuses_a_bad_config_and_applies_a_good_one(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """A reloaded config whose rule does not check is refused, naming the rule, and the shim goes on as
    it was; a good one's new rule decides the next comparisons at once, and a changed setting that
    needs a restart is named and keeps its value."""
    bank, bk = ledgers
    config = tmp_path / "shim.toml"
    # every read compared, however busy the test machine (no shedding)
    base = f'descriptor_sets = ["{BANK_BINPB}"]\n[shadow]\nshed_lag = 0\n'
    config.write_text(base, encoding="utf-8")
    store = tmp_path / "shim.db"
    sql = _sqlite_sql(store)

    async def verdicts(count: int) -> list[str]:
        async def look() -> list[str]:
            return [row[0] for row in sql("SELECT verdict FROM comparisons ORDER BY at")]

        return await _until(look, lambda rows: len(rows) >= count, f"{count} comparisons stored")

    async with shim_process(*_shadow_args(bank, bk, store, "--config", config)) as shim:
        async with grpc.aio.insecure_channel(shim.ready["listen"]) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            balance = pb.GetBalanceRequest(account_id="A1")
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="A1", initial_deposit="10.5"))
            await stub.GetBalance(balance, timeout=CALL_TIMEOUT)  # "10.50" against "10.5": a mismatch
            config.write_text(
                base + '[[rules]]\npath = "bank.v1.Nope.cash"\nrule = "decimal"\n', encoding="utf-8"
            )
            shim.proc.send_signal(signal.SIGHUP)
            refused = await _logged(shim, "config not reloaded")
            await stub.GetBalance(balance, timeout=CALL_TIMEOUT)  # the config in use: still a mismatch
            await verdicts(3)  # compared before the next reload (rules apply to comparisons made after)
            config.write_text('grace_period = "7s"\n' + base + TOLERANT, encoding="utf-8")
            shim.proc.send_signal(signal.SIGHUP)
            reloaded = await _logged(shim, "config reloaded")
            await stub.GetBalance(balance, timeout=CALL_TIMEOUT)  # the new rule: "10.50" equals "10.5"
            seen = await verdicts(4)
        assert await shim.stop() == 0
    assert "bank.v1.Nope" in str(refused["error"])
    assert reloaded["settings"] == ["grace_period"]
    assert seen[1:] == ["mismatch", "mismatch", "match"]
