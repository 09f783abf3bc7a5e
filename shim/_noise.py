"""Noise: the primary asked the same read a second time (Diffy's idea).

What differs between the primary's two answers to one read is noise, not a
difference of the shadow's. A share of mirrored reads (`[noise] reads`) is
asked again, after the client has its answer; writes never are.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from grpc import aio

from comparators import Code, Outcome
from shim import _grpc_compat
from shim._outcome import snapshot
from shim.adapters import Channel
from shim.evidence.noise import MIN_SAMPLED
from shim.metrics import Counters
from shim.settings import COUNT, NON_NEGATIVE, SHARE, setting


@dataclass(frozen=True, slots=True)
class NoiseSettings:
    """Noise: how often a read is asked of the primary again, and when a path's differences are more
    than the primary differing from itself (`docs/noise.md`)."""

    SECTION: ClassVar[str] = "noise"
    reads: float = setting(
        0.0,
        SHARE,
        "share of mirrored reads also asked of the primary again (a reload changes it, cannot turn it on)",
        reloadable=True,
    )
    relative: float = setting(
        0.2,
        NON_NEGATIVE,
        "a path is real when its rate exceeds the noise rate by this share ...",
        reloadable=True,
    )
    absolute: float = setting(
        0.0003, SHARE, "... and by this much (a share of compared calls)", reloadable=True
    )
    min_sampled: int = setting(
        MIN_SAMPLED,
        COUNT,
        "calls of a method asked again before the primary's rates there can make a path noise",
        reloadable=True,
    )


class Noise:
    """Asks the primary the same read again, for a share of mirrored reads. Never for writes."""

    def __init__(
        self, channel: Channel, share: float, timeout: float, counters: Counters, *, shared: bool = False
    ) -> None:
        self.channel = channel
        self.share = share
        self.timeout = timeout
        self.counters = counters
        # other shim processes serve through the same store (PostgreSQL, `--workers`): writes this one's
        # lanes never see may come in on a read's keys between its two answers
        self.shared = shared
        self._rng = random.Random()

    def sampled(self) -> bool:
        return self.share > 0 and (self.share >= 1 or self._rng.random() < self.share)

    def kept(self, first: Outcome, again: Outcome) -> bool:
        """Whether the primary's second answer is a sample of noise next to its `first`: with the same status
        code (a second ask timed out or shed says how the primary fared, not how its answers vary); and, where
        other processes serve the same store (`shared`), with the same messages: a write through another
        replica on the read's keys, which this one cannot see, could explain any difference of theirs."""
        if again.code != first.code:
            return False
        return not self.shared or again.messages == first.messages

    async def ask_again(self, method: str, metadata: tuple[Any, ...], requests: tuple[bytes, ...]) -> Outcome:
        """The primary's answer to the same requests, or a local outcome saying why there is none."""
        self.counters.inc("noise_calls", method)
        started = time.perf_counter()
        call = self.channel.stream_stream(method)(metadata=metadata, timeout=self.timeout)
        messages: list[bytes] = []
        try:
            for request in requests:
                if not await _grpc_compat.send(call, request):
                    break
            await _grpc_compat.close_sending(call)
            while True:
                try:
                    message = await call.read()
                except aio.AioRpcError:
                    break
                if message is aio.EOF:
                    break
                messages.append(message)
            return await snapshot(call, tuple(messages), time.perf_counter() - started)
        except asyncio.CancelledError:
            call.cancel()
            raise
        except Exception as exc:  # recorded, never raised into the mirror
            call.cancel()
            return Outcome(code=Code.INTERNAL, local=f"asking the primary again failed: {exc!r}")


async def asked_again(task: asyncio.Task[Outcome | None] | None) -> Outcome | None:
    """The second answer, once its task is over (None when there is none)."""
    if task is None:
        return None
    try:
        return await task
    except asyncio.CancelledError:
        return None
