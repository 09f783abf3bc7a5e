"""Plain `def` adapters, off the event loop: a bounded pool of threads of their own.

The event loop is every client's path: an adapter blocking on it (a plain function doing blocking
I/O, `time.sleep`, waiting on a lock) would hold back every call's answer, in `shadow` mode too. So a
plain (non-`async`) adapter, and each next answer of a plain iterator (a `def` generator), runs in
one of `ADAPTER_THREADS` threads kept for the adapters; the loop awaits it as it awaits any I/O.
Beyond that many at once, a call waits for a thread: in `shadow` mode off the clients' path, and a
shadow call given up (the shadow timeout) while it waits never starts.

In such a thread the adapter's BK calls (`bk.stub(...)`) block that thread, never the loop: each is
made on the loop and the thread waits for its whole answer (the response; for a server stream, the
list of its responses). A client stream's requests are a plain iterator whose `next` waits the same
way. When the adapter's call ends (the client cancelled, its deadline, the shim gave up), whatever
its thread waits for on the loop is cancelled: the thread gets `concurrent.futures.CancelledError`
and its answer goes nowhere. A thread busy in code of its own (`time.sleep(60)`) keeps its place in
the pool until that returns; the threads are daemons, so none ever holds up the shim's exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

ADAPTER_THREADS = 16  # plain adapters running at once, in each shim process

_END = object()


def is_async(adapter: Callable[..., Any]) -> bool:
    """An `async def` adapter (or async generator), run on the loop; anything else runs in a thread."""
    own_call = type(adapter).__call__  # a callable object's `async def __call__`
    return any(inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f) for f in (adapter, own_call))


class _Pool:
    """Daemon threads, started as calls need them, at most `size`."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._jobs: queue.SimpleQueue[
            tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]]
        ]
        self._jobs = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads = 0

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((future, fn, args))
        if not self._idle.acquire(blocking=False):
            with self._lock:
                if self._threads < self._size:
                    self._threads += 1
                    name = f"adapter-{self._threads}"
                    threading.Thread(target=self._work, name=name, daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            _run_job(*self._jobs.get())
            self._idle.release()


def _run_job(future: concurrent.futures.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    if not future.set_running_or_notify_cancel():  # given up while it waited for a thread
        return
    try:
        result = fn(*args)
    except StopIteration as exc:  # as in a coroutine: asyncio's futures cannot carry it
        future.set_exception(RuntimeError(f"adapter raised StopIteration {exc}".rstrip()))
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the adapter's call judges them
        future.set_exception(exc)
    else:
        future.set_result(result)


_POOL = _Pool(ADAPTER_THREADS)


async def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)`, run in one of the adapters' threads."""
    return await asyncio.wrap_future(_POOL.submit(fn, args))


class Bridge:
    """The way back to the loop from an adapter's thread; what the thread waits for ends with the call."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._waiting: set[concurrent.futures.Future[Any]] = set()
        self._ended = False

    def on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def soon(self, step: Callable[[], object]) -> None:
        """Run `step` on the loop: now when called there, else at its next turn (from an adapter's thread)."""
        if self.on_loop():
            step()
        else:
            self._loop.call_soon_threadsafe(step)

    def wait(self, work: Coroutine[Any, Any, Any]) -> Any:
        """Run `work` on the loop; this thread waits for its result."""
        with self._lock:
            if self._ended:
                work.close()
                raise concurrent.futures.CancelledError("the adapter's call has ended")
            future = asyncio.run_coroutine_threadsafe(work, self._loop)
            self._waiting.add(future)
        try:
            return future.result()
        finally:
            with self._lock:
                self._waiting.discard(future)

    def end(self) -> None:
        """The call is over: what its threads wait for is cancelled."""
        with self._lock:
            self._ended = True
            waiting, self._waiting = self._waiting, set()
        for future in waiting:
            future.cancel()


async def whole(multicallable: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A BK call's whole answer: its response, or the list of a server stream's responses."""
    call = multicallable(*args, **kwargs)
    if hasattr(call, "__aiter__"):
        return [answer async for answer in call]
    return await call


class Requests:
    """A client stream's requests for a plain adapter: a plain iterator in its thread (async too)."""

    def __init__(self, requests: AsyncIterator[Any], bridge: Bridge) -> None:
        self._requests = requests
        self._bridge = bridge

    def __aiter__(self) -> Requests:
        return self

    async def __anext__(self) -> Any:
        return await anext(self._requests)

    def __iter__(self) -> Requests:
        return self

    def __next__(self) -> Any:
        if self._bridge.on_loop():
            raise TypeError("on the event loop, a client stream's requests are read with `async for`")
        request = self._bridge.wait(_next(self._requests))
        if request is _END:
            raise StopIteration
        return request


async def _next(requests: AsyncIterator[Any]) -> Any:
    return await anext(requests, _END)
