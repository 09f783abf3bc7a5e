"""An order venue, a service the shim has never seen, with two independent sides.

`venue.v1.Venue` (venue.proto, compiled when first imported: `DESCRIPTOR_SET`, `REGISTRY`):

    OpenAccount(OpenAccountRequest{account, cash}) -> Account                 write
    Trade(stream TradeRequest) -> stream TradeAck                             write, one ack per request
    SubmitBatch(stream NewOrderRequest) -> BatchSummary                       write, one account
    CancelOrder(CancelOrderRequest{order_id}) -> Order                        write
    GetOrder, ListOpenOrders (no routing key), StreamFills, GetAccount, ListAccounts   reads

The house rule, the same on both sides: a new order fills at once for min(quantity, 100) shares at
its limit price (one execution id per fill); the rest rests open (PARTIALLY_FILLED, or FILLED when
nothing rests). A modify sets the open quantity of a resting order, a cancel closes it; either is
REJECTED ("order not open") when the order no longer rests. Cash moves by quantity x price (BUY
pays, SELL receives), positions by the signed quantity; a BUY that would take cash below zero is
REJECTED ("insufficient cash") and mints nothing. Accounts never interact.

Refusals, worded alike on both sides and never naming an id: in a session, REJECTED acks with
`reason` "unknown account", "unknown order", "order not open", "invalid order", "invalid quantity",
"insufficient cash", "no action"; otherwise the call's status: NOT_FOUND ("unknown order",
"unknown account"), FAILED_PRECONDITION ("order not open"), INVALID_ARGUMENT, ALREADY_EXISTS.

The sides (`serve("bank")`, `serve("bk")`) answer identically but for:

1. ids: Bank mints "O1", "O2", ... and "E1", ...; BK "ord-<12 hex>" and "x-<12 hex>";
2. `ListOpenOrders`: Bank lists the oldest order first, BK the newest;
3. served `stamped`, a session's acks say when each side handled their requests, by its own clock
   (`TradeAck.acked_at`; unset otherwise).

Bank (`bank.py`) keeps dicts and Decimal cash; BK (`bk.py`) an event journal and integer cents.
`workload.py` drives a concurrent mix of calls and reads a side's book back; `shim.toml` is the
shim's config for the venue.
"""

from tests.services.venue.messages import DESCRIPTOR_SET, REGISTRY
from tests.services.venue.server import Served, serve
from tests.services.venue.workload import WorkloadResult, book_of, run_workload

__all__ = ["DESCRIPTOR_SET", "REGISTRY", "Served", "WorkloadResult", "book_of", "run_workload", "serve"]
