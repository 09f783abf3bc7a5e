"""compare(exchange) -> Comparison: the verdict on one mirrored call.

Over 400 lines: one judgement read top to bottom, from what kept a call from being compared down to each
difference of status, rich details, messages and metadata (`comparators._metadata`), with the ids and
redaction applied on the way.
"""

from __future__ import annotations

from dataclasses import replace

from google.protobuf import message

from comparators import _metadata
from comparators._model import Code, Comparison, Difference, DiffKind, Exchange, Outcome, Verdict, status_name
from comparators._stand_ins import StandIns, stand_in
from comparators._walk import _ALIKE_TRIALS, _MISSING, NO_CLOCK, Clock, Walker
from comparators.descriptors import DescriptorRegistry, MethodInfo
from comparators.ids import IdFields, ids_in, read_ids, text_reads_as, translate_answer
from comparators.message_api import parse
from comparators.redact import FreeText, Originals, Redactor, hidden
from comparators.rules import Ignore, RuleSet

STATUS_DETAILS_KEY = "grpc-status-details-bin"
_RPC_STATUS = "google.rpc.Status"
_RICH = "status.rich_details"
_RPC_ONLY = DescriptorRegistry()  # google.rpc types alone, for exchanges compared without descriptors


def compare(
    exchange: Exchange,
    registry: DescriptorRegistry | None = None,
    rules: RuleSet | None = None,
    ids: IdFields | None = None,
    redactor: Redactor | None = None,
) -> Comparison:
    """Judge BK's answer against Bank's for one exchange, under `rules`. Never raises on bad bytes.

    With `ids`, BK's ids in the answers are read as the Bank ids they pair with
    (`exchange.ids`) before comparing, so a mapped pair is equal; a BK id with
    no known pair that differs from Bank's is an `unmapped-id` difference, and so
    is one with the text of a Bank id that pairs with another BK id (overlapping
    id spaces: comparators._stand_ins). A mismatch on a key out of step
    (`exchange.tainted`) is `tainted`. Two answers that would match but are both failures (a status
    neither OK nor a refusal: `REFUSALS`) are no agreement: skipped, as proving nothing. With
    `redactor`, the values of sensitive fields are replaced by keyed hashes in
    both answers before anything is compared, after BK's ids were read through
    the pairs, so a mapped id in a redacted field gives equal hashes (see
    comparators.redact); the rules still judge the values as sent
    (comparators.redact.Originals), and the differences show the hashes.
    """
    try:
        comparison = _judge(exchange, registry, rules, ids, redactor)
        noise = _noise(exchange, registry, rules, redactor)
    except Exception as exc:  # fail closed: a comparison that could not be made is never a pass
        return Comparison(exchange, Verdict.ERROR, reason=f"the comparison failed: {exc!r}")
    verdict, reason = comparison.verdict, comparison.reason
    if exchange.ended_after and verdict in (Verdict.MATCH, Verdict.MISMATCH) and not reason:
        reason = _ended(exchange.ended_after)
    if verdict is Verdict.MISMATCH and exchange.tainted:
        verdict, reason = Verdict.TAINTED, exchange.tainted
    if verdict is comparison.verdict and not noise and reason == comparison.reason:
        return comparison
    return Comparison(exchange, verdict, comparison.differences, reason, comparison.decoded, noise)


def _noise(
    exchange: Exchange,
    registry: DescriptorRegistry | None,
    rules: RuleSet | None,
    redactor: Redactor | None,
) -> tuple[Difference, ...]:
    """The real differences between the primary's answer and its answer when asked again."""
    again = exchange.noise_sample
    if again is None or exchange.cancelled:
        return ()
    first = exchange.primary
    if _same_bytes(first, again) and _metadata.of(first) == _metadata.of(again):
        return ()
    rules = rules if rules is not None else NO_RULES
    info = registry.method(exchange.method) if registry is not None else None
    free = _free_text(exchange, registry, redactor, first, again)
    found = _status_differences(exchange.method, first, again, registry, rules, redactor, free=free)
    found += _message_differences(exchange.method, first, again, info, registry, rules, redactor=redactor)
    found += _metadata.differences(exchange.method, first, again, rules, redactor is not None, free)
    # a pairing that is not known proves no noise either
    return tuple(d._replace(noise=True) for d in found if not d.rule and d.kind is not DiffKind.UNPROVEN)


