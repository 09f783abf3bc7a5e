"""Field-by-field differences between two decoded messages of the same type, under rules.

Over 400 lines: one walk over two messages (values, lists, maps, well-known types), on the hot path of
every comparison; its cases share state, and splitting them would add calls per field.

The walk is guided by the descriptors, in one pass over both messages (O(n) in
their size): equal sub-messages are skipped by protobuf's own equality, lists
are paired by their list rule (in order, as a multiset, or by key), maps by key.
Every difference found is kept; those a rule tolerates carry the rule's name.

Normalisation happens on the way: proto3 implicit defaults equal unset (only
set fields are listed), `optional` presence and wrapper messages are kept,
enums compare by name, Timestamp/Duration as instants, `Any` is unpacked when
its type is known, unknown fields are reported as their own kind.
"""

from __future__ import annotations

import keyword
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from google.protobuf import any_pb2, message, unknown_fields
from google.protobuf.descriptor import Descriptor

from comparators._diff import diff_values
from comparators._matching import Unproven, maximum_matching
from comparators._model import Difference, DiffKind, StampSegment
from comparators._normalise import to_python, unknown_values
from comparators.descriptors import DescriptorRegistry, money_shape
from comparators.message_api import descriptor_of, has_field, parse, serialize
from comparators.rules import (
    BkMayAdd,
    DecimalEquivalence,
    EnumMap,
    Ignore,
    Instant,
    Keyed,
    Multiset,
    NumericTolerance,
    RuleSet,
    TextNormalisation,
    TimestampTolerance,
    plain_decimal,
)

_TIME_TYPES = ("google.protobuf.Timestamp", "google.protobuf.Duration")
_WRAPPERS = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
_ANY = "google.protobuf.Any"
# the built-in leaf rules, which judge scalars: a message they are put on is walked field by field
_BUILT_IN_LEAF = (
    DecimalEquivalence,
    EnumMap,
    Ignore,
    NumericTolerance,
    TextNormalisation,
    TimestampTolerance,
)
_CHANGED = DiffKind.CHANGED
_DURATION = "google.protobuf.Duration"
_MISSING = object()


def _instant(msg: message.Message) -> Instant:
    """A Timestamp or Duration as an Instant (its text is made only if it is shown)."""
    seconds, nanos = msg.seconds, msg.nanos  # type: ignore[attr-defined]
    return Instant(seconds * 1_000_000_000 + nanos, descriptor_of(msg).full_name == _DURATION)


def shown(value: Any) -> Any:
    """A value as a difference reports it: messages as plain values, instants as themselves
    (they print as their JSON text)."""
    kind = type(value)
    if kind is str or kind is int or kind is Instant or value is None:
        return value
    if isinstance(value, message.Message):
        name = descriptor_of(value).full_name
        if name in _TIME_TYPES:
            return _instant(value)
        if name in _WRAPPERS:
            return value.value  # type: ignore[attr-defined]
        return to_python(value)
    if isinstance(value, list):
        return [shown(v) for v in value]
    return value


# seconds the clocks of the shim and of the side that answers first may differ by, at most: a time that side
# stamped while a late write was under way is allowed for up to this long after the shim saw it over
LATE_MARGIN = 1.0


def offsets_at(segments: Sequence[StampSegment], stamped: float, margin: float) -> tuple[float, float] | None:
    """The lowest and highest offset of the calls under way within `margin` of recorded time `stamped`
    (seconds since the epoch); None when no call was."""
    found = [(low, high) for start, end, low, high in segments if start - margin <= stamped <= end + margin]
    if not found:
        return None
    return min(low for low, _ in found), max(high for _, high in found)


class Clock(NamedTuple):
    """How far ahead of Bank's BK's clock is taken to run for one call, in seconds: from `low` to `high` (a
    replay's `offset`, and how late the call and the writes on its keys went). With `steps`, only from
    `own_low` to `own_high` (the offset and the call's own lateness), and, for a time that the prompt side
    (the one that was primary) stamped by a step's `until` (seconds since the epoch), plus a rule's
    tolerance and `LATE_MARGIN`, from that step's low to its high too."""

    low: float = 0.0
    high: float = 0.0
    own_low: float = 0.0
    own_high: float = 0.0
    steps: tuple[tuple[float, float, float], ...] = ()  # (until, low, high)
    offset: float = 0.0
    # per answer message of Bank's (a stream's), the offset for its times, in place of `offset` (the whole
    # clock moved by the difference); empty: `offset` for every message
    messages: tuple[float, ...] = ()
    # per answer message (a stream's), its own (low, high, own_low, own_high), in place of the call's: the
    # times of a message the shadow sent early in a long session were stamped early; beyond: the call's
    late_messages: tuple[tuple[float, float, float, float], ...] = ()
    # a replay's: the offsets of the calls under way at each moment of the recording, and when this call came
    # (recorded): a time Bank stamped before it is moved on by the offsets of the calls under way then
    stamped: tuple[StampSegment, ...] = ()
    since: float = 0.0


NO_CLOCK = Clock()


