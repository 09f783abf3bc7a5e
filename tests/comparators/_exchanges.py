"""Exchange factories for comparator tests: answers built from the sample ledger's messages."""

from __future__ import annotations

from google.protobuf import any_pb2, message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from comparators import DescriptorRegistry, Exchange, Metadata, Outcome
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from tests.helpers import registry_of

LEDGER = "/bank.v1.Ledger/"
OPEN_ACCOUNT = LEDGER + "OpenAccount"
GET_BALANCE = LEDGER + "GetBalance"
GET_PORTFOLIO = LEDGER + "GetPortfolio"
POST_TRADE = LEDGER + "PostTrade"
SETTLE_TRADES = LEDGER + "SettleTrades"
STREAM_ENTRIES = LEDGER + "StreamLedgerEntries"
BOOK_TRADES = LEDGER + "BookTrades"
TRADE_SESSION = LEDGER + "TradeSession"
UNDESCRIBED = "/other.v1.Elsewhere/Call"

STATUS_DETAILS = "grpc-status-details-bin"
OK, NOT_FOUND, INVALID_ARGUMENT, UNAVAILABLE = 0, 5, 3, 14

REGISTRY: DescriptorRegistry = registry_of(pb.DESCRIPTOR)


def wire(*messages: message.Message) -> tuple[bytes, ...]:
    return tuple(m.SerializeToString() for m in messages)


def answer(
    *messages: message.Message | bytes, code: int = OK, details: str = "", **kwargs: object
) -> Outcome:
    """An Outcome carrying `messages` (protobuf messages or raw bytes)."""
    raw = tuple(m if isinstance(m, bytes) else m.SerializeToString() for m in messages)
    return Outcome(code=code, details=details, messages=raw, **kwargs)  # type: ignore[arg-type]


def exchange(method: str, primary: Outcome, shadow: Outcome | None, **kwargs: object) -> Exchange:
    """An exchange of one request; the primary is Bank unless `primary_is_bank=False`."""
    return Exchange(method=method, requests=(b"",), primary=primary, shadow=shadow, **kwargs)  # type: ignore[arg-type]


def rich_status(code: int, message_text: str, *violations: tuple[str, str]) -> bytes:
    """A google.rpc.Status, as sent in the grpc-status-details-bin trailer."""
    status = status_pb2.Status(code=code, message=message_text)
    if violations:
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations
                ]
            )
        )
        status.details.append(detail)
    return status.SerializeToString()


def trailers(rich: bytes | None = None, *extra: tuple[str, str | bytes]) -> Metadata:
    return ((STATUS_DETAILS, rich), *extra) if rich is not None else extra


BAD_QUANTITY = rich_status(code_pb2.INVALID_ARGUMENT, "bad order", ("quantity", "must be > 0"))
BAD_PRICE = rich_status(code_pb2.INVALID_ARGUMENT, "bad order", ("price", "must be > 0"))
