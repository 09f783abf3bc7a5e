"""The venue's plans, compiled once from its descriptors and shim.toml: what the shim will do with each
method's calls, before any call arrives."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from shim.app import Shim
from shim.config import Upstream, build, load_file
from shim.routing import MethodSettings
from tests.services.venue import DESCRIPTOR_SET, REGISTRY

HERE = Path(__file__).parent
VENUE = "/venue.v1.Venue/"


def _shim(tmp_path: Path, **changes: object) -> Shim:
    config = tmp_path / "shim.toml"
    shutil.copyfile(HERE / "shim.toml", config)
    (tmp_path / "venue.binpb").write_bytes(DESCRIPTOR_SET)
    settings = {**load_file(config), **changes}
    return Shim(build(settings), registry=REGISTRY)


def test_each_described_method_has_its_plan_at_start(tmp_path: Path) -> None:
    plans = _shim(tmp_path).parts.plans
    compiled = {plan.method: plan for plan in plans}
    assert set(compiled) == set(REGISTRY.methods)  # every method of the descriptors, and only those
    trade, batch, cancel = (
        compiled[VENUE + "Trade"],
        compiled[VENUE + "SubmitBatch"],
        compiled[VENUE + "CancelOrder"],
    )
    fills, orders = compiled[VENUE + "StreamFills"], compiled[VENUE + "ListOpenOrders"]
    assert (trade.kind.client_streaming, trade.kind.server_streaming, trade.kind.unary) == (True, True, False)
    assert (batch.kind.client_streaming, batch.kind.server_streaming) == (True, False)
    assert (cancel.kind.unary, fills.kind.unary, fills.kind.server_streaming) == (True, False, True)
    # writes and reads, by the descriptors' idempotency levels
    assert [p.write for p in (trade, batch, cancel, fills, orders)] == [True, True, True, False, False]
    # ids: a session's acks mint order ids, message by message; a cancel names one
    assert (trade.ids.mints, trade.learns_per_message, trade.needs_request) == (True, True, True)
    assert (batch.ids.mints, batch.learns_per_message) == (True, False)
    assert (cancel.ids.request, cancel.needs_request) == (True, True)
    assert cancel.ids.learnable == {"exec"}  # its answer's fills: a write's exec ids are learned
    # a read's exec ids are only compared through the map ([ids.exec] learns from writes)
    assert (fills.ids.response, fills.ids.streamed, fills.ids.mints) == (True, True, False)
    # ListOpenOrders has no key, names no id: its first request need not be decoded to place it
    assert (orders.needs_request, orders.ids.request) == (False, False)
    assert all(not plan.strict for plan in plans)  # ordering.strict is off


def test_strict_and_read_overrides_are_in_the_plans(tmp_path: Path) -> None:
    config = tmp_path / "shim.toml"
    shutil.copyfile(HERE / "shim.toml", config)
    (tmp_path / "venue.binpb").write_bytes(DESCRIPTOR_SET)
    settings = load_file(config)
    methods = dict(settings["methods"])
    methods["venue.v1.Venue/CancelOrder"] = replace(
        methods.get("venue.v1.Venue/CancelOrder", MethodSettings()), strict=True
    )
    methods["venue.v1.Venue/GetOrder"] = MethodSettings(read=False)
    plans = Shim(build({**settings, "methods": methods}), registry=REGISTRY).parts.plans
    assert plans.of(VENUE + "CancelOrder").strict
    get_order = plans.of(VENUE + "GetOrder")
    assert (get_order.write, get_order.strict) == (True, False)  # a write now, ordered on the shadow only


def test_a_made_up_method_gets_a_plan_that_is_never_kept(tmp_path: Path) -> None:
    plans = _shim(tmp_path).parts.plans
    before = list(plans)
    made_up = plans.of("/venue.v1.Venue/NoSuchMethod")
    assert (made_up.write, made_up.kind.described, made_up.needs_request) == (True, False, False)
    assert (made_up.ids.request, made_up.ids.mints) == (False, False)
    for n in range(1000):
        plans.of(f"/x.Y/Made{n}")
    assert list(plans) == before


def test_without_descriptors_every_method_counts_as_described() -> None:
    shim = Shim(build({"bank": Upstream("bank", "127.0.0.1:1"), "listen": "127.0.0.1:0", "mode": "bank"}))
    assert list(shim.parts.plans) == []
    plan = shim.parts.plans.of("/any.Service/Method")
    assert (plan.kind.described, plan.write, plan.kind.unary, plan.needs_request) == (
        True,
        True,
        False,
        False,
    )


def test_the_plans_say_what_the_lanes_will_serialize(tmp_path: Path) -> None:
    plans = _shim(tmp_path).parts.plans
    # the venue's writes all have keys (OpenAccount's account, a cancel's order through its owner)
    assert plans.keyed() == 7
    assert plans.serialized() == "nothing: every write has keys"
    methods = dict(load_file(_copy(tmp_path))["methods"])
    del methods["venue.v1.Venue/OpenAccount"]
    unkeyed = Shim(build({**load_file(_copy(tmp_path)), "methods": methods}), registry=REGISTRY).parts.plans
    assert unkeyed.serialized() == (
        "the calls of 1 write method with no key (OpenAccount): each waits for every earlier call"
    )
    bare = Shim(
        build({"bank": Upstream("bank", "127.0.0.1:1"), "listen": "127.0.0.1:0", "mode": "bank"})
    ).parts.plans
    assert bare.serialized() == "every call: without descriptors every method is a write with no key"


def _copy(tmp_path: Path) -> Path:
    config = tmp_path / "shim.toml"
    shutil.copyfile(HERE / "shim.toml", config)
    (tmp_path / "venue.binpb").write_bytes(DESCRIPTOR_SET)
    return config
