"""A copy knows when Envoy had the primary's answer; the client never sees how it is told.

Envoy adds the time to the copied call's answer (`ANSWERED_HEADER`: the request's start and the
microseconds to the answer's first byte) and takes it off again before the client's codec, after the
copy has it. Order across replicas holds a ticket taken after that time for late (`shim.shadow.fleet`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from grpc import aio

from comparators import Outcome
from shim.dataplane.envoy_config import ANSWERED_HEADER, STARTED_HEADER
from shim.dataplane.processor import answered_at, started_at
from shim.shadow.mirror import Mirror
from shim.testing import running_shim
from tests.backends import Running, scripted_server
from tests.helpers import NEEDS_ENVOY
from tests.shim.test_transparency import _observe


@pytest.mark.parametrize(
    ("value", "at"),
    [
        ("1796442874.143052 1819", 1796442874.143052 + 0.001819),
        ("1796442874.143052 -", 1796442874.143052),  # no answer's first byte: the start, the earliest
        ("1796442874.143052", 1796442874.143052),
        ("soon 12", None),
        ("", None),
    ],
)
def test_the_answer_time_is_read_from_the_header(value: str, at: float | None) -> None:
    headers: list[tuple[str, str | bytes]] = [(":status", "200")]
    if value:
        headers.append((ANSWERED_HEADER, value))
    assert answered_at(headers) == at


@NEEDS_ENVOY
@pytest.mark.parametrize(("kind", "requests"), [("unary_unary", [b"one"]), ("unary_unary", [b"code:5"])])
async def test_the_copy_has_the_answer_time_and_the_client_never_sees_it(
    echo_pair: tuple[Running, Running], monkeypatch: pytest.MonkeyPatch, kind: str, requests: list[bytes]
) -> None:
    """An answer and an error (trailers only): the copy's answer time lies between the client's send and its
    answer, and neither the client's metadata nor the comparison's carry the header."""
    bank, _bk = echo_pair
    seen: list[Any] = []
    done = Mirror.primary_done

    def spy(self: Mirror, outcome: Outcome, deadline_left: float | None = None) -> None:
        seen.append((self.answered_at, outcome.initial_metadata + outcome.trailing_metadata))
        done(self, outcome, deadline_left)

    monkeypatch.setattr(Mirror, "primary_done", spy)
    async with running_shim(bank.address, _bk.address, dataplane="envoy") as (shim, sink):
        before = time.time()
        _code, _details, initial, trailing, _answers = await _observe(shim.address, kind, requests)
        after = time.time()
        await sink.wait_for(1)
    assert [k for k, _ in (*initial, *trailing) if k == ANSWERED_HEADER] == []  # type: ignore[misc]
    [(at, metadata)] = seen
    assert at is not None
    assert before <= at <= after
    assert [k for k, _ in metadata if k == ANSWERED_HEADER] == []


@NEEDS_ENVOY
async def test_the_copy_has_the_calls_start_and_neither_side_sees_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Envoy tells the copy when it received the call (`STARTED_HEADER`): its tickets across replicas carry
    that start, not the copy's arrival. It lies between the client's send and Envoy's answer time; neither
    Bank nor BK receives the header, not even one the client sent itself."""
    received: dict[str, list[tuple[str, Any]]] = {}

    def recording(side: str) -> Any:
        async def handler(
            requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
        ) -> list[bytes]:
            received[side] = list(context.invocation_metadata() or ())
            return [b"".join([r async for r in requests])]

        return handler

    bank, bk = await scripted_server(recording("bank")), await scripted_server(recording("bk"))
    seen: list[tuple[float | None, float | None]] = []
    done = Mirror.primary_done

    def spy(self: Mirror, outcome: Outcome, deadline_left: float | None = None) -> None:
        seen.append((self.admission.started, self.answered_at))
        done(self, outcome, deadline_left)

    monkeypatch.setattr(Mirror, "primary_done", spy)
    try:
        async with (
            running_shim(bank.address, bk.address, dataplane="envoy") as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            before = time.time()
            await channel.unary_unary("/test.Echo/unary_unary")(b"one", metadata=((STARTED_HEADER, "1"),))
            after = time.time()
            await sink.wait_for(1)
    finally:
        await bank.stop()
        await bk.stop()
    [(started, answered)] = seen
    assert started is not None
    assert answered is not None
    assert before <= started <= answered <= after
    for side in ("bank", "bk"):
        assert [k for k, _ in received[side] if k == STARTED_HEADER] == [], side


@pytest.mark.parametrize(
    ("value", "at"), [("1796442874.143052", 1796442874.143052), ("nan", None), ("soon", None), ("", None)]
)
def test_the_start_is_read_from_the_header(value: str, at: float | None) -> None:
    headers: list[tuple[str, str | bytes]] = [(":path", "/a.B/C")]
    if value:
        headers.append((STARTED_HEADER, value))
    assert started_at(headers) == at
