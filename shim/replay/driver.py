"""Replaying recorded calls through the shim's own shadow machinery, with Bank's recorded answers as the
primary's.

Each recorded call drives one `Mirror`, as `shim.dataplane.processor` drives one from Envoy's copy of a
live call: `ShadowDispatcher.start`, its request messages, the primary's answer messages and its final
status (the recorded ones). So the lanes (calls on a key reach BK in the recorded order, keys in
parallel), the ids learned from BK's answers against Bank's, the marks of keys out of step, the
comparison pipeline with the config's rules and the store are the live ones, unchanged.

Nothing is dropped: a call is started only when fewer than `in_flight` are in flight, the pipeline has
room for all of them (else it is drained first), and the store is less than half its `max_buffer`
(and `max_buffer_bytes`) behind (else it is flushed first).

BK answers later than Bank did, by however long ago the recording was made: each exchange carries that
(`clock_offset`), and timestamp rules compare BK's times with Bank's moved on by it. A session's answers
each carry their own (`message_offsets`: when the request each followed went to BK, less when it came
live), since its messages go sooner than they came, or later; with --speed, each goes at its recorded
time scaled, as calls do. A time an earlier call stamped (an opening time, read back later) is moved on by
the offsets of the calls under way when Bank stamped it (`stamp_offsets`, `shim.replay.stamps`). BK
answering UNAVAILABLE with BK no longer reachable stops the replay (a ReplayError): its evidence would say
nothing of BK.

A call recorded while BK was primary holds BK's answer, not Bank's (its `answered_by`): it is sent to
BK all the same, so BK's book goes on as it did live, but recorded `skipped` (`BK_ANSWERED`), never as
evidence: compared with BK's own answer, it would hide any bug of BK's.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from comparators import Comparison, DescriptorRegistry, Exchange, Outcome
from shim._overload import LoopLag
from shim.books import Books
from shim.channels import Channels
from shim.config import Config, Upstream
from shim.errors import StartupError
from shim.parts import Parts
from shim.pipeline import ComparisonPipeline, Sink
from shim.recording.format import RecordedCall
from shim.replay.feed import Feed, message_offsets
from shim.replay.source import ReplayError, Source
from shim.replay.stamps import StampOffsets
from shim.shadow.dispatcher import ShadowDispatcher
from shim.shadow.mirror import Mirror
from shim.shadow.shared import Submit
from shim.shadow.wiring import mirroring
from shim.steps import EVERY_KEY, unreachable

IN_FLIGHT = 256  # replayed calls in flight at once (across keys; a key's calls wait in its lane)
BK_ANSWERED = (
    "not compared: the recorded answer is BK's (recorded while BK was primary), not Bank's; the call was"
    " sent to BK only to keep its book in step"
)
UNBOUNDED = 2**31 - 1  # the dispatcher's bounds in a replay, which bounds what it starts itself


@dataclass
class Summary:
    """What a replay did: every call it sent, by method and verdict."""

    sent: int = 0
    verdicts: Counter[tuple[str, str]] = field(default_factory=Counter)
    tainted_from_start: str = ""  # why every key's state was unknown from the start ("": it was known)
    seconds: float = 0.0
    answered_by_bk: int = 0  # calls sent whose recorded answer is BK's: skipped, never evidence

    @property
    def compared(self) -> int:
        return sum(self.verdicts.values())

    def by_verdict(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for (_, verdict), n in self.verdicts.items():
            out[verdict] += n
        return out


class _Tally:
    """A sink: comparisons by method and verdict (it runs on the pipeline's sink thread)."""

    def __init__(self, summary: Summary) -> None:
        self._summary = summary
        self._lock = threading.Lock()

    def __call__(self, comparison: Comparison) -> None:
        with self._lock:
            self._summary.verdicts[comparison.method, comparison.verdict.value] += 1


def replay_config(config: Config, bk: str, store_url: str) -> Config:
    """The config as a replay runs it: BK at `bk`, the evidence into `store_url`, every read compared,
    no noise reads (Bank cannot be asked again), and no call given up for waiting in its lane, nor left
    unmirrored for the calls in flight: the replayer bounds those itself (`Replayer.in_flight` calls,
    and the streams fed as they came, which were open at once live)."""
    timeout = config.bk.timeout if config.bk is not None else Upstream("bk", target=bk).timeout
    upstream = (
        replace(config.bk, target=bk) if config.bk is not None else Upstream("bk", target=bk, timeout=timeout)
    )
    return replace(
        config,
        bk=upstream,
        mode="shadow",
        store=replace(config.store, url=store_url, retain=None),
        noise=replace(config.noise, reads=0.0),
        sampling=replace(config.sampling, reads=1.0),
        ordering=replace(config.ordering, max_wait=1e9),
        shadow=replace(config.shadow, max_in_flight=UNBOUNDED, max_in_flight_streams=UNBOUNDED, shed_lag=0.0),
    )


class Replayer:
    """Replays a source's calls against BK; `run()` returns the summary once every call is stored."""

    def __init__(
        self,
        config: Config,
        registry: DescriptorRegistry,
        source: Source,
        *,
        speed: float = 0.0,
        unknown_state: str = "",
        in_flight: int = IN_FLIGHT,
        sinks: Sequence[Sink] = (),
    ) -> None:
        assert config.bk is not None
        self._sinks = list(sinks)
        self.config = config
        self.parts = Parts(config, registry)
        self.parts.warn_of_a_random_key()
        self.source = source
        self.speed = speed  # 0: as fast as order allows; S: the recorded timing, S times faster
        self.unknown_state = unknown_state  # why every key's state is unknown from the start ("": known)
        self.in_flight = in_flight
        self.summary = Summary(tainted_from_start=unknown_state)
        self._suspect = ""  # BK answered UNAVAILABLE: whether it is down is checked before going on
        # each call in flight, by (when replayed, method): its mirror and the recorded call; BK's clock
        # runs later than Bank's did for it by the time between when it came and its sending to BK (for
        # a session's answer, the request it followed), which timestamp rules allow for (clock_offset)
        self._in_flight: dict[tuple[float, str], tuple[Mirror, RecordedCall]] = {}
        # how much later than live the calls of each moment of the recording went: for the times an answer
        # holds that an earlier call stamped (an account's opening time, read back later)
        self._stamps = StampOffsets()

    async def run(self) -> Summary:
        config, parts = self.config, self.parts
        assert config.bk is not None
        books = Books()
        try:
            store = await books.open(config, parts)
        except StartupError as exc:
            raise ReplayError(str(exc)) from None
        channels = Channels(config, parts.adapters, parts.registry, parts.counters, parts.router.is_write)
        pipeline: ComparisonPipeline | None = None
        try:
            assert books.sink is not None
            assert books.steps is not None
            if self.unknown_state:
                books.steps.mark([EVERY_KEY], "", self.unknown_state)
            pipeline = parts.pipeline(
                config, [*self._sinks, parts.verdict_counts, _Tally(self.summary), books.sink]
            )
            await pipeline.start()
            channel = channels.open(config.bk)
            submit = self._watching(pipeline)
            dispatcher, _ = mirroring(config, config.bk, channel, channel, submit, parts, books, LoopLag())
            started = time.monotonic()
            try:
                await self._drive(dispatcher, pipeline, books, channels)
            except BaseException:
                dispatcher.give_up_all()
                raise
            await dispatcher.drain()
            await self._check_bk(channels)
            await pipeline.drain()
            self.summary.seconds = time.monotonic() - started
        finally:
            await channels.close()
            if pipeline is not None:
                await asyncio.get_running_loop().run_in_executor(None, pipeline.close)
            await books.close(within=60.0)
        self._check_whole(books, store.write_errors)
        return self.summary

    def _watching(self, pipeline: ComparisonPipeline) -> Submit:
        def submit(exchange: Exchange, done: Callable[[], None] | None) -> None:
            replayed = self._in_flight.pop((exchange.started_at, exchange.method), None)
            if replayed is not None and replayed[0].sent_at:
                # its whole lateness: BK's clock runs later by this much, not by up to it
                mirror, call = replayed
                offset, offsets = (
                    mirror.sent_at - call.at,
                    message_offsets(call, mirror.sent_at, mirror.sent_times or ()),
                )
                self._stamps.add(call.at, call.at + call.latency, offsets or (offset,))
                exchange = replace(
                    exchange,
                    clock_offset=offset,
                    message_offsets=offsets,
                    shadow_late=0.0,
                    primary_late=0.0,
                    stamp_offsets=self._stamps.segments(),
                    recorded_at=call.at,
                )
            if replayed is not None and replayed[1].answered_by not in ("", "bank"):
                # BK went on with its book as it did live, but an answer compared with its own proves nothing
                exchange = replace(exchange, shadow=None, unmapped=(), cancelled=False, note=BK_ANSWERED)
            if _bk_unavailable(exchange.shadow) and not self._suspect:
                details = exchange.shadow.details if exchange.shadow is not None else ""
                self._suspect = f"{exchange.method} got UNAVAILABLE ({details})"
            pipeline.submit(exchange, done)

        return submit

    async def _drive(
        self, dispatcher: ShadowDispatcher, pipeline: ComparisonPipeline, books: Books, channels: Channels
    ) -> None:
        slots = asyncio.Semaphore(self.in_flight)
        store = books.store
        assert store is not None
        assert books.sink is not None
        room = max(self.config.comparison.max_pending - self.in_flight, 1)
        behind = max(books.sink.max_buffer // 2, 1)
        behind_bytes = max(books.sink.max_buffer_bytes // 2, 1)
        first_at, began = 0.0, time.monotonic()
        streams: list[Feed] = []  # streams with request messages that came after calls not started yet
        for call in self.source.calls():
            if self._suspect:
                await self._check_bk(channels)
            if pipeline.pending >= room:  # never dropped: the comparisons catch up first
                await pipeline.drain()
            if (
                store.backlog >= behind or store.backlog_bytes >= behind_bytes
            ):  # nor left unstored: it catches up
                await store.flush()
            if self.speed > 0:
                first_at = first_at or call.at
                streams = await self._paced(streams, call.at, first_at, began)
            streams = [s for s in streams if not s.until(call.at)]  # what came before this call
            # a stream fed as it came takes no slot: it may wait for calls after it, which need slots
            interleaved = bool(call.request_times)
            if not interleaved:
                await slots.acquire()
            feed = self._start(dispatcher, call, None if interleaved else slots)
            if not feed.until(call.at if interleaved else None):
                streams.append(feed)
            self.summary.sent += 1
            self.summary.answered_by_bk += call.answered_by not in ("", "bank")
        if self.speed > 0:
            streams = await self._paced(streams, None, first_at, began)
        for stream in streams:
            stream.until(None)

    async def _paced(
        self, streams: list[Feed], until: float | None, first_at: float, began: float
    ) -> list[Feed]:
        """Under --speed, wait until the recorded time `until` is due (None: the sessions' last message),
        feeding each message of the sessions under way at its own recorded time meanwhile, scaled; the
        sessions not yet fed whole."""
        while True:
            at = min((a for s in streams if (a := s.next_at()) is not None), default=None)
            if at is None or (until is not None and at >= until):
                break
            await _sleep_until(began + (at - first_at) / self.speed)
            streams = [s for s in streams if not s.until(math.nextafter(at, math.inf))]
        if until is not None:
            await _sleep_until(began + (until - first_at) / self.speed)
        return streams

    def _start(
        self, dispatcher: ShadowDispatcher, call: RecordedCall, slots: asyncio.Semaphore | None
    ) -> Feed:
        mirror, refused = dispatcher.start(call.method, call.metadata, None, call.is_write)
        if mirror is None:
            if slots is not None:
                slots.release()
            raise ReplayError(f"call {call.seq} ({call.method}) could not be sent to BK: {refused}")
        mirror.correlation_id = call.correlation_id or mirror.correlation_id
        now = time.time()  # the evidence is of now (the gate's window), not of when it was recorded
        while (now, call.method) in self._in_flight:  # one entry per call in flight
            now = math.nextafter(now, math.inf)
        mirror.started_at = now
        self._in_flight[now, call.method] = (mirror, call)
        if call.request_times:  # a session fed as it came: when each of its messages goes to BK
            mirror.sent_times = []
        # kept until its exchange is handed over (or, should none be, until it is over)
        mirror.task.add_done_callback(lambda _: self._in_flight.pop((now, call.method), None))
        if slots is not None:
            mirror.task.add_done_callback(lambda _: slots.release())
        return Feed(mirror, call)

    async def _check_bk(self, channels: Channels) -> None:
        """After an UNAVAILABLE from BK: stop when BK is not reachable any more."""
        if not self._suspect:
            return
        if await channels.unreachable(within=3.0):
            raise ReplayError(f"BK stopped answering mid-run: {self._suspect}; no store written")
        self._suspect = ""

    def _check_whole(self, books: Books, write_errors: int) -> None:
        """Every call sent has its comparison stored, or the replay failed."""
        summary = self.summary
        dropped = sum(books.sink.take_dropped().values()) if books.sink is not None else 0
        if write_errors or dropped:
            raise ReplayError(
                f"the store lost comparisons ({write_errors} failed writes, {dropped} dropped);"
                " no store written"
            )
        if summary.compared != summary.sent:
            raise ReplayError(
                f"{summary.sent} calls sent but {summary.compared} compared: calls unaccounted for"
            )


async def _sleep_until(due: float) -> None:
    """Until time.monotonic() reaches `due`."""
    if due > time.monotonic():
        await asyncio.sleep(due - time.monotonic())


def _bk_unavailable(shadow: Outcome | None) -> bool:
    return shadow is not None and unreachable(shadow)
