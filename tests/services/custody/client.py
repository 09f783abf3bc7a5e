"""A custody.v1.Custody client without generated stubs: every call ends as an `Answer`, errors included."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from tests.services.custody._book import Violation
from tests.services.custody.messages import REGISTRY, message_class, path

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class Answer:
    """How one call ended: its status, the answer messages, and the rich details' violations."""

    code: str  # "OK", "NOT_FOUND", ...
    details: str = ""
    messages: tuple[Any, ...] = ()
    violations: tuple[Violation, ...] = ()

    @property
    def ok(self) -> bool:
        return self.code == "OK"

    @property
    def message(self) -> Any:
        """The one answer of a unary call that succeeded."""
        (message,) = self.messages
        return message

    def fields(self) -> list[dict[str, Any]]:
        """The answer messages as plain dicts (field names as in the proto, defaults included)."""
        return [
            json_format.MessageToDict(
                m, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
            for m in self.messages
        ]


def violations_of(trailing_metadata: Any) -> tuple[Violation, ...]:
    """The PreconditionFailure violations in a call's rich error details (none without them)."""
    found: list[Violation] = []
    for key, value in trailing_metadata or ():
        if key != STATUS_DETAILS_KEY:
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            failure = error_details_pb2.PreconditionFailure()
            if detail.Unpack(failure):
                found += [Violation(v.type, v.subject, v.description) for v in failure.violations]
    return tuple(found)


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())


class Client:
    """Calls custody.v1.Custody methods by name over a channel."""

    def __init__(self, channel: aio.Channel, timeout: float = 10.0) -> None:
        self._channel = channel
        self._timeout = timeout

    async def call(self, method: str, **fields: Any) -> Answer:
        """Call `method` ("Deposit", ...) with a request of these fields; never raises for a status."""
        info = REGISTRY.method(path(method))
        if info is None:
            raise ValueError(f"no custody method {method!r}")
        request = REGISTRY.message_class(info.input_type)(**fields)
        decode = message_class(info.output_type.rpartition(".")[2]).FromString
        try:
            if info.server_streaming:
                call = self._channel.unary_stream(
                    info.path, request_serializer=_serialize, response_deserializer=decode
                )
                messages = tuple([m async for m in call(request, timeout=self._timeout)])
            else:
                unary = self._channel.unary_unary(
                    info.path, request_serializer=_serialize, response_deserializer=decode
                )
                messages = (await unary(request, timeout=self._timeout),)
        except aio.AioRpcError as error:
            return Answer(
                code=error.code().name,
                details=error.details() or "",
                violations=violations_of(error.trailing_metadata()),
            )
        return Answer(code="OK", messages=messages)