def _judge(
    exchange: Exchange,
    registry: DescriptorRegistry | None,
    rules: RuleSet | None,
    ids: IdFields | None,
    redactor: Redactor | None,
) -> Comparison:
    shadow = exchange.shadow
    if exchange.cancelled:  # by the client, or its copy was lost (the primary's local outcome says which)
        reason = exchange.primary.local or "cancelled by the client"
        if exchange.is_write:
            reason += "; write: whether either side applied it is unknown"
        return Comparison(exchange, Verdict.SKIPPED, reason=reason)
    if exchange.unmapped:
        return Comparison(
            exchange,
            Verdict.SKIPPED,
            tuple(Difference(at, DiffKind.UNMAPPED_ID, value, None) for _, at, value in exchange.unmapped),
            reason=exchange.note or "not mirrored: the request names ids the shadow has no counterpart for",
        )
    if shadow is None:
        return Comparison(exchange, Verdict.SKIPPED, reason=exchange.note or "not mirrored")
    if shadow.local:
        return Comparison(exchange, Verdict.SHADOW_ERROR, reason=shadow.local)
    bank_side, bk_side = exchange.primary, shadow
    if not exchange.primary_is_bank:
        bank_side, bk_side = bk_side, bank_side
    if bk_side.adapter_error:  # BK never got to answer in Bank's shape: the adapter is at fault
        error = _said(exchange, registry, redactor, bk_side.adapter_error)
        difference = Difference("adapter", DiffKind.ADAPTER_ERROR, bank_side.status, error)
        return Comparison(exchange, Verdict.ERROR, (difference,), reason=error)
    primary = exchange.primary
    if primary.unavailable_before_answering:
        # the primary never received the call (gRPC's UNAVAILABLE), or lost it with its connection: whatever
        # the shadow answered, nothing to compare it with; not a match when both are down, no fault of the
        # shadow's when it answered
        said = _said(exchange, registry, redactor, primary.details)
        if primary.never_received:
            reason = (
                f"not compared: the primary never received the call (UNAVAILABLE before any answer: {said})"
            )
        else:
            reason = (
                "not compared: the primary's connection was lost once it had the call"
                f" (UNAVAILABLE before any answer: {said})"
            )
            if exchange.is_write:
                reason += "; write: it may have applied it"
        return Comparison(exchange, Verdict.SKIPPED, reason=reason)
    if shadow.code == Code.UNAVAILABLE and primary.code != Code.UNAVAILABLE:
        said = _said(exchange, registry, redactor, shadow.details)
        return Comparison(exchange, Verdict.SHADOW_ERROR, reason=f"shadow unavailable: {said}")
    bank, bk = exchange.primary, shadow
    if not exchange.primary_is_bank:
        bank, bk = bk, bank
    if exchange.ended_after:  # a stream its client ended: the answers each side sent before, not its end
        bank, bk = _answered(bank, exchange.ended_after), _answered(bk, exchange.ended_after)
    # identical bytes match at once, unless a pair reads a BK id as another Bank id: where the id spaces
    # overlap, BK's 5 may be Bank's 7, and the same bytes then name different things
    translating = ids is not None and any(bank_id != bk_id for _, bank_id, bk_id in exchange.ids)
    rules = rules if rules is not None else NO_RULES
    if (
        not translating
        and _same_bytes(bank, bk)
        and not _metadata.differences(exchange.method, bank, bk, rules)
    ):
        return _match(exchange, bank, bk)
    info = registry.method(exchange.method) if registry is not None else None
    to_bank = {(kind, bk_id): bank_id for kind, bank_id, bk_id in exchange.ids} if ids is not None else None
    free = _free_text(exchange, registry, redactor, bank, bk)
    differences = _status_differences(
        exchange.method, bank, bk, registry, rules, redactor, ids, to_bank, free
    )
    if bank.failed and bk.failed and not any(d.path == "status.code" and not d.rule for d in differences):
        # both broke alike (one code, or two a status rule holds equivalent): a failure's words are each
        # server's own (a stack, a timeout's figure), and two broken calls are no agreement, whatever they say
        differences = [d for d in differences if d.path == "status.code"]
    differences += _message_differences(
        exchange.method, bank, bk, info, registry, rules, ids, to_bank, redactor, _clock(exchange)
    )
    differences += _metadata.differences(
        exchange.method, bank, bk, rules, redactor is not None, free, to_bank
    )
    undecodable = [d for d in differences if d.kind is DiffKind.UNDECODABLE and not d.rule]
    if undecodable:  # a message that does not decode cannot be compared: never a pass, never tainted (only
        # rich details can be undecodable and tolerated: by an `ignore` on them)
        sides = " and ".join(
            side
            for side, values in (
                ("Bank's", [d.bank for d in undecodable]),
                ("BK's", [d.bk for d in undecodable]),
            )
            if any(v is not None for v in values)
        )
        where = ", ".join(dict.fromkeys(d.path for d in undecodable))
        reason = f"{sides} answer does not decode ({where})"
        return Comparison(
            exchange, Verdict.ERROR, tuple(differences), reason=reason, decoded=info is not None
        )
    unproven = [d for d in differences if d.kind is DiffKind.UNPROVEN and not d.rule]
    if unproven and all(d.rule or d.kind is DiffKind.UNPROVEN for d in differences):
        # which elements of a multiset pair is not known, and nothing else differs: neither a match nor a
        # mismatch is proven (a real difference elsewhere still proves a mismatch)
        return Comparison(
            exchange, Verdict.ERROR, tuple(differences), reason=_unproven(unproven), decoded=info is not None
        )
    if any(not d.rule for d in differences):
        return Comparison(exchange, Verdict.MISMATCH, tuple(differences), decoded=info is not None)
    return _match(exchange, bank, bk, tuple(differences), info is not None)


