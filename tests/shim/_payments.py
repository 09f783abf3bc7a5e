"""A small payments service with several kinds of id, for tests of id translation through the shim.

`pay.v1.Payments` is described by a FileDescriptorProto built here (no codegen):

    Move(MoveRequest{account_id, amount}) -> Movement{movement_id, account_id, amount}
    Reverse(ReverseRequest{movement_id, reason}) -> Reversal{reversal_id, reverses_movement_id, account_id}
    PlaceHold(HoldRequest{account_id, amount}) -> Hold{hold_id, account_id}
    ReleaseHold(ReleaseRequest{hold_id}) -> Hold
    ListMovements(ListRequest{account_id}) -> stream Movement            (NO_SIDE_EFFECTS: a read)

`Payments` is one side's in-memory implementation, served by `tests.backends.scripted_server`:
Bank mints "M1", "R1", "H1", ...; BK mints "mv_<hex>", "rv_<hex>", "hd_<hex>". Both answer
NOT_FOUND for ids they never minted, record every request they receive, and can hold a chosen
call until released or fail it.

A scripted server is not told which method was called, only the request bytes: so every request
message here has field numbers of its own, and the first field of a request names its method
(`method_of`). The tests always set that first field.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf.message import Message
from grpc import aio

from comparators import DescriptorRegistry
from comparators.ids import IdKind
from shim.routing import MethodSettings
from tests.backends import Running, scripted_server

F = descriptor_pb2.FieldDescriptorProto
SERVICE = "pay.v1.Payments"
MOVE, REVERSE, PLACE_HOLD, RELEASE_HOLD, LIST_MOVEMENTS = (
    f"/{SERVICE}/{name}" for name in ("Move", "Reverse", "PlaceHold", "ReleaseHold", "ListMovements")
)

# request messages: field numbers unique across all requests (see the module docstring)
_MESSAGES: dict[str, list[tuple[str, int]]] = {
    "MoveRequest": [("account_id", 1), ("amount", 2)],
    "ReverseRequest": [("movement_id", 3), ("reason", 4)],
    "HoldRequest": [("account_id", 5), ("amount", 6)],
    "ReleaseRequest": [("hold_id", 7)],
    "ListRequest": [("account_id", 8)],
    "Movement": [("movement_id", 1), ("account_id", 2), ("amount", 3)],
    "Reversal": [("reversal_id", 1), ("reverses_movement_id", 2), ("account_id", 3)],
    "Hold": [("hold_id", 1), ("account_id", 2)],
}
_METHODS = [  # name, input, output, server streaming, read
    ("Move", "MoveRequest", "Movement", False, False),
    ("Reverse", "ReverseRequest", "Reversal", False, False),
    ("PlaceHold", "HoldRequest", "Hold", False, False),
    ("ReleaseHold", "ReleaseRequest", "Hold", False, False),
    ("ListMovements", "ListRequest", "Movement", True, True),
]


def _registry() -> DescriptorRegistry:
    file = descriptor_pb2.FileDescriptorProto(name="pay/v1/payments.proto", package="pay.v1", syntax="proto3")
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        for field_name, number in fields:
            message.field.add(name=field_name, number=number, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    service = file.service.add(name="Payments")
    for name, request, answer, streaming, read in _METHODS:
        method = service.method.add(
            name=name,
            input_type=f".pay.v1.{request}",
            output_type=f".pay.v1.{answer}",
            server_streaming=streaming,
        )
        if read:
            method.options.idempotency_level = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
    registry = DescriptorRegistry()
    registry.add_set(descriptor_pb2.FileDescriptorSet(file=[file]))
    return registry


REGISTRY = _registry()

IDS = (
    IdKind(
        "movement",
        minted=("pay.v1.Movement.movement_id",),
        references=("pay.v1.ReverseRequest.movement_id", "pay.v1.Reversal.reverses_movement_id"),
        owner_key=("pay.v1.Movement.account_id",),
    ),
    IdKind("reversal", minted=("pay.v1.Reversal.reversal_id",)),
    IdKind(
        "hold",
        minted=("pay.v1.Hold.hold_id",),
        references=("pay.v1.ReleaseRequest.hold_id",),
        owner_key=("pay.v1.Hold.account_id",),
    ),
)
BY_ACCOUNT = MethodSettings(key=("account_id",))
METHODS = {f"{SERVICE}/{name}": BY_ACCOUNT for name in ("Move", "PlaceHold", "ListMovements")}


def new(type_name: str, **fields: str) -> Any:
    """A pay.v1 message (dynamic classes have no static attributes: typed Any)."""
    return REGISTRY.message_class(f"pay.v1.{type_name}")(**fields)


def _method_of_field() -> dict[int, str]:
    out = {}
    for name, request, *_ in _METHODS:
        for _, number in _MESSAGES[request]:
            out[number] = name
    return out


_BY_FIELD = _method_of_field()
_INPUT = {name: request for name, request, *_ in _METHODS}


def method_of(payload: bytes) -> str | None:
    """The method a request is for, from its first field's number (None when it has none)."""
    if not payload or payload[0] >= 0x80:  # every field number here fits in the tag's first byte
        return None
    return _BY_FIELD.get(payload[0] >> 3)


