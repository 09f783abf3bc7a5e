"""Identifiers each side mints on its own, and where they sit in the messages.

Over 400 lines: the declarations, where ids sit in each message type (found once) and the walk that
finds and rewrites them are one model of an id's places, read top to bottom.

Bank and BK each mint their own ids (Bank's trade "T00000042" is BK's
"trd_3f9a0c12be47"). An `IdKind` declares where ids of one kind appear:

- `minted`: the answer fields in which a side hands out a new id;
- `references`: fields that name an id minted earlier (in requests, to be
  translated for the other side; in answers, to be compared through the map);
- `owner_key`: the field that holds the routing key of the thing an id names
  (the account of a trade), so that a call naming only the id is ordered with
  the other calls on that account;
- `learn_from`: "writes" (default) learns pairs only from the answers of
  writes, where ids are minted; "all" also from reads (page tokens are minted
  by reads);
- `scope`: "global" (default), or "query" for ids that mean something only for
  one query, such as page tokens: a pair holds only for requests that are
  equal apart from the id fields.

A location is either a message field, `"package.Message.field"`, wherever
that message appears (nested, repeated, in a streamed answer, in a request or
an answer), or a path within one method's request or answer,
`"package.Service/Method:request.a.b"` / `"...:response.a.b"`. The field holds
a string or an integer, and may be repeated. A map is read as its entries: the
values of a `map<string, string>` are `"package.Message.RefsEntry.value"` (or
`"...:request.refs.value"`), a path into a map of messages names its values
(`"...:response.by_name.value.id"`); a map's keys hold no ids (rewriting a key
would move its entry), though a key may be an owner key. A field declared on its type and reached
again by a method path is one location there: its id is found once (`_check_overlaps` says which
overlaps are refused).

`IdFields` finds, and rewrites, the ids in decoded messages. It is pure: the
map of pairs lives in the shim; a comparison receives the pairs it needs with
its exchange.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from google.protobuf import message
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from comparators.descriptors import DescriptorRegistry, held_type, reaches
from comparators.message_api import copy_from, descriptor_of, has_field, parse, serialize

_LEARN_FROM = ("writes", "all")
_SCOPES = ("global", "query")
_ID_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_STRING,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_SFIXED32,
    }
)


class IdError(ValueError):
    """An id declaration does not fit the descriptors; the message names the setting."""


@dataclass(frozen=True, slots=True)
class IdKind:
    """One kind of id, as declared in `[ids.NAME]`."""

    name: str
    minted: tuple[str, ...]
    references: tuple[str, ...] = ()
    owner_key: tuple[str, ...] = ()
    learn_from: str = "writes"
    scope: str = "global"

    def __post_init__(self) -> None:
        where = f"ids.{self.name}"
        if not self.minted:
            raise IdError(f"{where}.minted: name at least one field that mints ids of this kind")
        if self.learn_from not in _LEARN_FROM:
            raise IdError(f"{where}.learn_from: {self.learn_from!r} is not one of {', '.join(_LEARN_FROM)}")
        if self.scope not in _SCOPES:
            raise IdError(f"{where}.scope: {self.scope!r} is not one of {', '.join(_SCOPES)}")
        if self.scope == "query" and self.owner_key:
            raise IdError(f"{where}.owner_key: an id scoped to one query has no owner")


class Found(NamedTuple):
    """One id in a message."""

    kind: str  # the kind; for a location several kinds share, the first of `kinds`
    minted: bool  # found at a `minted` location (else a reference)
    path: tuple[str | int, ...]  # message index, then field names and list indices
    value: str
    owner: str  # the owner key's value, when the kind declares one that applies here
    kinds: tuple[str, ...] = ()  # every kind the location may hold, when several share it

    @property
    def every_kind(self) -> tuple[str, ...]:
        """The kinds this id may be of: one, or each kind declaring its location."""
        return self.kinds or (self.kind,)


class Ambiguous(NamedTuple):
    """An id two kinds' maps know with different counterparts: (kind, counterpart) of each."""

    value: str
    counterparts: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        known = " and ".join(f"as {kind} {other!r}" for kind, other in self.counterparts)
        return f"{self.value!r} is known {known}"


