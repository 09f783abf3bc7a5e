"""A fleet in front of the custody ledger: two replicas share one store, one of them mirroring to a BK that
is down; the report breaks the figures down by replica and the gate names the one behind its failure."""

from __future__ import annotations

from pathlib import Path

from grpc import aio

from shim.config import load_file
from shim.evidence import build_report
from shim.gate import evaluate
from shim.report import to_json
from shim.store import Store
from tests.helpers import replica_of_a_fleet
from tests.services.custody import Client, serve
from tests.services.custody.test_custody_shim import _config

A, B = "vault-a:11", "vault-b:22"


async def _open_and_read(address: str, name: str) -> None:
    """Three accounts opened, and the balance of each read, through the shim at `address`."""
    async with aio.insecure_channel(address) as channel:
        client = Client(channel, timeout=5)
        for n in range(3):
            opened = await client.call("OpenAccount", client_ref=f"{name}-{n}", owner="Ada")
            assert opened.ok, opened
            read = await client.call("GetBalance", account_id=opened.message.account_id)
            assert read.ok, read


async def test_the_report_and_the_gate_name_the_replica_whose_bk_was_down(tmp_path: Path) -> None:
    """Replica A (BK up) compares every call; replica B (BK down) compares none: the report gives each its
    share, and the gate's failed criteria name B with its calls, never A."""
    settings = load_file(_config(tmp_path))
    mode = settings.pop("mode")
    bank, bk, gone = await serve("bank"), await serve("bk", bugs=set()), await serve("bk", bugs=set())
    await gone.stop()
    store = Store.open(str(tmp_path / "fleet.db"))
    await store.start()
    try:
        for name, to in ((A, bk.address), (B, gone.address)):
            async with replica_of_a_fleet(store, name, bank.address, to, mode=mode, **settings) as (shim, _):
                await _open_and_read(shim.address, name)
        report = await build_report(
            store, since=0.0, until=4e9, relative=0.2, absolute=0.0003, min_sampled=20
        )
    finally:
        await store.close()
        await bank.stop()
        await bk.stop()
    assert [(r.name, r.calls, r.compared) for r in report.replicas] == [(A, 6, 6), (B, 6, 0)]
    data = to_json(report)
    for method in data["methods"]:
        shares = {s["replica"]: (s["calls"], s["compared"], s["unproven"]) for s in method["by_replica"]}
        assert shares == {A: (3, 3, 0), B: (3, 0, 3)}, method["method"]
    result = evaluate(
        report,
        min_compared=5,
        min_answered=10,
        max_mismatch_rate=0.0,
        max_unproven_rate=0.0,
        required_methods=(),
    )
    failed = [(c.method.rpartition("/")[2], c.name, c.measured) for c in result.failed]
    assert [(m, name) for m, name, _ in failed] == [
        ("GetBalance", "compared"), ("GetBalance", "answered"), ("GetBalance", "unproven"),
        ("OpenAccount", "compared"), ("OpenAccount", "answered"), ("OpenAccount", "unproven"),
    ]  # fmt: skip
    for _, name, measured in failed:
        if name == "answered":  # A's 3, all Bank answered: too few, whoever compared them
            assert measured == "not proven: 3 of 3 clean comparisons answered by Bank", measured
            continue
        named = "not compared, by replica" if name == "compared" else "by replica"
        assert measured.endswith(f"; {named}: {B} 3"), measured
