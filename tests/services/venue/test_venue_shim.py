"""The venue behind the shim in shadow mode, configured by shim.toml alone: concurrent sessions that
name, later in the same stream, the orders their own acks minted; batches; cancels and reads naming
ids across calls; and both books read back directly."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

from comparators import Comparison, Verdict
from shim.admin import set_mode
from shim.config import load_file
from shim.dataplane import envoy as envoy_process
from shim.testing import running_shim
from tests.helpers import until
from tests.services.venue import DESCRIPTOR_SET, REGISTRY, book_of, run_workload
from tests.services.venue.client import VenueClient
from tests.services.venue.messages import BUY, new
from tests.services.venue.server import Served

HERE = Path(__file__).parent
SEED = 2026
BANK_ORDER, BANK_EXEC = re.compile(r"O[0-9]+"), re.compile(r"E[0-9]+")


def _settings(tmp_path: Path) -> dict[str, Any]:
    """running_shim settings from the venue's config, read as `shim serve --config` reads it: a copy
    of shim.toml in tmp_path with the descriptor set written beside it. The upstreams are the test's."""
    config = tmp_path / "shim.toml"
    shutil.copyfile(HERE / "shim.toml", config)
    (tmp_path / "venue.binpb").write_bytes(DESCRIPTOR_SET)
    settings = load_file(config)
    settings.pop("bank")
    bk = settings.pop("bk")
    assert settings.pop("mode") == "shadow"
    return {**settings, "registry": REGISTRY, "shadow_timeout": bk.timeout}


def _short(method: str) -> str:
    return method.rpartition("/")[2]


def _shape(reason: str) -> str:
    """A reason with its ids, keys and numbers left out, to count reasons alike together."""
    return re.sub(r"'[^']*'|\b[0-9][0-9.:TZ-]*\b", "…", reason)


def _brief(value: Any) -> str:
    return f"{len(value)} entries" if isinstance(value, list) else str(value)


def _book_differences(bank: dict[str, Any], bk: dict[str, Any]) -> dict[str, list[str]]:
    """For each account whose books differ, what differs: Bank's value, then BK's."""
    out = {}
    for account in sorted({*bank, *bk}):
        if bank.get(account) == bk.get(account):
            continue
        if account not in bank or account not in bk:
            out[account] = [f"listed by {'Bank' if account in bank else 'BK'} only"]
            continue
        left, right = bank[account], bk[account]
        out[account] = [f"{k} {_brief(left[k])} / {_brief(right[k])}" for k in left if left[k] != right[k]]
    return out


def _summary(comparisons: Sequence[Comparison]) -> str:
    """Verdicts by method, reasons by shape, and the paths of real differences."""
    verdicts = Counter((_short(c.method), str(c.verdict)) for c in comparisons)
    reasons = Counter((str(c.verdict), _shape(c.reason)) for c in comparisons if c.reason)
    paths = Counter(
        (_short(c.method), re.sub(r"\[[^]]*\]", "[*]", d.path), str(d.kind))
        for c in comparisons
        if c.verdict is Verdict.MISMATCH
        for d in c.real_differences
    )
    lines = ["verdicts:", *(f"  {m} {v}: {n}" for (m, v), n in sorted(verdicts.items()))]
    lines += ["reasons:", *(f"  {n}x {v}: {r}" for (v, r), n in reasons.most_common())]
    lines += [
        "real differences of mismatches:",
        *(f"  {n}x {m} {p} ({k})" for (m, p, k), n in paths.most_common()),
    ]
    return "\n".join(lines)


@pytest.mark.parametrize(
    ("accounts", "sessions", "calls", "concurrency", "rate"),
    [
        pytest.param(6, 60, 240, 8, 0.0, id="short-flat-out"),
        # 1,200 calls from 16 clients at a pace the shim sustains on a small machine: BK is healthy
        pytest.param(12, 200, 1000, 16, 120.0, id="long"),
    ],
)
async def test_concurrent_sessions_batches_and_cancels_keep_both_books_in_step(
    bank: Served,
    bk: Served,
    tmp_path: Path,
    accounts: int,
    sessions: int,
    calls: int,
    concurrency: int,
    rate: float,
) -> None:
    """Through the shim, a concurrent workload whose sessions cancel and modify the orders their own
    acks minted gets Bank's answers, every call is compared with no shadow timeout and no unmapped id,
    no key goes out of step, and the two books end equal."""
    # BK gets 10 s, not the config's 2 s: on a loaded machine the whole stack (client, both services and
    # the shim, in this one process) falls seconds behind, and a shadow timeout then puts keys out of step,
    # which is the shim doing its job, not what this test is about (ordering and ids under concurrency)
    settings = {**_settings(tmp_path), "shadow_timeout": 10.0}
    async with running_shim(bank.address, bk.address, **settings) as (shim, sink):
        result = await run_workload(
            shim.address,
            seed=SEED,
            accounts=accounts,
            sessions=sessions,
            calls=calls,
            concurrency=concurrency,
            rate=rate,
        )
        await shim.drain()
        comparisons = sink.comparisons
        assert shim.steps is not None
        out_of_step = {key: mark.reason for key, mark in shim.steps.keys.items()}
    bank_book, bk_book = await book_of(bank.address), await book_of(bk.address)
    timeouts = Counter(
        str(c.verdict) for c in comparisons if c.verdict is Verdict.SHADOW_ERROR or "timeout" in c.reason
    )
    unmapped = [c for c in comparisons if c.exchange.unmapped or "unmapped-id" in c.reason]
    unmapped_ids = Counter(
        "invented" if value in result.invented else "minted"
        for c in unmapped
        for _, _, value in c.exchange.unmapped
    )
    not_bank_ids = [i for i in result.minted if not BANK_ORDER.fullmatch(i)]
    not_bank_ids += [i for i in result.exec_ids if not BANK_EXEC.fullmatch(i)]
    checks = {
        "the client got an answer other than Bank's (predicted) one": result.errors,
        "the client saw ids that are not Bank's": not_bank_ids,
        "calls without a comparison": sum(result.calls.values()) - len(comparisons),
        "accounts whose books differ": _book_differences(bank_book, bk_book),
        "keys out of step": out_of_step,
        "comparisons that are shadow errors or name a timeout (by verdict)": dict(timeouts),
        "comparisons skipped for an unmapped id (and their ids by origin)": {
            "comparisons": len(unmapped),
            **unmapped_ids,
        }
        if unmapped
        else {},
    }
    failed = {what: found for what, found in checks.items() if found}
    report = "\n".join(f"FAILED {what}: {str(found)[:1000]}" for what, found in failed.items())
    assert not failed, f"{report}\n\n{_summary(comparisons)}\n\nworkload: {result.calls} {result.acks}"