def resolve(found: Found, lookup: Callable[[str, str], str | None]) -> str | Ambiguous | None:
    """The counterpart of `found` through `lookup(kind, value)`, whichever of its kinds knows it.

    None when no kind knows it; `Ambiguous` when two kinds know it with different counterparts.
    """
    if not found.kinds:
        return lookup(found.kind, found.value)
    known = [(kind, other) for kind in found.kinds if (other := lookup(kind, found.value)) is not None]
    if len({other for _, other in known}) > 1:
        return Ambiguous(found.value, tuple(known))
    return known[0][1] if known else None


# -- where ids sit ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Slot:
    """An id field of a message type."""

    field: FieldDescriptor
    kind: str
    minted: bool
    owner: tuple[FieldDescriptor, ...] | None  # sibling fields holding the owner keys
    kinds: tuple[str, ...] = ()  # every kind, when several kinds share this reference location
    where: str = ""  # the setting that declared it first


@dataclass(slots=True)
class _Plan:
    """How to find the ids in messages of one type."""

    slots: list[_Slot] = field(default_factory=list)
    nested: list[FieldDescriptor] = field(default_factory=list)  # message fields that may hold ids
    anys: list[FieldDescriptor] = field(default_factory=list)  # google.protobuf.Any fields (rich details)


@dataclass(frozen=True, slots=True)
class _MethodPath:
    """An id location on one method's request or answer."""

    fields: tuple[FieldDescriptor, ...]
    kind: str
    minted: bool
    kinds: tuple[str, ...] = ()  # every kind, when several kinds share this reference location
    where: str = ""  # the setting that declared it first
    # the field is declared on its type too, so the walk of the type finds it: None (not so), or the
    # kinds of the id there, when they are more than the type's (a reference location shared there)
    covered: tuple[str, ...] | None = None


_ANY = "google.protobuf.Any"
_ONE_KIND = "a location that mints ids holds one kind (several kinds may share a reference location)"