# -- one side's implementation --------------------------------------------------------------------------


@dataclass
class Gate:
    """The first call of `method` matching `when` waits at arrival until `release` is set."""

    method: str
    when: Callable[[Any], bool]
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Failure:
    method: str
    code: grpc.StatusCode
    when: Callable[[Any], bool]


@dataclass(frozen=True)
class Received:
    method: str  # "Move", ...
    request: Any  # the decoded request


def _always(_: Any) -> bool:
    return True


class Payments:
    """One side's ledger of movements, reversals and holds, as a scripted server's behaviour."""

    def __init__(self, side: str) -> None:
        self.side = side
        self.received: list[Received] = []
        self.movements: dict[str, Any] = {}  # movement id -> Movement
        self.reversals: dict[str, str] = {}  # movement id -> reversal id
        self.holds: dict[str, tuple[str, str]] = {}  # hold id -> (account, amount)
        self.released: list[str] = []
        self._gates: list[Gate] = []
        self._failures: list[_Failure] = []
        self.amounts_answered: dict[str, str] = {}  # a Move's amount -> the amount this side answers instead
        self._counters: dict[str, itertools.count[int]] = {}
        self._changed = asyncio.Condition()

    def _mint(self, bank_prefix: str, bk_prefix: str) -> str:
        if self.side == "bank":
            counter = self._counters.setdefault(bank_prefix, itertools.count(1))
            return f"{bank_prefix}{next(counter)}"
        return f"{bk_prefix}_{secrets.token_hex(4)}"

    # -- what tests arrange and look at ------------------------------------------------------------

    def hold(self, method: str, when: Callable[[Any], bool] = _always) -> Gate:
        """Hold the next call of `method` (matching `when`) at arrival, until the gate is released."""
        gate = Gate(method, when)
        self._gates.append(gate)
        return gate

    def fail(self, method: str, code: grpc.StatusCode, when: Callable[[Any], bool] = _always) -> None:
        """Abort the next call of `method` (matching `when`) with `code`, doing nothing."""
        self._failures.append(_Failure(method, code, when))

    def release_all(self) -> None:
        for gate in self._gates:
            gate.release.set()

    def sent(self, method: str) -> list[Any]:
        """The requests of `method` received so far, in arrival order."""
        return [r.request for r in self.received if r.method == method]

    @property
    def arrivals(self) -> list[str]:
        """What arrived, in order: "Move A", "Reverse mv_1a2b3c4d", ..."""
        return [f"{r.method} {_subject(r.request)}" for r in self.received]

    async def wait_until(self, check: Callable[[], bool], within: float = 10.0) -> None:
        """Until `check()` holds (checked at every arrival); TimeoutError after `within` seconds."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(check), timeout=within)

    # -- serving ---------------------------------------------------------------------------------

    async def __call__(
        self, requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> list[bytes]:
        (payload,) = [r async for r in requests]
        method = method_of(payload)
        if method is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "cannot tell the method of this request")
            raise AssertionError("abort returns no more")
        request = REGISTRY.message_class(f"pay.v1.{_INPUT[method]}").FromString(payload)
        self.received.append(Received(method, request))
        async with self._changed:
            self._changed.notify_all()
        gate = next(
            (g for g in self._gates if g.method == method and not g.arrived.is_set() and g.when(request)),
            None,
        )
        if gate is not None:
            gate.arrived.set()
            await gate.release.wait()
        failure = next((f for f in self._failures if f.method == method and f.when(request)), None)
        if failure is not None:
            self._failures.remove(failure)
            await context.abort(failure.code, f"{method} failed on purpose")
        answers = self._answer(method, request)
        if isinstance(answers, str):
            await self._refuse(context, answers)
            raise AssertionError("abort returns no more")
        return [answer.SerializeToString() for answer in answers]

    async def _refuse(self, context: aio.ServicerContext[bytes, bytes], details: str) -> None:
        """End the call refused, saying why (NOT_FOUND)."""
        await context.abort(grpc.StatusCode.NOT_FOUND, details)

    def _answer(self, method: str, request: Any) -> list[Message] | str:
        """The answers to a request, or why it is refused (NOT_FOUND)."""
        if method == "Move":
            movement = new(
                "Movement",
                movement_id=self._mint("M", "mv"),
                account_id=request.account_id,
                amount=request.amount,
            )
            self.movements[movement.movement_id] = movement
            answered = self.amounts_answered.get(request.amount)
            if answered is not None:  # a planted difference in the answer alone
                return [
                    new(
                        "Movement",
                        movement_id=movement.movement_id,
                        account_id=request.account_id,
                        amount=answered,
                    )
                ]
            return [movement]
        if method == "Reverse":
            movement = self.movements.get(request.movement_id)
            if movement is None:
                return "unknown movement"  # the same words on both sides: no id in them
            reversal_id = self.reversals.setdefault(request.movement_id, self._mint("R", "rv"))
            return [
                new(
                    "Reversal",
                    reversal_id=reversal_id,
                    reverses_movement_id=request.movement_id,
                    account_id=movement.account_id,
                )
            ]
        if method == "PlaceHold":
            hold_id = self._mint("H", "hd")
            self.holds[hold_id] = (request.account_id, request.amount)
            return [new("Hold", hold_id=hold_id, account_id=request.account_id)]
        if method == "ReleaseHold":
            held = self.holds.get(request.hold_id)
            if held is None:
                return "unknown hold"
            self.released.append(request.hold_id)
            return [new("Hold", hold_id=request.hold_id, account_id=held[0])]
        assert method == "ListMovements"
        return [m for m in self.movements.values() if m.account_id == request.account_id]


def _subject(request: Any) -> str:
    for name in ("account_id", "movement_id", "hold_id"):
        if name in request.DESCRIPTOR.fields_by_name:
            return str(getattr(request, name))
    return ""


@dataclass
class Served:
    """A side's implementation and the real gRPC server running it."""

    payments: Payments
    running: Running

    @property
    def address(self) -> str:
        return self.running.address

    async def stop(self) -> None:
        self.payments.release_all()
        await self.running.stop()