def _answered(side: Outcome, count: int) -> Outcome:
    """One side of a stream its client ended, as compared: its first `count` answers, and no status or
    trailers (neither server ended the call)."""
    return replace(side, code=Code.OK, details="", trailing_metadata=(), messages=side.messages[:count])


def _ended(count: int) -> str:
    """The reason a comparison of a stream its client ended gives (`Exchange.ended_after`)."""
    answers = f"{count} answer{'s' if count > 1 else ''}"
    return (
        f"the client ended the stream after {answers}: the first {answers} of each side compared,"
        " not their statuses"
    )


def _unproven(found: list[Difference]) -> str:
    """Why a comparison is unproven: the multisets whose left-over elements could not all be tried."""
    lists = "; ".join(
        f"{d.path}: {d.bank} of Bank's elements and {d.bk} of BK's left over once equal ones paired"
        for d in found
    )
    return (
        f"unproven: pairing the elements of a multiset under the rules needs more than {_ALIKE_TRIALS:,}"
        f" trials, a comparison's most ({lists})"
    )


def _match(
    exchange: Exchange, bank: Outcome, bk: Outcome, found: tuple[Difference, ...] = (), decoded: bool = False
) -> Comparison:
    """A match, unless both sides failed (a status neither OK nor a refusal): no agreement, proves nothing."""
    if not (bank.failed and bk.failed):
        return Comparison(exchange, Verdict.MATCH, found, decoded=decoded)
    codes = bank.status if bank.code == bk.code else f"Bank {bank.status}, BK {bk.status}"
    return Comparison(exchange, Verdict.SKIPPED, reason=f"both sides failed ({codes}): proves nothing")


NO_RULES = RuleSet()


def _same_bytes(bank: Outcome, bk: Outcome) -> bool:
    return (
        bank.code == bk.code
        and bank.details == bk.details
        and bank.messages == bk.messages
        and bank.trailer(STATUS_DETAILS_KEY) == bk.trailer(STATUS_DETAILS_KEY)
    )


def _translates(to_bank: dict[tuple[str, str], str] | None) -> bool:
    """Whether some pair reads a BK id as another Bank id (so equal bytes can still differ)."""
    return to_bank is not None and any(bk_id != bank_id for (_, bk_id), bank_id in to_bank.items())


def _free_text(
    exchange: Exchange, registry: DescriptorRegistry | None, redactor: Redactor | None, *sides: Outcome
) -> FreeText | None:
    """With redaction, the values of redacted fields the call's messages hold, when the two sides' free text
    (status details, rich details' message, metadata) may quote them; None when there is none to look for."""
    if redactor is None or registry is None:
        return None
    rich = [side.trailer(STATUS_DETAILS_KEY) for side in sides]
    texts = any(side.details or side.adapter_error or _metadata.of(side) for side in sides)
    if not texts and all(r is None for r in rich):
        return None
    answers = [raw for side in sides for raw in side.messages]
    free = FreeText.of(redactor, registry, exchange.method, exchange.requests, answers, rich)
    return free if free.values else None


