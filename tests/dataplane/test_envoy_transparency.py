"""Through Envoy, the client gets exactly what the primary sent, and each call is still compared."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio

from comparators import REFUSALS, Verdict
from shim.dataplane import envoy as envoy_process
from shim.testing import running_shim
from tests.backends import Running, scripted_server
from tests.shim.test_transparency import KINDS, _observe

pytestmark = pytest.mark.skipif(envoy_process.binary() is None, reason="no Envoy binary on this platform")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "requests",
    [[b"one"], [b"one", b"two", b"three"], [b"rich"], [b"code:5"]],
    ids=["ok", "three", "rich-error", "not-found-unicode"],
)
async def test_every_call_kind_relays_the_primary_and_is_compared(
    kind: str, requests: list[bytes], echo_pair: tuple[Running, Running]
) -> None:
    bank, bk = echo_pair
    if kind in ("unary_unary", "unary_stream"):
        requests = requests[:1]
    direct = await _observe(bank.address, kind, requests)
    for _ in range(4):  # the echo always sends its headers: a baseline without them is grpc's own race
        if direct[2]:
            break
        direct = await _observe(bank.address, kind, requests)
    assert direct[2], "the echo's headers were never observed directly"
    async with running_shim(bank.address, bk.address, dataplane="envoy") as (shim, sink):
        through = await _observe(shim.address, kind, requests)
        tries = 1
        while not through[2] and tries < 5:  # the same race, at the client's hop to Envoy (transparency.md)
            through = await _observe(shim.address, kind, requests)
            tries += 1
        comparisons = await sink.wait_for(tries)
    code, details, initial, trailing, answers = through
    # Envoy adds `date` to the answer's headers when the primary sent none (HTTP asks it of a proxy)
    initial = tuple((k, v) for k, v in initial if k != "date")  # type: ignore[attr-defined]
    assert (code, details, initial, trailing, answers) == direct
    assert comparisons[-1].verdict is Verdict.MATCH, comparisons[-1]
    assert comparisons[-1].exchange.method == f"/test.Echo/{kind}"
    assert len(comparisons[-1].exchange.requests) == len(requests)


async def test_all_statuses_pass_through(echo_pair: tuple[Running, Running]) -> None:
    bank, bk = echo_pair
    async with running_shim(bank.address, bk.address, dataplane="envoy") as (shim, sink):
        for code in grpc.StatusCode:
            if code is grpc.StatusCode.OK:
                continue
            request = [f"code:{code.value[0]}".encode()]
            direct = await _observe(bank.address, "unary_unary", request)
            through = await _observe(shim.address, "unary_unary", request)
            assert through[:2] == direct[:2]
            assert through[0] is code
        comparisons = await sink.wait_for(len(grpc.StatusCode) - 1)
    # as on the Python data plane: a write the primary never received (UNAVAILABLE) is not sent to BK; the
    # same refusal on both sides matches, the same failure (INTERNAL, UNKNOWN, ...) is no agreement
    verdicts = {c.exchange.primary.code: c.verdict for c in comparisons}
    expected = {
        code.value[0]: Verdict.MATCH if code.value[0] in REFUSALS else Verdict.SKIPPED
        for code in grpc.StatusCode
        if code is not grpc.StatusCode.OK
    }
    assert verdicts == expected


async def test_two_shims_with_envoy_run_side_by_side(echo_pair: tuple[Running, Running]) -> None:
    """Two shims on one machine each run their own Envoy (no shared memory between them)."""
    bank, bk = echo_pair
    async with (
        running_shim(bank.address, bk.address, dataplane="envoy") as (first, first_sink),
        running_shim(bank.address, bk.address, dataplane="envoy") as (second, second_sink),
    ):
        assert first.address != second.address
        for shim in (first, second):
            assert (await _observe(shim.address, "unary_unary", [b"one"]))[0] is grpc.StatusCode.OK
        await first_sink.wait_for(1)
        await second_sink.wait_for(1)


BANKS_DATE = "Mon, 01 Jan 2001 00:00:00 GMT"  # not now: Envoy's own would say now


async def _dated(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
    """An answer whose initial metadata carries the primary's own `date`."""
    received = [r async for r in requests]
    await context.send_initial_metadata((("date", BANKS_DATE), ("x-other", "1")))
    context.set_trailing_metadata((("x-t", "t"),))
    return [b"+".join(received)]