class IdFields:
    """The id locations of some kinds, checked against the descriptors."""

    def __init__(self, kinds: Sequence[IdKind], registry: DescriptorRegistry) -> None:
        self.kinds = {kind.name: kind for kind in kinds}
        self._registry = registry
        self._by_type: dict[str, list[_Slot]] = {}
        self._by_method: dict[tuple[str, str], list[_MethodPath]] = {}
        self._method_owners: dict[tuple[str, str], tuple[str, tuple[FieldDescriptor, ...]]] = {}
        self._plans: dict[str, _Plan | None] = {}
        # (message type, kind) -> the owner-key fields beside it
        self._type_owners: dict[tuple[str, str], tuple[FieldDescriptor, ...]] = {}
        seen: dict[str, tuple[str, str]] = {}
        declared: dict[str, tuple[int, str]] = {}  # setting -> (order, location)
        for kind in kinds:
            owners = self._owners(kind)
            for role, locations in (("minted", kind.minted), ("references", kind.references)):
                for index, location in enumerate(locations):
                    where = f"ids.{kind.name}.{role}[{index}]"
                    declared[where] = (len(declared), location)
                    earlier = seen.get(_spelled(location))  # "/pkg.Svc/M:..." and "pkg.Svc/M:..." are one
                    if earlier is not None and earlier[0].startswith(f"ids.{kind.name}."):
                        raise IdError(f"{where}: {location!r} is already declared by {earlier[0]}")
                    if earlier is not None and (role == "minted" or earlier[1] == "minted"):
                        raise IdError(
                            f"{where}: {location!r} is already declared by {earlier[0]}: {_ONE_KIND}"
                        )
                    seen.setdefault(_spelled(location), (where, role))
                    self._add(kind, location, role == "minted", owners, where)
        self._check_overlaps(declared)
        self._check_owners_used(kinds)

    # -- building ---------------------------------------------------------------------------

    def _field_of(self, location: str, where: str) -> tuple[Descriptor, FieldDescriptor]:
        type_name, _, field_name = location.rpartition(".")
        desc = self._registry.find_message(type_name) if type_name else None
        if desc is None:
            raise IdError(f"{where}: {location!r} names no message field (expected package.Message.field)")
        fd = desc.fields_by_name.get(field_name)
        if fd is None:
            raise IdError(f"{where}: {type_name} has no field {field_name!r}")
        return desc, fd

    def _method_path(self, location: str, where: str) -> tuple[str, str, tuple[FieldDescriptor, ...]]:
        """ "pkg.Svc/Method:request.a.b" -> (wire method, side, fields)."""
        method, sep, path = location.partition(":")
        side, _, rest = path.partition(".")
        if not sep or side not in ("request", "response") or not rest:
            raise IdError(
                f"{where}: {location!r} is not package.Service/Method:request.path or ...:response.path"
            )
        wire = "/" + method.lstrip("/")
        info = self._registry.method(wire)
        if info is None:
            raise IdError(f"{where}: unknown method {method} (not in the descriptors)")
        desc = self._registry.find_message(info.input_type if side == "request" else info.output_type)
        fields: list[FieldDescriptor] = []
        for part in rest.split("."):
            fd = desc.fields_by_name.get(part) if desc is not None else None
            if fd is None:
                hint = ""
                if desc is not None and desc.GetOptions().map_entry:
                    hint = f" ({fields[-1].name} is a map: name its values, {fields[-1].name}.value)"
                raise IdError(f"{where}: {location!r}: no field {part!r} on that path{hint}")
            fields.append(fd)
            desc = fd.message_type
        return wire, side, tuple(fields)

    def _owners(self, kind: IdKind) -> dict[str, tuple[FieldDescriptor, ...]]:
        """Owner-key sibling fields by message type; method owners are kept aside."""
        owners: dict[str, tuple[FieldDescriptor, ...]] = {}
        for index, location in enumerate(kind.owner_key):
            where = f"ids.{kind.name}.owner_key[{index}]"
            if "/" in location:
                wire, side, fields = self._method_path(location, where)
                _check_value_field(fields[-1], where, "a routing key")
                self._method_owners[(wire, kind.name)] = (side, fields)
                continue
            desc, fd = self._field_of(location, where)
            _check_value_field(fd, where, "a routing key")
            if fd.is_repeated:
                raise IdError(f"{where}: an owner key is one value, not a repeated field")
            owners[desc.full_name] = (*owners.get(desc.full_name, ()), fd)
            self._type_owners[(desc.full_name, kind.name)] = owners[desc.full_name]
        return owners

    def _add(
        self,
        kind: IdKind,
        location: str,
        minted: bool,
        owners: dict[str, tuple[FieldDescriptor, ...]],
        where: str,
    ) -> None:
        if "/" in location:
            wire, side, fields = self._method_path(location, where)
            if minted and side != "response":
                raise IdError(f"{where}: ids are minted in answers: use ...:response.path")
            _check_value_field(fields[-1], where, "an id")
            _check_not_a_map_key(fields[-1], where)
            paths = self._by_method.setdefault((wire, side), [])
            for i, path in enumerate(paths):
                if path.fields == fields:  # a reference location another kind declared too
                    shared = (*(path.kinds or (path.kind,)), kind.name)
                    paths[i] = _MethodPath(fields, path.kind, False, shared, path.where)
                    return
            paths.append(_MethodPath(fields, kind.name, minted, where=where))
            return
        desc, fd = self._field_of(location, where)
        _check_value_field(fd, where, "an id")
        _check_not_a_map_key(fd, where)
        owner = owners.get(desc.full_name) if minted else None
        slots = self._by_type.setdefault(desc.full_name, [])
        for i, slot in enumerate(slots):
            if slot.field is fd:  # a reference location another kind declared too
                slots[i] = _Slot(
                    fd, slot.kind, False, None, (*(slot.kinds or (slot.kind,)), kind.name), slot.where
                )
                return
        slots.append(_Slot(fd, kind.name, minted, owner, where=where))

    def _check_overlaps(self, declared: dict[str, tuple[int, str]]) -> None:
        """A method path ending on a field declared on its type reaches ids the walk of the type finds: one
        location there. Both mint the same kind, or the path names in a request what the type's kind mints:
        found once, by the type. Both reference: found once, shared by the kinds of both. Otherwise (one mints
        and the other names it, or another kind's) it is refused, naming both settings."""
        for (_, side), paths in self._by_method.items():
            for i, mp in enumerate(paths):
                fd = mp.fields[-1]
                slot = next((s for s in self._by_type.get(_holder(mp), ()) if s.field is fd), None)
                if slot is None:
                    continue
                slot_kinds, path_kinds = slot.kinds or (slot.kind,), mp.kinds or (mp.kind,)
                problem = ""
                if (slot.minted or mp.minted) and set(slot_kinds) != set(path_kinds):
                    problem = _ONE_KIND
                elif slot.minted != mp.minted and side == "response":
                    problem = "a field of an answer mints ids of its kind or names them, not both"
                if problem:
                    first, later = sorted((slot.where, mp.where), key=lambda w: declared[w][0])
                    raise IdError(
                        f"{later}: {declared[later][1]!r} reaches {fd.full_name},"
                        f" which {first} declares: {problem}"
                    )
                merged = (*slot_kinds, *(k for k in path_kinds if k not in slot_kinds))
                more = merged if merged != slot_kinds else ()
                paths[i] = _MethodPath(mp.fields, mp.kind, mp.minted, mp.kinds, mp.where, more)

    def _check_owners_used(self, kinds: Sequence[IdKind]) -> None:
        for kind in kinds:
            for index, location in enumerate(kind.owner_key):
                if "/" in location:
                    continue
                type_name = location.rpartition(".")[0]
                minted_here = any(
                    slot.minted and slot.kind == kind.name for slot in self._by_type.get(type_name, ())
                ) or any(  # a method path minting this kind in messages of this type, through any fields
                    path.minted and path.kind == kind.name and _holder(path) == type_name
                    for paths in self._by_method.values()
                    for path in paths
                )
                if not minted_here:
                    raise IdError(
                        f"ids.{kind.name}.owner_key[{index}]: {type_name} mints no {kind.name} id "
                        "(an owner key is a field beside a minted id)"
                    )

    def _plan(self, desc: Descriptor) -> _Plan | None:
        """What to visit in messages of this type (None: they hold no ids)."""
        name = desc.full_name
        if name in self._plans:
            return self._plans[name]
        plan = _Plan(slots=list(self._by_type.get(name, ())))
        for fd in desc.fields:
            element = held_type(fd)
            if element is not None and element.full_name == _ANY:
                if self._by_type:  # an Any may hold any message: rich error details, say
                    plan.anys.append(fd)
            elif (element is not None and self._holds_ids(element)) or self._entry_slots(fd):
                plan.nested.append(fd)
        found = plan if plan.slots or plan.nested or plan.anys else None
        self._plans[name] = found
        return found

    def _entry_slots(self, fd: FieldDescriptor) -> list[_Slot]:
        """The id fields declared on a map field's entries (its scalar values); none for other fields."""
        entry = _map_entry(fd)
        return self._by_type.get(entry.full_name, []) if entry is not None else []

    def _holds_ids(self, desc: Descriptor) -> bool:
        """Whether messages of this type can hold ids, at any depth (recursive types included; an Any
        may hold any type)."""
        targets: Collection[str] = self._by_type
        if self._by_type:
            targets = {*self._by_type, _ANY}
        return reaches(desc, targets)

    # -- what the shim asks -----------------------------------------------------------------

    def in_request(self, method: str, input_type: str) -> bool:
        """Whether requests of this method can hold ids."""
        desc = self._registry.find_message(input_type)
        return (method, "request") in self._by_method or (desc is not None and self._plan(desc) is not None)

    def owned_in_request(self, method: str, input_type: str) -> bool:
        """Whether requests of this method can name an id of a kind with an `owner_key` (whose owners place
        the call on their keys)."""
        paths = self._by_method.get((method, "request"), [])
        kinds = {k for p in paths for k in (p.kinds or (p.kind,))}
        desc = self._registry.find_message(input_type)
        if desc is not None:
            kinds.update(k for slot in self._slots_under(desc, set()) for k in (slot.kinds or (slot.kind,)))
        return any(self.kinds[k].owner_key for k in kinds if k in self.kinds)

    def in_response(self, method: str, output_type: str, minted_only: bool = False) -> bool:
        """Whether answers of this method can hold ids (minted ones only, with `minted_only`)."""
        desc = self._registry.find_message(output_type)
        paths = self._by_method.get((method, "response"), [])
        if any(p.minted or not minted_only for p in paths):
            return True
        if desc is None:
            return False
        return any(slot.minted or not minted_only for slot in self._slots_under(desc, set()))

    def minted_kinds(self, method: str, output_type: str) -> frozenset[str]:
        """The kinds of id that answers of this method can mint."""
        kinds = {p.kind for p in self._by_method.get((method, "response"), ()) if p.minted}
        desc = self._registry.find_message(output_type)
        if desc is not None:
            kinds.update(slot.kind for slot in self._slots_under(desc, set()) if slot.minted)
        return frozenset(kinds)

    def _slots_under(self, desc: Descriptor, seen: set[str]) -> Iterator[_Slot]:
        if desc.full_name in seen:
            return
        seen.add(desc.full_name)
        plan = self._plan(desc)
        if plan is None:
            return
        yield from plan.slots
        for fd in plan.nested:
            yield from self._entry_slots(fd)
            element = held_type(fd)
            if element is not None:
                yield from self._slots_under(element, seen)

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

    def scope(self, method: str, request: message.Message, kind: str) -> str:
        """For a query-scoped kind: what identifies the query (the request without its ids)."""
        if self.kinds[kind].scope != "query":
            return ""
        copy = type(request)()
        copy_from(copy, request)
        self._visit(method, "request", [copy], None, lambda f: "" if f.kind == kind else None)
        digest = hashlib.blake2b(serialize(copy, deterministic=True), digest_size=12)
        digest.update(method.encode())
        return digest.hexdigest()

    # -- the walk ---------------------------------------------------------------------------

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
        entry = self._method_owners.get((method, kind))
        if entry is None:
            return ""
        side, fields = entry
        source = first_request if side == "request" else answer
        if source is None:
            return ""
        values = _values_along(source, fields)
        return values[0] if values else ""

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