class Walker:
    """Compares messages of one method's answers; collects differences in `out`."""

    def __init__(
        self,
        registry: DescriptorRegistry,
        rules: RuleSet,
        method: str,
        clock: Clock = NO_CLOCK,
        original: Callable[[Any], Any] | None = None,
    ) -> None:
        """`original`, with redaction: a value as the walk holds it (hashed) -> the value as sent, which the
        rules judge (`comparators.redact.Originals`); differences show the hashes."""
        self.registry = registry
        self.rules = rules
        self.method = method
        self._clock = clock
        self._moved = 0.0
        self._late_at = -1  # the message whose own lateness the clock holds (-1: the call's)
        self._set_clock(0.0)
        self.out: list[Difference] = []
        self._untolerated: dict[str, Any] = {}  # path -> the rule that judged a changed text and held it real
        self._value_rules = rules.value_rules(method)
        self._original = original
        self._trials = [_ALIKE_TRIALS]  # likeness trials left to pair multisets (shared with trial walks)
        self._trial: Walker | None = None

    def _set_clock(self, moved: float) -> None:
        """How far BK's clock is taken to be ahead of Bank's, from and to (a replay: how much later it ran;
        a mirrored call that went late: up to that much), for timestamps; after `until`, only the call's
        own. All of it `moved` seconds on (one answer message of a replayed session's)."""
        clock, self._moved = self._clock, moved
        low, high, own_low, own_high = (
            clock.late_messages[self._late_at]
            if 0 <= self._late_at < len(clock.late_messages)
            else (clock.low, clock.high, clock.own_low, clock.own_high)
        )
        self._ahead_ns = (round((low + moved) * 1e9), round((high + moved) * 1e9))
        self._own_ns = (round((own_low + moved) * 1e9), round((own_high + moved) * 1e9))
        margin = round(LATE_MARGIN * 1e9)
        self._steps_ns = tuple(
            (round(until * 1e9) + margin, round((low + moved) * 1e9), round((high + moved) * 1e9))
            for until, low, high in clock.steps
        )
        self._offset_ns = round((clock.offset + moved) * 1e9)

    def at_message(self, index: int, late: int | None = None) -> None:
        """The times that follow are of Bank's answer message `index` (and BK's paired with it): its own
        offset, when the clock has one per message; and the lateness of answer message `late` (by default
        `index`), when the clock has one per message."""
        offsets, lates = self._clock.messages, self._clock.late_messages
        moved = offsets[index] - self._clock.offset if index < len(offsets) else 0.0
        late = index if late is None else late
        late_at = late if late < len(lates) else -1
        if moved != self._moved or late_at != self._late_at:
            self._late_at = late_at
            self._set_clock(moved)

    # -- reporting --------------------------------------------------------------------------

    def _changed(self, target: str, path: str, bank: Any, bk: Any) -> None:
        rule = self._value_rules[target]
        if type(rule) is TimestampTolerance and type(bank) is Instant and type(bk) is Instant:
            name = self._on_clock(rule, bank, bk)  # in a list or a map, as in a singular field
        else:
            name = self._judged(rule, bank, bk) if rule is not None else ""
            if not name and rule is not None and type(bank) is str and type(bk) is str:
                self._untolerated[path] = rule
        self.out.append(Difference(path, DiffKind.CHANGED, shown(bank), shown(bk), name))

    def judged_again(self, path: str, bank: str, bk: str) -> str:
        """The name of the rule that held the changed text at `path` real, when it tolerates `bank` and `bk`
        (BK's text with its ids read as Bank's, say); "" when it does not, or no rule judged it."""
        rule = self._untolerated.get(path)
        return _tolerated(rule, bank, bk) if rule is not None else ""

    def _judged(self, rule: Any, bank: Any, bk: Any) -> str:
        """The rule's name when it tolerates the difference, judged on the values as sent."""
        original = self._original
        if original is not None:
            bank, bk = original(bank), original(bk)
        return _tolerated(rule, bank, bk)

    def _on_clock(self, rule: TimestampTolerance, bank: Instant, bk: Instant) -> str:
        """The rule's name when BK's time is Bank's within the tolerance, once BK's clock is taken to run
        as far ahead as this call allows (a replay's offset, how late the call and its keys' writes went);
        durations are never moved."""
        tolerance = rule.tolerance_ns
        if bank.duration:
            low, high = 0, 0
        elif not self._steps_ns:
            low, high = self._ahead_ns
        else:  # the call's own lateness, and each band's of its keys' writes under way by then
            low, high = self._own_ns
            stamped = min(bank.nanos, bk.nanos - self._offset_ns)
            for until, step_low, step_high in self._steps_ns:
                if stamped <= until + tolerance:
                    low, high = min(low, step_low), max(high, step_high)
        if self._clock.stamped and not bank.duration:
            low, high = self._stamped_by(bank.nanos, low, high)
        ahead = bk.nanos - bank.nanos
        tolerated = low - tolerance <= ahead <= high + tolerance
        return rule.name if tolerated and bank.duration == bk.duration else ""

    def _stamped_by(self, bank_ns: int, low: int, high: int) -> tuple[int, int]:
        """A replay's window for a time Bank stamped at `bank_ns`: stamped before the call came (or within the
        clocks' margin after), the offsets of the calls under way then as well as its own (`low` to
        `high`: Bank's clock may differ from the recorder's, and then its own times look older); after,
        its own alone."""
        stamped = bank_ns / 1e9
        if stamped >= self._clock.since + LATE_MARGIN:
            return low, high
        window = offsets_at(self._clock.stamped, stamped, LATE_MARGIN)
        if window is None:
            return low, high
        return min(low, round(window[0] * 1e9)), max(high, round(window[1] * 1e9))

    def _presence(self, target: str, path: str, bank: Any, bk: Any, default: Any = _MISSING) -> None:
        """A field (or element) on one side only.

        `default` is the value an unset field stands for, for a scalar without
        presence (proto3's implicit default): a leaf rule judges it against the
        value the other side sent, so that "0.00" and unset can be equal decimals.
        """
        rule = self._value_rules[target]
        name = rule.name if isinstance(rule, Ignore) else ""
        if not name and rule is not None and default is not _MISSING:
            name = self._judged(
                rule, default if bank is _MISSING else bank, default if bk is _MISSING else bk
            )
        if bank is _MISSING:
            if not name:
                may_add = self.rules.may_add(self.method, target)
                name = may_add.name if isinstance(may_add, BkMayAdd) else ""
            self.out.append(Difference(path, DiffKind.ADDED, None, shown(bk), name))
        else:
            self.out.append(Difference(path, DiffKind.REMOVED, shown(bank), None, name))

    # -- messages ---------------------------------------------------------------------------

    def messages(self, bank: message.Message, bk: message.Message, path: str) -> None:
        if bank == bk:
            return
        desc = descriptor_of(bank)
        name = desc.full_name
        if name in _TIME_TYPES or name in _WRAPPERS:  # reached only at the top of a walk
            self._changed(name, path or "<message>", _leaf_of(bank), _leaf_of(bk))
            return
        if name == _ANY:
            self._any(bank, bk, name, path)  # type: ignore[arg-type]
            return
        _compiled(desc)(self, bank, bk, f"{path}." if path else "")
        if desc.extension_ranges:
            self._extensions(bank, bk, path)
        self._unknown(bank, bk, path, name)

    def _extensions(self, bank: message.Message, bk: message.Message, path: str) -> None:
        """The extensions set on either side (proto2), at `path.(package.name)`, each judged by the rules
        on its full name as a field is."""
        left = {fd: value for fd, value in bank.ListFields() if fd.is_extension}
        right = {fd: value for fd, value in bk.ListFields() if fd.is_extension}
        for fd in sorted(left.keys() | right.keys(), key=lambda fd: fd.number):
            at = f"{path}.({fd.full_name})" if path else f"({fd.full_name})"
            if fd not in right:
                self._presence(fd.full_name, at, _plain(fd, left[fd]), _MISSING)
            elif fd not in left:
                self._presence(fd.full_name, at, _MISSING, _plain(fd, right[fd]))
            else:
                self._field(fd, fd.full_name, at, left[fd], right[fd])

    def _both(self, fd: Any, prefix: str, bank_value: Any, bk_value: Any) -> None:
        """A field set on both sides, with values that are not equal (or NaN)."""
        info = _FIELD_INFO.get(fd) or _field_info(fd)
        field_name, target, shape = info
        if shape is _SCALAR:  # the common leaf, inline: a walk is mostly these
            if bank_value != bank_value and bk_value != bk_value:
                return  # NaN on both sides: the same answer
            rule = self._value_rules[target]
            name = ""
            if rule is not None:
                if type(rule) is Ignore:
                    name = rule.name
                else:
                    original = self._original  # redacted: the rule judges the values as sent, never shown
                    try:
                        if (
                            rule(bank_value, bk_value)
                            if original is None
                            else rule(original(bank_value), original(bk_value))
                        ):
                            name = rule.name
                    except Exception:  # a failing rule tolerates nothing; the difference stays real
                        name = ""
                    if not name and type(bank_value) is str:  # (a text: judged again with ids read)
                        self._untolerated[prefix + field_name] = rule
            self.out.append(Difference(prefix + field_name, _CHANGED, bank_value, bk_value, name))
        elif shape is _TIME:
            left_leaf, right_leaf = _instant(bank_value), _instant(bk_value)
            rule = self._value_rules[target]
            if type(rule) is TimestampTolerance:
                name = self._on_clock(rule, left_leaf, right_leaf)
            else:
                name = _tolerated(rule, left_leaf, right_leaf) if rule else ""
            self.out.append(Difference(prefix + field_name, _CHANGED, left_leaf, right_leaf, name))
        else:
            self._field(fd, target, prefix + field_name, bank_value, bk_value)

    def _one_side(self, fd: Any, prefix: str, bank_value: Any, bk_value: Any) -> None:
        field_name, target, shape = _FIELD_INFO.get(fd) or _field_info(fd)
        if shape is not _SCALAR:  # a scalar's value is plain already
            if bank_value is not _MISSING:
                bank_value = _plain(fd, bank_value)
            if bk_value is not _MISSING:
                bk_value = _plain(fd, bk_value)
        self._presence(target, prefix + field_name, bank_value, bk_value, _default_of(fd))

    def _field(self, fd: Any, target: str, path: str, bank: Any, bk: Any) -> None:
        if _is_map(fd):
            self._map(fd, target, path, bank, bk)
        elif fd.is_repeated:
            self.sequence(target, path, _plain(fd, bank), _plain(fd, bk), fd.message_type, nested=True)
        else:
            self._single(fd, target, path, bank, bk)

    def _single(self, fd: Any, target: str, path: str, bank: Any, bk: Any) -> None:
        if _same(bank, bk):
            return
        element = fd.message_type
        if element is None:
            if fd.enum_type is not None:
                bank, bk = _enum_name(fd, bank), _enum_name(fd, bk)
                if bank == bk:
                    return
            self._changed(target, path, bank, bk)
            return
        self._message_value(target, path, bank, bk, element, self.rules.value_rule(self.method, target))

    def _message_value(
        self, target: str, path: str, bank: Any, bk: Any, element: Descriptor, rule: Any
    ) -> None:
        """Two different messages of a field, or elements of a list: as amounts (a `decimal` rule on
        money), as a leaf (`ignore`, times, wrappers), as an Any, as a whole (a custom rule that accepts
        them), or else field by field."""
        if isinstance(rule, DecimalEquivalence):
            left, right = money(bank), money(bk)
            if left is not None and right is not None:  # a money-like message: compare as amounts
                original = self._original
                if left != right and original is None:
                    self._changed(target, path, left, right)
                elif left != right and original is not None:  # redacted: judged as sent, shown hashed
                    name = _tolerated(rule, money(original(bank)), money(original(bk)))
                    self.out.append(Difference(path, DiffKind.CHANGED, left, right, name))
                self._unknown(bank, bk, path, element.full_name)
                return
        element_name = element.full_name
        if isinstance(rule, Ignore) or element_name in _TIME_TYPES or element_name in _WRAPPERS:
            left_leaf, right_leaf = _leaf_of(bank), _leaf_of(bk)  # once: an instant's text costs
            if not _same(left_leaf, right_leaf):
                self._changed(target, path, left_leaf, right_leaf)
            return
        if element_name == _ANY:
            if bank != bk:
                self._any(bank, bk, target, path)
            return
        if (
            rule is not None
            and not isinstance(rule, _BUILT_IN_LEAF)
            and (name := self._judged(rule, bank, bk))
        ):
            self.out.append(Difference(path, DiffKind.CHANGED, shown(bank), shown(bk), name))
            return
        self.messages(bank, bk, path)

    def _any(self, bank: any_pb2.Any, bk: any_pb2.Any, target: str, path: str) -> None:
        if bank.type_url != bk.type_url:
            self._changed(target, f"{path}.type_url" if path else "type_url", bank.type_url, bk.type_url)
            return
        type_name = bank.type_url.rpartition("/")[2]
        desc = self.registry.find_message(type_name)
        if desc is None:
            self._changed(target, f"{path}.value" if path else "value", bank.value, bk.value)
            return
        cls = self.registry.message_class(type_name)
        left, right = cls(), cls()
        try:
            parse(left, bank.value)
            parse(right, bk.value)
        except message.DecodeError:
            self._changed(target, f"{path}.value" if path else "value", bank.value, bk.value)
            return
        self.messages(left, right, path)

    def _map(self, fd: Any, target: str, path: str, bank: Any, bk: Any) -> None:
        entry = fd.message_type
        assert entry is not None  # a map field's entry type
        value_fd = entry.fields_by_name["value"]
        for key in sorted(set(bank) | set(bk), key=repr):
            sub = f"{path}[{key}]"
            if key not in bk:
                self._presence(target, sub, _plain(value_fd, bank[key]), _MISSING)
            elif key not in bank:
                self._presence(target, sub, _MISSING, _plain(value_fd, bk[key]))
            else:
                self._single(value_fd, target, sub, bank[key], bk[key])

    # -- lists and streams ------------------------------------------------------------------

    def sequence(
        self,
        target: str,
        path: str,
        bank: Sequence[Any],
        bk: Sequence[Any],
        element: Descriptor | None,
        nested: bool,
    ) -> None:
        """Pair and compare the elements of a repeated field (nested) or of a stream."""
        if bank == bk:
            return
        rule = self.rules.list_rule(self.method, target)
        value_rule = self.rules.value_rule(self.method, target) if nested else None
        if isinstance(value_rule, Ignore):
            self._changed(target, path, list(bank), list(bk))
            return
        if isinstance(rule, Keyed) and element is not None:
            pairs = _keyed_pairs(rule, bank, bk)
        elif isinstance(rule, Multiset):
            try:
                pairs = _multiset_pairs(
                    bank,
                    bk,
                    lambda a, b: self._alike(target, element, value_rule, a, b),
                    lambda item: self._fingerprint(element, value_rule, item),
                    self._trials,
                )
            except Unproven as unproven:  # which elements pair is not known: no difference is made up
                self.out.append(
                    Difference(path or "<messages>", DiffKind.UNPROVEN, unproven.bank, unproven.bk)
                )
                return
        else:
            pairs = [
                (f"[{i}]", bank[i] if i < len(bank) else _MISSING, bk[i] if i < len(bk) else _MISSING)
                for i in range(max(len(bank), len(bk)))
            ]
        # a stream's messages, each with its own offset when the clock has them: found by Bank's message;
        # and its own lateness: that of the later of the two messages paired (each side's came in order, so
        # the later one's covers the shadow's, whichever side it is)
        clock = self._clock
        timed = not nested and bool(clock.messages or clock.late_messages)
        placed = {id(m): i for i, m in enumerate(bank)} if timed else None
        placed_bk = {id(m): i for i, m in enumerate(bk)} if timed else {}
        for label, left, right in pairs:
            sub = f"{path}{label}"
            if placed is not None:
                index = placed.get(id(left), len(bank))
                late = max(index, placed_bk.get(id(right), len(bk))) if right is not _MISSING else len(bk)
                self.at_message(index, late if left is not _MISSING else len(bank) + len(bk))
            if left is _MISSING or right is _MISSING:
                if nested:
                    self._presence(target, sub, left, right)
                else:  # a stream's message on one side only: no rule on fields tolerates it (a glob of
                    # one may match the method's name too); a list rule on the method pairs messages
                    added = left is _MISSING
                    kind = DiffKind.ADDED if added else DiffKind.REMOVED
                    bank_side, bk_side = (None, shown(right)) if added else (shown(left), None)
                    self.out.append(Difference(sub, kind, bank_side, bk_side))
            elif element is not None:
                self._message_value(target, sub, left, right, element, value_rule)
            elif not _same(left, right):
                self._changed(target, sub, left, right)
        if placed is not None:
            self.at_message(len(bank), len(bank) + len(bk))  # the call's own offset and lateness again

    def alike(self, target: str, element: Descriptor | None, bank: Any, bk: Any) -> bool:
        """Whether two elements of the list `target` differ in nothing the rules do not tolerate, as a
        multiset pairs the elements left once the equal ones are paired."""
        return self._alike(target, element, self.rules.value_rule(self.method, target), bank, bk)

    def _alike(self, target: str, element: Descriptor | None, rule: Any, bank: Any, bk: Any) -> bool:
        """Whether two elements differ in nothing the rules do not tolerate (a trial, whose differences are
        not kept)."""
        if element is None:
            return _same(bank, bk) or (rule is not None and bool(self._judged(rule, bank, bk)))
        trial = self._trial
        if trial is None:  # one for every trial: made once (its clock never moves: no stream inside)
            trial = self._trial = Walker(self.registry, self.rules, self.method, self._clock, self._original)
            trial._trials = self._trials  # one budget for the comparison, lists inside elements included
        trial.out = []
        trial._message_value(target, "", bank, bk, element, rule)
        if any(d.kind is DiffKind.UNPROVEN for d in trial.out):
            raise Unproven  # a list inside could not be paired: nor can this one
        return all(d.rule for d in trial.out)

    # -- fingerprints of list elements ------------------------------------------------------

    def _fingerprint(self, element: Descriptor | None, rule: Any, item: Any) -> Any:
        """A form of a list element that every element alike to it under the rules shares (the reverse need
        not hold): a multiset tries to pair only elements of one fingerprint. A value a rule judges is in
        it as the rule reads it (a `decimal` as its number, a `string` folded), or not at all where a rule
        may tolerate any difference (`number`, `timestamp`, `ignore`, `bk-may-add`, `custom`...); so is
        what could differ unreported (unknown fields, extensions). The rest is as the walk compares it.
        `rule`: the list's own."""
        if element is None:
            return self._print_leaf(rule, item)
        return self._print_value(element, rule, item)

    def _print_leaf(self, rule: Any, value: Any) -> Any:
        """A scalar's fingerprint under `rule`: itself, or its form under a `decimal` or `string` rule."""
        if rule is None:
            return _NAN if value != value else value
        if self._original is not None:
            value = self._original(value)  # the rules judge the values as sent
        if type(value) is str and isinstance(rule, DecimalEquivalence):
            currency, _, amount = value.rpartition(" ")
            number = plain_decimal(amount)
            return ("decimal", currency, number) if number is not None else value
        if type(value) is str and isinstance(rule, TextNormalisation):
            return rule._norm(value)
        return _ANYTHING

    def _print_value(self, element: Descriptor, rule: Any, msg: message.Message) -> Any:
        """A message's fingerprint as `_message_value` compares it, under `rule`."""
        if isinstance(rule, DecimalEquivalence) and money_shape(element) is not None:
            return self._print_leaf(rule, money(msg if self._original is None else self._original(msg)))
        name = element.full_name
        if isinstance(rule, Ignore) or name in _TIME_TYPES or name in _WRAPPERS:
            if rule is not None:
                return _ANYTHING
            leaf = _leaf_of(msg)
            return (leaf.nanos, leaf.duration) if type(leaf) is Instant else self._print_leaf(None, leaf)
        if name == _ANY:
            return self._print_any(msg)  # type: ignore[arg-type]
        if rule is not None and not isinstance(rule, _BUILT_IN_LEAF):
            return _ANYTHING  # a custom rule may tolerate the whole message
        return self._print_fields(msg)

    def _print_any(self, packed: any_pb2.Any) -> Any:
        """An Any's fingerprint: its type and its message, unpacked when the walk would."""
        type_name = packed.type_url.rpartition("/")[2]
        if self.registry.find_message(type_name) is None:
            return (packed.type_url, packed.value)
        inner = self.registry.message_class(type_name)()
        try:
            parse(inner, packed.value)
        except message.DecodeError:
            return (packed.type_url, packed.value)
        desc = descriptor_of(inner)
        rule = self._value_rules[type_name] if type_name in _TIME_TYPES or type_name in _WRAPPERS else None
        return (packed.type_url, self._print_value(desc, rule, inner))

    def _print_fields(self, msg: message.Message) -> Any:
        """A message's fingerprint field by field, each under its rule; a field `ignore` or `bk-may-add`
        judges left out."""
        out: list[tuple[int, Any]] = []
        for fd in descriptor_of(msg).fields:
            target = (_FIELD_INFO.get(fd) or _field_info(fd))[1]
            rule = self._value_rules[target]
            if isinstance(rule, Ignore) or self.rules.may_add(self.method, target) is not None:
                continue
            value = getattr(msg, fd.name)
            if _is_map(fd):
                value_fd = fd.message_type.fields_by_name["value"]
                out.append(
                    (fd.number, frozenset((k, self._print_one(value_fd, rule, v)) for k, v in value.items()))
                )
            elif fd.is_repeated:
                prints = [self._print_one(fd, rule, item) for item in value]
                if isinstance(self.rules.list_rule(self.method, target), Multiset | Keyed):
                    out.append((fd.number, frozenset(Counter(prints).items())))
                else:
                    out.append((fd.number, tuple(prints)))
            elif not fd.has_presence or has_field(msg, fd.name):
                out.append((fd.number, self._print_one(fd, rule, value)))
        return tuple(out)

    def _print_one(self, fd: Any, rule: Any, value: Any) -> Any:
        """One value of a field under its rule (an element, for a list; a value, for a map)."""
        if fd.message_type is None:
            return self._print_leaf(rule, value)
        return self._print_value(fd.message_type, rule, value)

    # -- unknown fields ---------------------------------------------------------------------

    def _unknown(self, bank: message.Message, bk: message.Message, path: str, holder: str) -> None:
        """The fields of a `holder` message the descriptors do not know, at `path.#<number>`: judged by an
        `ignore` or `bk-may-add` rule on "holder.#<number>" (a BK built from a newer proto)."""
        left, right = _unknown_values(bank), _unknown_values(bk)
        if left == right:
            return
        for key in sorted(set(left) | set(right)):
            bank_value, bk_value = left.get(key), right.get(key)
            if bank_value == bk_value:
                continue
            sub = f"{path}.{key}" if path else key
            name = self._unknown_rule(f"{holder}.{key}", bank_value is None)
            if isinstance(bank_value, dict) and isinstance(bk_value, dict):
                # no descriptor to walk a group by: deepdiff explains it, field by field
                for diff in diff_values(bank_value, bk_value, sub):
                    self.out.append(Difference(diff.path, DiffKind.UNKNOWN_FIELD, diff.bank, diff.bk, name))
            else:
                self.out.append(Difference(sub, DiffKind.UNKNOWN_FIELD, bank_value, bk_value, name))

    def _unknown_rule(self, target: str, bk_only: bool) -> str:
        """The name of the rule that tolerates a difference at an unknown field, or ""."""
        rule = self._value_rules[target]
        if isinstance(rule, Ignore):
            return str(rule.name)
        may_add = self.rules.may_add(self.method, target) if bk_only else None
        return may_add.name if may_add is not None else ""


