"""What the id map does for mirrored calls: keys from ids and aliases, translation, learning, pairs.

One `Translation` per direction of mirroring (Bank to BK in `shadow` mode, BK to
Bank in `bk-primary` mode). The client speaks the primary's id space
(`client_side`); requests are sent to the shadow in its own.

- **Keys.** A call is on the keys its `key` paths name, the owner keys of the ids
  it names and the keys its aliases stand for, all in the client's key space (an
  id kept from another mode by its pair). An id whose owner, or an alias whose
  key, is not in memory makes the call unkeyed.
- **Translation.** Each id a request names is replaced by the shadow's
  counterpart: from memory, from a minting call still in flight (waited for),
  or from the store. An id the shadow alone knows as its own is kept. An id
  known to be minted but with no counterpart (its minting call ended without
  one), or one two kinds know differently, stops the call: it is not sent. An
  id the map has never seen is sent unchanged, so that both sides answer it
  (both should refuse it alike). Where the id spaces overlap (one text is an
  id on both sides), the client's text is the primary's id: toward the shadow
  it goes by the pair of the primary's id; toward the primary, as it is.
- **Learning.** The pairs a call mints are learned from the two answers: for a
  streamed answer, message by message as both sides send them, so that a later
  message of the same stream (or another call) can name them at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from google.protobuf import message

from comparators import Outcome
from comparators.ids import OWNERS, Ambiguous, Found, resolve
from shim.aliases import KeyAliases
from shim.ids import IdBook, Pending, other
from shim.logs import raised
from shim.metrics import Counters
from shim.plan import IdPlan, Plans
from shim.routing import Router

if TYPE_CHECKING:
    import asyncio

_log = structlog.get_logger("shim.ids")

STATUS_DETAILS_KEY = "grpc-status-details-bin"
_RPC_STATUS = "google.rpc.Status"
_UNTRANSLATED = "ids not translated for the primary: the request goes as the client sent it"


@dataclass(slots=True)
class Translated:
    """A request as the shadow gets it, or why it cannot be sent."""

    payload: bytes
    unmapped: list[Found]  # ids known to be minted with no counterpart: not sent
    ambiguous: list[Ambiguous]  # ids two kinds know differently: not sent


class Translation:
    def __init__(
        self,
        router: Router | None,
        ids: IdBook | None,
        aliases: KeyAliases | None,
        counters: Counters,
        primary_is_bank: bool,
        plans: Plans,
    ) -> None:
        self.router = router
        self.plans = plans
        self.ids = ids if router is not None else None
        self.aliases = aliases if router is not None else None
        self.counters = counters
        self.primary_is_bank = primary_is_bank
        # the id space the client speaks (the primary's), and the shadow's
        self.client_side = "bank" if primary_is_bank else "bk"
        self.shadow_side = other(self.client_side)
        self._failed_for_primary: set[str] = set()  # methods whose translation for the primary failed

    # -- what a method needs ------------------------------------------------------------------------

    def plan(self, method: str) -> IdPlan:
        """What the id map has to do for calls of `method`."""
        return self.plans.of(method).ids

    def needs_request(self, method: str) -> bool:
        """Whether the first request must be decoded to place the call (keys, ids, aliases)."""
        return self.plans.of(method).needs_request

    # -- keys -----------------------------------------------------------------------------------------

    def keys_for(self, method: str, request: message.Message | None) -> tuple[str, ...]:
        """The routing keys of a call: its `key` paths, the keys its aliases stand for, the owners of the ids
        it names. () when any of these is not known: the call is then ordered as unkeyed."""
        return self.place(method, request)[0]

    def place(self, method: str, request: message.Message | None) -> tuple[tuple[str, ...], bool]:
        """(keys_for(...), whether the call names an id or alias whose key is not known)."""
        router = self.router
        if router is None:
            return (), False
        keys = router.values_of(method, request)
        if keys is None or request is None:  # None: a key path not read (counted, logged): as without a key
            return router.key_space(keys or ()), False
        plan = self.plan(method)
        if plan.aliases_in and self.aliases is not None:
            named = self.aliases.keys(method, request)
            if named is None:
                return (), True
            keys += named
        keys = self._in_primary_space(keys)
        if plan.request and self.ids is not None:
            fields = self.ids.fields
            for found in fields.find(method, "request", [request], None):
                kinds = [k for k in found.every_kind if fields.kinds[k].owner_key]
                if not kinds:
                    continue
                # the client's own id, or one it kept from another mode whose owner the pair holds
                owner = next(
                    (
                        o
                        for k in kinds
                        if (o := self.ids.owner_for(self.client_side, k, found.value)) is not None
                    ),
                    None,
                )
                if owner is None:
                    self.counters.inc("ids_owner_unknown", method)
                    return (), True
                if owner:
                    keys.extend(owner.split(OWNERS))
        # one key space, whichever field a key came from (hashed alike when any of them is redacted)
        return router.key_space(keys), False

    def _in_primary_space(self, keys: list[str]) -> list[str]:
        """Keys as the primary names them: an id the client kept from another mode is the primary's own (as
        the owners of the ids a call names are), so one account is one key however the client names it."""
        ids = self.ids
        return keys if ids is None else [ids.key_as(self.client_side, key) for key in keys]

    # -- decoding answers -----------------------------------------------------------------------------

    def decode_answers(self, plan: IdPlan, messages: tuple[bytes, ...]) -> list[message.Message]:
        assert self.router is not None
        assert self.router.registry is not None
        cls = self.router.registry.message_class(plan.output_type)
        out = []
        for raw in messages:
            msg = cls()
            try:
                msg.ParseFromString(raw)
            except message.DecodeError:
                continue
            out.append(msg)
        return out

    def minted_in(self, method: str, plan: IdPlan, answers: list[message.Message], first: Any) -> list[Found]:
        """The learnable ids minted in decoded answers."""
        assert self.ids is not None
        found = self.ids.fields.find(method, "response", answers, first)
        return [f for f in found if f.minted and f.kind in plan.learnable]

    def scopes(self, method: str, first: message.Message | None, kinds: Any) -> dict[str, str]:
        assert self.ids is not None
        fields = self.ids.fields
        if first is None:
            return {}
        return {k: fields.scope(method, first, k) for k in kinds if fields.kinds[k].scope == "query"}

    # -- learning -------------------------------------------------------------------------------------

    def learn_aliases(
        self, method: str, answers: list[message.Message], first: message.Message | None
    ) -> None:
        if self.aliases is not None and answers:
            self.aliases.learn(method, answers, first)

    def answering(self, plan: IdPlan, order: int) -> asyncio.Future[None] | None:
        """A call of `order` in the lanes whose whole answer may mint ids (`IdBook.answering`); None when
        its answer mints none, or mints them message by message (a stream: learned as each comes)."""
        if self.ids is None or not plan.mints or plan.streamed or not order:
            return None
        return self.ids.answering(order, plan.learnable)

    def expect(
        self, method: str, found: list[Found], first: message.Message | None, order: int
    ) -> list[Pending]:
        """Ids the primary just minted by a call of `order` in the lanes (`Ticket.order`; 0: not known),
        pending until the shadow's answer pairs them. An id the request
        names was not minted by this call, though its answer holds it where ids are minted: it is left
        out (the call, translating its request, would otherwise wait for a pair only its own answer
        could give)."""
        if self.ids is None or not found:
            return []
        if first is not None:
            named = {
                (kind, f.value)
                for f in self.ids.fields.find(method, "request", [first], None)
                for kind in f.every_kind
            }
            found = [f for f in found if (f.kind, f.value) not in named]
        scopes = self.scopes(method, first, {f.kind for f in found})
        return self.ids.expect(self.client_side, found, scopes, order)

    def pair(self, method: str, plan: IdPlan, pairs: list[tuple[Found, Found]], first: Any) -> None:
        """Learn the pairs of ids minted at the same places of the two sides' answers, (Bank's, BK's)."""
        assert self.ids is not None
        pairs = [p for p in pairs if p[0].kind in plan.learnable]
        if pairs:
            self.ids.learn(pairs, self.scopes(method, first, {p[0].kind for p in pairs}))

    # -- translating ----------------------------------------------------------------------------------

    async def translate(
        self, method: str, payload: bytes, stop: asyncio.Event, first: message.Message | None, order: int
    ) -> Translated:
        """A request with its ids in the shadow's id space, or the ids that stop it. A call of `order` in
        the lanes (`Ticket.order`) waits for the pairs of ids still being minted by calls of a lower one
        alone: a call after it may wait behind it."""
        assert self.ids is not None
        assert self.router is not None
        msg = self.router.decode(method, payload)
        if msg is None:  # undecodable: sent as it is, the answers will tell
            return Translated(payload, [], [])
        fields = self.ids.fields
        found = fields.find(method, "request", [msg], None)
        if not found:
            return Translated(payload, [], [])
        scopes = self.scopes(method, msg, {k for f in found for k in f.every_kind})
        mapping: dict[tuple[tuple[str, ...], str], str | Ambiguous | None] = {}
        for f in found:
            if (f.every_kind, f.value) not in mapping:
                mapping[(f.every_kind, f.value)] = await self._counterpart(method, f, stop, scopes, order)
        ambiguous = [a for a in mapping.values() if isinstance(a, Ambiguous)]

        def rewritten(f: Found) -> str | None:
            new = mapping.get((f.every_kind, f.value))
            return new if isinstance(new, str) else None

        left = fields.rewrite(method, "request", [msg], rewritten)
        if left:
            self.counters.inc("ids_unmapped", method)
            return Translated(
                payload,
                [f for f in left if not isinstance(mapping.get((f.every_kind, f.value)), Ambiguous)],
                ambiguous,
            )
        self.counters.inc("ids_translated", method)
        return Translated(msg.SerializeToString(), [], [])

    async def _counterpart(
        self, method: str, found: Found, stop: asyncio.Event, scopes: dict[str, str], order: int
    ) -> str | Ambiguous | None:
        assert self.ids is not None
        ids = self.ids
        value, kinds = found.value, found.every_kind
        known: list[tuple[str, str]] = []
        for kind in kinds:  # the client speaks the primary's ids: the pair of the primary's id wins
            counterpart = await ids.counterpart(
                self.client_side, kind, value, stop, scopes.get(kind, ""), order
            )
            if counterpart is not None:
                known.append((kind, counterpart))
        if not known:  # the shadow's own id alone (a client keeps ids from another mode) ...
            shadows = [
                k for k in kinds if ids.remembered(self.shadow_side, k, value, scopes.get(k, "")) is not None
            ]
            if shadows and not await self._minted(value, kinds, scopes):  # ... unless the primary minted it
                known = [(kind, value) for kind in shadows]
        if len({c for _, c in known}) > 1:
            self.counters.inc("ids_ambiguous", method)
            return Ambiguous(value, tuple(known))
        if known:
            return known[0][1]
        if any(ids.fields.kinds[k].scope == "query" for k in kinds):
            return None  # a page token means nothing to the other side
        if await self._minted(value, kinds, scopes):
            return None  # minted by the primary's side, with no counterpart: not sent
        self.counters.inc("ids_unknown", method)
        return found.value  # never minted through the shim: sent as it is, both sides should refuse it alike

    async def _minted(self, value: str, kinds: tuple[str, ...], scopes: dict[str, str]) -> bool:
        """Whether the primary's side minted `value` as an id of one of `kinds`."""
        assert self.ids is not None
        return any([await self.ids.minted(self.client_side, k, value, scopes.get(k, "")) for k in kinds])

    def to_primary(self, method: str, payload: bytes) -> bytes:
        """A request for the primary, with the ids known to be the shadow's alone replaced by the primary's.

        Clients keep the ids they got in another mode (Bank's ids after BK became primary, and the
        other way round); each id the id map holds in memory goes to each side in that side's own
        id space. Where the id spaces overlap (both sides mint "M2"), a value the primary's side knows
        as its own (paired, pending or minted without a pair) is the primary's id: it is left as the
        client sent it. Ids not known stay as they are. Never waits: not for the shadow, not for the
        store. Never fails the call: when translating fails (a counterpart the field cannot hold: a text
        id for an integer field), the request goes as the client sent it, as with an id the map does not
        know, counted in `id_translation_errors` (and logged once per method).
        """
        if self.ids is None or self.router is None or not self.plan(method).request:
            return payload
        try:
            return self._to_primary(method, payload)
        except Exception as exc:  # the client's call goes on, with the primary's answer to what it sent
            self.counters.inc("id_translation_errors", method)
            if method not in self._failed_for_primary:
                self._failed_for_primary.add(method)
                # with redaction, the exception's type alone: its message may quote an id of a redacted field
                said = raised(exc, redacting=True) if self.router.redacting else {"error": repr(exc)}
                _log.warning(_UNTRANSLATED, method=method, **said)
            return payload

    def _to_primary(self, method: str, payload: bytes) -> bytes:
        assert self.ids is not None
        assert self.router is not None
        msg = self.router.decode(method, payload)
        if msg is None:
            return payload
        ids = self.ids
        found = ids.fields.find(method, "request", [msg], None)
        if not found:
            return payload
        scopes = self.scopes(method, msg, {k for f in found for k in f.every_kind})

        def remembered(f: Found) -> str | None:
            if any(ids.held(self.client_side, k, f.value, scopes.get(k, "")) for k in f.every_kind):
                return None  # the primary's own id: what the client meant
            known = resolve(f, lambda k, v: ids.remembered(self.shadow_side, k, v, scopes.get(k, "")))
            return known if isinstance(known, str) else None

        mapping = {(f.every_kind, f.value): remembered(f) for f in found}
        if not any(mapping.values()):
            return payload
        ids.fields.rewrite(method, "request", [msg], lambda f: mapping.get((f.every_kind, f.value)))
        self.counters.inc("ids_translated_for_primary", method)
        return msg.SerializeToString()

    # -- comparing ------------------------------------------------------------------------------------

    async def known_pairs(
        self,
        method: str,
        bank: tuple[Outcome, list[message.Message]],
        bk: tuple[Outcome, list[message.Message]],
        first: message.Message | None,
    ) -> tuple[tuple[str, str, str], ...]:
        """(kind, Bank id, BK id) of the ids in either side's answer (and its rich error details), and in the
        request, whose pair is known, for the comparison: BK's are read as the Bank ids they pair with
        (a refusal naming each side's own id, "hold 'H1' already released" against BK's, is the same
        refusal), and where the id spaces overlap, the pair of a Bank id tells that BK's own id of the same
        text is not that id."""
        ids = self.ids
        assert ids is not None
        await ids.checked()  # pairs just learned that the store pairs otherwise are conflicts, not pairs
        found = {side: self._ids_in(method, *answer, first) for side, answer in (("bk", bk), ("bank", bank))}
        asked = ids.fields.find(method, "request", [first], None) if first is not None else []
        if not any(found.values()) and not asked:
            return ()
        every = [*asked, *found["bk"], *found["bank"]]
        scopes = self.scopes(method, first, {k for f in every for k in f.every_kind})
        pairs: dict[tuple[str, str, str], None] = {}
        side = self.client_side  # the request is in the client's ids; the shadow was sent its own
        for f in asked:
            for kind in f.every_kind:
                other_id = ids.remembered(side, kind, f.value, scopes.get(kind, ""))
                if other_id is not None:
                    pairs[(kind, other_id, f.value) if side == "bk" else (kind, f.value, other_id)] = None
        for side, in_answer in found.items():
            for f in in_answer:
                for kind in f.every_kind:
                    other_id = await ids.counterpart(side, kind, f.value, None, scopes.get(kind, ""))
                    if other_id is not None:
                        pairs[(kind, other_id, f.value) if side == "bk" else (kind, f.value, other_id)] = None
        return tuple(pairs)

    def _ids_in(
        self, method: str, outcome: Outcome, answers: list[message.Message], first: message.Message | None
    ) -> list[Found]:
        """The ids in one side's decoded answers and in its rich error details."""
        assert self.ids is not None
        found = self.ids.fields.find(method, "response", answers, first) if answers else []
        status = self._status(outcome)
        if status is not None:
            found += self.ids.fields.find(method, "", [status], None)
        return found

    def _status(self, outcome: Outcome) -> message.Message | None:
        """The google.rpc.Status of an outcome's rich error details, decoded (None without)."""
        raw = outcome.trailer(STATUS_DETAILS_KEY)
        if raw is None or self.router is None or self.router.registry is None:
            return None
        try:
            status = self.router.registry.message_class(_RPC_STATUS)()
            status.ParseFromString(raw.encode() if isinstance(raw, str) else raw)
        except (KeyError, message.DecodeError):
            return None
        return status