def _said(
    exchange: Exchange, registry: DescriptorRegistry | None, redactor: Redactor | None, text: str
) -> str:
    """A side's own words for a reason (an adapter's error, a status's details), with redaction the values
    of redacted fields they quote hashed."""
    if redactor is None or not text:
        return text
    free = _free_text(exchange, registry, redactor, exchange.primary, *filter(None, [exchange.shadow]))
    return free(text) if free is not None else text


def hashed_quotes(
    exchange: Exchange, registry: DescriptorRegistry | None, redactor: Redactor | None, text: str
) -> str:
    """Any text about a call (an exception met comparing it, for a log line or a reason), with redaction
    the values of redacted fields the call's messages hold hashed where it quotes them."""
    if redactor is None or registry is None or not text:
        return text
    sides = [exchange.primary, *filter(None, [exchange.shadow])]
    rich = [side.trailer(STATUS_DETAILS_KEY) for side in sides]
    answers = [raw for side in sides for raw in side.messages]
    return FreeText.of(redactor, registry, exchange.method, exchange.requests, answers, rich)(text)


def _status_differences(
    method: str,
    bank: Outcome,
    bk: Outcome,
    registry: DescriptorRegistry | None,
    rules: RuleSet,
    redactor: Redactor | None = None,
    ids: IdFields | None = None,
    to_bank: dict[tuple[str, str], str] | None = None,
    free: FreeText | None = None,
) -> list[Difference]:
    rule = rules.status_rule(method)
    diffs: list[Difference] = []
    if bank.code != bk.code:
        left, right = status_name(bank.code), status_name(bk.code)
        tolerated = rule.name if rule.codes_equivalent(left, right) else ""
        diffs.append(Difference("status.code", DiffKind.STATUS, left, right, tolerated))
    if bank.details != bk.details and not (rule.exact and text_reads_as(bk.details, bank.details, to_bank)):
        # a group of a details pattern may capture an id: BK's reads as the Bank id it pairs with
        pairs = {(bank_id, bk_id) for (_, bk_id), bank_id in to_bank.items()} if to_bank else ()
        tolerated = rule.name if rule.details_equivalent(bank.details, bk.details, pairs) else ""
        # judged as sent; shown with the values of redacted fields they quote hashed
        left, right = (
            (free(bank.details), free(bk.details)) if free is not None else (bank.details, bk.details)
        )
        diffs.append(Difference("status.details", DiffKind.STATUS, left, right, tolerated))
    bank_rich, bk_rich = bank.trailer(STATUS_DETAILS_KEY), bk.trailer(STATUS_DETAILS_KEY)
    # the same bytes may still name other ids, read through the pairs
    if bank_rich != bk_rich or (bk_rich is not None and _translates(to_bank)):
        rich = _rich_differences(method, bank_rich, bk_rich, registry, rules, redactor, ids, to_bank, free)
        ignored = rules.value_rule(method, _RICH)
        if isinstance(ignored, Ignore):  # any difference at the path and below it: inside the details too
            rich = [d if d.rule else d._replace(rule=ignored.name) for d in rich]
        diffs.extend(rich)
    return diffs


def _rich_differences(
    method: str,
    bank_raw: str | bytes | None,
    bk_raw: str | bytes | None,
    registry: DescriptorRegistry | None,
    rules: RuleSet,
    redactor: Redactor | None = None,
    ids: IdFields | None = None,
    to_bank: dict[tuple[str, str], str] | None = None,
    free: FreeText | None = None,
) -> list[Difference]:
    """google.rpc.Status trailers compared field by field (their Any details unpacked), BK's ids in them
    read as the Bank ids they pair with, as in answers; with `free`, their message's quotes of redacted
    values hashed."""
    registry = registry if registry is not None else _RPC_ONLY
    try:
        cls = registry.message_class(_RPC_STATUS)
    except KeyError:  # googleapis-common-protos absent
        return [Difference(_RICH, DiffKind.STATUS, bank_raw, bk_raw)]
    left, right = _decode(cls, bank_raw), _decode(cls, bk_raw)
    unmapped: set[str] = set()
    own: StandIns | None = None
    if ids is not None and to_bank is not None and left is not None and right is not None:
        left_ids = translate_answer(ids, method, [right], to_bank, side="")
        unmapped = {found.value for found in left_ids}
        own = stand_in(ids, method, [left], [right], left_ids, to_bank, side="")
    originals = _redact(redactor, [left, right], unmapped, own)
    if free is not None:
        for status in (left, right):
            if status is not None:
                said = status.message  # type: ignore[attr-defined]
                status.message = free(said)  # type: ignore[attr-defined]
                if originals is not None and status.message != said:  # type: ignore[attr-defined]
                    originals.values[status.message] = said  # type: ignore[attr-defined]
    walker = Walker(registry, rules, method, original=originals)
    if bank_raw is None or bk_raw is None:
        walker._presence(
            _RICH,
            _RICH,
            left if bank_raw is not None else _MISSING,
            right if bk_raw is not None else _MISSING,
        )
        return walker.out
    if left is None or right is None:
        return [
            Difference(
                _RICH,
                DiffKind.UNDECODABLE,
                None if left is not None else _shown_raw(_raw(bank_raw), redactor),
                None if right is not None else _shown_raw(_raw(bk_raw), redactor),
            )
        ]
    walker.messages(left, right, _RICH)
    worded = _worded(walker.out, rules, method, to_bank, originals, _id_places(ids, method, left, right))
    found = [_rich_code(d if own is None else own.show(d), rules, method) for d in worded]
    if unmapped:
        return [_unmapped(d, unmapped) for d in found]
    return found


