"""What the client receives through the shim is exactly what the primary sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc import aio
from grpc_status import rpc_status

from comparators import Verdict
from shim.recording.format import Recording
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests.backends import OPTIONS, Running, _Scripted, scripted_server
from tests.helpers import PLANES

KINDS = ["unary_unary", "unary_stream", "stream_unary", "stream_stream"]


def _rich_status() -> status_pb2.Status:
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field="quantity", description="must be > 0")
            ]
        )
    )
    return status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="bad quantity ✗", details=[detail])


async def _echo(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
    """Echo metadata into headers/trailers, answer once or per request, or fail as asked."""
    received = [r async for r in requests]
    md = dict(context.invocation_metadata() or ())
    await context.send_initial_metadata((("x-initial", md.get("x-tag", "")), ("x-initial-bin", b"\x00\xff")))
    context.set_trailing_metadata(
        (("x-trailing", "t-" + str(md.get("x-tag", ""))), ("x-trailing-bin", b"\x01\x02"))
    )
    if received and received[0] == b"rich":
        await context.abort_with_status(rpc_status.to_status(_rich_status()))
    if received and received[0].startswith(b"code:"):
        code = int(received[0].split(b":")[1])
        status = next(c for c in grpc.StatusCode if c.value[0] == code)
        await context.abort(status, f"failed with {status.name} — ünïcødé ☃ 😈")
    if md.get("x-answers") == "one":
        return [b"+".join(received) + b"!"]
    return [r + b"!" for r in received] + [b"end"]


def _invoke(channel: aio.Channel, kind: str, requests: list[bytes], tag: str) -> aio.Call:
    method = f"/test.Echo/{kind}"
    metadata = (("x-tag", tag), ("x-answers", "one" if kind.endswith("_unary") else "many"))
    if kind == "unary_unary":
        return channel.unary_unary(method)(requests[0], metadata=metadata)
    if kind == "unary_stream":
        return channel.unary_stream(method)(requests[0], metadata=metadata)
    if kind == "stream_unary":
        return channel.stream_unary(method)(iter(requests), metadata=metadata)
    return channel.stream_stream(method)(iter(requests), metadata=metadata)


async def _observe(address: str, kind: str, requests: list[bytes], tag: str = "a") -> tuple[object, ...]:
    async with aio.insecure_channel(address) as channel:
        call = _invoke(channel, kind, requests, tag)
        answers: list[bytes] = []
        try:
            if kind in ("unary_unary", "stream_unary"):
                answers.append(await call)  # type: ignore[misc]
            else:
                answers.extend([a async for a in call])  # type: ignore[attr-defined]
        except aio.AioRpcError:
            pass
        return (
            await call.code(),
            await call.details(),
            tuple(await call.initial_metadata()),
            tuple(await call.trailing_metadata()),
            tuple(answers),
        )


@pytest.fixture
async def echo_pair() -> AsyncIterator[tuple[Running, Running]]:
    bank, bk = await scripted_server(_echo), await scripted_server(_echo)
    yield bank, bk
    await bank.stop()
    await bk.stop()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "requests",
    [[b"one"], [b"rich"], [b"code:5"], [b"code:13"]],
    ids=["ok", "rich-error", "not-found-unicode", "internal-unicode"],
)
async def test_every_call_kind_relays_the_primary_exactly(
    kind: str, requests: list[bytes], echo_pair: tuple[Running, Running]
) -> None:
    """Messages, headers and trailers (binary too), status, unicode and rich details arrive as sent. Alike
    answers match; but the same INTERNAL on both sides is two failures, no agreement: skipped."""
    bank, bk = echo_pair
    direct = await _observe(bank.address, kind, requests)
    for _ in range(4):  # the echo always sends its headers: a baseline without them is grpc's own race
        if direct[2]:
            break
        direct = await _observe(bank.address, kind, requests)
    assert direct[2], "the echo's headers were never observed directly"
    async with running_shim(bank.address, bk.address) as (shim, sink):
        through = await _observe(shim.address, kind, requests)
        tries = 1
        while not through[2] and tries < 5:  # the same race, at the shim's hop to Bank or the client's to it
            through = await _observe(shim.address, kind, requests)
            tries += 1
        comparisons = await sink.wait_for(tries)
    assert through == direct
    failed = requests == [b"code:13"]
    assert comparisons[-1].verdict is (Verdict.SKIPPED if failed else Verdict.MATCH)


async def test_rich_error_details_survive_byte_for_byte(echo_pair: tuple[Running, Running]) -> None:
    """grpc-status-details-bin decodes on the client into the very google.rpc.Status the backend sent."""
    bank, _ = echo_pair
    async with running_shim(bank.address) as (shim, _sink), aio.insecure_channel(shim.address) as channel:
        call = channel.unary_unary("/test.Echo/Rich")(b"rich", metadata=(("x-answers", "one"),))
        with pytest.raises(aio.AioRpcError) as info:
            await call
    status = rpc_status.from_call(info.value)
    assert status == _rich_status()


async def test_all_statuses_pass_through(echo_pair: tuple[Running, Running]) -> None:
    """Every non-OK status code the primary answers with reaches the client unchanged, with its details."""
    bank, bk = echo_pair
    async with running_shim(bank.address, bk.address) as (shim, _sink):
        for code in grpc.StatusCode:
            if code is grpc.StatusCode.OK:
                continue
            request = [f"code:{code.value[0]}".encode()]
            direct = await _observe(bank.address, "unary_unary", request)
            through = await _observe(shim.address, "unary_unary", request)
            assert through == direct
            assert through[0] is code


@pytest.mark.parametrize("dataplane", PLANES)
async def test_more_calls_at_once_than_the_default_limits_all_succeed_and_are_compared(
    dataplane: str,
) -> None:
    """1,100 calls in flight at once on one connection, beyond the defaults of Envoy (1,024 per cluster and
    per connection) and of a grpc server (1,000 not yet taken up): every one reaches Bank before any is
    answered, every one is answered by Bank, and every one is mirrored and compared."""
    count = 1100
    everyone = asyncio.Event()
    arrived = 0
    answered_before_everyone = 0  # calls Bank answered before the last arrived: they were not all in flight

    async def gather_then_answer(requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
        nonlocal arrived, answered_before_everyone
        received = [r async for r in requests]
        arrived += 1
        if arrived >= count:
            everyone.set()
        try:
            await asyncio.wait_for(everyone.wait(), 25)  # the calls' own deadline is 30 s
        except TimeoutError:
            answered_before_everyone += 1
        return [b"+".join(received)]

    bank, bk = await scripted_server(gather_then_answer), await scripted_server(_plain)
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                dataplane=dataplane,
                shadow={"max_in_flight": 5000},
                shadow_timeout=20.0,
                methods={"test.Wide/Call": MethodSettings(read=True)},  # unordered: this is about numbers
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            call = channel.unary_unary("/test.Wide/Call")
            answers = await asyncio.gather(
                *(call(f"r{n}".encode(), timeout=30) for n in range(count)), return_exceptions=True
            )
            comparisons = await sink.wait_for(count, within=60)
    finally:
        await bank.stop()
        await bk.stop()
    assert (arrived, answered_before_everyone) == (count, 0)  # they were all in flight at once
    assert [a for a in answers if not isinstance(a, bytes)] == []
    assert {c.verdict for c in comparisons} == {Verdict.MATCH}, {c.reason for c in comparisons}


async def _plain(requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
    return [b"+".join([r async for r in requests])]


# beyond the defaults of Envoy (100 headers, 60 KiB of them) and of grpc (8 KiB of metadata, 16 KiB at most)
MANY_HEADERS = tuple((f"x-h{i}", f"v{i}") for i in range(150))
LARGE_HEADER = (("x-large", "v" * 100_000),)
METADATA_OPTIONS = [("grpc.max_metadata_size", 1 << 20), ("grpc.absolute_max_metadata_size", 1 << 20)]


async def _mirror_headers(
    requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
) -> list[bytes]:
    """Answer with the call's own headers of "x-" as initial metadata, and again as trailers."""
    received = [r async for r in requests]
    sent = tuple((k, v) for k, v in (context.invocation_metadata() or ()) if k.startswith("x-"))
    await context.send_initial_metadata(sent)
    context.set_trailing_metadata(sent)
    return [b"+".join(received)]


