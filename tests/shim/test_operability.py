"""What operators read off a running shim: Prometheus metrics, and gRPC reflection from its descriptors."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

import sample_ledger
from comparators import DescriptorRegistry
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim.reflection import fetch_descriptor_set
from shim.testing import running_shim

REGISTRY = DescriptorRegistry.from_files([Path(sample_ledger.__file__).parent / "bank.binpb"])
BALANCE = "/bank.v1.Ledger/GetBalance"
OPEN = "/bank.v1.Ledger/OpenAccount"


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


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
        metrics = await asyncio.to_thread(_scrape, shim.exporter.port)
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
    """A client asking the shim by gRPC reflection gets the services the shim serves, from the shim's
    descriptors (Bank is not asked: its address here does not answer at all)."""
    async with running_shim("127.0.0.1:1", registry=REGISTRY) as (shim, _):
        fds = await fetch_descriptor_set(shim.address, 10.0)
    registry = DescriptorRegistry()
    registry.add_set(fds)
    assert set(registry.methods) == set(REGISTRY.methods)
