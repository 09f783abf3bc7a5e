"""What operators read off a running shim: Prometheus metrics, and gRPC reflection from its descriptors."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import grpc

import sample_ledger
from comparators import DescriptorRegistry
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim.metrics import MAX_METHODS, NOT_DESCRIBED, OTHER, UNSEEN, Counters, MethodLabels
from shim.reflection import fetch_descriptor_set
from shim.testing import running_shim
from tests.helpers import scrape_metrics
from tests.shim.test_modes import second_shim

REGISTRY = DescriptorRegistry.from_files([Path(sample_ledger.__file__).parent / "bank.binpb"])
BALANCE = "/bank.v1.Ledger/GetBalance"
OPEN = "/bank.v1.Ledger/OpenAccount"


async def test_metrics_count_calls_verdicts_differences_and_latencies(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """Scraped after four calls: calls and comparisons by method, real differences by kind (no rules:
    every decimal formatting is one), the primary's and the shadow's latency histograms, the gauges
    and the mode."""
    bank, bk = ledgers
    async with running_shim(bank.address, bk.address, registry=REGISTRY, metrics_listen="127.0.0.1:0") as (
        shim,
        sink,
    ):
        async with grpc.aio.insecure_channel(shim.address) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="A1", initial_deposit="10.5"))
            for _ in range(3):
                await stub.GetBalance(pb.GetBalanceRequest(account_id="A1"))
        await sink.wait_for(4)
        await shim.drain()
        assert shim.exporter is not None
        metrics = await asyncio.to_thread(scrape_metrics, shim.exporter.port)
    assert metrics["shim_calls_total", (("method", BALANCE),)] == 3
    assert metrics["shim_calls_total", (("method", OPEN),)] == 1
    verdicts = {
        labels: value for (name, labels), value in metrics.items() if name == "shim_comparisons_total"
    }
    assert sum(verdicts.values()) == 4
    assert verdicts[(("method", BALANCE), ("verdict", "mismatch"))] == 3  # "10.50" against "10.5"
    assert metrics["shim_differences_total", (("kind", "changed"), ("method", BALANCE))] >= 3
    assert metrics["shim_primary_latency_seconds_count", (("method", BALANCE),)] == 3
    assert metrics["shim_shadow_latency_seconds_count", (("method", BALANCE),)] == 3
    assert metrics["shim_primary_latency_seconds_bucket", (("le", "+Inf"), ("method", BALANCE))] == 3
    assert metrics["shim_shadow_in_flight", ()] == 0
    assert metrics["shim_shadow_breaker_open", ()] == 0
    assert metrics["shim_mode", (("mode", "shadow"), ("scope", "*"))] == 1


async def test_the_shim_answers_reflection_from_its_own_descriptors(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """With `reflection = "shim"`, a client asking the shim by gRPC reflection gets the services the shim
    serves, from the shim's descriptors (Bank is not asked: its address here does not answer at all)."""
    async with running_shim("127.0.0.1:1", registry=REGISTRY, reflection="shim") as (shim, _):
        fds = await fetch_descriptor_set(shim.address, 10.0)
    registry = DescriptorRegistry()
    registry.add_set(fds)
    assert set(registry.methods) == set(REGISTRY.methods)