def money(msg: message.Message) -> str | None:
    """A money-like message as "<currency> <amount>" text, so a decimal rule can compare it.

    Money-like: nothing but `units` + `nanos` (google.type.Money), or one decimal-string
    field, beside an optional currency field (see money_shape). None for any other message.
    """
    shape = money_shape(descriptor_of(msg))
    if shape is None:
        return None
    amounts, currency_field = shape
    currency = str(getattr(msg, currency_field)) if currency_field else ""
    if len(amounts) == 2:
        units, nanos = int(getattr(msg, "units")), int(getattr(msg, "nanos"))  # noqa: B009
        amount = str(Decimal(units) + Decimal(nanos).scaleb(-9))
    else:
        amount = str(getattr(msg, amounts[0]))
    return f"{currency} {amount}" if currency else amount


_FIELD_INFO: dict[Any, tuple[str, str, object]] = {}
_MAPS: dict[Any, bool] = {}
# the shape of a field, for the walk's fast paths
_SCALAR, _TIME, _OTHER, _REPEATED = object(), object(), object(), object()


def _shape(fd: Any) -> object:
    if fd.is_repeated:
        return _REPEATED
    if fd.message_type is None:
        return _OTHER if fd.enum_type is not None else _SCALAR
    return _TIME if fd.message_type.full_name in _TIME_TYPES else _OTHER