_RICH_CODE = f"{_RICH}.code"
_RICH_MESSAGE = f"{_RICH}.message"


def _id_places(ids: IdFields | None, method: str, *statuses: message.Message) -> set[str]:
    """Where decoded rich statuses hold ids, named as a difference names its path."""
    if ids is None:
        return set()
    return {
        _RICH + "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in found.path[1:])
        for status in statuses
        for found in ids.find(method, "", [status], None)
    }


def _worded(
    found: list[Difference],
    rules: RuleSet,
    method: str,
    to_bank: dict[tuple[str, str], str] | None,
    original: Originals | None,
    id_places: set[str],
) -> list[Difference]:
    """The rich details' free text (their message, a violation's description: a text outside the id
    locations) read as the status details are: BK's words the same as Bank's once each BK id of the
    exchange's pairs in them is read as the Bank id it pairs with. Their message is the status details' rich
    form: the status rule's `details` judges it too (ignored, or a pattern). Judged as sent (`original`,
    with redaction), shown as the walk holds them."""
    rule = rules.status_rule(method)
    pairs = {(bank_id, bk_id) for (_, bk_id), bank_id in to_bank.items()} if to_bank else set()
    kept = []
    for difference in found:
        texts = _free_text_of(difference, original, id_places)
        if texts is None:
            kept.append(difference)
            continue
        bank, bk = texts
        said = difference.path == _RICH_MESSAGE
        if (rule.exact or not said) and text_reads_as(bk, bank, to_bank):
            continue
        kept.append(
            difference._replace(rule=rule.name)
            if said and rule.details_equivalent(bank, bk, pairs)
            else difference
        )
    return kept


def _free_text_of(
    difference: Difference, original: Originals | None, id_places: set[str]
) -> tuple[str, str] | None:
    """Bank's and BK's texts as sent, when `difference` is a changed text outside the id locations that no
    rule judged; else None."""
    bank, bk = difference.bank, difference.bk
    if (
        difference.rule
        or difference.kind is not DiffKind.CHANGED
        or difference.path in id_places
        or not isinstance(bank, str)
        or not isinstance(bk, str)
    ):
        return None
    return (original(bank), original(bk)) if original is not None else (bank, bk)


def _reads_as_bank(
    difference: Difference,
    to_bank: dict[tuple[str, str], str] | None,
    original: Originals | None,
    id_places: set[str],
) -> bool:
    """Whether `difference` is free text (`_free_text_of`) in which BK's words are Bank's once each BK id of
    the exchange's pairs in them is read as the Bank id it pairs with (a rejection's reason naming the
    order: "O1 is not open" against BK's "ord-3f9a is not open")."""
    texts = _free_text_of(difference, original, id_places)
    return texts is not None and text_reads_as(texts[1], texts[0], to_bank)