@pytest.mark.parametrize("dataplane", PLANES)
@pytest.mark.parametrize("headers", [MANY_HEADERS, LARGE_HEADER], ids=["150-headers", "100-KB-header"])
async def test_many_and_large_headers_reach_the_primary_and_come_back_as_they_would_without_the_shim(
    dataplane: str, headers: tuple[tuple[str, str], ...]
) -> None:
    """A Bank that takes a call's headers beyond Envoy's and grpc's defaults, and answers with as many in
    its initial metadata and trailers: through the shim the call succeeds, and the client gets them all,
    as it does from Bank directly. Before, Envoy reset the call (150 headers) or closed the client's
    connection (100 KB), and the Python data plane refused it (RESOURCE_EXHAUSTED)."""
    bank, bk = await scripted_server(_mirror_headers), await scripted_server(_mirror_headers)
    try:
        seen = []
        async with running_shim(bank.address, bk.address, dataplane=dataplane) as (shim, sink):
            for address in (bank.address, shim.address):
                async with aio.insecure_channel(address, options=METADATA_OPTIONS) as channel:
                    call = channel.unary_unary("/test.Wide/Call")(b"x", metadata=headers, timeout=10)
                    answer = await call
                    initial, trailing = await call.initial_metadata(), await call.trailing_metadata()
                seen.append((answer, _ours(initial), _ours(trailing)))
            (compared,) = await sink.wait_for(1)
    finally:
        await bank.stop()
        await bk.stop()
    assert seen[0] == (b"x", headers, headers)  # Bank alone
    assert seen[1] == seen[0]
    assert compared.verdict is Verdict.MATCH, compared.reason