async def serve(side: str) -> Served:
    payments = Payments(side)
    return Served(payments, await scripted_server(payments))


# -- a client --------------------------------------------------------------------------------------------


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


class Client:
    """pay.v1.Payments through a channel, without generated stubs."""

    def __init__(self, channel: aio.Channel) -> None:
        self._channel = channel

    def _unary(self, method: str, answer: str) -> Any:
        cls = REGISTRY.message_class(f"pay.v1.{answer}")
        return self._channel.unary_unary(
            method, request_serializer=_serialize, response_deserializer=cls.FromString
        )

    async def move(self, account_id: str, amount: str) -> Any:
        return await self._unary(MOVE, "Movement")(new("MoveRequest", account_id=account_id, amount=amount))

    async def reverse(self, movement_id: str, reason: str = "customer asked") -> Any:
        request = new("ReverseRequest", movement_id=movement_id, reason=reason)
        return await self._unary(REVERSE, "Reversal")(request)

    async def place_hold(self, account_id: str, amount: str) -> Any:
        return await self._unary(PLACE_HOLD, "Hold")(new("HoldRequest", account_id=account_id, amount=amount))

    async def release_hold(self, hold_id: str) -> Any:
        return await self._unary(RELEASE_HOLD, "Hold")(new("ReleaseRequest", hold_id=hold_id))

    async def list_movements(self, account_id: str) -> list[Any]:
        cls = REGISTRY.message_class("pay.v1.Movement")
        call = self._channel.unary_stream(
            LIST_MOVEMENTS, request_serializer=_serialize, response_deserializer=cls.FromString
        )
        return [movement async for movement in call(new("ListRequest", account_id=account_id))]
