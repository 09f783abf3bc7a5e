"""The tutorial's service, in one file: both implementations of inventory.proto, and some traffic.

    python inventory.py serve bank --listen 127.0.0.1:7001   # Bank, the service in production
    python inventory.py serve bk --listen 127.0.0.1:7002     # BK, its rewrite (--fixed: without its bug)
    python inventory.py traffic --target 127.0.0.1:7000 --calls 300

The two differ the way a rewrite does:
- ids: Bank numbers its items "item-1", "item-2", ...; BK mints "I" and eight hex digits;
- a benign difference: Bank writes prices with two decimals ("2.50"), BK with as few as it needs ("2.5");
- a real bug: BK caps an item's stock at 1,000 (Bank has no cap).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc import aio

HERE = Path(__file__).resolve().parent
SERVICE = "/tutorial.v1.Inventory/"


def _messages() -> dict[str, Any]:
    """The message classes of inventory.proto, compiled when the script starts (no generated code)."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "inventory.binpb"
        if protoc.main(["protoc", f"-I{HERE}", f"--descriptor_set_out={out}", str(HERE / "inventory.proto")]):
            raise SystemExit("inventory.proto did not compile")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    names = ("AddItemRequest", "RestockRequest", "GetItemRequest", "Item")
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tutorial.v1.{n}")) for n in names}


M = _messages()


class Book:
    def __init__(self, side: str, fixed: bool) -> None:
        self.side, self.fixed = side, fixed
        self.items: dict[str, Any] = {}

    def _id(self) -> str:
        return f"item-{len(self.items) + 1}" if self.side == "bank" else f"I{secrets.token_hex(4).upper()}"

    def _price(self, text: str) -> str:
        value = Decimal(text)
        return f"{value:.2f}" if self.side == "bank" else format(value.normalize(), "f")

    def add(self, request: Any) -> Any:
        item = M["Item"](item_id=self._id(), name=request.name, price=self._price(request.price), stock=0)
        self.items[item.item_id] = item
        return item

    def restock(self, request: Any) -> Any:
        """The item restocked; a string saying why not when its stock would go below 0."""
        item = self.items.get(request.item_id)
        if item is None:
            return None
        stock = item.stock + request.quantity
        if self.side == "bk" and not self.fixed:
            stock = min(stock, 1000)  # the real bug
        if stock < 0:
            return f"not enough stock of {item.item_id}"
        item.stock = stock
        return item


async def serve(side: str, listen: str, fixed: bool) -> None:
    book = Book(side, fixed)

    def unary(method: str, request_type: str) -> grpc.RpcMethodHandler:
        async def handle(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            if method == "AddItem":
                return book.add(request)
            found = book.restock(request) if method == "Restock" else book.items.get(request.item_id)
            if found is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no item {request.item_id}")
            if isinstance(found, str):
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, found)
            return found

        return grpc.unary_unary_rpc_method_handler(
            handle,
            request_deserializer=M[request_type].FromString,
            response_serializer=M["Item"].SerializeToString,
        )

    handlers = {"AddItem": "AddItemRequest", "Restock": "RestockRequest", "GetItem": "GetItemRequest"}
    server = aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "tutorial.v1.Inventory", {m: unary(m, t) for m, t in handlers.items()}
            )
        ]
    )
    server.add_insecure_port(listen)
    await server.start()
    print(f"{side}{' (fixed)' if fixed else ''} serving on {listen}", flush=True)
    await server.wait_for_termination()


async def traffic(target: str, calls: int, seed: int) -> None:
    rng = random.Random(seed)
    async with aio.insecure_channel(target) as channel:

        def stub(method: str, request_type: str) -> Any:
            return channel.unary_unary(
                SERVICE + method,
                request_serializer=M[request_type].SerializeToString,
                response_deserializer=M["Item"].FromString,
            )

        add, restock, get = (
            stub("AddItem", "AddItemRequest"),
            stub("Restock", "RestockRequest"),
            stub("GetItem", "GetItemRequest"),
        )
        ids: list[str] = []
        for n in range(calls):
            if not ids or n % 10 == 0:
                price = f"{rng.randint(1, 40)}.{rng.choice(['00', '50', '25', '99'])}"
                ids.append((await add(M["AddItemRequest"](name=f"item {n}", price=price))).item_id)
            elif rng.random() < 0.6:
                try:
                    await restock(
                        M["RestockRequest"](item_id=rng.choice(ids), quantity=rng.randint(-50, 400))
                    )
                except aio.AioRpcError as error:  # not enough stock: Bank refused, as it should
                    if error.code() is not grpc.StatusCode.FAILED_PRECONDITION:
                        raise
            else:
                await get(M["GetItemRequest"](item_id=rng.choice(ids)))
    print(f"{calls} calls sent to {target}: {len(ids)} items")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="serve one side")
    serving.add_argument("side", choices=("bank", "bk"))
    serving.add_argument("--listen", default="127.0.0.1:7001")
    serving.add_argument("--fixed", action="store_true", help="BK without its bug")
    sending = commands.add_parser("traffic", help="send calls, as the clients would")
    sending.add_argument("--target", default="127.0.0.1:7000")
    sending.add_argument("--calls", type=int, default=300)
    sending.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "serve":
        asyncio.run(serve(args.side, args.listen, args.fixed))
    else:
        asyncio.run(traffic(args.target, args.calls, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