def _ours(metadata: Any) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in metadata if k.startswith("x-"))


async def _headers_at_once_then_echo(
    requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
) -> list[bytes]:
    """Send the headers, with no entry in them, before reading any request; then echo each request."""
    await context.send_initial_metadata(())
    async for request in requests:
        await context.write(request + b"!")
    return []


async def _talk_once_the_headers_came(address: str) -> tuple[bool, bytes, grpc.StatusCode]:
    """A bidi client that waits for the answer's headers (10 s at most) before it sends its one request:
    whether they came, the echo of its request, and the call's status."""
    async with aio.insecure_channel(address) as channel:
        call = channel.stream_stream("/test.Chat/Talk")(timeout=30)
        try:
            await asyncio.wait_for(call.initial_metadata(), 10)
        except TimeoutError:
            call.cancel()
            return False, b"", grpc.StatusCode.CANCELLED
        await call.write(b"hi")
        echo = await call.read()
        await call.done_writing()
        return True, echo, await call.code()


@pytest.mark.parametrize("mode", ["bank", "shadow"])
async def test_a_bidi_client_waiting_for_the_primarys_empty_headers_gets_them_before_its_first_request(
    mode: str,
) -> None:
    """A primary that sends its headers, empty, as soon as the call comes, and a client that waits for them
    before it sends anything: through the shim (Python data plane) the client gets them at once and talks,
    as it does with the primary directly. Before, the shim held empty headers back until the first answer
    or the end of the call, and the client waited for them until its deadline."""
    bank = await scripted_server(_headers_at_once_then_echo)
    bk = await scripted_server(_headers_at_once_then_echo)
    try:
        direct = await _talk_once_the_headers_came(bank.address)
        async with running_shim(bank.address, bk.address, mode=mode, dataplane="python") as (shim, sink):
            through = await _talk_once_the_headers_came(shim.address)
            compared = await sink.wait_for(1) if mode == "shadow" else []
    finally:
        await bank.stop()
        await bk.stop()
    assert direct == (True, b"hi!", grpc.StatusCode.OK)
    assert through == direct
    assert [c.verdict for c in compared] == ([Verdict.MATCH] if mode == "shadow" else [])


