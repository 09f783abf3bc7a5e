"""Run Bank, BK, or BK behind its native interface only, as a grpc.aio server."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger._proto.bk.v1 import journal_pb2 as jpb
from sample_ledger._proto.bk.v1 import journal_pb2_grpc as jpb_grpc
from sample_ledger.bank import BankServicer
from sample_ledger.bk import BkServicer
from sample_ledger.bk_native import BkNativeServicer

# "bank" and "bk" serve bank.v1.Ledger; "bk-native" serves BK's own bk.v1.Journal only
KINDS = ("bank", "bk", "bk-native")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_WILDCARD_HOSTS = ("", "0.0.0.0", "[::]", "::")
# served by gRPC server reflection, so a client (or the shim) can ask for the descriptors
REFLECTED_SERVICES = (pb.DESCRIPTOR.services_by_name["Ledger"].full_name, reflection.SERVICE_NAME)
NATIVE_REFLECTED_SERVICES = (jpb.DESCRIPTOR.services_by_name["Journal"].full_name, reflection.SERVICE_NAME)

Servicer = BankServicer | BkServicer | BkNativeServicer


class RunningLedger:
    """A started ledger server: where it listens, its servicer, and how to stop it."""

    def __init__(self, server: Any, servicer: Servicer, host: str, port: int) -> None:
        self._server = server
        self.servicer = servicer
        self.port = port
        self.address = f"{'127.0.0.1' if host in _WILDCARD_HOSTS else host}:{port}"

    async def stop(self, grace: float | None = None) -> None:
        """Stop the server; with `grace`, calls in flight get that many seconds to finish."""
        await self._server.stop(grace)

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


def make_servicer(kind: str, fixed: bool = False) -> Servicer:
    """A fresh servicer of `kind` ("bank", "bk" or "bk-native"); `fixed`: BK without its planted bugs 1-3."""
    if kind == "bank":
        return BankServicer()
    if kind == "bk":
        return BkServicer(fixed=fixed)
    if kind == "bk-native":
        return BkNativeServicer()
    raise ValueError(f"unknown ledger kind {kind!r}; expected one of {', '.join(KINDS)}")


class _Delay(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type stubs
    """Every call waits `seconds` before it is handled: a slow ledger that costs no CPU."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        await asyncio.sleep(self._seconds)
        return await continuation(handler_call_details)


async def serve(
    kind: str, address: str = "127.0.0.1:0", delay: float = 0.0, fixed: bool = False
) -> RunningLedger:
    """Start a `kind` ledger ("bank", "bk" or "bk-native") listening on `address` (port 0: any free port).

    "bank" and "bk" serve `bank.v1.Ledger`; "bk-native" serves BK's own `bk.v1.Journal` and nothing
    else. Each serves gRPC server reflection too, so that its descriptors can be asked for. With
    `delay`, every call waits that many seconds before it is handled (benchmarks: a slow BK). `fixed`
    ("bk" only): BK with its planted bugs 1-3 turned off, so that a comparison finds only benign differences.
    """
    if fixed and kind != "bk":
        raise ValueError("only the bk ledger has planted bugs to turn off (fixed)")
    servicer = make_servicer(kind, fixed)
    host, _, _ = address.rpartition(":")
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ],
        interceptors=[_Delay(delay)] if delay > 0 else None,
    )
    if isinstance(servicer, BkNativeServicer):
        jpb_grpc.add_JournalServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        reflection.enable_server_reflection(NATIVE_REFLECTED_SERVICES, server)
    else:
        pb_grpc.add_LedgerServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        reflection.enable_server_reflection(REFLECTED_SERVICES, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(f"cannot listen on {address}: {error}") from error
    if not port:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    return RunningLedger(server, servicer, host, port)
