"""The walk that finds, and rewrites, the ids in decoded messages, by the places `Places` built: message
fields by type, method paths, map entries, and messages packed in an Any (rich error details).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from google.protobuf import message
from google.protobuf.descriptor import FieldDescriptor

from comparators._id_kinds import OWNERS, Found
from comparators._id_places import Places, _holder, _map_entry, _MethodPath, _Plan, _Slot
from comparators.descriptors import held_type
from comparators.message_api import descriptor_of, has_field, parse, serialize


class Walk(Places):
    """`Places`, and the walk over messages by them."""

    def find(
        self, method: str, side: str, messages: Sequence[message.Message], owner_from: message.Message | None
    ) -> list[Found]:
        """Every id in `messages` (a call's requests, or its answers), in message order.

        `owner_from` is the call's first request, for owner keys declared on the method.
        """
        found: list[Found] = []

        def keep(one: Found) -> None:
            found.append(one)

        self._visit(method, side, messages, owner_from, keep)
        return found

    def rewrite(
        self,
        method: str,
        side: str,
        messages: Sequence[message.Message],
        translate: Callable[[Found], str | None],
    ) -> list[Found]:
        """Replace every id in `messages` by `translate(found)` (None: leave it); returns those left."""
        left: list[Found] = []

        def visit(found: Found) -> str | None:
            new = translate(found)
            if new is None:
                left.append(found)
            return new

        self._visit(method, side, messages, None, visit)
        return left

    def _visit(
        self,
        method: str,
        side: str,
        messages: Sequence[message.Message],
        owner_from: message.Message | None,
        visit: Callable[[Found], str | None],
    ) -> None:
        method_paths = self._by_method.get((method, side), ()) if side else ()
        for index, msg in enumerate(messages):
            plan = self._plan(descriptor_of(msg))
            answer = msg if side == "response" else None  # an answer-side owner is read from it alone
            if plan is not None:
                self._walk(
                    msg,
                    plan,
                    (index,),
                    _Top(method, owner_from, answer),
                    _sharing(msg, index, method_paths, visit),
                )
            for mp in method_paths:
                if mp.covered is not None:
                    continue  # the walk of the field's type found these ids
                owner = self._method_owner(method, mp.kind, owner_from, answer) if mp.minted else ""
                sibling = self._type_owners.get((_holder(mp), mp.kind))
                _along(msg, mp.fields, (index,), _Where(mp.kind, mp.minted, owner, mp.kinds, sibling), visit)

    def _method_owner(
        self, method: str, kind: str, first_request: message.Message | None, answer: message.Message | None
    ) -> str:
        """The owner key a method path gives ids of `kind`: read from the call's first request, or from the
        answer message (the top-level one, wherever the id is nested; none outside the method's answers)."""
        keys: dict[str, None] = {}
        for side, fields in self._method_owners.get((method, kind), ()):
            source = first_request if side == "request" else answer
            values = _values_along(source, fields) if source is not None else []
            if values and values[0]:
                keys[values[0]] = None
        return OWNERS.join(keys)

    def _walk(
        self,
        msg: message.Message,
        plan: _Plan,
        path: tuple[str | int, ...],
        top: _Top,
        visit: Callable[[Found], str | None],
    ) -> None:
        self._visit_slots(msg, plan.slots, path, top, visit)
        for fd in plan.anys:
            self._walk_any(msg, fd, path, top, visit)
        for fd in plan.nested:
            value = getattr(msg, fd.name)
            element = fd.message_type
            assert element is not None
            if _map_entry(fd) is not None:  # each entry: its own ids (a scalar value), then its value's
                entry_slots = self._entry_slots(fd)
                value_type = held_type(fd)
                sub_plan = self._plan(value_type) if value_type is not None else None
                for key in sorted(value, key=repr):
                    where = (*path, fd.name, str(key))
                    if entry_slots:
                        entry = _Entry(value, key)
                        self._visit_slots(entry, entry_slots, where, top, visit)
                    if sub_plan is not None:
                        self._walk(value[key], sub_plan, where, top, visit)
                continue
            sub_plan = self._plan(element)
            if sub_plan is None:
                continue
            if fd.is_repeated:
                for i, item in enumerate(value):
                    self._walk(item, sub_plan, (*path, fd.name, i), top, visit)
            elif has_field(msg, fd.name):
                self._walk(value, sub_plan, (*path, fd.name), top, visit)

    def _visit_slots(
        self,
        msg: _Fields,
        slots: Sequence[_Slot],
        path: tuple[str | int, ...],
        top: _Top,
        visit: Callable[[Found], str | None],
    ) -> None:
        for slot in slots:
            owner = ""
            if slot.minted:
                if slot.owner is not None:
                    owner = _owner_text(msg, slot.owner)
                if not owner:
                    owner = self._method_owner(top.method, slot.kind, top.first_request, top.answer)
            _visit_field(msg, slot.field, path, slot.kind, slot.minted, owner, visit, slot.kinds)

    def _walk_any(
        self,
        msg: message.Message,
        fd: FieldDescriptor,
        path: tuple[str | int, ...],
        top: _Top,
        visit: Callable[[Found], str | None],
    ) -> None:
        """The ids in the messages packed in an Any field (rich error details), packed again if rewritten."""
        value = getattr(msg, fd.name)
        packed = (
            list(enumerate(value)) if fd.is_repeated else [(None, value)] if has_field(msg, fd.name) else []
        )
        for index, any_value in packed:
            type_name = any_value.type_url.rpartition("/")[2]
            desc = self._registry.find_message(type_name)
            sub_plan = self._plan(desc) if desc is not None else None
            if sub_plan is None:
                continue
            inner = self._registry.message_class(type_name)()
            try:
                parse(inner, any_value.value)
            except message.DecodeError:
                continue
            changed = False

            def tracking(found: Found) -> str | None:
                nonlocal changed
                new = visit(found)
                changed = changed or (new is not None and new != found.value)
                return new

            where = (*path, fd.name) if index is None else (*path, fd.name, index)
            self._walk(inner, sub_plan, where, top, tracking)
            if changed:
                any_value.value = serialize(inner)


class _Entry:
    """One entry of a map, read as the message its descriptor declares: `key`, and `value` (written
    through to the map)."""

    __slots__ = ("_map", "key")

    def __init__(self, entries: Any, key: Any) -> None:
        self._map = entries
        self.key = key

    @property
    def value(self) -> Any:
        return self._map[self.key]

    @value.setter
    def value(self, new: Any) -> None:
        self._map[self.key] = new


_Fields = message.Message | _Entry  # what holds an id field: a message, or one entry of a map


def _sharing(
    msg: message.Message, index: int, paths: Sequence[_MethodPath], visit: Callable[[Found], str | None]
) -> Callable[[Found], str | None]:
    """`visit`, given the kinds a method path adds at the places it reaches of a field declared on its type
    (a reference location shared there by the kinds of both)."""
    shared: dict[tuple[str | int, ...], tuple[str, ...]] = {}
    for mp in paths:
        if mp.covered:
            kinds = mp.covered

            def keep(found: Found, kinds: tuple[str, ...] = kinds) -> None:
                shared[found.path] = kinds

            _along(msg, mp.fields, (index,), _Where(mp.kind, False, "", (), None), keep)
    if not shared:
        return visit
    return lambda found: visit(found._replace(kinds=shared[found.path]) if found.path in shared else found)


class _Top(NamedTuple):
    """The call a walk is in: its method, its first request and the answer message being walked (None
    when the messages are not the method's answers), where owner keys on method paths are read."""

    method: str
    first_request: message.Message | None
    answer: message.Message | None


class _Where(NamedTuple):
    """What a method path's location holds: its kind(s), whether it mints, and its owner."""

    kind: str
    minted: bool
    owner: str
    kinds: tuple[str, ...]
    sibling: tuple[FieldDescriptor, ...] | None  # owner keys beside the id, in the message holding it


def _owner_text(msg: _Fields, fields: tuple[FieldDescriptor, ...]) -> str:
    """The owner keys beside an id, as one text (several joined by OWNERS)."""
    return OWNERS.join(dict.fromkeys(v for fd in fields if (v := _text(getattr(msg, fd.name)))))


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return "" if value == 0 else str(value)


def _converted(fd: FieldDescriptor, text: str) -> Any:
    """An id text as the field's type (an integer field takes only integer text; "" clears it)."""
    if fd.type == FieldDescriptor.TYPE_STRING:
        return text
    return int(text) if text else 0


def _visit_field(
    msg: _Fields,
    fd: FieldDescriptor,
    path: tuple[str | int, ...],
    kind: str,
    minted: bool,
    owner: str,
    visit: Callable[[Found], str | None],
    kinds: tuple[str, ...] = (),
) -> None:
    value = getattr(msg, fd.name)
    if fd.is_repeated:
        for i, item in enumerate(value):
            text = _text(item)
            if text:
                new = visit(Found(kind, minted, (*path, fd.name, i), text, owner, kinds))
                if new is not None and new != text:
                    value[i] = _converted(fd, new)
        return
    text = _text(value)
    if text:
        new = visit(Found(kind, minted, (*path, fd.name), text, owner, kinds))
        if new is not None and new != text:
            setattr(msg, fd.name, _converted(fd, new))


def _along(
    msg: _Fields,
    fields: tuple[FieldDescriptor, ...],
    path: tuple[str | int, ...],
    where: _Where,
    visit: Callable[[Found], str | None],
) -> None:
    """The ids at a method path: through single and repeated message fields, and maps (each entry, in key
    order; `value.more` into a message value), down to the id field."""
    fd, rest = fields[0], fields[1:]
    if not rest:
        owner = where.owner
        if where.minted and where.sibling is not None:
            owner = _owner_text(msg, where.sibling) or owner
        _visit_field(msg, fd, path, where.kind, where.minted, owner, visit, where.kinds)
        return
    assert not isinstance(msg, _Entry)  # an entry's fields are scalars, or a message value entered below
    value = getattr(msg, fd.name)
    if _map_entry(fd) is not None:
        into_values = rest[0].name == "value" and len(rest) > 1  # a message value: on into it
        for key in sorted(value, key=repr):
            at = (*path, fd.name, str(key))
            if into_values:
                _along(value[key], rest[1:], at, where, visit)
            else:  # the entry's own scalar field
                _along(_Entry(value, key), rest, at, where, visit)
    elif fd.is_repeated:
        for i, item in enumerate(value):
            _along(item, rest, (*path, fd.name, i), where, visit)
    elif has_field(msg, fd.name):
        _along(value, rest, (*path, fd.name), where, visit)


def _values_along(msg: message.Message, fields: tuple[FieldDescriptor, ...]) -> list[str]:
    out: list[str] = []

    def keep(found: Found) -> None:
        out.append(found.value)

    _along(msg, fields, (), _Where("", False, "", (), None), keep)
    return out