async def test_an_order_a_session_minted_is_cancelled_later_in_that_session_on_both_sides(
    bank: Served, bk: Served, tmp_path: Path
) -> None:
    """The smallest case: one session places an order and then cancels it by the id its ack minted;
    BK gets the cancel with BK's own id, the session's comparison matches, and both books agree."""
    async with (
        running_shim(bank.address, bk.address, **_settings(tmp_path)) as (shim, sink),
        aio.insecure_channel(shim.address) as channel,
    ):
        client = VenueClient(channel)
        await client.open_account("A", "1000")
        async with client.session() as session:
            placed = await session.send(
                new(
                    "TradeRequest",
                    account="A",
                    new=new("NewOrder", symbol="KO", side=BUY, quantity=150, limit_price="1"),
                )
            )
            await session.send(
                new("TradeRequest", account="A", cancel=new("CancelOrder", order_id=placed.order_id))
            )
        await shim.drain()
        comparisons = sink.comparisons
    verdicts = [(_short(c.method), str(c.verdict), _shape(c.reason)) for c in comparisons]
    assert verdicts == [("OpenAccount", "match", ""), ("Trade", "match", "")]
    assert await book_of(bk.address) == await book_of(bank.address)


@pytest.mark.parametrize(
    "dataplane",
    [
        "python",
        pytest.param(
            "envoy",
            marks=pytest.mark.skipif(
                envoy_process.binary() is None, reason="no Envoy binary on this platform"
            ),
        ),
    ],
)
async def test_a_batch_under_way_across_a_switch_finishes_on_bank_and_puts_its_account_out_of_step(
    bank: Served, bk: Served, tmp_path: Path, dataplane: str
) -> None:
    """On either data plane, a SubmitBatch under way when the mode switches to bk-primary: the switch
    applies (within a pause the batch outlasts: it is not waited for), an order placed after it gets BK's
    id, the batch's orders get Bank's, and the batch's account goes out of step saying why."""
    settings = {**_settings(tmp_path), "dataplane": dataplane, "store": {"url": str(tmp_path / "shim.db")}}
    async with (
        running_shim(bank.address, bk.address, **settings) as (shim, _),
        aio.insecure_channel(shim.address) as channel,
    ):
        client = VenueClient(channel)
        await client.open_account("A", "100000")
        await shim.drain()

        def order(quantity: int) -> Any:
            placed = new("NewOrder", symbol="KO", side=BUY, quantity=quantity, limit_price="1")
            return new("NewOrderRequest", account="A", order=placed)

        batch = channel.stream_unary(
            "/venue.v1.Venue/SubmitBatch",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=type(new("BatchSummary")).FromString,
        )()
        await batch.write(order(10))
        mirrors = shim.dispatchers.values()
        await until(lambda: any(d.in_flight for d in mirrors), "the batch's copy under way")
        # a pause the batch outlasts (it ends only below): applied, so the batch was not waited for. Not the
        # default 0.1 s: on a loaded machine Envoy alone may take longer to apply the routes
        await set_mode(shim, "bk-primary", [], "test", "ops", force=True, pause=2.0)
        async with client.session() as session:  # a new call: BK answers it
            after = await session.send(new("TradeRequest", account="A", new=order(20).order))
        await batch.write(order(30))
        await batch.done_writing()
        summary = await batch
        await shim.drain()
        marks = dict(shim.steps.keys) if shim.steps is not None else {}
    assert not BANK_ORDER.fullmatch(after.order_id), after.order_id  # BK's id
    assert len(summary.order_ids) == 2
    assert all(BANK_ORDER.fullmatch(i) for i in summary.order_ids), summary.order_ids  # Bank's
    assert list(marks) == ["A"]
    assert "a batch (client stream) under way across a switch of modes" in marks["A"].reason
