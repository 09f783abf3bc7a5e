from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetModesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Modes(_message.Message):
    __slots__ = ("default_mode", "methods", "replicas", "lease")
    class MethodsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DEFAULT_MODE_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    default_mode: str
    methods: _containers.ScalarMap[str, str]
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaModes]
    lease: float
    def __init__(self, default_mode: _Optional[str] = ..., methods: _Optional[_Mapping[str, str]] = ..., replicas: _Optional[_Iterable[_Union[ReplicaModes, _Mapping]]] = ..., lease: _Optional[float] = ...) -> None: ...

class ReplicaModes(_message.Message):
    __slots__ = ("replica", "default_mode", "methods", "since", "heartbeat", "differs", "silent")
    class MethodsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODE_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    DIFFERS_FIELD_NUMBER: _ClassVar[int]
    SILENT_FIELD_NUMBER: _ClassVar[int]
    replica: str
    default_mode: str
    methods: _containers.ScalarMap[str, str]
    since: float
    heartbeat: float
    differs: bool
    silent: bool
    def __init__(self, replica: _Optional[str] = ..., default_mode: _Optional[str] = ..., methods: _Optional[_Mapping[str, str]] = ..., since: _Optional[float] = ..., heartbeat: _Optional[float] = ..., differs: _Optional[bool] = ..., silent: _Optional[bool] = ...) -> None: ...

class SetModeRequest(_message.Message):
    __slots__ = ("mode", "methods", "reason", "who", "force", "retire_bank", "pause")
    MODE_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WHO_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    RETIRE_BANK_FIELD_NUMBER: _ClassVar[int]
    PAUSE_FIELD_NUMBER: _ClassVar[int]
    mode: str
    methods: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    who: str
    force: bool
    retire_bank: bool
    pause: float
    def __init__(self, mode: _Optional[str] = ..., methods: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ..., who: _Optional[str] = ..., force: _Optional[bool] = ..., retire_bank: _Optional[bool] = ..., pause: _Optional[float] = ...) -> None: ...

class ModeChange(_message.Message):
    __slots__ = ("at", "who", "scope", "from_mode", "to_mode", "reason", "forced")
    AT_FIELD_NUMBER: _ClassVar[int]
    WHO_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    FROM_MODE_FIELD_NUMBER: _ClassVar[int]
    TO_MODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FORCED_FIELD_NUMBER: _ClassVar[int]
    at: float
    who: str
    scope: str
    from_mode: str
    to_mode: str
    reason: str
    forced: bool
    def __init__(self, at: _Optional[float] = ..., who: _Optional[str] = ..., scope: _Optional[str] = ..., from_mode: _Optional[str] = ..., to_mode: _Optional[str] = ..., reason: _Optional[str] = ..., forced: _Optional[bool] = ...) -> None: ...

class ModeHistoryRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ModeHistoryResponse(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[ModeChange]
    def __init__(self, changes: _Optional[_Iterable[_Union[ModeChange, _Mapping]]] = ...) -> None: ...