def _map_entry(fd: FieldDescriptor) -> Descriptor | None:
    """A map field's entry type (None for any other field)."""
    entry: Descriptor | None = fd.message_type
    return entry if entry is not None and entry.GetOptions().map_entry else None


def _spelled(location: str) -> str:
    """A location as one spelling: a method path with its leading slash."""
    return "/" + location.lstrip("/") if "/" in location else location


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


def _holder(path: _MethodPath) -> str:
    """The message type holding a method path's id field."""
    holder = path.fields[-1].containing_type
    return holder.full_name if holder is not None else ""


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


OWNERS = "\x1f"  # separates the owner keys of an id that has several (a transfer's two accounts)


def _owner_text(msg: _Fields, fields: tuple[FieldDescriptor, ...]) -> str:
    """The owner keys beside an id, as one text (several joined by OWNERS)."""
    return OWNERS.join(dict.fromkeys(v for fd in fields if (v := _text(getattr(msg, fd.name)))))


def _check_value_field(fd: FieldDescriptor, where: str, what: str) -> None:
    if fd.type not in _ID_TYPES or (fd.message_type is not None):
        raise IdError(f"{where}: {fd.full_name} is not a string or integer field, so it cannot hold {what}")


def _check_not_a_map_key(fd: FieldDescriptor, where: str) -> None:
    entry = fd.containing_type
    if entry is not None and entry.GetOptions().map_entry and fd.name == "key":
        raise IdError(
            f"{where}: {fd.full_name} is a map's key: ids are found in a map's values"
            f" ({entry.full_name}.value), not in its keys"
        )


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


