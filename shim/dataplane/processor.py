"""The comparison plane: copies of the clients' calls, from Envoy, into the shadow machinery.

Envoy's ext_proc filter (observability mode) opens one stream to the processor
per mirrored call and sends it, as they pass: the request's headers, its body
in pieces, the primary's response headers, its body and its trailers. Envoy
does not wait for any of it, so nothing here is on the clients' path.

A `_Copy` turns those pieces back into what the Python data plane sees: the
method and request metadata, each request message (gRPC frames are split out
of the body pieces, and decompressed), each answer message, and the primary's
final status with its metadata. It drives a `Mirror` (`shim.shadow`) exactly
as the Python handler does, so ordering, id translation, the call to the
shadow, the comparison and the store are the same machinery.

A copy that ends before the primary's status is known (Envoy gave up on it:
the client cancelled, or the processor was too slow and Envoy dropped the
copy) is abandoned: recorded as not mirrored, and a write marks its keys out
of step; a read's stream Envoy ended once the primary had sent answers is
compared on those (`shim.shadow.watch`). A copy that cannot be read (a frame
larger than the capture limit, an encoding the shim cannot undo) is treated
alike.

Over 400 lines: one protocol, Envoy's five parts of a call, turned back into a
call in one place.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
import urllib.parse
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, NamedTuple

import grpc
import structlog
from grpc import aio

from comparators import Code, Outcome
from shim._handler import submit_unmirrored
from shim._proto.shim.v1 import ext_proc_pb2 as pb
from shim.dataplane.arrivals import Arrivals
from shim.dataplane.ended import EndedCalls, Key
from shim.dataplane.envoy_config import (
    ANSWERED_HEADER,
    ENVOY_HEADER,
    METHOD_HEADER,
    PEER_HEADER,
    ROUTE_HEADER,
    STARTED_HEADER,
)
from shim.dataplane.read_shedding import since
from shim.dataplane.routes import RECORD
from shim.dataplane.turns import Turns
from shim.errors import ShimError
from shim.exporter import Latencies
from shim.metrics import Counters
from shim.plan import Plans
from shim.recording.recorder import Recorder, Take
from shim.shadow.dispatcher import ShadowDispatcher, Unmirrored
from shim.shadow.fate import ended_by_deadline
from shim.shadow.mirror import Mirror

SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
OVERTAKEN = (
    "its copy took its place after copies Envoy received after it, which had waited for it as long as Envoy"
    " holds a copy: a later write on its keys may have reached the shadow first"
)
_ENDED = "the copy ended before the primary's status (the client cancelled, or Envoy dropped it)"
_LEFT = (
    "the client went away before the primary's status: it cancelled, its deadline passed or it disconnected"
)
# a read whose copy the processor takes up this share of Envoy's hold (`held_for`) after its call started
# is shed: a plane that far behind would otherwise have Envoy drop copies, writes among them
SHED_BEHIND = 0.8
UNMIRRORED_ANSWERS_KEPT = 64  # answer messages of a write not mirrored kept for the ids they mint
_log = structlog.get_logger("shim.processor")

# headers that are gRPC's or HTTP's framing, not the call's metadata (grpc hides them from handlers too)
_NOT_METADATA = frozenset(
    {
        "content-type",
        "te",
        "grpc-timeout",
        "grpc-encoding",
        "grpc-accept-encoding",
        "grpc-status",
        "grpc-message",
        "user-agent",
        "content-length",
        STARTED_HEADER,  # Envoy's, for the copy alone
        PEER_HEADER,
    }
)
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 0.001, "u": 1e-6, "n": 1e-9}


class UnreadableCopy(ShimError):
    """The copy cannot be turned back into messages (the reason is recorded with the call)."""


def _headers(header_map: pb.HeaderMap) -> list[tuple[str, str | bytes]]:
    """(key, value) pairs as a gRPC handler sees them: `-bin` values decoded to bytes."""
    out: list[tuple[str, str | bytes]] = []
    for header in header_map.headers:
        raw = header.raw_value if header.raw_value else header.value.encode()
        key = header.key
        if key.endswith("-bin"):
            padded = raw + b"=" * (-len(raw) % 4)
            try:
                out.append((key, base64.b64decode(padded)))
            except ValueError:
                out.append((key, raw))
        else:
            out.append((key, raw.decode("utf-8", errors="replace")))
    return out


def _metadata(headers: list[tuple[str, str | bytes]]) -> tuple[tuple[str, str | bytes], ...]:
    return tuple((k, v) for k, v in headers if not k.startswith(":") and k not in _NOT_METADATA)


def _first(headers: list[tuple[str, str | bytes]], key: str) -> str:
    for k, v in headers:
        if k == key:
            return v if isinstance(v, str) else v.decode(errors="replace")
    return ""


def answered_at(headers: list[tuple[str, str | bytes]]) -> float | None:
    """When Envoy had the primary's answer (`time.time()`), from its header on a copy's answer: the request's
    start and the microseconds to the answer's first byte (the start alone when those are missing);
    None without the header."""
    start, _, micros = _first(headers, ANSWERED_HEADER).partition(" ")
    try:
        began = float(start)
    except ValueError:
        return None
    return began + int(micros) / 1e6 if micros.isdigit() else began


class Counts(NamedTuple):
    """The processor's counts at one moment (`Processor`)."""

    copies: int
    answered: int
    ended_by_envoy: int
    lost_unnamed: int