_COMPILED: dict[Any, Any] = {}


def _compiled(desc: Any) -> Any:
    """A function comparing two messages of one type field by field, made once per type.

    It reads each field as an attribute (no ListFields, no loop over field
    tuples): a field set on one side only becomes _one_side, a field set on
    both with different values _both, as the generic walk would decide.
    An implicit-presence scalar counts as set when it is not its default.

    A field name only ever appears in the code as a string literal or as an
    attribute name that is a plain identifier (`getattr` reads `from`), and
    HasField is read from the class, so any field name works: `HasField`,
    `self` or `class` included.
    """
    walk = _COMPILED.get(desc)
    if walk is not None:
        return walk
    lines = ["def walk(self, a, b, prefix):"]
    scope: dict[str, Any] = {"MISSING": _MISSING}
    if any(fd.has_presence and not fd.is_repeated for fd in desc.fields):
        lines.append("    has = type(a).HasField")  # a field may be named HasField: never a.HasField
    for index, fd in enumerate(desc.fields):
        name = fd.name
        scope[f"fd{index}"] = fd
        x, y = _read("a", name), _read("b", name)
        if not fd.has_presence:
            lines.append(f"    x = {x}; y = {y}")
        if fd.is_repeated:  # repeated and map fields: set when not empty
            lines += [
                "    if x != y:",
                "        if len(x) and len(y):",
                f"            self._both(fd{index}, prefix, x, y)",
                "        elif len(x):",
                f"            self._one_side(fd{index}, prefix, x, MISSING)",
                "        else:",
                f"            self._one_side(fd{index}, prefix, MISSING, y)",
            ]
        elif fd.has_presence:  # messages, optional scalars, oneof members
            lines += [
                f"    hx = has(a, {name!r}); hy = has(b, {name!r})",
                "    if hx and hy:",
                f"        x = {x}; y = {y}",
                "        if x != y:",
                f"            self._both(fd{index}, prefix, x, y)",
                "    elif hx:",
                f"        self._one_side(fd{index}, prefix, {x}, MISSING)",
                "    elif hy:",
                f"        self._one_side(fd{index}, prefix, MISSING, {y})",
            ]
        else:  # an implicit-presence scalar: its default means unset
            scope[f"d{index}"] = fd.default_value
            lines += [
                "    if x != y:",
                f"        if x == d{index} and x == x:",
                f"            self._one_side(fd{index}, prefix, MISSING, y)",
                f"        elif y == d{index} and y == y:",
                f"            self._one_side(fd{index}, prefix, x, MISSING)",
                "        else:",
                f"            self._both(fd{index}, prefix, x, y)",
            ]
    if len(lines) == 1:
        lines.append("    pass")
    exec("\n".join(lines), scope)  # code made from the descriptors, never from input
    walk = _COMPILED[desc] = scope["walk"]
    return walk