def pair_up(bank: Sequence[Found], bk: Sequence[Found]) -> list[tuple[Found, Found]]:
    """Minted ids of the two answers paired by kind and place: the same path on both sides.

    Messages of a stream pair by position. Inside a message, the elements of a
    list pair by position only when both sides hold ids in as many of its
    elements: a list one side made longer (it minted one more) says nothing
    certain about which id is which, and a wrong pair would later send a call
    to the wrong thing.
    """
    right = {(f.kind, f.path): f for f in bk if f.minted}
    lengths: dict[tuple[str, str, tuple[str | int, ...]], set[int]] = {}
    for side, found in (("bank", bank), ("bk", bk)):
        for f in found:
            if f.minted:
                for i in range(1, len(f.path)):
                    index = f.path[i]
                    if isinstance(index, int):
                        lengths.setdefault((side, f.kind, f.path[:i]), set()).add(index)
    pairs = []
    for left in bank:
        if not left.minted:
            continue
        other = right.get((left.kind, left.path))
        if other is None:
            continue
        lists = [left.path[:i] for i in range(1, len(left.path)) if isinstance(left.path[i], int)]
        if any(
            len(lengths.get(("bank", left.kind, p), ())) != len(lengths.get(("bk", left.kind, p), ()))
            for p in lists
        ):
            continue
        pairs.append((left, other))
    return pairs


