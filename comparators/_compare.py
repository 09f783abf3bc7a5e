"""compare(exchange) -> Comparison: the verdict on one mirrored call."""

from __future__ import annotations

from typing import Any

from deepdiff import DeepDiff
from deepdiff.helper import NotPresent
from google.protobuf import message

from comparators._model import Comparison, Difference, DiffKind, Exchange, Outcome, Verdict, status_name
from comparators._normalise import to_python
from comparators.descriptors import DescriptorRegistry, MethodInfo

STATUS_DETAILS_KEY = "grpc-status-details-bin"
_UNAVAILABLE = 14

_REPORT_KINDS = {
    "values_changed": DiffKind.CHANGED,
    "type_changes": DiffKind.TYPE,
    "dictionary_item_added": DiffKind.ADDED,
    "iterable_item_added": DiffKind.ADDED,
    "dictionary_item_removed": DiffKind.REMOVED,
    "iterable_item_removed": DiffKind.REMOVED,
    "set_item_added": DiffKind.ADDED,
    "set_item_removed": DiffKind.REMOVED,
}


def compare(exchange: Exchange, registry: DescriptorRegistry | None = None) -> Comparison:
    """Judge BK's answer against Bank's for one exchange. Never raises on bad bytes."""
    shadow = exchange.shadow
    if exchange.cancelled:
        reason = "cancelled by the client"
        if exchange.is_write:
            reason += "; write: whether either side applied it is unknown"
        return Comparison(exchange, Verdict.SKIPPED, reason=reason)
    if shadow is None:
        return Comparison(exchange, Verdict.SKIPPED, reason=exchange.note or "not mirrored")
    if shadow.local:
        return Comparison(exchange, Verdict.SHADOW_ERROR, reason=shadow.local)
    if shadow.code == _UNAVAILABLE and exchange.primary.code != _UNAVAILABLE:
        return Comparison(exchange, Verdict.SHADOW_ERROR, reason=f"shadow unavailable: {shadow.details}")
    bank, bk = exchange.primary, shadow
    if not exchange.primary_is_bank:
        bank, bk = bk, bank
    if _same_bytes(bank, bk):
        return Comparison(exchange, Verdict.MATCH)
    info = registry.method(exchange.method) if registry is not None else None
    differences = _status_differences(bank, bk)
    differences += _message_differences(bank, bk, info, registry)
    verdict = Verdict.MISMATCH if any(not d.rule for d in differences) else Verdict.MATCH
    return Comparison(exchange, verdict, tuple(differences), decoded=info is not None)


def _same_bytes(bank: Outcome, bk: Outcome) -> bool:
    return (
        bank.code == bk.code
        and bank.details == bk.details
        and bank.messages == bk.messages
        and bank.trailer(STATUS_DETAILS_KEY) == bk.trailer(STATUS_DETAILS_KEY)
    )


def _status_differences(bank: Outcome, bk: Outcome) -> list[Difference]:
    diffs: list[Difference] = []
    if bank.code != bk.code:
        diffs.append(Difference("status.code", DiffKind.STATUS, status_name(bank.code), status_name(bk.code)))
    if bank.details != bk.details:
        diffs.append(Difference("status.details", DiffKind.STATUS, bank.details, bk.details))
    bank_rich, bk_rich = bank.trailer(STATUS_DETAILS_KEY), bk.trailer(STATUS_DETAILS_KEY)
    if bank_rich != bk_rich:
        diffs.append(
            Difference("status.rich_details", DiffKind.STATUS, _rich_status(bank_rich), _rich_status(bk_rich))
        )
    return diffs


def _rich_status(raw: str | bytes | None) -> Any:
    """A google.rpc.Status trailer as plain values, or its raw bytes when undecodable."""
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = raw.encode()
    try:
        from google.rpc import status_pb2
    except ImportError:  # googleapis-common-protos absent: compare raw
        return raw
    status = status_pb2.Status()
    try:
        status.ParseFromString(raw)
    except message.DecodeError:
        return raw
    return to_python(status)


def _message_differences(
    bank: Outcome, bk: Outcome, info: MethodInfo | None, registry: DescriptorRegistry | None
) -> list[Difference]:
    diffs: list[Difference] = []
    streamed = info.server_streaming if info is not None else len(bank.messages) != 1 or len(bk.messages) != 1
    if len(bank.messages) != len(bk.messages):
        diffs.append(Difference("<messages>", DiffKind.MESSAGE_COUNT, len(bank.messages), len(bk.messages)))
    for index, (left, right) in enumerate(zip(bank.messages, bk.messages, strict=False)):
        prefix = f"[{index}]" if streamed else ""
        if left == right:
            continue
        if info is None or registry is None:
            diffs.append(Difference(prefix or "<message>", DiffKind.BYTES, left, right))
            continue
        cls = registry.message_class(info.output_type)
        decoded_left, decoded_right = _decode(cls, left), _decode(cls, right)
        undecodable = False
        for side_value, raw, side in ((decoded_left, left, "bank"), (decoded_right, right, "bk")):
            if side_value is None:
                undecodable = True
                values: dict[str, str | None] = {"bank": None, "bk": None}
                values[side] = raw[:64].hex()
                diffs.append(
                    Difference(prefix or "<message>", DiffKind.UNDECODABLE, values["bank"], values["bk"])
                )
        if undecodable or decoded_left is None or decoded_right is None:
            continue
        diffs.extend(diff_values(decoded_left, decoded_right, prefix))
    return diffs


def _decode(cls: type[message.Message], raw: bytes) -> dict[str, Any] | None:
    msg = cls()
    try:
        msg.ParseFromString(raw)
    except (message.DecodeError, RuntimeError, ValueError):
        return None
    return to_python(msg)


def diff_values(bank: Any, bk: Any, prefix: str = "") -> list[Difference]:
    """Field-level differences between two normalised values, with readable paths."""
    # threshold_to_diff_deeper=0: report each field added or removed, even when two
    # messages share few fields (DeepDiff >= 8 would report the whole message instead)
    tree = DeepDiff(bank, bk, view="tree", verbose_level=2, threshold_to_diff_deeper=0)
    diffs: list[Difference] = []
    for report, items in tree.items():
        kind = _REPORT_KINDS.get(report, DiffKind.CHANGED)
        for item in items:
            path = format_path(item.path(output_format="list"), prefix)
            diffs.append(Difference(path, kind, _present(item.t1), _present(item.t2)))
    diffs.sort(key=lambda d: d.path)
    return diffs


def _present(value: Any) -> Any:
    return None if isinstance(value, NotPresent) else value


def format_path(parts: list[Any], prefix: str = "") -> str:
    """['positions', 0, 'quantity'] -> 'positions[0].quantity'."""
    text = prefix
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "<message>"
