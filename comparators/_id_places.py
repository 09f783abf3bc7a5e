"""Where ids sit: the declared locations checked against the descriptors, and for each message type the
fields to visit (found once per type).

`Places` is the first layer of `comparators.ids.IdFields`: the walk (`comparators._id_walk`) reads what
it built.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from comparators._id_kinds import IdError, IdKind
from comparators.descriptors import DescriptorRegistry, held_type, reaches

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


class Places:
    """The id locations of some kinds, checked against the descriptors."""

    def __init__(self, kinds: Sequence[IdKind], registry: DescriptorRegistry) -> None:
        self.kinds = {kind.name: kind for kind in kinds}
        self._registry = registry
        self._by_type: dict[str, list[_Slot]] = {}
        self._by_method: dict[tuple[str, str], list[_MethodPath]] = {}
        # (method, kind) -> the owner-key paths of that method: (side, fields) each
        self._method_owners: dict[tuple[str, str], tuple[tuple[str, tuple[FieldDescriptor, ...]], ...]] = {}
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

    def fields_of(self, kind: str) -> frozenset[str]:
        """The message fields ("package.Message.field") that hold ids of `kind` or their owners, wherever
        they are declared (on a type, or at the end of a method's path)."""
        found = {
            slot.field.full_name
            for slots in self._by_type.values()
            for slot in slots
            if kind in (slot.kinds or (slot.kind,))
        }
        found.update(
            path.fields[-1].full_name
            for paths in self._by_method.values()
            for path in paths
            if kind in (path.kinds or (path.kind,))
        )
        found.update(fd.full_name for (_, of), fds in self._type_owners.items() if of == kind for fd in fds)
        found.update(
            fields[-1].full_name
            for (_, of), owners in self._method_owners.items()
            if of == kind
            for _, fields in owners
        )
        return frozenset(found)

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
                key = (wire, kind.name)
                self._method_owners[key] = (*self._method_owners.get(key, ()), (side, fields))
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
                    self._check_method_owner(kind, index, location)
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

    def _check_method_owner(self, kind: IdKind, index: int, location: str) -> None:
        """An owner key given as a method path is read from that method's calls: it must mint the kind, by a
        path of its own or by a field of a type its answers hold."""
        method = location.partition(":")[0]
        wire = "/" + method.lstrip("/")
        by_path = any(p.minted and p.kind == kind.name for p in self._by_method.get((wire, "response"), ()))
        info = self._registry.method(wire)
        output = self._registry.find_message(info.output_type) if info is not None else None
        minting = {
            name
            for name, slots in self._by_type.items()
            if any(s.minted and s.kind == kind.name for s in slots)
        }
        if not by_path and not (output is not None and minting and reaches(output, minting)):
            raise IdError(
                f"ids.{kind.name}.owner_key[{index}]: {method.lstrip('/')} mints no {kind.name} id"
                " (an owner key is read from a call that mints one)"
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


def _map_entry(fd: FieldDescriptor) -> Descriptor | None:
    """A map field's entry type (None for any other field)."""
    entry: Descriptor | None = fd.message_type
    return entry if entry is not None and entry.GetOptions().map_entry else None


def _spelled(location: str) -> str:
    """A location as one spelling: a method path with its leading slash."""
    return "/" + location.lstrip("/") if "/" in location else location


def _holder(path: _MethodPath) -> str:
    """The message type holding a method path's id field."""
    holder = path.fields[-1].containing_type
    return holder.full_name if holder is not None else ""


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