def translate_answer(
    fields: IdFields,
    method: str,
    messages: Sequence[message.Message],
    to_bank: Mapping[tuple[str, str], str],
    side: str = "response",
) -> list[Found]:
    """Rewrite BK's ids in decoded answer messages into Bank's, from (kind, BK id) -> Bank id.

    An id at a location several kinds share is translated by whichever kind's pair knows it; one that
    two kinds know with different Bank ids is left as it is. Returns the ids left (no Bank counterpart,
    or ambiguous). `side=""` looks at message types only, not at the method's paths (the messages
    of a google.rpc.Status, say).
    """

    def translate(found: Found) -> str | None:
        known = resolve(found, lambda kind, value: to_bank.get((kind, value)))
        return known if isinstance(known, str) else None

    return fields.rewrite(method, side, messages, translate)


def text_reads_as(bk_text: str, bank_text: str, to_bank: dict[tuple[str, str], str] | None) -> bool:
    """Whether BK's free text is Bank's once each BK id of the exchange's pairs in it, as a whole word, is
    read as the Bank id it pairs with. Ids of digits alone are left as they are: a count or an amount
    could read as one by chance."""
    if not to_bank:
        return False
    ids = {
        bk_id: bank_id for (_, bk_id), bank_id in to_bank.items() if bk_id != bank_id and not bk_id.isdigit()
    }
    if not ids:
        return False
    words = re.compile(
        r"(?<![\w-])(" + "|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True)) + r")(?![\w-])"
    )
    return words.sub(lambda found: ids[found.group(1)], bk_text) == bank_text