def _method_labels(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[str]:
    return {value for _, labels in metrics for name, value in labels if name == "method"}


async def _call_made_up_methods(address: str, count: int) -> None:
    """`count` calls, each to a method of its own that no server has: each is answered UNIMPLEMENTED."""
    async with grpc.aio.insecure_channel(address) as channel:
        for start in range(0, count, 100):

            async def call(n: int) -> None:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await channel.unary_unary(f"/made.up.S{n}/M")(b"", timeout=10)

            await asyncio.gather(*(call(n) for n in range(start, min(start + 100, count))))


async def test_methods_the_descriptors_do_not_describe_share_one_metric_label(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """With descriptors, calls to methods they do not describe count under method="(not described)":
    made-up names add no series. Both sides refusing them as UNIMPLEMENTED proves nothing of the
    service: they are counted (`calls_unimplemented`) and not compared, so a client calling made-up
    names neither passes nor fails the gate (one such call failed it for the window, its method short
    of compared calls)."""
    bank, bk = ledgers
    async with running_shim(bank.address, bk.address, registry=REGISTRY, metrics_listen="127.0.0.1:0") as (
        shim,
        _,
    ):
        async with grpc.aio.insecure_channel(shim.address) as channel:
            await pb_grpc.LedgerStub(channel).OpenAccount(  # type: ignore[no-untyped-call]
                pb.OpenAccountRequest(account_id="A1", initial_deposit="1")
            )
        await _call_made_up_methods(shim.address, 50)
        await shim.drain()
        assert shim.exporter is not None
        metrics = await asyncio.to_thread(scrape_metrics, shim.exporter.port)
    assert _method_labels(metrics) <= {OPEN, NOT_DESCRIBED, ""}
    assert metrics["shim_calls_total", (("method", OPEN),)] == 1
    assert metrics["shim_calls_total", (("method", NOT_DESCRIBED),)] == 50
    assert metrics["shim_primary_latency_seconds_count", (("method", NOT_DESCRIBED),)] == 50
    comparisons = {
        labels: value for (name, labels), value in metrics.items() if name == "shim_comparisons_total"
    }
    assert sum(v for labels, v in comparisons.items() if ("method", NOT_DESCRIBED) in labels) == 0
    assert sum(v for labels, v in comparisons.items() if ("method", OPEN) in labels) == 1
    events = (("event", "calls_unimplemented"), ("method", NOT_DESCRIBED))
    assert metrics["shim_events_total", events] == 50


async def test_without_descriptors_at_most_1000_methods_get_a_metric_label(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """Without descriptors, the first 1000 methods called get a label of their own and every later one
    counts under method="(other)": the series stay bounded whatever names clients make up."""
    bank, _ = ledgers
    async with running_shim(bank.address, metrics_listen="127.0.0.1:0") as (shim, _):
        await _call_made_up_methods(shim.address, MAX_METHODS + 20)
        assert shim.exporter is not None
        metrics = await asyncio.to_thread(scrape_metrics, shim.exporter.port)
    calls = {labels: v for (name, labels), v in metrics.items() if name == "shim_calls_total"}
    assert len(calls) == MAX_METHODS + 1
    assert calls[(("method", OTHER),)] == 20
    assert sum(calls.values()) == MAX_METHODS + 20
    assert len(_method_labels(metrics)) == MAX_METHODS + 1


def test_counters_keep_described_methods_apart_beyond_their_limit() -> None:
    """Past its limit, Counters counts a new method as "(other)", unless its label is its own (a
    described method): made-up names cannot grow it without bound, nor push a real method out."""
    counters = Counters(MethodLabels(lambda method: method == BALANCE), limit=2)
    for n in range(5):
        counters.inc("calls", f"/made.up.S{n}/M")
    counters.inc("calls", BALANCE)
    assert counters.snapshot() == {
        ("calls", "/made.up.S0/M"): 1,
        ("calls", "/made.up.S1/M"): 1,
        ("calls", OTHER): 3,
        ("calls", BALANCE): 1,
    }


async def test_a_second_shim_cannot_serve_its_metrics_where_another_does(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """A shim whose metrics address another shim serves already stops at start (exit 2) with one line
    naming the address and metrics_listen: a scrape there reads one shim, never either."""
    bank, _ = ledgers
    async with running_shim(bank.address, metrics_listen="127.0.0.1:0") as (first, _):
        assert first.exporter is not None
        taken = f"127.0.0.1:{first.exporter.port}"
        status, lines = await second_shim(
            "--listen", "127.0.0.1:0", "--bank", bank.address, "--metrics", taken, "--store", ":memory:"
        )
        assert await asyncio.to_thread(scrape_metrics, first.exporter.port)  # the first one is untouched
    assert status == 2, lines
    [line] = lines
    assert line.startswith(f"shim: error: cannot serve metrics on {taken}: "), line
    assert "metrics_listen" in line


def test_the_calls_the_shim_did_not_see_have_a_metric_label_of_their_own() -> None:
    """Their records are under a method no descriptor describes: counted as "(not described)" they
    would pass for calls of methods the shim does not know, in the figures operators read."""
    assert MethodLabels(lambda method: method == BALANCE)(UNSEEN) == UNSEEN
    without = MethodLabels(limit=1)
    assert without("/made.Up/One") == "/made.Up/One"
    assert without(UNSEEN) == UNSEEN  # beyond the limit, still its own
