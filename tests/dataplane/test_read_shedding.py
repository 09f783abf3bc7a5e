"""Reads shed at Envoy while the comparison plane is behind: the routes that do it, Envoy told at each
change (and each second while shedding), and Envoy's counts taken once, recorded once, across planes."""

from __future__ import annotations

import random
import urllib.parse
from functools import partial
from pathlib import Path
from types import SimpleNamespace

from comparators import Exchange
from shim.dataplane.envoy_config import SHED_KEY, RouteEntry, route_table, shed_routes
from shim.dataplane.read_shedding import MANY, ReadShedding, record_shed
from shim.metrics import Counters
from shim.routing import Router
from shim.shadow.dispatcher import ShadowDispatcher

READ, OTHER, WRITE = "/pkg.Svc/Read", "/pkg.Svc/Another", "/pkg.Svc/Write"


def test_a_mirrored_read_has_before_its_route_the_same_route_copying_nothing_while_shedding() -> None:
    prefixes = shed_routes([READ, OTHER])
    assert prefixes == {OTHER: "shed-0", READ: "shed-1"}  # by name: the same methods, the same prefixes
    entries = [
        RouteEntry(READ, "bank", mirror="bk", shed_as=prefixes[READ]),
        RouteEntry(WRITE, "bank", mirror="bk"),
        RouteEntry("", "bank", mirror="bk"),
    ]
    routes = route_table(entries, 3)["resources"][0]["virtual_hosts"][0]["routes"]
    assert [r["match"]["path"] for r in routes[:3]] == [READ, READ, WRITE]
    shed, read = routes[0], routes[1]
    assert shed["match"]["runtime_fraction"] == {
        "default_value": {"numerator": 0, "denominator": "HUNDRED"},  # taken only while Envoy is told so
        "runtime_key": SHED_KEY,
    }
    assert shed["stat_prefix"] == "shed-1"  # its calls are counted, by method
    assert shed["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["disabled"] is True
    assert "disabled" not in read["typed_per_filter_config"]["envoy.filters.http.ext_proc"]  # copied
    assert shed["route"] == read["route"]  # to the same primary, in the same way
    assert "runtime_fraction" not in read["match"]
    assert sum("stat_prefix" in r for r in routes) == 1  # a write, or a method not named, is never shed


async def test_envoy_is_told_at_each_change_and_every_second_while_shedding() -> None:
    told: list[dict[str, list[str]]] = []

    async def runtime(path: str) -> None:
        told.append(urllib.parse.parse_qs(path.partition("?")[2]))

    shedding = ReadShedding({READ: "shed-0"}, Counters())
    assert not shedding.wanted(True, MANY - 1)  # a few copies taken up late: a blip
    assert shedding.wanted(True, 2 * MANY - 1)  # many within a second: behind
    assert not shedding.wanted(False, 2 * MANY - 1)  # not armed: never
    assert shedding.wanted(True, 2 * MANY - 1)  # no new sign, but within QUIET s of the last
    await shedding.apply(False, runtime)  # a plane's first word: one before it may have left it at 100
    await shedding.apply(False, runtime)
    await shedding.apply(True, runtime)
    await shedding.apply(True, runtime)  # again: an Envoy started again would copy reads meanwhile
    await shedding.apply(False, runtime)
    assert told == [{SHED_KEY: ["0"]}, {SHED_KEY: ["100"]}, {SHED_KEY: ["100"]}, {SHED_KEY: ["0"]}]
    assert not shedding.on
    nothing = ReadShedding({}, Counters())  # nothing mirrored: Envoy is never told
    await nothing.apply(True, runtime)
    assert len(told) == 4


async def test_each_read_envoy_shed_is_counted_and_recorded_once_across_planes(tmp_path: Path) -> None:
    counted = tmp_path / "reads-shed.json"
    figures = {"vhost.all.route.shed-0.upstream_rq_total": 3, "vhost.all.route.shed-1.upstream_rq_total": 0}

    async def stats(pattern: str) -> dict[str, int]:
        assert pattern == r"^vhost\.all\.route\.shed-[0-9]+\.upstream_rq_total$"
        return dict(figures)

    counters = Counters()
    shedding = ReadShedding({READ: "shed-0", OTHER: "shed-1"}, counters, counted)
    assert await shedding.count(stats) == {READ: 3}
    assert await shedding.count(stats) == {}  # counted once
    assert counters.get("shadow_shed", READ) == counters.get("calls", READ) == 3
    assert shedding.take(limit=2) == {READ: 2}
    # a plane started again behind the same Envoy goes on from there
    figures["vhost.all.route.shed-1.upstream_rq_total"] = 4
    again = ReadShedding({READ: "shed-0", OTHER: "shed-1"}, Counters(), counted)
    assert await again.count(stats) == {OTHER: 4}
    records: list[Exchange] = []
    record_shed(records.append, again.take(None))
    assert sorted(r.method for r in records) == [OTHER] * 4 + [READ]
    assert all(r.shadow is None and not r.is_write for r in records)
    assert all(r.note.startswith("not mirrored: shed at Envoy") for r in records)
    assert again.take(None) == {}
    assert ReadShedding({READ: "shed-0"}, Counters(), counted).unrecorded == {}


def test_reads_envoy_shed_that_sampling_would_have_left_out_are_not_recorded() -> None:
    """With `sampling.reads` below 1, only the share of shed reads sampling would have mirrored is recorded
    skipped (their keys unknown: a draw each); the others are counted as not sampled."""
    counters = Counters()
    shared = SimpleNamespace(router=Router(None, {}, read_rate=0.5, rng=random.Random(7)), counters=counters)
    dispatcher = SimpleNamespace(shared=shared)
    records: list[Exchange] = []
    record_shed(records.append, {READ: 1000}, partial(ShadowDispatcher.not_sampled, dispatcher))
    left_out = counters.get("reads_not_sampled", READ)
    assert len(records) + left_out == 1000
    assert 400 < len(records) < 600, len(records)
    assert all(r.method == READ and not r.is_write for r in records)


async def test_reads_envoy_shed_after_it_was_started_again_are_counted_from_its_new_count() -> None:
    figures = {"vhost.all.route.shed-0.upstream_rq_total": 5}

    async def stats(pattern: str) -> dict[str, int]:
        return dict(figures)

    shedding = ReadShedding({READ: "shed-0"}, Counters())
    assert await shedding.count(stats) == {READ: 5}
    figures["vhost.all.route.shed-0.upstream_rq_total"] = 2  # Envoy started again: its stats from 0
    assert await shedding.count(stats) == {READ: 2}
    figures["vhost.all.route.shed-0.upstream_rq_total"] = 3
    assert await shedding.count(stats) == {READ: 1}