def _judged_as_bank(
    difference: Difference,
    walker: Walker,
    to_bank: dict[tuple[str, str], str] | None,
    original: Originals | None,
    id_places: set[str],
) -> Difference:
    """`difference`, tolerated when it is free text (`_free_text_of`) a rule held real that the rule tolerates
    once BK's ids in it are read as Bank's: "x1 IS NOT OPEN" under a `string` rule, against "L1 is not open"
    with L1 paired with x1 (the rule alone saw two ids; the reading alone, two wordings). The ids themselves
    are compared exactly: Bank's text must name the Bank ids read into BK's, case and all, in their order
    (a rule folding case would take Bank's "l1", another account, for the "L1" read)."""
    texts = _free_text_of(difference, original, id_places)
    read = read_ids(texts[1], to_bank) if texts is not None else None
    if texts is None or read is None or not read[1] or ids_in(texts[0], read[1]) != read[1]:
        return difference  # no id read, or Bank's text names other things
    name = walker.judged_again(difference.path, texts[0], read[0])
    return difference._replace(rule=name) if name else difference


def _rich_code(difference: Difference, rules: RuleSet, method: str) -> Difference:
    """The rich status's code, tolerated as the status code is: by the status rule's equivalent pairs."""
    if difference.path != _RICH_CODE or difference.rule:
        return difference
    left = difference.bank if difference.bank is not None else 0  # proto3's unset code: OK
    right = difference.bk if difference.bk is not None else 0
    if not isinstance(left, int) or not isinstance(right, int):
        return difference
    rule = rules.status_rule(method)
    if rule.codes_equivalent(status_name(left), status_name(right)):
        return difference._replace(rule=rule.name)
    return difference


def _shown_raw(raw: bytes, redactor: Redactor | None) -> str | None:
    """Bytes that do not decode, as a difference shows them: their start in hex, or only their size."""
    return hidden(raw) if redactor is not None else raw[:64].hex()


