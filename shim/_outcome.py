"""Snapshots of finished upstream calls, taken at the boundary (errors are values)."""

from __future__ import annotations

from typing import Any

import grpc
from grpc import aio

from comparators import Code, Metadata, Outcome

_IGNORED_REQUEST_KEYS = frozenset({"user-agent"})


def cancelled_by_client(initial: Any = None, answers: tuple[bytes, ...] = ()) -> Outcome:
    """The primary's outcome when the client cancelled its call, with what the primary had answered so far
    (its headers, its answer messages): a read's stream is compared on them (`shim.shadow.watch`)."""
    return Outcome(
        code=Code.CANCELLED,
        initial_metadata=metadata_tuple(initial),
        messages=answers,
        local="cancelled by the client",
    )


def metadata_tuple(md: Any) -> Metadata:
    """grpc Metadata (or a sequence of pairs / _Metadatum) as a plain tuple of pairs."""
    if not md:
        return ()
    return tuple((item[0], item[1]) for item in md)


def forwardable(invocation_metadata: Any) -> Metadata:
    """The client's request metadata that is passed upstream unchanged.

    grpc sets `user-agent` itself; everything else, binary headers included,
    goes through as the client sent it.
    """
    if not invocation_metadata:
        return ()
    return tuple((m.key, m.value) for m in invocation_metadata if m.key not in _IGNORED_REQUEST_KEYS)


def adapter_error(call: Any) -> str:
    """What went wrong in the adapter that served `call` (`shim.adapters`); "" for a plain call."""
    error = getattr(call, "adapter_error", "")
    return error if isinstance(error, str) else ""


async def snapshot(call: aio.Call, messages: tuple[bytes, ...], latency: float, local: str = "") -> Outcome:
    """The Outcome of a finished call."""
    code: grpc.StatusCode = await call.code()
    return Outcome(
        code=code.value[0],
        details=await call.details() or "",
        initial_metadata=metadata_tuple(await call.initial_metadata()),
        trailing_metadata=metadata_tuple(await call.trailing_metadata()),
        messages=messages,
        latency=latency,
        local=local,
        adapter_error=adapter_error(call),
    )
