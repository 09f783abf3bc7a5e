"""DescriptorRegistry: what a FileDescriptorSet says about each method, and clear errors for bad sets."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from comparators import DescriptorError, DescriptorRegistry, MethodInfo
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from tests.helpers import descriptor_set

BANK_BINPB = Path(__file__).resolve().parents[2] / "sample_ledger" / "bank.binpb"
LEDGER = "/bank.v1.Ledger/"


@pytest.fixture(scope="module")
def registry() -> DescriptorRegistry:
    return DescriptorRegistry.from_files([BANK_BINPB])


@pytest.mark.parametrize(
    ("method", "read_only", "client_streaming", "server_streaming", "output_type"),
    [
        ("GetBalance", True, False, False, "bank.v1.Balance"),
        ("GetAccount", True, False, False, "bank.v1.Account"),
        ("ListTrades", True, False, False, "bank.v1.ListTradesResponse"),
        ("PostTrade", False, False, False, "bank.v1.Trade"),
        ("OpenAccount", False, False, False, "bank.v1.Account"),
        ("SettleTrades", False, False, False, "bank.v1.SettlementReport"),
        ("StreamLedgerEntries", True, False, True, "bank.v1.LedgerEntry"),
        ("BookTrades", False, True, False, "bank.v1.BookTradesSummary"),
        ("TradeSession", False, True, True, "bank.v1.TradeSessionEvent"),
    ],
)
def test_method_info_from_the_sample_descriptor_set(
    registry: DescriptorRegistry,
    method: str,
    read_only: bool,
    client_streaming: bool,
    server_streaming: bool,
    output_type: str,
) -> None:
    """Each method is found by its wire path, read-only exactly when idempotency_level is NO_SIDE_EFFECTS,
    with its streaming kind and message types."""
    info = registry.method(LEDGER + method)
    assert info is not None
    assert (info.path, info.read_only, info.client_streaming, info.server_streaming, info.output_type) == (
        LEDGER + method,
        read_only,
        client_streaming,
        server_streaming,
        output_type,
    )
    assert info.unary is not (client_streaming or server_streaming)


def test_every_method_of_the_service_is_listed(registry: DescriptorRegistry) -> None:
    """The registry lists every method of the service, and knows nothing of methods it was not given."""
    expected = {LEDGER + m.name for m in pb.DESCRIPTOR.services_by_name["Ledger"].methods}
    assert set(registry.methods) == expected
    assert registry.method("/bank.v1.Ledger/Nope") is None
    assert registry.method("bank.v1.Ledger.GetBalance") is None


def test_message_classes_are_built_from_descriptors(registry: DescriptorRegistry) -> None:
    """Message classes come from the descriptors alone and decode what the generated classes encode."""
    cls = registry.message_class("bank.v1.Balance")
    assert cls is registry.message_class("bank.v1.Balance")
    decoded = cls.FromString(pb.Balance(account_id="A1", cash="10.5").SerializeToString())
    assert (decoded.account_id, decoded.cash) == ("A1", "10.5")  # type: ignore[attr-defined]
    assert registry.find_message("bank.v1.Balance") is not None
    assert registry.find_message("bank.v1.Nope") is None


def test_adding_the_same_set_twice_is_harmless(registry: DescriptorRegistry) -> None:
    """Files already loaded are skipped, so one set may be given twice."""
    twice = DescriptorRegistry.from_files([BANK_BINPB, BANK_BINPB])
    assert twice.methods == registry.methods


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _without_dependencies() -> bytes:
    full = descriptor_set(pb.DESCRIPTOR)
    only = descriptor_pb2.FileDescriptorSet(file=[f for f in full.file if f.name == "bank/v1/ledger.proto"])
    return only.SerializeToString()


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        pytest.param(
            "missing.binpb", None, "cannot read descriptor set .*missing.binpb: No such file", id="missing"
        ),
        pytest.param(".", None, "cannot read descriptor set .*: Is a directory", id="directory"),
        pytest.param(
            "random.binpb",
            b"\xff\xfe\xfd\x00\x01garbage",
            "random.binpb is not a FileDescriptorSet",
            id="random-bytes",
        ),
        pytest.param(
            "ledger.proto",
            b'syntax = "proto3";\npackage bank.v1;\nmessage Balance { string cash = 1; }\n',
            r"ledger.proto is \.proto source, not a FileDescriptorSet: make one from it with `shim describe"
            r" .*ledger.proto -o FILE.binpb` \(or protoc --include_imports"
            r" --descriptor_set_out=FILE.binpb\)$",
            id="proto-source",
        ),
        pytest.param(
            "ledger.binpb",
            b"// the ledger\npackage bank.v1;\nmessage Balance { string cash = 1; }\n",
            r"ledger.binpb is \.proto source, not a FileDescriptorSet: make one from it with `shim describe",
            id="proto-source-by-its-text",
        ),
        pytest.param(
            "ledger.txt",
            b"\xef\xbb\xbf\n  package bank.v1;\n",
            r"ledger.txt is \.proto source, not a FileDescriptorSet",
            id="proto-source-after-a-bom-and-blank-lines",
        ),
        pytest.param(
            "notes.txt",
            b"these are notes, not a descriptor set\n",
            r"notes.txt is not a FileDescriptorSet: Error parsing message",
            id="other-text",
        ),
        pytest.param("empty.binpb", b"", "empty.binpb holds no file descriptors", id="empty-file"),
        pytest.param(
            "other.binpb",
            pb.Balance(cash="1").SerializeToString(),
            "other.binpb holds no file descriptors",
            id="another-message",
        ),
        pytest.param(
            "nodeps.binpb",
            _without_dependencies(),
            "nodeps.binpb: cannot add bank/v1/ledger.proto: .*google/protobuf/timestamp.proto",
            id="missing-import",
        ),
    ],
)
def test_bad_descriptor_sets_raise_a_clear_error(
    tmp_path: Path, name: str, data: bytes | None, expected: str
) -> None:
    """A set that cannot be read or used raises DescriptorError, one line naming the file and the problem."""
    path = tmp_path / name if name != "." else tmp_path
    if data is not None:
        _write(path, data)
    with pytest.raises(DescriptorError, match=expected) as caught:
        DescriptorRegistry.from_files([path])
    assert "\n" not in str(caught.value)


def test_method_info_is_a_plain_value() -> None:
    """MethodInfo is a frozen value: equal when its fields are, usable as a key."""
    info = MethodInfo(
        "/p.S/M", "p.In", "p.Out", client_streaming=False, server_streaming=True, read_only=True
    )
    same = MethodInfo(
        "/p.S/M", "p.In", "p.Out", client_streaming=False, server_streaming=True, read_only=True
    )
    assert info == same
    assert {info: 1}[same] == 1
    assert not info.unary