def _read(obj: str, name: str) -> str:
    """Code reading the field `name` of `obj`: an attribute (the fastest) when the name can be one."""
    if name.isascii() and name.isidentifier() and not keyword.iskeyword(name):
        return f"{obj}.{name}"
    return f"getattr({obj}, {name!r})"


def _field_info(fd: Any) -> tuple[str, str, object]:
    """(name, "package.Message.field", shape) of a field; computed once per field."""
    info = _FIELD_INFO.get(fd)
    if info is None:
        info = _FIELD_INFO[fd] = (fd.name, f"{fd.containing_type.full_name}.{fd.name}", _shape(fd))
    return info


def _is_map(fd: Any) -> bool:
    """Whether a field is a map (its element type is a map entry); computed once per field."""
    is_map = _MAPS.get(fd)
    if is_map is None:
        element = fd.message_type
        is_map = _MAPS[fd] = element is not None and bool(element.GetOptions().map_entry)
    return is_map


def _leaf_of(value: Any) -> Any:
    """Timestamp/Duration as an Instant, a wrapper as its value, a message as itself."""
    if isinstance(value, message.Message):
        name = descriptor_of(value).full_name
        if name in _TIME_TYPES:
            return _instant(value)
        if name in _WRAPPERS:
            return value.value  # type: ignore[attr-defined]
    return value


