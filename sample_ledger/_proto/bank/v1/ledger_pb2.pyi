import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Side(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIDE_UNSPECIFIED: _ClassVar[Side]
    SIDE_BUY: _ClassVar[Side]
    SIDE_SELL: _ClassVar[Side]

class TradeStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRADE_STATUS_UNSPECIFIED: _ClassVar[TradeStatus]
    TRADE_STATUS_BOOKED: _ClassVar[TradeStatus]
    TRADE_STATUS_CANCELLED: _ClassVar[TradeStatus]
    TRADE_STATUS_SETTLED: _ClassVar[TradeStatus]

class EntryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTRY_KIND_UNSPECIFIED: _ClassVar[EntryKind]
    ENTRY_KIND_DEPOSIT: _ClassVar[EntryKind]
    ENTRY_KIND_TRADE: _ClassVar[EntryKind]
    ENTRY_KIND_FEE: _ClassVar[EntryKind]
    ENTRY_KIND_CANCELLATION: _ClassVar[EntryKind]
    ENTRY_KIND_SETTLEMENT: _ClassVar[EntryKind]
SIDE_UNSPECIFIED: Side
SIDE_BUY: Side
SIDE_SELL: Side
TRADE_STATUS_UNSPECIFIED: TradeStatus
TRADE_STATUS_BOOKED: TradeStatus
TRADE_STATUS_CANCELLED: TradeStatus
TRADE_STATUS_SETTLED: TradeStatus
ENTRY_KIND_UNSPECIFIED: EntryKind
ENTRY_KIND_DEPOSIT: EntryKind
ENTRY_KIND_TRADE: EntryKind
ENTRY_KIND_FEE: EntryKind
ENTRY_KIND_CANCELLATION: EntryKind
ENTRY_KIND_SETTLEMENT: EntryKind

class Account(_message.Message):
    __slots__ = ("account_id", "owner_name", "currency", "opened_at")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_NAME_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    OPENED_AT_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    owner_name: str
    currency: str
    opened_at: _timestamp_pb2.Timestamp
    def __init__(self, account_id: _Optional[str] = ..., owner_name: _Optional[str] = ..., currency: _Optional[str] = ..., opened_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class OpenAccountRequest(_message.Message):
    __slots__ = ("account_id", "owner_name", "currency", "initial_deposit")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_NAME_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    INITIAL_DEPOSIT_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    owner_name: str
    currency: str
    initial_deposit: str
    def __init__(self, account_id: _Optional[str] = ..., owner_name: _Optional[str] = ..., currency: _Optional[str] = ..., initial_deposit: _Optional[str] = ...) -> None: ...

class GetAccountRequest(_message.Message):
    __slots__ = ("account_id",)
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    def __init__(self, account_id: _Optional[str] = ...) -> None: ...

class ListAccountsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAccountsResponse(_message.Message):
    __slots__ = ("accounts", "next_page_token")
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    accounts: _containers.RepeatedCompositeFieldContainer[Account]
    next_page_token: str
    def __init__(self, accounts: _Optional[_Iterable[_Union[Account, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DepositRequest(_message.Message):
    __slots__ = ("account_id", "amount", "reference")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    amount: str
    reference: str
    def __init__(self, account_id: _Optional[str] = ..., amount: _Optional[str] = ..., reference: _Optional[str] = ...) -> None: ...

class PostTradeRequest(_message.Message):
    __slots__ = ("account_id", "symbol", "side", "quantity", "price", "client_order_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    symbol: str
    side: Side
    quantity: str
    price: str
    client_order_id: str
    def __init__(self, account_id: _Optional[str] = ..., symbol: _Optional[str] = ..., side: _Optional[_Union[Side, str]] = ..., quantity: _Optional[str] = ..., price: _Optional[str] = ..., client_order_id: _Optional[str] = ...) -> None: ...

class Trade(_message.Message):
    __slots__ = ("trade_id", "account_id", "symbol", "side", "quantity", "price", "fee", "notional", "client_order_id", "booked_at", "status", "venue")
    TRADE_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    FEE_FIELD_NUMBER: _ClassVar[int]
    NOTIONAL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    BOOKED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VENUE_FIELD_NUMBER: _ClassVar[int]
    trade_id: str
    account_id: str
    symbol: str
    side: Side
    quantity: str
    price: str
    fee: str
    notional: str
    client_order_id: str
    booked_at: _timestamp_pb2.Timestamp
    status: TradeStatus
    venue: str
    def __init__(self, trade_id: _Optional[str] = ..., account_id: _Optional[str] = ..., symbol: _Optional[str] = ..., side: _Optional[_Union[Side, str]] = ..., quantity: _Optional[str] = ..., price: _Optional[str] = ..., fee: _Optional[str] = ..., notional: _Optional[str] = ..., client_order_id: _Optional[str] = ..., booked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[TradeStatus, str]] = ..., venue: _Optional[str] = ...) -> None: ...

class CancelTradeRequest(_message.Message):
    __slots__ = ("account_id", "trade_id", "reason")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    TRADE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    trade_id: str
    reason: str
    def __init__(self, account_id: _Optional[str] = ..., trade_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetPositionRequest(_message.Message):
    __slots__ = ("account_id", "symbol")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    symbol: str
    def __init__(self, account_id: _Optional[str] = ..., symbol: _Optional[str] = ...) -> None: ...

class Position(_message.Message):
    __slots__ = ("account_id", "symbol", "quantity", "average_price", "cost_basis")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_PRICE_FIELD_NUMBER: _ClassVar[int]
    COST_BASIS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    symbol: str
    quantity: str
    average_price: str
    cost_basis: str
    def __init__(self, account_id: _Optional[str] = ..., symbol: _Optional[str] = ..., quantity: _Optional[str] = ..., average_price: _Optional[str] = ..., cost_basis: _Optional[str] = ...) -> None: ...

class GetPortfolioRequest(_message.Message):
    __slots__ = ("account_id",)
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    def __init__(self, account_id: _Optional[str] = ...) -> None: ...

class Portfolio(_message.Message):
    __slots__ = ("account_id", "positions", "as_of")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    positions: _containers.RepeatedCompositeFieldContainer[Position]
    as_of: _timestamp_pb2.Timestamp
    def __init__(self, account_id: _Optional[str] = ..., positions: _Optional[_Iterable[_Union[Position, _Mapping]]] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetBalanceRequest(_message.Message):
    __slots__ = ("account_id",)
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    def __init__(self, account_id: _Optional[str] = ...) -> None: ...

class Balance(_message.Message):
    __slots__ = ("account_id", "currency", "cash", "unsettled_cash", "as_of")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CASH_FIELD_NUMBER: _ClassVar[int]
    UNSETTLED_CASH_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    currency: str
    cash: str
    unsettled_cash: str
    as_of: _timestamp_pb2.Timestamp
    def __init__(self, account_id: _Optional[str] = ..., currency: _Optional[str] = ..., cash: _Optional[str] = ..., unsettled_cash: _Optional[str] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListTradesRequest(_message.Message):
    __slots__ = ("account_id", "page_size", "page_token", "symbol")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    page_size: int
    page_token: str
    symbol: str
    def __init__(self, account_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., symbol: _Optional[str] = ...) -> None: ...

class ListTradesResponse(_message.Message):
    __slots__ = ("trades", "next_page_token")
    TRADES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    trades: _containers.RepeatedCompositeFieldContainer[Trade]
    next_page_token: str
    def __init__(self, trades: _Optional[_Iterable[_Union[Trade, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SettleTradesRequest(_message.Message):
    __slots__ = ("account_id", "settle_through")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SETTLE_THROUGH_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    settle_through: _timestamp_pb2.Timestamp
    def __init__(self, account_id: _Optional[str] = ..., settle_through: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SettlementReport(_message.Message):
    __slots__ = ("account_id", "settled_trade_ids", "net_cash", "settled_count", "settled_at")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SETTLED_TRADE_IDS_FIELD_NUMBER: _ClassVar[int]
    NET_CASH_FIELD_NUMBER: _ClassVar[int]
    SETTLED_COUNT_FIELD_NUMBER: _ClassVar[int]
    SETTLED_AT_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    settled_trade_ids: _containers.RepeatedScalarFieldContainer[str]
    net_cash: str
    settled_count: int
    settled_at: _timestamp_pb2.Timestamp
    def __init__(self, account_id: _Optional[str] = ..., settled_trade_ids: _Optional[_Iterable[str]] = ..., net_cash: _Optional[str] = ..., settled_count: _Optional[int] = ..., settled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StreamLedgerEntriesRequest(_message.Message):
    __slots__ = ("account_id",)
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    def __init__(self, account_id: _Optional[str] = ...) -> None: ...

class LedgerEntry(_message.Message):
    __slots__ = ("sequence", "account_id", "kind", "amount", "symbol", "quantity", "trade_id", "posted_at")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    TRADE_ID_FIELD_NUMBER: _ClassVar[int]
    POSTED_AT_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    account_id: str
    kind: EntryKind
    amount: str
    symbol: str
    quantity: str
    trade_id: str
    posted_at: _timestamp_pb2.Timestamp
    def __init__(self, sequence: _Optional[int] = ..., account_id: _Optional[str] = ..., kind: _Optional[_Union[EntryKind, str]] = ..., amount: _Optional[str] = ..., symbol: _Optional[str] = ..., quantity: _Optional[str] = ..., trade_id: _Optional[str] = ..., posted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BookTradesSummary(_message.Message):
    __slots__ = ("booked", "rejected", "trade_ids", "total_notional", "total_fees")
    BOOKED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    TRADE_IDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_NOTIONAL_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FEES_FIELD_NUMBER: _ClassVar[int]
    booked: int
    rejected: int
    trade_ids: _containers.RepeatedScalarFieldContainer[str]
    total_notional: str
    total_fees: str
    def __init__(self, booked: _Optional[int] = ..., rejected: _Optional[int] = ..., trade_ids: _Optional[_Iterable[str]] = ..., total_notional: _Optional[str] = ..., total_fees: _Optional[str] = ...) -> None: ...

class TradeSessionRequest(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: PostTradeRequest
    def __init__(self, order: _Optional[_Union[PostTradeRequest, _Mapping]] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("client_order_id", "code", "reason")
    CLIENT_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    client_order_id: str
    code: str
    reason: str
    def __init__(self, client_order_id: _Optional[str] = ..., code: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class TradeSessionEvent(_message.Message):
    __slots__ = ("booked", "rejected")
    BOOKED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    booked: Trade
    rejected: Rejection
    def __init__(self, booked: _Optional[_Union[Trade, _Mapping]] = ..., rejected: _Optional[_Union[Rejection, _Mapping]] = ...) -> None: ...
