import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecutionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTION_STATE_UNSPECIFIED: _ClassVar[ExecutionState]
    EXECUTION_STATE_LIVE: _ClassVar[ExecutionState]
    EXECUTION_STATE_REVERSED: _ClassVar[ExecutionState]
    EXECUTION_STATE_CLEARED: _ClassVar[ExecutionState]

class TransactionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSACTION_KIND_UNSPECIFIED: _ClassVar[TransactionKind]
    TRANSACTION_KIND_FUNDING: _ClassVar[TransactionKind]
    TRANSACTION_KIND_EXECUTION: _ClassVar[TransactionKind]
    TRANSACTION_KIND_COMMISSION: _ClassVar[TransactionKind]
    TRANSACTION_KIND_REVERSAL: _ClassVar[TransactionKind]
    TRANSACTION_KIND_CLEARING: _ClassVar[TransactionKind]
EXECUTION_STATE_UNSPECIFIED: ExecutionState
EXECUTION_STATE_LIVE: ExecutionState
EXECUTION_STATE_REVERSED: ExecutionState
EXECUTION_STATE_CLEARED: ExecutionState
TRANSACTION_KIND_UNSPECIFIED: TransactionKind
TRANSACTION_KIND_FUNDING: TransactionKind
TRANSACTION_KIND_EXECUTION: TransactionKind
TRANSACTION_KIND_COMMISSION: TransactionKind
TRANSACTION_KIND_REVERSAL: TransactionKind
TRANSACTION_KIND_CLEARING: TransactionKind

class Money(_message.Message):
    __slots__ = ("currency", "units", "nanos")
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    NANOS_FIELD_NUMBER: _ClassVar[int]
    currency: str
    units: int
    nanos: int
    def __init__(self, currency: _Optional[str] = ..., units: _Optional[int] = ..., nanos: _Optional[int] = ...) -> None: ...

class Shares(_message.Message):
    __slots__ = ("units", "nanos")
    UNITS_FIELD_NUMBER: _ClassVar[int]
    NANOS_FIELD_NUMBER: _ClassVar[int]
    units: int
    nanos: int
    def __init__(self, units: _Optional[int] = ..., nanos: _Optional[int] = ...) -> None: ...