def _tolerated(rule: Any, bank: Any, bk: Any) -> str:
    """The rule's name when it tolerates the difference; a failing rule tolerates nothing."""
    try:
        return str(rule.name) if rule(bank, bk) else ""
    except Exception:  # a failing rule tolerates nothing; the difference stays real
        return ""


def _same(bank: Any, bk: Any) -> bool:
    """Equal values; a NaN on both sides is the same answer."""
    if isinstance(bank, float) and isinstance(bk, float) and math.isnan(bank) and math.isnan(bk):
        return True
    return bool(bank == bk)


def _plain(fd: Any, value: Any) -> Any:
    """A field's value without protobuf containers: lists, dicts, enum names (messages stay messages)."""
    entry = fd.message_type
    if entry is not None and entry.GetOptions().map_entry:
        value_fd = entry.fields_by_name["value"]
        return {k: shown(_plain(value_fd, v)) for k, v in value.items()}
    if fd.is_repeated:
        return [_enum_name(fd, v) if fd.enum_type is not None else v for v in value]
    return _enum_name(fd, value) if fd.enum_type is not None else value


_DEFAULTS: dict[Any, Any] = {}


def _default_of(fd: Any) -> Any:
    """What an unset field stands for when it has no presence (a proto3 scalar); else _MISSING."""
    default = _DEFAULTS.get(fd, _DEFAULTS)
    if default is _DEFAULTS:
        if fd.message_type is not None or fd.is_repeated or fd.has_presence:
            default = _MISSING
        else:
            default = _enum_name(fd, fd.default_value) if fd.enum_type is not None else fd.default_value
        _DEFAULTS[fd] = default
    return default