def _raw(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    return value.encode() if isinstance(value, str) else value


def _decode(cls: type[message.Message], raw: str | bytes | None) -> message.Message | None:
    if raw is None:
        return None
    msg = cls()
    try:
        parse(msg, _raw(raw))
    except (message.DecodeError, RuntimeError, ValueError):
        return None
    return msg


def _clock(exchange: Exchange) -> Clock:
    """How far ahead of Bank's BK's clock is taken to run for this call. A replay's BK runs later by its
    offset; a mirrored call that went late makes the shadow's time later by up to that, and a write mirrored
    late on its keys, the shadow's or (before a switch) the primary's, for the times stamped meanwhile."""
    offset = exchange.clock_offset

    def ahead(shadow: float, primary: float) -> tuple[float, float]:
        bk, bank = (shadow, primary) if exchange.primary_is_bank else (primary, shadow)
        return (offset - bank, offset + bk)

    steps = tuple((until, *ahead(shadow, primary)) for until, shadow, primary in exchange.late_steps)
    late, own = ahead(exchange.shadow_late, exchange.primary_late), ahead(exchange.own_late, 0.0)
    bands = max([0.0, *(shadow for _, shadow, _ in exchange.late_steps)])  # the earlier writes' share
    by_message = tuple(
        (*ahead(max(mine, bands), exchange.primary_late), *ahead(mine, 0.0)) for mine in exchange.message_late
    )
    return Clock(
        *late,
        *own,
        steps,
        offset,
        exchange.message_offsets,
        by_message,
        exchange.stamp_offsets,
        exchange.recorded_at,
    )


def _message_differences(
    method: str,
    bank: Outcome,
    bk: Outcome,
    info: MethodInfo | None,
    registry: DescriptorRegistry | None,
    rules: RuleSet,
    ids: IdFields | None = None,
    to_bank: dict[tuple[str, str], str] | None = None,
    redactor: Redactor | None = None,
    clock: Clock = NO_CLOCK,
) -> list[Difference]:
    diffs: list[Difference] = []
    streamed = info.server_streaming if info is not None else len(bank.messages) != 1 or len(bk.messages) != 1
    if not streamed and len(bank.messages) != len(bk.messages):
        diffs.append(Difference("<messages>", DiffKind.MESSAGE_COUNT, len(bank.messages), len(bk.messages)))
    if info is None or registry is None:
        if streamed and len(bank.messages) != len(bk.messages):
            diffs.append(
                Difference("<messages>", DiffKind.MESSAGE_COUNT, len(bank.messages), len(bk.messages))
            )
        for index, (raw_bank, raw_bk) in enumerate(zip(bank.messages, bk.messages, strict=False)):
            if raw_bank != raw_bk:
                label = f"[{index}]" if streamed else "<message>"
                if redactor is not None:
                    diffs.append(Difference(label, DiffKind.BYTES, hidden(raw_bank), hidden(raw_bk)))
                else:
                    diffs.append(Difference(label, DiffKind.BYTES, raw_bank, raw_bk))
        return diffs
    cls = registry.message_class(info.output_type)
    left: list[message.Message | None] = [_decode(cls, raw) for raw in bank.messages]
    right: list[message.Message | None] = [_decode(cls, raw) for raw in bk.messages]
    unmapped: set[str] = set()
    own: StandIns | None = None
    if ids is not None and to_bank is not None:
        decoded_bk = [m for m in right if m is not None]
        left_ids = translate_answer(ids, method, decoded_bk, to_bank)
        unmapped = {found.value for found in left_ids}
        own = stand_in(ids, method, [m for m in left if m is not None], decoded_bk, left_ids, to_bank)
    originals = _redact(redactor, [*left, *right], unmapped, own)
    for index, (raw_left, raw_right) in enumerate(zip(bank.messages, bk.messages, strict=False)):
        if raw_left == raw_right:
            continue
        if left[index] is None or right[index] is None:
            diffs.append(
                Difference(
                    f"[{index}]" if streamed else "<message>",
                    DiffKind.UNDECODABLE,
                    None if left[index] is not None else _shown_raw(raw_left, redactor),
                    None if right[index] is not None else _shown_raw(raw_right, redactor),
                )
            )
    walker = Walker(registry, rules, method, clock, originals)
    decodable = [(a, b) for a, b in zip(left, right, strict=False) if a is not None and b is not None]
    if streamed and all(m is not None for m in left + right):
        element = registry.find_message(info.output_type)
        walker.sequence(method.lstrip("/"), "", left, right, element, nested=False)
    elif streamed:  # some messages do not decode: pair the rest by position, whatever the stream rule
        for index, (a, b) in enumerate(zip(left, right, strict=False)):
            if a is not None and b is not None:
                walker.at_message(index)
                walker.messages(a, b, f"[{index}]")
        if len(left) != len(right):
            diffs.append(Difference("<messages>", DiffKind.MESSAGE_COUNT, len(left), len(right)))
    elif decodable:
        walker.messages(decodable[0][0], decodable[0][1], "")
    found = walker.out
    if ids is not None and _translates(to_bank):  # free text naming BK's ids, read as Bank's
        places = _answer_id_places(ids, method, streamed, [*left, *right])
        found = [
            _judged_as_bank(d, walker, to_bank, originals, places)
            for d in found
            if not _reads_as_bank(d, to_bank, originals, places)
        ]
    found = found if own is None else [own.show(d) for d in found]
    diffs.extend([_unmapped(d, unmapped) for d in found] if unmapped else found)
    return diffs


def _answer_id_places(
    ids: IdFields, method: str, streamed: bool, answers: list[message.Message | None]
) -> set[str]:
    """Where decoded answer messages hold ids, named as a difference names its path."""
    places = set()
    for found in ids.find(method, "response", [m for m in answers if m is not None], None):
        index, *rest = found.path
        path = f"[{index}]" if streamed else ""
        for step in rest:
            path += f"[{step}]" if isinstance(step, int) else f".{step}" if path else str(step)
        places.add(path)
    return places


def _redact(
    redactor: Redactor | None,
    messages: list[message.Message | None],
    unmapped: set[str],
    own: StandIns | None = None,
) -> Originals | None:
    """Redact the decoded answers in place, after BK's ids were read through the pairs: an id in a redacted
    field is hashed in Bank's terms on both sides, so a mapped pair gives equal hashes. The BK ids left
    unmapped (and the stand-ins of BK's own ids) are then known by their hashes too, as the differences
    show them. Returns the values replaced, by their hashes, for the rules to judge as sent."""
    if redactor is None:
        return None
    originals = Originals(redactor)
    for msg in messages:
        if msg is not None:
            redactor.redact(msg, originals=originals.values)
    unmapped.update([redactor.hash(value) for value in unmapped])
    if own is not None:
        own.hashed(redactor.hash)
    return originals


def _unmapped(difference: Difference, unmapped: set[str]) -> Difference:
    """A changed id whose BK value pairs with no Bank id is an unmapped id, not a plain change."""
    if (
        difference.kind in (DiffKind.CHANGED, DiffKind.ADDED)
        and not difference.rule
        and isinstance(difference.bk, str)
        and difference.bk in unmapped
    ):
        return difference._replace(kind=DiffKind.UNMAPPED_ID)
    return difference
