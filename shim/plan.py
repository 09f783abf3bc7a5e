"""What the shim does with the calls of each method, compiled once when it starts.

For each method of the descriptors: its kind (unary or streaming, each way), whether it is a write
(`shim.routing`: from its idempotency level, unless `[methods]` says), whether its writes are ordered on
the primary too (`ordering.strict`), whether its first request is decoded to place the call (routing
keys, ids, key aliases), and what the id map and the key aliases do with its requests and answers
(`IdPlan`). The plans never change while the shim runs.

A method the descriptors do not name (anyone can make names up) gets its plan at each call, and it is
never kept: a write (the safe guess: writes are never sampled), with no ids. With descriptors it is
marked undescribed: its calls are mirrored but never ordered. Without any descriptors every method
counts as described, and its calls take one place in the lanes, unkeyed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from comparators.ids import IdFields
from shim.routing import Router


@dataclass(frozen=True, slots=True)
class Kind:
    unary: bool = False  # one request, one answer
    client_streaming: bool = False
    server_streaming: bool = False
    described: bool = True  # named by the descriptors; without any descriptors every method counts


@dataclass(frozen=True, slots=True)
class IdPlan:
    """What the id map and the key aliases do for calls of one method."""

    request: bool = False  # requests can name ids: translate them, order by their owners
    response: bool = False  # answers can hold ids: compare them through the map
    mints: bool = False  # answers mint ids this call may learn
    learnable: frozenset[str] = frozenset()
    output_type: str = ""
    input_type: str = ""
    streamed: bool = False  # the answer is a stream: pairs are learned message by message
    aliases_in: bool = False  # requests can name key aliases
    aliases_out: bool = False  # answers can teach key aliases


_NO_IDS = IdPlan()


@dataclass(frozen=True, slots=True)
class MethodPlan:
    method: str
    kind: Kind
    write: bool
    strict: bool  # a write ordered on the primary as well, per key
    needs_request: bool  # the first request is decoded to place the call (keys, ids, aliases)
    ids: IdPlan = _NO_IDS
    # its calls can be placed on keys: `key`, key aliases, or ids with owners named in its request (a
    # method that mints its key has none before it answers)
    keyed: bool = False

    @property
    def learns_per_message(self) -> bool:
        """The ids (and aliases) minted in the answer stream are learned message by message."""
        return self.ids.streamed and (self.ids.mints or self.ids.aliases_out)


class Plans:
    """The plan of every method, compiled from the descriptors, `[methods]`, `[ids]` and `[key_aliases]`."""

    __slots__ = ("_ids", "_plans", "_router")

    def __init__(self, router: Router | None, ids: IdFields | None = None, aliases: IdFields | None = None):
        self._router = router
        registry = router.registry if router is not None else None
        methods = registry.methods if registry is not None else {}
        self._plans = {path: self._compile(path, ids, aliases) for path in methods}

    def keyed(self) -> int:
        """How many described methods place their calls by what their requests name (keys, ids, aliases)."""
        return sum(1 for plan in self._plans.values() if plan.keyed)

    def serialized(self) -> str:
        """What the lanes will serialize for want of keys, in a sentence for the ready line."""
        if self._router is None or self._router.registry is None:
            return "every call: without descriptors every method is a write with no key"
        unkeyed = sorted(p.method.rpartition("/")[2] for p in self._plans.values() if p.write and not p.keyed)
        if not unkeyed:
            return "nothing: every write has keys"
        named = ", ".join(unkeyed[:5]) + (f" and {len(unkeyed) - 5} more" if len(unkeyed) > 5 else "")
        methods = f"{len(unkeyed)} write method{'s' if len(unkeyed) > 1 else ''}"
        return f"the calls of {methods} with no key ({named}): each waits for every earlier call"

    def of(self, method: str) -> MethodPlan:
        return self._plans.get(method) or self._compile(method, None, None)

    def __iter__(self) -> Iterator[MethodPlan]:
        """The plans of the described methods."""
        return iter(self._plans.values())

    def _compile(self, method: str, ids: IdFields | None, aliases: IdFields | None) -> MethodPlan:
        router = self._router
        registry = router.registry if router is not None else None
        info = registry.method(method) if registry is not None else None
        if router is None or info is None:  # a method the descriptors do not name
            keyed = router is not None and bool(router.settings(method).key)
            write = router.is_write(method) if router is not None else True
            strict = write and router is not None and router.strict(method)
            return MethodPlan(
                method, Kind(described=registry is None), write, strict, needs_request=keyed, keyed=keyed
            )
        write = router.is_write(method)
        plan = _NO_IDS
        if ids is not None or aliases is not None:
            learnable: frozenset[str] = frozenset()
            if ids is not None:
                minted = ids.minted_kinds(method, info.output_type)
                learnable = frozenset(k for k in minted if write or ids.kinds[k].learn_from == "all")
            plan = IdPlan(
                request=ids is not None and ids.in_request(method, info.input_type),
                response=ids is not None and ids.in_response(method, info.output_type),
                mints=bool(learnable),
                learnable=learnable,
                output_type=info.output_type,
                input_type=info.input_type,
                streamed=info.server_streaming,
                aliases_in=aliases is not None and aliases.in_request(method, info.input_type),
                aliases_out=aliases is not None and aliases.in_response(method, info.output_type, True),
            )
        return MethodPlan(
            method,
            Kind(info.unary, info.client_streaming, info.server_streaming),
            write,
            strict=write and router.strict(method),
            needs_request=bool(plan.request or plan.mints or plan.aliases_in or router.settings(method).key),
            ids=plan,
            keyed=bool(
                router.settings(method).key
                or plan.aliases_in
                or (plan.request and ids is not None and ids.owned_in_request(method, info.input_type))
            ),
        )