def received_given_up(counts: Counts, answered: int) -> int:
    """`Processor.received_given_up`, from its `counts` at some moment."""
    return counts.ended_by_envoy + max(counts.answered - answered, 0)


def started_at(headers: list[tuple[str, str | bytes]]) -> float | None:
    """When Envoy received the call (`time.time()`), from its header on a copy's request; None without it."""
    try:
        at = float(_first(headers, STARTED_HEADER))
    except ValueError:
        return None
    return at if math.isfinite(at) else None


def grpc_timeout(text: str) -> float | None:
    """The seconds a `grpc-timeout` header gives (None without one, or when malformed)."""
    if len(text) < 2 or text[-1] not in _TIMEOUT_UNITS or not text[:-1].isdigit():
        return None
    return int(text[:-1]) * _TIMEOUT_UNITS[text[-1]]


_WBITS = {"gzip": 31, "deflate": 15}  # the encodings the shim inflates, as zlib reads them


class Frames:
    """gRPC messages out of a body that arrives in pieces (5-byte prefix: flag, big-endian length)."""

    def __init__(self, limit: int, setting: str = "shadow.max_capture") -> None:
        self._buffer = bytearray()
        self._limit = limit  # the largest message taken (beyond: UnreadableCopy)
        self._setting = setting  # the setting that sets it, said when a message is larger
        self.encoding = "identity"

    def feed(self, piece: bytes) -> list[bytes]:
        self._buffer += piece
        out: list[bytes] = []
        while len(self._buffer) >= 5:
            flag = self._buffer[0]
            length = int.from_bytes(self._buffer[1:5], "big")
            if 0 <= self._limit < length:
                raise UnreadableCopy(f"a message of {length} bytes is larger than {self._setting}")
            if len(self._buffer) < 5 + length:
                break
            payload = bytes(self._buffer[5 : 5 + length])
            del self._buffer[: 5 + length]
            out.append(self._inflate(payload) if flag & 1 else payload)
        return out

    @property
    def partial(self) -> bool:
        return bool(self._buffer)

    def _inflate(self, payload: bytes) -> bytes:
        """The message `payload` holds compressed, inflated no further than one byte past the limit: a
        small message that inflates beyond it is unreadable, never held whole."""
        wbits = _WBITS.get(self.encoding)
        if wbits is None:
            raise UnreadableCopy(f"a message compressed with {self.encoding!r}, which the shim cannot undo")
        inflater = zlib.decompressobj(wbits=wbits)
        try:
            message = inflater.decompress(payload, self._limit + 1 if self._limit >= 0 else 0)
        except zlib.error as exc:
            raise UnreadableCopy(f"a {self.encoding} message does not decompress: {exc}") from None
        if 0 <= self._limit < len(message):
            raise UnreadableCopy(
                f"a {self.encoding} message of {len(payload)} bytes inflates to more than {self._limit}"
                f" bytes, larger than {self._setting}"
            )
        if not inflater.eof:
            raise UnreadableCopy(f"a {self.encoding} message does not decompress: it is cut short")
        return message