class Client(_message.Message):
    __slots__ = ("number", "holder", "currency", "registered_at")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    number: str
    holder: str
    currency: str
    registered_at: _timestamp_pb2.Timestamp
    def __init__(self, number: _Optional[str] = ..., holder: _Optional[str] = ..., currency: _Optional[str] = ..., registered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RegisterClientRequest(_message.Message):
    __slots__ = ("number", "holder", "currency", "opening_cash")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    OPENING_CASH_FIELD_NUMBER: _ClassVar[int]
    number: str
    holder: str
    currency: str
    opening_cash: Money
    def __init__(self, number: _Optional[str] = ..., holder: _Optional[str] = ..., currency: _Optional[str] = ..., opening_cash: _Optional[_Union[Money, _Mapping]] = ...) -> None: ...

class FetchClientRequest(_message.Message):
    __slots__ = ("number",)
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    number: str
    def __init__(self, number: _Optional[str] = ...) -> None: ...

class ScanClientsRequest(_message.Message):
    __slots__ = ("limit", "offset")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    limit: int
    offset: int
    def __init__(self, limit: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class ClientPage(_message.Message):
    __slots__ = ("clients", "next_offset")
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    clients: _containers.RepeatedCompositeFieldContainer[Client]
    next_offset: int
    def __init__(self, clients: _Optional[_Iterable[_Union[Client, _Mapping]]] = ..., next_offset: _Optional[int] = ...) -> None: ...

class FundRequest(_message.Message):
    __slots__ = ("client", "amount", "memo")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    MEMO_FIELD_NUMBER: _ClassVar[int]
    client: str
    amount: Money
    memo: str
    def __init__(self, client: _Optional[str] = ..., amount: _Optional[_Union[Money, _Mapping]] = ..., memo: _Optional[str] = ...) -> None: ...

class CashRequest(_message.Message):
    __slots__ = ("client",)
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    client: str
    def __init__(self, client: _Optional[str] = ...) -> None: ...

class CashPosition(_message.Message):
    __slots__ = ("client", "settled", "pending", "as_of")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    client: str
    settled: Money
    pending: Money
    as_of: _timestamp_pb2.Timestamp
    def __init__(self, client: _Optional[str] = ..., settled: _Optional[_Union[Money, _Mapping]] = ..., pending: _Optional[_Union[Money, _Mapping]] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("client", "instrument", "shares", "price", "client_ref")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    INSTRUMENT_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REF_FIELD_NUMBER: _ClassVar[int]
    client: str
    instrument: str
    shares: Shares
    price: Money
    client_ref: str
    def __init__(self, client: _Optional[str] = ..., instrument: _Optional[str] = ..., shares: _Optional[_Union[Shares, _Mapping]] = ..., price: _Optional[_Union[Money, _Mapping]] = ..., client_ref: _Optional[str] = ...) -> None: ...

class Execution(_message.Message):
    __slots__ = ("execution_id", "client", "instrument", "shares", "price", "gross", "commission", "client_ref", "executed_at", "state", "venue")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    INSTRUMENT_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    GROSS_FIELD_NUMBER: _ClassVar[int]
    COMMISSION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REF_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VENUE_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    client: str
    instrument: str
    shares: Shares
    price: Money
    gross: Money
    commission: Money
    client_ref: str
    executed_at: _timestamp_pb2.Timestamp
    state: ExecutionState
    venue: str
    def __init__(self, execution_id: _Optional[str] = ..., client: _Optional[str] = ..., instrument: _Optional[str] = ..., shares: _Optional[_Union[Shares, _Mapping]] = ..., price: _Optional[_Union[Money, _Mapping]] = ..., gross: _Optional[_Union[Money, _Mapping]] = ..., commission: _Optional[_Union[Money, _Mapping]] = ..., client_ref: _Optional[str] = ..., executed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[ExecutionState, str]] = ..., venue: _Optional[str] = ...) -> None: ...

class ReverseRequest(_message.Message):
    __slots__ = ("client", "execution_id", "memo")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    MEMO_FIELD_NUMBER: _ClassVar[int]
    client: str
    execution_id: str
    memo: str
    def __init__(self, client: _Optional[str] = ..., execution_id: _Optional[str] = ..., memo: _Optional[str] = ...) -> None: ...

class ClearRequest(_message.Message):
    __slots__ = ("client", "through")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    THROUGH_FIELD_NUMBER: _ClassVar[int]
    client: str
    through: _timestamp_pb2.Timestamp
    def __init__(self, client: _Optional[str] = ..., through: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Clearing(_message.Message):
    __slots__ = ("client", "execution_ids", "net_cash", "cleared_at")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_IDS_FIELD_NUMBER: _ClassVar[int]
    NET_CASH_FIELD_NUMBER: _ClassVar[int]
    CLEARED_AT_FIELD_NUMBER: _ClassVar[int]
    client: str
    execution_ids: _containers.RepeatedScalarFieldContainer[str]
    net_cash: Money
    cleared_at: _timestamp_pb2.Timestamp
    def __init__(self, client: _Optional[str] = ..., execution_ids: _Optional[_Iterable[str]] = ..., net_cash: _Optional[_Union[Money, _Mapping]] = ..., cleared_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class HoldingsRequest(_message.Message):
    __slots__ = ("client", "instrument")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    INSTRUMENT_FIELD_NUMBER: _ClassVar[int]
    client: str
    instrument: str
    def __init__(self, client: _Optional[str] = ..., instrument: _Optional[str] = ...) -> None: ...

class Holding(_message.Message):
    __slots__ = ("instrument", "shares", "average_cost", "book_value")
    INSTRUMENT_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_COST_FIELD_NUMBER: _ClassVar[int]
    BOOK_VALUE_FIELD_NUMBER: _ClassVar[int]
    instrument: str
    shares: Shares
    average_cost: Money
    book_value: Money
    def __init__(self, instrument: _Optional[str] = ..., shares: _Optional[_Union[Shares, _Mapping]] = ..., average_cost: _Optional[_Union[Money, _Mapping]] = ..., book_value: _Optional[_Union[Money, _Mapping]] = ...) -> None: ...

class HoldingsView(_message.Message):
    __slots__ = ("client", "holdings", "as_of")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    HOLDINGS_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    client: str
    holdings: _containers.RepeatedCompositeFieldContainer[Holding]
    as_of: _timestamp_pb2.Timestamp
    def __init__(self, client: _Optional[str] = ..., holdings: _Optional[_Iterable[_Union[Holding, _Mapping]]] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ScanExecutionsRequest(_message.Message):
    __slots__ = ("client", "instrument", "limit", "offset")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    INSTRUMENT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    client: str
    instrument: str
    limit: int
    offset: int
    def __init__(self, client: _Optional[str] = ..., instrument: _Optional[str] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class ExecutionPage(_message.Message):
    __slots__ = ("executions", "next_offset")
    EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    executions: _containers.RepeatedCompositeFieldContainer[Execution]
    next_offset: int
    def __init__(self, executions: _Optional[_Iterable[_Union[Execution, _Mapping]]] = ..., next_offset: _Optional[int] = ...) -> None: ...

class TransactionsRequest(_message.Message):
    __slots__ = ("client",)
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    client: str
    def __init__(self, client: _Optional[str] = ...) -> None: ...

class Transaction(_message.Message):
    __slots__ = ("number", "client", "kind", "cash", "instrument", "shares", "execution_id", "posted_at")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CASH_FIELD_NUMBER: _ClassVar[int]
    INSTRUMENT_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    POSTED_AT_FIELD_NUMBER: _ClassVar[int]
    number: int
    client: str
    kind: TransactionKind
    cash: Money
    instrument: str
    shares: Shares
    execution_id: str
    posted_at: _timestamp_pb2.Timestamp
    def __init__(self, number: _Optional[int] = ..., client: _Optional[str] = ..., kind: _Optional[_Union[TransactionKind, str]] = ..., cash: _Optional[_Union[Money, _Mapping]] = ..., instrument: _Optional[str] = ..., shares: _Optional[_Union[Shares, _Mapping]] = ..., execution_id: _Optional[str] = ..., posted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
