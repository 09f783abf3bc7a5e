"""What an adapter calls: `Backend`, BK's channel with the client's request metadata and deadline.

Re-exported as `shim.adapters.Backend`, where adapters import it from. A stub's call made on the event
loop is grpc.aio's; made from a plain adapter's thread it waits there for BK's whole answer
(shim._adapter_threads).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from grpc import aio

from comparators import Metadata
from shim._adapter_threads import Bridge, whole

T = TypeVar("T")


class Backend:
    """What an adapter calls: BK, with the client's request metadata and deadline.

    `bk.stub(JournalStub)` is a stub of BK's generated code whose calls carry the
    client's metadata and the time left before its deadline (either can be
    overridden per call, as with any stub). Called from a plain adapter's thread,
    a stub's call waits there for BK's whole answer and gives it (shim._adapter_threads).

    `bk.send_initial_metadata(pairs)` and `bk.set_trailing_metadata(pairs)` give the client the headers
    and trailers Bank would send, as a grpc servicer context does: headers once, before the first answer;
    trailers any time before the adapter is done (with an `Abort`, its own trailers come after them).
    Metadata gRPC could not send (a key that is not lowercase, a text value under a `-bin` key, a key of
    gRPC's own) raises ValueError, which the adapter's call ends with as an adapter error.
    """

    __slots__ = ("_deadline", "_said", "bridge", "calls", "channel", "metadata")

    def __init__(
        self,
        channel: aio.Channel,
        metadata: Metadata,
        deadline: float | None,
        bridge: Bridge | None = None,
        said: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.channel = channel
        self.metadata = metadata
        self._deadline = deadline
        self.bridge = bridge
        self._said = said  # where the adapter's headers and trailers go ("initial" | "trailing", pairs)
        self.calls = 0  # BK calls the adapter started: after the first, BK may have applied part of a write

    def send_initial_metadata(self, metadata: Metadata) -> None:
        """The client's headers, as Bank sends them: once, before the adapter's first answer."""
        self._say("initial", metadata)

    def set_trailing_metadata(self, metadata: Metadata) -> None:
        """The client's trailers, sent with the status once the adapter is done (the last given wins)."""
        self._say("trailing", metadata)

    def _say(self, part: str, metadata: Metadata) -> None:
        if self._said is None:
            raise RuntimeError("this Backend serves no client call: it has no metadata to send")
        self._said(part, metadata)

    @property
    def timeout(self) -> float | None:
        """Seconds left before the client's deadline (None: no deadline)."""
        if self._deadline is None:
            return None
        return max(self._deadline - time.monotonic(), 0.0)

    def stub(self, stub_class: Callable[[Any], T]) -> T:
        return _BoundStub(_stub(self.channel, stub_class), self)  # type: ignore[return-value]


_stubs: dict[tuple[int, Any], Any] = {}


def _stub(channel: aio.Channel, stub_class: Callable[[Any], Any]) -> Any:
    key = (id(channel), stub_class)
    stub = _stubs.get(key)
    if stub is None or stub[0] is not channel:
        if len(_stubs) > 1_000:
            _stubs.clear()
        stub = _stubs[key] = (channel, stub_class(channel))
    return stub[1]


class _BoundStub:
    __slots__ = ("_backend", "_stub")

    def __init__(self, stub: Any, backend: Backend) -> None:
        self._stub = stub
        self._backend = backend

    def __getattr__(self, name: str) -> Callable[..., Any]:
        multicallable = getattr(self._stub, name)
        backend = self._backend

        def call(*args: Any, **kwargs: Any) -> Any:
            backend.calls += 1
            kwargs.setdefault("metadata", backend.metadata)
            kwargs.setdefault("timeout", backend.timeout)
            bridge = backend.bridge
            if bridge is None or bridge.on_loop():
                return multicallable(*args, **kwargs)
            return bridge.wait(whole(multicallable, args, kwargs))  # in a plain adapter's thread

        return call
