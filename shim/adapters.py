"""Adapters: Bank's interface served by a BK that speaks an interface of its own.

An adapter is a plain function for one Bank method, written like a servicer
method of Bank's service whose backend is BK. It gets Bank's request (decoded)
and a `Backend` (BK's channel, carrying the client's metadata and deadline), calls
BK's own methods as often as it needs, and gives back Bank's response:

    async def move(request, bk: Backend) -> pay_pb2.Movement:                  # unary
    async def movements(request, bk) -> AsyncIterator[pay_pb2.Movement]:       # server streaming
    async def batch(requests: AsyncIterator[...], bk) -> pay_pb2.BatchSummary:  # client streaming
    async def session(requests: AsyncIterator[...], bk) -> AsyncIterator[...]:   # both

(plain `def` functions and iterables are accepted too: they run in threads of
their own, never on the event loop, shim._adapter_threads). Streaming methods are
adapted message by message: a request reaches the adapter when the client sends
it, and an answer reaches the client when the adapter yields it.

Errors: `raise Abort(code, details)` ends the call with the status Bank would
give; a BK error the adapter does not catch reaches the client as BK sent it, but
a write that ends UNAVAILABLE after more than one BK call ends UNKNOWN: BK may have
applied part of it, which neither a client's retry nor the mirror may take as undone.
Headers and trailers: `bk.send_initial_metadata(...)`, `bk.set_trailing_metadata(...)`.
Anything else an adapter raises (SystemExit and KeyboardInterrupt included),
and an answer of the wrong type, is an *adapter error*: the call ends
`INTERNAL` with a message naming the adapter, the Outcome says so
(`Outcome.adapter_error`), and the comparison records an `adapter-error`
difference. An adapter never takes the shim down.

`AdaptedChannel` puts the adapters in front of BK's channel: it is used
wherever BK's channel would be (primary or shadow), and methods without an
adapter go to BK unchanged. Loading and checking the adapters is in
shim._adapter_loading, `Backend` in shim._adapter_backend, `Abort` and its checks in
shim._abort_checks (all re-exported here).

Over 400 lines: one adapted call's whole life (its requests in, the adapter run, its answers, status and
log lines out) on the state of one object, `AdaptedCall`; split apart, the parts would share that state.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import grpc
import structlog
from google.protobuf import message
from grpc import aio

from comparators import DescriptorRegistry, Metadata
from comparators.redact import FreeText, Redactor
from shim._abort_checks import Abort as Abort
from shim._abort_checks import abort_problem, metadata_problem
from shim._adapter_backend import Backend as Backend
from shim._adapter_loading import AdaptedMethod
from shim._adapter_loading import Adapter as Adapter
from shim._adapter_loading import load_adapters as load_adapters
from shim._adapter_loading import resolve as resolve
from shim._adapter_threads import Bridge, Requests, off_loop
from shim._outcome import metadata_tuple
from shim.logs import raised
from shim.metrics import Counters

_log = structlog.get_logger("shim.adapters")


class AdaptedChannel:
    """BK's channel with adapters in front: what the shim calls wherever it would call BK."""

    def __init__(
        self,
        channel: aio.Channel,
        adapters: Mapping[str, Adapter],
        registry: DescriptorRegistry,
        counters: Counters,
        is_write: Callable[[str], bool] = lambda method: True,
        max_message_size: int | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.channel = channel
        self._counters = counters
        self.redactor = redactor  # its log lines hash the values of redacted fields the call's messages hold
        self.max_message_size = max_message_size  # an answer beyond it ends the call, as grpc's channel would
        self._methods: dict[str, AdaptedMethod] = {}
        for path, adapter in adapters.items():
            info = registry.method(path)
            assert info is not None  # load_adapters checked it
            self._methods[path] = AdaptedMethod(adapter, info, registry, is_write(path))

    def adapted(self, method: str) -> bool:
        return method in self._methods

    def unary_unary(self, method: str) -> Callable[..., Any]:
        adapted = self._methods.get(method)
        if adapted is None:
            return self.channel.unary_unary(method)  # type: ignore[no-any-return]

        def start(request: bytes, metadata: Metadata = (), timeout: float | None = None) -> AdaptedCall:
            call = AdaptedCall(self, adapted, metadata, timeout)
            call.feed(request)
            call.feed(None)
            return call

        return start

    def stream_stream(self, method: str) -> Callable[..., Any]:
        adapted = self._methods.get(method)
        if adapted is None:
            return self.channel.stream_stream(method)  # type: ignore[no-any-return]

        def start(metadata: Metadata = (), timeout: float | None = None) -> AdaptedCall:
            return AdaptedCall(self, adapted, metadata, timeout)

        return start

    def count(self, name: str, method: str) -> None:
        self._counters.inc(name, method)

    async def close(self, grace: float | None = None) -> None:
        await self.channel.close(grace)


Channel = aio.Channel | AdaptedChannel  # what the shim calls an upstream through

_END = object()
PART_WAY = "BK became unavailable part way through the adapted write (part of it may be applied on BK)"
_REQUESTS_AHEAD = 16  # requests a client may send before its adapter has taken them


class AdaptedCall:
    """One call served by an adapter, with the parts of grpc.aio's call API the shim uses."""

    def __init__(
        self, channel: AdaptedChannel, method: AdaptedMethod, metadata: Metadata, timeout: float | None
    ) -> None:
        self._channel = channel
        self._method = method
        # a bounded queue: a client streaming faster than its adapter takes requests waits for it
        self._requests: asyncio.Queue[bytes | None] = asyncio.Queue(_REQUESTS_AHEAD)
        # bounded too: an adapter streaming faster than its client reads waits for it
        self._answers: asyncio.Queue[Any] = asyncio.Queue(_REQUESTS_AHEAD)
        self._code = grpc.StatusCode.OK
        self._details = ""
        self._trailing: Metadata = ()
        self._initial: Metadata = ()  # the headers the adapter sent (`Backend.send_initial_metadata`)
        self._trailers_set: Metadata = ()  # the trailers it set (`Backend.set_trailing_metadata`)
        self._headers_decided = False  # sent, or its first answer or its end came first
        self._headers = asyncio.Event()  # ... as seen on the loop
        self.adapter_error = ""  # what went wrong in the adapter, "" when nothing did
        self._closed = False
        deadline = None if timeout is None else time.monotonic() + timeout
        self._bridge = Bridge(asyncio.get_running_loop())
        self._backend = Backend(channel.channel, tuple(metadata), deadline, self._bridge, self._said)
        # with redaction, the values of redacted fields its requests and answers hold, hashed where its log
        # lines quote them
        self._free = FreeText(channel.redactor) if channel.redactor is not None else None
        self._finished = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"adapter {method.name}")

    # -- requests in ------------------------------------------------------------------------------

    def feed(self, payload: bytes | None) -> None:
        """A request of a unary call (the queue has room for it and the end)."""
        if not self._closed:
            self._requests.put_nowait(payload)
            self._closed = payload is None

    async def write(self, payload: bytes | None) -> None:
        """The client's next request (None: no more); waits while the adapter is that far behind."""
        if self.done() or self._closed:
            raise aio.UsageError("the adapted call has finished or its requests are closed")
        self._closed = payload is None
        put = asyncio.ensure_future(self._requests.put(payload))
        finished = asyncio.ensure_future(self._finished.wait())
        try:
            await asyncio.wait((put, finished), return_when=asyncio.FIRST_COMPLETED)
        finally:
            put.cancel()
            finished.cancel()
        if not put.done() or put.cancelled():
            raise aio.UsageError("the adapted call finished before taking the request")

    async def done_writing(self) -> None:
        if not self._closed and not self.done():
            try:
                await self.write(None)
            except aio.UsageError:
                return

    async def wait_for_connection(self) -> None:
        return None

    async def _decoded_requests(self) -> AsyncIterator[message.Message]:
        cls = self._method.request_class
        while True:
            payload = await self._requests.get()
            if payload is None:
                return
            try:
                request = cls.FromString(payload)
            except message.DecodeError as exc:
                raise _Undecodable(cls.DESCRIPTOR.full_name) from exc
            if self._free is not None:
                self._free.add(cls, [payload])
            yield request

    # -- the adapter's metadata ------------------------------------------------------------------

    def _said(self, part: str, metadata: Any) -> None:
        """The adapter's headers or trailers for the client; called in the adapter (from its own thread, for
        a plain one). What gRPC could not send raises ValueError, and headers once decided RuntimeError."""
        problem = metadata_problem(metadata)
        if problem:
            raise ValueError(f"invalid {part} metadata: {problem}")
        pairs = tuple((key, value) for key, value in metadata)
        if part == "trailing":
            self._trailers_set = pairs
            return
        if self._headers_decided:
            raise RuntimeError("initial metadata is sent once, before the first answer")
        self._initial, self._headers_decided = pairs, True
        self._bridge.soon(self._headers.set)

    def _decide_headers(self) -> None:
        """The first answer, or the end, came: the headers are what was sent by then (none, if nothing)."""
        self._headers_decided = True
        self._headers.set()

    # -- running the adapter ----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._adapt()
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and not task.cancelling():  # the adapter's own, its call goes on
                self._fail("raised CancelledError, though its call was not cancelled", exc)
                return
            if not self._finished.is_set():  # the call was cancelled: the client's, or the shim gave up
                self._end(grpc.StatusCode.CANCELLED, "cancelled")
            raise
        except Abort as abort:
            trailing = (*self._trailers_set, *abort.trailing_metadata)
            problem = abort_problem(abort.code, abort.details, trailing)
            if problem:
                self._fail(problem)
            else:
                self._end(abort.code, abort.details, trailing)
        except aio.AioRpcError as error:  # BK's own status, as BK sent it
            trailing = (*self._trailers_set, *metadata_tuple(error.trailing_metadata()))
            self._end(error.code(), error.details() or "", trailing)
        except _Undecodable as exc:
            self._end(grpc.StatusCode.INTERNAL, f"cannot decode the request as {exc}")
        except _WrongAnswer as exc:
            self._fail(str(exc))
        except _TooLarge as exc:  # no adapter error: BK's answer on a plain channel would end the same
            self._end(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except (Exception, SystemExit, KeyboardInterrupt, GeneratorExit) as exc:
            # sys.exit in an adapter (argparse, a library) ends the adapter's call, never the shim
            self._fail(f"raised {type(exc).__name__}: {exc}", exc)
        finally:
            self._bridge.end()
            if not self._finished.is_set():
                if self._code is grpc.StatusCode.OK:  # answered: with the trailers it set
                    self._trailing = self._trailers_set
                self._decide_headers()
                self._end_answers()
                self._finished.set()

    def _fail(self, what: str, exc: BaseException | None = None) -> None:
        method = self._method
        self.adapter_error = f"adapter {method.name} for {method.info.path.lstrip('/')} {what}"
        self._end(grpc.StatusCode.INTERNAL, self.adapter_error)
        self._channel.count("adapter_errors", method.info.path)
        redacting = self._free is not None
        error = self._free(self.adapter_error) if self._free is not None else self.adapter_error
        _log.warning("adapter error", method=method.info.path, error=error, **raised(exc, redacting))

    def _end(self, code: grpc.StatusCode, details: str, trailing: Metadata = ()) -> None:
        calls = self._backend.calls
        if code is grpc.StatusCode.UNAVAILABLE and self._method.write and calls > 1:
            # an earlier BK call went out: BK may have applied part of the write. UNAVAILABLE would tell the
            # client (and the mirror) that nothing was done, and a retry would apply that part twice
            code, details = grpc.StatusCode.UNKNOWN, f"{PART_WAY}, after {calls} calls to BK: {details}"
            shown = self._free(details) if self._free is not None else details
            _log.warning("adapted write cut short", method=self._method.info.path, details=shown)
        self._code, self._details, self._trailing = code, details, trailing

    async def _adapt(self) -> None:
        method, info, bk = self._method, self._method.info, self._backend
        requests = self._decoded_requests()
        if info.client_streaming:
            argument: Any = requests if method.is_async else Requests(requests, self._bridge)
        else:
            first = await anext(requests, None)
            if first is None:
                raise Abort(grpc.StatusCode.INTERNAL, "no request message for a unary request")
            argument = first
        if method.is_async:
            result = method.adapter(argument, bk)
        else:  # it may block: never on the event loop, the clients' path
            result = await off_loop(method.adapter, argument, bk)
        if not info.server_streaming:
            if inspect.isawaitable(result):
                result = await result
            await self._answer(result)
            if not info.client_streaming:  # a second message for a unary request is the client's error
                async for _ in requests:
                    pass
            return
        if inspect.isawaitable(result):
            result = await result
        if hasattr(result, "__aiter__"):
            async for answer in result:
                await self._answer(answer)
        elif isinstance(result, list | tuple):
            for answer in result:
                await self._answer(answer)
        elif hasattr(result, "__iter__") and not isinstance(result, message.Message):
            answers = iter(result)  # a plain generator's next answer may block: off the loop
            while (answer := await off_loop(next, answers, _END)) is not _END:
                await self._answer(answer)
        else:
            raise _WrongAnswer(f"returned {type(result).__name__}, not an iterator of {info.output_type}")

    async def _answer(self, answer: Any) -> None:
        expected = self._method.info.output_type
        if not isinstance(answer, message.Message) or answer.DESCRIPTOR.full_name != expected:
            got = type(answer).__name__
            if isinstance(answer, message.Message):
                got = answer.DESCRIPTOR.full_name
            raise _WrongAnswer(f"returned {got}, not {expected}")
        payload = answer.SerializeToString()
        if self._free is not None:
            self._free.add(type(answer), [payload])
        limit = self._channel.max_message_size
        if limit is not None and len(payload) > limit:  # grpc's own words, on a channel with that limit
            raise _TooLarge(f"Received message larger than max ({len(payload)} vs. {limit})")
        self._decide_headers()
        await self._answers.put(payload)

    def _end_answers(self) -> None:
        """Wake a reader waiting for the next answer (a full queue has no reader waiting)."""
        if not self._answers.full():
            self._answers.put_nowait(_END)

    # -- answers out (grpc.aio's call API) --------------------------------------------------------

    async def read(self) -> Any:
        if self._answers.empty() and self._finished.is_set():
            return aio.EOF
        answer = await self._answers.get()
        return aio.EOF if answer is _END else answer

    def __await__(self) -> Any:
        """The single answer of a unary call (None when the call failed; its status says why)."""
        return self._single().__await__()

    async def _single(self) -> bytes | None:
        answer = await self.read()
        await self._finished.wait()
        return answer if self._code is grpc.StatusCode.OK and answer is not aio.EOF else None

    def done(self) -> bool:
        return self._finished.is_set()

    def cancel(self) -> bool:
        if self.done():
            return False
        # finished here: a task cancelled before its first step never runs its own cleanup
        self._end(grpc.StatusCode.CANCELLED, "cancelled")
        self._decide_headers()
        self._finished.set()
        self._end_answers()
        self._bridge.end()
        self._task.cancel()
        return True

    async def initial_metadata(self) -> Metadata:
        """The headers the adapter sent, once known: sent, or its first answer or its end came first."""
        await self._headers.wait()
        return self._initial

    async def code(self) -> grpc.StatusCode:
        await self._finished.wait()
        return self._code

    async def details(self) -> str:
        await self._finished.wait()
        return self._details

    async def trailing_metadata(self) -> Metadata:
        await self._finished.wait()
        return self._trailing


class _Undecodable(Exception):
    pass


class _WrongAnswer(Exception):
    pass


class _TooLarge(Exception):
    pass