async def _past_any_deadline(requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
    """A write Bank receives, and answers only after the client's deadline (never)."""
    _ = [r async for r in requests]
    await asyncio.Event().wait()
    return []


# The deadline as a client's library sends it (grpc-timeout), with no timer of the library's own: the
# server's (and any proxy's) clock alone ends the call, so what the client gets is what they send
ON_THE_WIRE_ONLY = (("grpc-timeout", "200m"),)


async def _deadline_outcome(address: str, own_timer: bool) -> tuple[object, ...]:
    async with aio.insecure_channel(address) as channel:
        call = channel.unary_unary("/test.Wide/Write")
        try:
            if own_timer:
                await call(b"w", timeout=0.2)
            else:  # a deadline of the library's own would be sent in its place
                await asyncio.wait_for(call(b"w", metadata=ON_THE_WIRE_ONLY), 30)
        except aio.AioRpcError as exc:
            return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_call_whose_deadline_passed_is_recorded_as_one_the_client_gave_up(
    dataplane: str, tmp_path: Path
) -> None:
    """Bank answers DEADLINE_EXCEEDED once the client's deadline (sent on the wire alone) has passed: live,
    the call is not compared; so the recording does not keep it as an answer to replay against BK (a
    difference no BK could avoid). A write is counted lost, as a write the client cancelled."""
    bank = await scripted_server(_past_any_deadline)
    path = tmp_path / "calls.jsonl"
    try:
        async with running_shim(bank.address, dataplane=dataplane, record={"path": str(path)}) as (shim, _):
            through = [await _deadline_outcome(shim.address, own_timer=False) for _ in range(3)]
    finally:
        await bank.stop()
    assert set(through) == {(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")}
    recording = Recording(path)
    ending = recording.check()
    assert [c.code for c in recording.calls()] == []
    assert (ending.calls, ending.lost) == (0, 3)


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_deadline_that_passes_ends_the_call_as_without_the_shim_and_is_no_mismatch(
    dataplane: str,
) -> None:
    """A write Bank has not answered when the client's deadline passes: the client gets what Bank alone
    gives it (DEADLINE_EXCEEDED, "Deadline Exceeded"), from its own timer or from Bank's, and the call is
    not compared (skipped: whether either side applied the write is unknown), even though BK, given the
    call afterwards, answers it at once. Before, Envoy enforced the client's grpc-timeout itself: the
    client got Envoy's own reply ("downstream duration timeout"), and the copy recorded that reply as
    Bank's answer, a mismatch against BK's."""
    bank, bk = await scripted_server(_past_any_deadline), await scripted_server(_plain)
    timers = [True, False] * 5
    try:
        direct = [await _deadline_outcome(bank.address, own) for own in timers]
        async with running_shim(bank.address, bk.address, dataplane=dataplane) as (shim, sink):
            through = [await _deadline_outcome(shim.address, own) for own in timers]
            comparisons = await sink.wait_for(len(timers), within=30)
    finally:
        await bank.stop()
        await bk.stop()
    assert set(direct) == {(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")}
    assert through == direct
    assert [
        (c.verdict, c.reason, c.exchange.primary, c.exchange.shadow)
        for c in comparisons
        if c.verdict is not Verdict.SKIPPED
    ] == []
    assert all(
        c.exchange.cancelled and "whether either side applied it is unknown" in c.reason for c in comparisons
    )


# a Bank that lets its clients ping as often as they like (Envoy does too), and a client that does
PINGS_WELCOME = [
    ("grpc.http2.min_ping_interval_without_data_ms", 100),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_ping_strikes", 0),
]
PINGING_CLIENT = [
    ("grpc.keepalive_time_ms", 500),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]


async def _answer_after_5s(requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
    """A call that takes Bank 5 s: the client's keepalive pings it many times on an idle connection."""
    _ = [r async for r in requests]
    await asyncio.sleep(5)
    return [b"done"]


async def _long_call(address: str) -> tuple[object, ...]:
    async with aio.insecure_channel(address, options=PINGING_CLIENT) as channel:
        try:
            return (grpc.StatusCode.OK, await channel.unary_unary("/test.Slow/Wait")(b"x", timeout=30))
        except aio.AioRpcError as exc:
            return exc.code(), exc.details()


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_client_pinging_often_keeps_its_call_as_with_a_primary_that_allows_it(dataplane: str) -> None:
    """A client whose keepalive pings every 500 ms, beyond grpc's default server policy (one ping in 5 min
    without data, two strikes): through the shim its call ends with the primary's answer, as directly to a
    Bank that allows it. Before, the Python data plane closed the connection mid-call (UNAVAILABLE, "Too
    many pings")."""
    server = aio.server(options=[*OPTIONS, *PINGS_WELCOME])
    server.add_generic_rpc_handlers([_Scripted(_answer_after_5s)])
    bank = Running(server, server.add_insecure_port("127.0.0.1:0"))
    await server.start()
    try:
        direct = await _long_call(bank.address)
        async with running_shim(bank.address, dataplane=dataplane) as (shim, _):
            through = await _long_call(shim.address)
    finally:
        await bank.stop()
    assert direct == (grpc.StatusCode.OK, b"done")
    assert through == direct


@pytest.mark.parametrize("dataplane", PLANES)
async def test_bank_sees_the_clients_user_agent_on_envoy_and_the_shims_on_python(dataplane: str) -> None:
    """Envoy passes the client's `user-agent` to Bank; the Python data plane's channel to Bank sends its
    own (grpc sets it a channel's, and takes none from a call), as docs/transparency.md says."""

    async def user_agent(
        requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> list[bytes]:
        _ = [r async for r in requests]
        return [dict(context.invocation_metadata() or ()).get("user-agent", "").encode()]

    async def ask(address: str) -> bytes:
        options = [("grpc.primary_user_agent", "bank-client/7.1")]
        async with aio.insecure_channel(address, options=options) as channel:
            answer: bytes = await channel.unary_unary("/t.Svc/Ask")(b"x", timeout=10)
            return answer

    bank = await scripted_server(user_agent)
    try:
        direct = await ask(bank.address)
        async with running_shim(bank.address, dataplane=dataplane) as (shim, _):
            through = await ask(shim.address)
    finally:
        await bank.stop()
    assert direct.startswith(b"bank-client/7.1 grpc-python")
    if dataplane == "envoy":
        assert through == direct
    else:
        assert through.startswith(b"grpc-python")  # the shim's channel's, without the client's own