async def test_the_primarys_own_date_reaches_the_client_unchanged() -> None:
    """A primary that sends a `date` header: the client gets that one, as from the primary directly, and no
    other. Before, Envoy took the primary's off and put its own in its place."""
    bank, bk = await scripted_server(_dated), await scripted_server(_dated)
    try:
        direct = await _observe(bank.address, "unary_unary", [b"x"])
        async with running_shim(bank.address, bk.address, dataplane="envoy") as (shim, sink):
            through = await _observe(shim.address, "unary_unary", [b"x"])
            (compared,) = await sink.wait_for(1)
    finally:
        await bank.stop()
        await bk.stop()
    assert dict(direct[2])["date"] == BANKS_DATE  # type: ignore[call-overload]
    assert through == direct
    assert compared.verdict is Verdict.MATCH, compared.reason


def _seeing(seen: list[tuple[str, ...]]) -> Any:
    """A side that notes the x-forwarded-proto values of each call it gets."""

    async def handler(
        requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> list[bytes]:
        received = [r async for r in requests]
        metadata = context.invocation_metadata() or ()
        seen.append(tuple(str(v) for k, v in metadata if k == "x-forwarded-proto"))
        return [b"+".join(received)]

    return handler


@pytest.mark.parametrize(
    "metadata",
    [(), (("x-forwarded-proto", "https"),), (("x-forwarded-proto", "https"), ("x-forwarded-proto", "wss"))],
    ids=["none", "one", "two"],
)
async def test_a_clients_own_x_forwarded_proto_reaches_each_side_and_envoys_never_does(
    metadata: tuple[tuple[str, str], ...],
) -> None:
    """The client's own x-forwarded-proto metadata reaches Bank, and BK, as from the client directly; a
    client that sends none gets none added. Before, Envoy's route took every x-forwarded-proto off, the
    client's own too, and the copy carried Envoy's own ("http") to BK. Sent more than once, it arrives as
    one value, the client's joined by commas, as HTTP allows: Envoy's codec joins them as it reads them."""
    direct: list[tuple[str, ...]] = []
    bank_seen: list[tuple[str, ...]] = []
    bk_seen: list[tuple[str, ...]] = []
    plain = await scripted_server(_seeing(direct))
    bank, bk = await scripted_server(_seeing(bank_seen)), await scripted_server(_seeing(bk_seen))
    try:
        async with aio.insecure_channel(plain.address) as channel:
            await channel.unary_unary("/test.Wide/Call")(b"x", metadata=metadata, timeout=10)
        async with (
            running_shim(bank.address, bk.address, dataplane="envoy") as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            await channel.unary_unary("/test.Wide/Call")(b"x", metadata=metadata, timeout=10)
            (compared,) = await sink.wait_for(1)
    finally:
        for server in (plain, bank, bk):
            await server.stop()
    assert direct == [tuple(v for _, v in metadata)]
    joined = [(",".join(direct[0]),)] if len(metadata) > 1 else direct
    assert bank_seen == joined
    assert bk_seen == joined
    assert compared.verdict is Verdict.MATCH, compared.reason


# the x-envoy-* headers of a client's call that Envoy's router reads, takes off and ignores (the call is
# external to Envoy): docs/dataplane.md lists them, as names the shim's Envoy keeps from the primary
ENVOY_TAKES_OFF = (
    "x-envoy-max-retries",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-upstream-stream-duration-ms",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-hedge-on-per-try-timeout",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-internal",
    "x-envoy-force-trace",
    "x-envoy-ip-tags",
    "x-envoy-peer-metadata",
)


async def test_the_x_envoy_headers_envoys_router_reads_never_reach_the_primary() -> None:
    """A client's own `x-envoy-max-retries` and the other headers Envoy's router reads are taken off before
    the primary, and none of them acts (no retry, no timeout of Envoy's); any other `x-envoy-*` header
    reaches the primary. docs/dataplane.md names them."""
    seen: list[dict[str, Any]] = []

    async def behaviour(
        requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> list[bytes]:
        async for _ in requests:
            pass
        seen.append(dict(context.invocation_metadata() or ()))
        await context.abort(grpc.StatusCode.UNAVAILABLE, "busy")
        return []

    bank = await scripted_server(behaviour)
    headers = [
        (name, "3" if name.endswith(("-ms", "retries")) else "unavailable") for name in ENVOY_TAKES_OFF
    ]
    try:
        async with running_shim(bank.address, dataplane="envoy") as (shim, _):
            channel = aio.insecure_channel(shim.address)
            async with channel:
                with pytest.raises(aio.AioRpcError) as failed:
                    await channel.unary_unary("/x.Y/Z")(
                        b"", metadata=[*headers, ("x-envoy-own", "kept")], timeout=5
                    )
    finally:
        await bank.stop()
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    assert len(seen) == 1  # not retried
    assert [name for name in seen[0] if name.startswith("x-envoy")] == ["x-envoy-own"]