def _enum_name(fd: Any, number: int) -> Any:
    enum_value = fd.enum_type.values_by_number.get(number) if fd.enum_type is not None else None
    return enum_value.name if enum_value is not None else number


def _unknown_values(msg: message.Message) -> dict[str, Any]:
    fields = unknown_fields.UnknownFieldSet(msg)
    return unknown_values(fields) if len(fields) else {}


def _key_of(rule: Keyed, item: message.Message) -> tuple[str, ...]:
    """An element's key, one "field=value" text per key field: a tuple, so that values holding
    "," or "=" never make two keys one."""
    parts = []
    for name in rule.key:
        value = getattr(item, name)
        fd = descriptor_of(item).fields_by_name[name]
        if fd.enum_type is not None:
            value = _enum_name(fd, value)
        elif isinstance(value, message.Message):
            value = shown(_leaf_of(value))
        parts.append(f"{name}={value}")
    return tuple(parts)


def _keyed_pairs(rule: Keyed, bank: Sequence[Any], bk: Sequence[Any]) -> list[tuple[str, Any, Any]]:
    """Pairs by key, in Bank's order then BK's extras; a repeated key pairs in order of appearance."""
    right: dict[tuple[str, ...], list[Any]] = defaultdict(list)
    order: list[tuple[str, ...]] = []
    for item in bk:
        key = _key_of(rule, item)
        if key not in right:
            order.append(key)
        right[key].append(item)
    pairs: list[tuple[str, Any, Any]] = []
    seen: dict[tuple[str, ...], int] = defaultdict(int)
    for item in bank:
        key = _key_of(rule, item)
        index = seen[key]
        seen[key] += 1
        candidates = right.get(key, [])
        label = _label(key, index)
        pairs.append((label, item, candidates[index] if index < len(candidates) else _MISSING))
    for key in order:
        for index in range(seen.get(key, 0), len(right[key])):
            pairs.append((_label(key, index), _MISSING, right[key][index]))
    return pairs