class _Copy:
    """One call's copy, as it arrives: mirrored through `dispatcher`, recorded by `recorder`, or both."""

    def __init__(
        self,
        processor: Processor,
        dispatcher: ShadowDispatcher | None,
        recorder: Recorder | None,
        by: str,
        named: str = "",
    ) -> None:
        self._processor = processor
        self.named = named  # the method Envoy named as the stream opened ("": none, a catch-all route)
        self.call: Key = ("", "", "")  # the call as Envoy's record of it names it (`shim.dataplane.ended`)
        self._dispatcher = dispatcher
        self._recorder = recorder
        self._answered_by = by
        self._take: Take | None = None
        self._mirror: Mirror | None = None
        self._refused = ""  # why a call that should be mirrored is not
        self.method = ""
        self._metadata: tuple[tuple[str, str | bytes], ...] = ()
        self._is_write = True
        # the largest message read: the mirroring's bound, else the recorder's (beyond: the copy is lost)
        limit = dispatcher.shared.max_capture if dispatcher is not None else -1
        if dispatcher is None and recorder is not None:
            limit = recorder.max_call_bytes
        setting = "shadow.max_capture" if dispatcher is not None else "record.max_call_bytes"
        largest = processor.max_message  # what the shim's channels take: Envoy lets any size through
        if dispatcher is not None and largest >= 0 and (limit < 0 or largest < limit):
            limit, setting = largest, "max_message_size"
        self._requests = Frames(limit, setting)
        self._answers = Frames(limit, setting)
        self._not_mirrored: Unmirrored | None = None  # what a call not mirrored names, once known
        self._initial: tuple[tuple[str, str | bytes], ...] = ()
        self._answer_messages: list[bytes] = []
        self._keep = True
        self._mints = False  # a write whose answers may mint ids: kept if it is not mirrored (`unmirrored`)
        self._started = time.perf_counter()
        self._started_at = time.time()
        self._deadline: float | None = None  # the client's, by Envoy's clock (`time.time()`), if it has one
        self.done = False
        self.lost_at = 0.0  # when the copy was given up as lost (0: it was not)
        self.ordinal = 0  # its place among the copies received (from 1)

    @property
    def admitted(self) -> bool:
        """Whether its call has its place in the lanes, or needs none (not mirrored, over, lost)."""
        if self.done or self.lost_at:
            return True
        if not self.method:  # its method is not known yet
            return False
        return self._mirror is None or self._mirror.admission.admitted.is_set()

    @property
    def placed(self) -> bool:
        """Whether a call through the shim's own server received after it may take its place: its own is
        taken, or it is a stream of requests, whose messages take theirs as they come (`dataplane.turns`)."""
        if self.admitted:
            return True
        admission = self._mirror.admission if self._mirror is not None else None
        return admission is not None and (admission.streamed or admission.batch)

    def overtaken(self) -> None:
        """It takes its place after copies received after it (`dataplane.turns`): it was still arriving when
        they had waited for it as long as Envoy holds a copy. A write's keys go out of step: a call on them
        the client made once it had this one's answer may have reached the shadow first."""
        mirror, dispatcher = self._mirror, self._dispatcher
        if mirror is None or dispatcher is None:
            return
        admission, steps = mirror.admission, dispatcher.shared.steps
        if admission.is_write and admission.keys and steps is not None:
            steps.mark(admission.keys, self.method, OVERTAKEN)

    def take(self, request: pb.ProcessingRequest) -> None:
        part = request.WhichOneof("request")
        if part == "request_headers":
            self._request_headers(request.request_headers)
        elif part == "request_body":
            self._request_body(request.request_body)
        elif part == "request_trailers":
            self._end_requests()
        elif part == "response_headers":
            self._response_headers(request.response_headers)
        elif part == "response_body":
            for answer in self._answers.feed(request.response_body.body):
                self._answer(answer)
        elif part == "response_trailers":
            self._finish(_headers(request.response_trailers.trailers))

    def _request_headers(self, message: pb.HttpHeaders) -> None:
        headers = _headers(message.headers)
        self.method = _first(headers, ":path")
        self.call = (_first(headers, STARTED_HEADER), _first(headers, PEER_HEADER), self.method)
        self._processor.ended_calls.opened(self.call, lambda: self.lost(_LEFT, ended=True))
        self._metadata = _metadata(headers)
        self._requests.encoding = _first(headers, "grpc-encoding") or "identity"
        processor = self._processor
        plan = processor.plans.of(self.method)
        self._is_write, self._mints = plan.write, plan.write and bool(plan.ids.mints)
        processor.counters.inc("calls", self.method)
        timeout = grpc_timeout(_first(headers, "grpc-timeout"))
        if self._recorder is not None:
            self._take = self._recorder.begin(
                self.method, self._metadata, self._is_write, self._answered_by, timed=False
            )
        started = started_at(headers)
        if timeout is not None:
            self._deadline = (started or self._started_at) + timeout
        if since(started, processor.held_for):  # a sign the plane falls behind (`read_shedding`)
            processor.lagging += 1
        if self._dispatcher is not None and not self.sheds(processor.behind(started)):
            self._mirror, self._refused = self._dispatcher.start(
                self.method, self._metadata, timeout, self._is_write, copy=self.ordinal
            )
        if self._mirror is not None:
            # its tickets across replicas carry the call's start as Envoy saw it, not the copy's arrival
            self._mirror.admission.started = started
            processor.track(self._mirror)
        if message.end_of_stream:
            self._end_requests()

    def sheds(self, behind: float) -> bool:
        """Whether the copy is shed: a read, taken up `behind` s late (0: in time), while the shim sheds. It
        is not mirrored, and is recorded so once it ends; it is still read to its end, so that a copy Envoy
        cut off meanwhile is counted as such (and never twice: recorded under its method, and unseen)."""
        dispatcher = self._dispatcher
        if dispatcher is None or not behind or self._is_write or not dispatcher.sheds:
            return False
        self._processor.counters.inc("shadow_shed", self.method)
        self._refused = (
            f"not mirrored: the shim is behind (it took up this call's copy {behind:.1f} s late; reads are "
            f"shed from {self._processor.held_for * SHED_BEHIND:.1f} s)"
        )
        return True

    def _request_body(self, body: pb.HttpBody) -> None:
        for request in self._requests.feed(body.body):
            if self._take is not None:
                self._take.request(request)
            if self._mirror is not None:
                self._mirror.feed(request)
            else:
                self._unmirrored_now().request(request)
        if body.end_of_stream:
            self._end_requests()

    def _end_requests(self) -> None:
        if self._requests.partial:
            raise UnreadableCopy("the request stream ended inside a message")
        if self._mirror is not None:
            self._mirror.close_requests()

    def _response_headers(self, message: pb.HttpHeaders) -> None:
        headers = _headers(message.headers)
        answered = answered_at(headers)
        processor = self._processor
        if answered is not None and processor.held_for and time.time() - answered > processor.held_for:
            processor.late = time.monotonic()  # taken after Envoy had given up on it
        if self._mirror is not None:
            self._mirror.answered_at = answered
        headers = [(k, v) for k, v in headers if k != ANSWERED_HEADER]  # the copy's alone
        self._answers.encoding = _first(headers, "grpc-encoding") or "identity"
        if message.end_of_stream or _first(headers, "grpc-status"):  # trailers only: the call is over
            self._finish(headers, answered)
            return
        self._initial = _metadata(headers)

    def _answer(self, answer: bytes) -> None:
        if self._take is not None:
            self._take.response(answer)
        mirror = self._mirror
        if mirror is None:
            self._unmirrored_now().answers += 1  # a write that answered may have applied something
            if self._mints and len(self._answer_messages) < UNMIRRORED_ANSWERS_KEPT:
                self._answer_messages.append(answer)  # the ids it minted, kept without a counterpart
            return
        mirror.primary_message(answer)
        if self._keep:
            self._keep = mirror.capture.take(answer)
            if self._keep:
                self._answer_messages.append(answer)

    def _finish(self, trailers: list[tuple[str, str | bytes]], answered: float | None = None) -> None:
        """The primary's status is in (`answered`: when Envoy had it, if known; else about now)."""
        if self.done:
            return
        self.done = True
        latency = time.perf_counter() - self._started
        self._processor.latencies.observe(self.method, latency)
        status = _first(trailers, "grpc-status")
        outcome = Outcome(
            code=int(status) if status.isdigit() else Code.UNKNOWN,
            details=urllib.parse.unquote(_first(trailers, "grpc-message")),
            initial_metadata=self._initial,
            trailing_metadata=_metadata(trailers),
            messages=tuple(self._answer_messages),
            latency=latency,
        )
        left = self._deadline_left(answered)
        if self._take is not None:
            if ended_by_deadline(outcome, left) is not None:  # not compared live: no answer to replay
                self._take.abandon()
            else:
                self._take.finish(
                    outcome.code, outcome.details, self._initial, outcome.trailing_metadata, latency
                )
        if self._mirror is not None:
            self._mirror.primary_done(outcome, left)
        elif self._refused:
            self._unmirrored(outcome, self._refused)

    def _deadline_left(self, answered: float | None) -> float | None:
        """The seconds left of the client's deadline as Envoy had the primary's status (None: no deadline).
        A status after the primary's first answer carries no time of Envoy's: the processor's own clock
        stands in for it, no earlier than Envoy's."""
        if self._deadline is None:
            return None
        return self._deadline - (answered if answered is not None else time.time())

    def _unmirrored(self, outcome: Outcome, why: str) -> None:
        if self._dispatcher is None:
            return
        submit_unmirrored(
            self._dispatcher,
            self.method,
            outcome,
            self._is_write,
            self._started_at,
            why,
            self._unmirrored_now(),
            self._metadata,
        )

    def _unmirrored_now(self) -> Unmirrored:
        if self._not_mirrored is None:
            self._not_mirrored = Unmirrored(self._dispatcher, self.method, self._is_write)
        return self._not_mirrored

    def lost(self, why: str, ended: bool = False) -> None:
        """The copy ended before the primary's status was known (`ended`: Envoy ended it, its client having
        cancelled, say), or could not be read."""
        if self.done:
            return
        self.done = True
        self.lost_at = time.monotonic()
        processor = self._processor
        if not self.method and self.named:  # lost before its request headers: the method Envoy named
            self.method, why = self.named, f"{why}; none of it was read"
            self._is_write = processor.plans.of(self.method).write
            processor.counters.inc("calls", self.method)
            if self._recorder is not None and self._is_write:  # as for a write abandoned once begun
                self._recorder.lose(self.method, why)
        processor.counters.inc("copies_lost", self.method or "unknown")
        if self._take is not None:
            self._take.abandon()
        if self._mirror is not None:
            lost = f"its copy was lost ({why})"
            # the primary's answers so far, when Envoy ended the copy: a read's stream is compared on them
            so_far = tuple(self._answer_messages) if ended else ()
            local = f"not compared: {lost}"
            cut = Outcome(code=Code.CANCELLED, initial_metadata=self._initial, messages=so_far, local=local)
            self._mirror.abandon(cut, why=lost)
        elif self.method:
            self._unmirrored(Outcome(code=Code.CANCELLED, local=why), f"not mirrored: {why}")