def _label(key: tuple[str, ...], index: int) -> str:
    """ "[symbol=AAPL]" for the first element of a key, "[symbol=AAPL#2]" for the next."""
    text = ",".join(key)
    return f"[{text}]" if index == 0 else f"[{text}#{index + 1}]"


def _canonical(item: Any) -> Any:
    if isinstance(item, message.Message):
        return serialize(item, deterministic=True)
    return item


# trials of likeness under the rules a comparison may make, pairing the left-over elements of its multisets
# (those of lists inside elements included); beyond, the pairing is unproven
_ALIKE_TRIALS = 50_000
_NAN = ("nan",)  # a NaN in a fingerprint: equal to itself, as a NaN on both sides is the same answer
_ANYTHING = ("any",)  # the fingerprint of a value a rule may tolerate any difference of


def _multiset_pairs(
    bank: Sequence[Any],
    bk: Sequence[Any],
    alike: Callable[[Any, Any], bool],
    fingerprint: Callable[[Any], Any] | None = None,
    trials: list[int] | None = None,
) -> list[tuple[str, Any, Any]]:
    """Equal elements pair up whatever their order; then as many of the rest as can pair with elements
    `alike` (equal under the rules: "1.0" and "1" under `decimal`), a maximum matching (comparators._matching)
    tried between elements of one `fingerprint` only (one alike element shares: see Walker._fingerprint);
    the rest pair by fingerprint, then in order of appearance.

    `trials` ([n], decreased) is how many times `alike` may still be asked; Unproven (with how many elements
    of each side were left over) when pairing needs more: no pairing is made up."""
    pool: dict[Any, list[int]] = defaultdict(list)
    for index, item in enumerate(bk):
        pool[_canonical(item)].append(index)
    used: set[int] = set()
    unmatched_left: list[int] = []
    for index, item in enumerate(bank):
        slots = pool.get(_canonical(item))
        if slots:
            used.add(slots.pop(0))
        else:
            unmatched_left.append(index)
    unmatched_right = [i for i in range(len(bk)) if i not in used]
    found: list[tuple[int | None, int | None]] = []  # (Bank's element, BK's), by their indexes
    buckets: list[tuple[list[int], list[int]]] = [(unmatched_left, unmatched_right)]
    if unmatched_left and unmatched_right:
        buckets = _buckets(bank, bk, unmatched_left, unmatched_right, fingerprint)
        budget = trials if trials is not None else [_ALIKE_TRIALS]
        paired: dict[int, int] = {}
        try:
            for lefts, rights in buckets:  # one of each side: they pair below, alike or not, untried
                if lefts and rights and len(lefts) + len(rights) > 2:
                    lefts, rights = _by_value(bank, lefts), _by_value(bk, rights)
                    paired.update(maximum_matching(lefts, rights, lambda a, b: alike(bank[a], bk[b]), budget))
        except Unproven:
            raise Unproven(len(unmatched_left), len(unmatched_right)) from None
        found += paired.items()
        taken = set(paired.values())
        buckets = [
            ([i for i in ls if i not in paired], [j for j in rs if j not in taken]) for ls, rs in buckets
        ]
    # the rest: within a fingerprint first (the same element, its differences real), then in order
    lefts_over: list[int] = []
    rights_over: list[int] = []
    for lefts, rights in buckets:
        found += zip(lefts, rights, strict=False)
        lefts_over += lefts[len(rights) :]
        rights_over += rights[len(lefts) :]
    lefts_over.sort()
    rights_over.sort()
    for n in range(max(len(lefts_over), len(rights_over))):
        found.append(
            (lefts_over[n] if n < len(lefts_over) else None, rights_over[n] if n < len(rights_over) else None)
        )
    found.sort(key=lambda pair: pair[0] if pair[0] is not None else len(bank) + (pair[1] or 0))
    return [
        (
            f"[{left if left is not None else right}]",
            bank[left] if left is not None else _MISSING,
            bk[right] if right is not None else _MISSING,
        )
        for left, right in found
    ]


def _by_value(items: Sequence[Any], indexes: list[int]) -> list[int]:
    """Numbers (or times) in order of their values, for a tolerance to find each one's like first; any other
    elements as they came."""
    keys = []
    for index in indexes:
        item = items[index]
        if isinstance(item, message.Message) and descriptor_of(item).full_name in _TIME_TYPES:
            item = _instant(item).nanos
        if type(item) not in (int, float) or item != item:
            return indexes
        keys.append(item)
    return [index for _, index in sorted(zip(keys, indexes, strict=True))]


def _buckets(
    bank: Sequence[Any],
    bk: Sequence[Any],
    lefts: list[int],
    rights: list[int],
    fingerprint: Callable[[Any], Any] | None,
) -> list[tuple[list[int], list[int]]]:
    """The left-over elements of each side by fingerprint, in order of appearance; all in one when there is
    no fingerprint, or one cannot be made (a value that has none is alike to whatever: the buckets would
    part elements that may be alike)."""
    if fingerprint is None:
        return [(lefts, rights)]
    by_print: dict[Any, tuple[list[int], list[int]]] = {}
    try:
        for index in lefts:
            by_print.setdefault(fingerprint(bank[index]), ([], []))[0].append(index)
        for index in rights:
            by_print.setdefault(fingerprint(bk[index]), ([], []))[1].append(index)
    except Exception:  # an odd value (unhashable, a rule's failure): one bucket, every pair tried
        return [(lefts, rights)]
    return list(by_print.values())