class Processor:
    """The ext_proc service: each stream from Envoy is one call's copy."""

    def __init__(
        self,
        dispatchers: Mapping[str, ShadowDispatcher],
        plans: Plans,
        counters: Counters,
        latencies: Latencies,
        recorder: Recorder | None = None,
    ) -> None:
        self.dispatchers = dispatchers  # by the route's mirroring name ("bk": BK is mirrored)
        self.recorder = recorder  # records every copy; routes named "record:SIDE" are only recorded
        self.plans = plans
        self.counters = counters
        self.latencies = latencies
        # the largest message the shim sends on or takes (`max_message_size`; -1: any): a larger one is a copy
        # lost, never a call BK is said to have refused
        self.max_message = -1
        self.copies = 0  # copies received since start
        # of those, copies whose stream Envoy cut off (closed after `deferred_close_timeout`, or with its
        # connection) before the processor was done with it, which Envoy counts given up; and the copies
        # whose stream Envoy ended (cut off, or ended early) before their method was known, which nothing
        # records under a method
        self.ended_by_envoy = 0
        self.lost_unnamed = 0
        # the copies' streams the processor ended itself: answered, as far as it knows (Envoy counts one it
        # gave up on just before the answer came in as given up, and the processor cannot tell)
        self.answered = 0
        self.held_for = 0.0  # seconds Envoy holds a copy for the processor after its call (0: not known)
        # when (monotonic) the processor last took up a copy Envoy had given up on, or saw one cut off: a
        # plane that was stopped or starved takes up what it had received late, as it catches up
        self.late = 0.0
        self.lagging = 0  # copies it took up `read_shedding.BEHIND` of Envoy's hold late, since start
        self._open: dict[int, _Copy] = {}  # copies being received now, by ordinal
        self.ended_calls = EndedCalls()  # the calls whose client went away, from Envoy's record of them
        self._mirrors: set[Mirror] = set()  # mirrored calls of copies, until they are over
        self.arrivals = Arrivals(self.admitted_prefix)  # waits until the first N copies have their place
        # the calls through the shim's own server take their places after the copies received before them
        self.turns = Turns(lambda: self.copies, self.placed_prefix, counters, copies=lambda: self._open)
        self.envoy = ""  # the name of the Envoy whose copies it receives now (ENVOY_HEADER)
        # its counts (copies, answered, ended_by_envoy, lost_unnamed) as the first copy of another Envoy came
        # in (one started again), until the plane sets them against the new one's (`EnvoyPlane`)
        self.before_envoy: Counts | None = None

    def behind(self, started: float | None) -> float:
        """How late the processor takes up a copy of a call that `started` (`time.time()`, as Envoy saw it),
        when that is late enough to shed a read (`SHED_BEHIND` of Envoy's hold), else 0."""
        if started is None or not self.held_for:
            return 0.0
        late = time.time() - started
        return late if late >= self.held_for * SHED_BEHIND else 0.0

    def received_given_up(self, answered: int) -> int:
        """Of the copies Envoy gave up on, those the processor received first: cut off as it read them, or
        answered as Envoy gave up on them (its answers beyond `answered`, Envoy's count of them read before
        this, less those still on their way: never too few)."""
        return received_given_up(self.counts(), answered)

    def counts(self) -> Counts:
        return Counts(self.copies, self.answered, self.ended_by_envoy, self.lost_unnamed)

    def _ended(self, copy: _Copy | None, *, cut: bool) -> None:
        """Envoy ended a copy's stream: cut it off, or ended it early (see `ended_by_envoy`)."""
        self.ended_by_envoy += cut
        if cut:
            self.late = time.monotonic()
        if copy is not None and not copy.done and not copy.method and not copy.named:
            self.lost_unnamed += 1

    def track(self, mirror: Mirror) -> None:
        self._mirrors.add(mirror)
        mirror.task.add_done_callback(lambda _: self._mirrors.discard(mirror))

    def admitted_prefix(self) -> int:
        """How many of the first copies received have their place in the lanes (or need none): up to the
        first copy being received that has not."""
        first = min(
            (copy.ordinal for copy in self._open.values() if not copy.admitted), default=self.copies + 1
        )
        return min(self.copies, first - 1)

    def placed_prefix(self) -> int:
        """How many of the first copies received have their places for the calls after them (`placed`)."""
        first = min(
            (copy.ordinal for copy in self._open.values() if not copy.placed), default=self.copies + 1
        )
        return min(self.copies, first - 1)

    @property
    def receiving(self) -> int:
        """Copies being received now (not yet whole)."""
        return sum(1 for copy in self._open.values() if not copy.done)

    @property
    def unread(self) -> int:
        """Copies being received whose method is not known yet."""
        return sum(1 for copy in self._open.values() if not copy.done and not copy.method)

    def busy(self, selects: Callable[[str], bool]) -> int:
        """Calls of the methods `selects` picks that a switch must still wait for: copies whose method is
        not known yet, and mirrored calls not settled (`Mirror.settled`: over, or a stream under way)."""
        return self.unread + sum(1 for m in self._mirrors if selects(m.method) and not m.settled)

    def streams_under_way(self, selects: Callable[[str], bool]) -> list[Mirror]:
        """The mirrored batches of the methods `selects` picks whose primary has not answered yet, and their
        sessions not over (`Mirror.stream_under_way`)."""
        return [m for m in self._mirrors if selects(m.method) and m.stream_under_way]

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Process": grpc.stream_stream_rpc_method_handler(
                    self.process,
                    request_deserializer=pb.ProcessingRequest.FromString,
                    response_serializer=pb.ProcessingResponse.SerializeToString,
                )
            },
        )

    async def process(
        self, requests: AsyncIterator[pb.ProcessingRequest], context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.ProcessingResponse]:
        route = named = envoy = ""
        for key, value in context.invocation_metadata() or ():
            if key == ROUTE_HEADER:
                route = value if isinstance(value, str) else value.decode()
            elif key == METHOD_HEADER:
                named = value if isinstance(value, str) else value.decode()
            elif key == ENVOY_HEADER:
                envoy = value if isinstance(value, str) else value.decode()
        if envoy != self.envoy and envoy:
            if self.envoy:  # an Envoy started again: what came before is the old one's
                self.before_envoy = self.counts()
            self.envoy = envoy
        dispatcher = self.dispatchers.get(route)
        self.copies += 1
        recorder = self.recorder if dispatcher is not None or route.startswith(RECORD) else None
        by = route.removeprefix(RECORD) if route.startswith(RECORD) else "bank" if route == "bk" else "bk"
        copy = _Copy(self, dispatcher, recorder, by, named) if dispatcher is not None or recorder else None
        if copy is not None:
            copy.ordinal = self.copies
            self._open[copy.ordinal] = copy
        try:
            async for request in requests:
                if copy is None or copy.lost_at:
                    # the rest is read and dropped: a stream the processor ended early would count in
                    # Envoy's `streams_failed`, which must count only the copies the shim never got
                    continue
                try:
                    copy.take(request)
                except UnreadableCopy as exc:
                    copy.lost(str(exc))
                if copy.done and not copy.lost_at:
                    break  # the primary's status is in: nothing more comes, Envoy need not hold the stream
            else:  # Envoy ended the stream early: the processor ends its side, so Envoy counts it answered
                self._ended(copy, cut=False)
                if copy is not None:
                    copy.lost(_ENDED, ended=True)
        except asyncio.CancelledError:
            self._ended(copy, cut=True)
            if copy is not None:
                copy.lost("the copy was cut off (Envoy closed its stream to the shim)")
            raise
        except BaseException:
            self.answered += 1  # grpc answers with an error status
            raise
        finally:
            if copy is not None:
                self._open.pop(copy.ordinal, None)
                self.ended_calls.closed(copy.call)
        self.answered += 1
        if copy is None:
            _log.warning("a copy for no known mirroring was ignored", route=route)
        return
        yield  # a generator: it answers nothing (Envoy does not wait in observability mode)
