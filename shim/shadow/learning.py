"""The ids a mirrored call mints and names (`[ids.KIND]`) and the key aliases in its answers.

The ids the primary minted wait (`shim.ids.Pending`) until the shadow's answer pairs them, so that a
later call naming one is translated; for a streamed answer, message by message. Ids a request names
with no known counterpart (`unmapped`) or with several (`ambiguous`) stop the mirrored call. A list the
rules let BK answer in another order (`keyed`, `multiset`) pairs its ids as its rule pairs its elements.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf import message

from comparators import Outcome
from comparators.ids import OWNERS, Ambiguous, Found, Known, astray, pair_answers, pair_up, resolve
from comparators.rules import RuleSet
from shim._translation import Translation
from shim.ids import Pending
from shim.plan import IdPlan, MethodPlan
from shim.shadow.places import Places


class Learning:
    __slots__ = (
        "_expect_done",
        "_expected",
        "_minted",
        "_pending_at",
        "_places",
        "_rules",
        "_shadow_minted",
        "_unsure",
        "ambiguous",
        "answers",
        "astray",
        "method",
        "plan",
        "translation",
        "unmapped",
    )

    def __init__(
        self,
        translation: Translation,
        plan: MethodPlan,
        places: Places,
        rules: Callable[[], RuleSet] | None = None,
    ) -> None:
        self.translation = translation
        self._rules = rules  # the comparison rules in force: how a list that mints ids pairs
        self._places = places  # the call's places in the lanes: the order of the ids it mints
        self.method = plan.method
        self.plan = plan.ids
        self._expected: list[Pending] = []  # ids the primary minted, until the shadow's answer pairs them
        self._expect_done = False
        # per answer message: the ids the primary minted there, and the message decoded
        self._minted: dict[int, tuple[list[Found], list[message.Message]]] = {}
        self._shadow_minted: dict[int, tuple[list[Found], list[message.Message]]] = {}  # ... the shadow's
        self._pending_at: dict[
            int, list[Pending]
        ] = {}  # per answer message: the ids it minted, still pending
        # pairs of elements a list rule cannot tell apart: (kind, Bank id, BK id), to read this answer alone
        self._unsure: list[tuple[str, str, str]] = []
        self.unmapped: list[Found] = []
        self.ambiguous: list[Ambiguous] = []
        self.answers: dict[int, list[message.Message]] = {}  # decoded answers, by id() of their Outcome
        # the two streams stopped facing each other message for message (`comparators.ids.astray`): no id
        # of a later message is paired
        self.astray = False

    @property
    def stopped(self) -> bool:
        """The request names an id the shadow has no single counterpart for."""
        return bool(self.unmapped or self.ambiguous)

    def minted_keys(self) -> tuple[str, ...]:
        """The keys of what the primary's answer minted: the owners of its minted ids (`owner_key`)."""
        owners = [key for pending in self._expected if pending.owner for key in pending.owner.split(OWNERS)]
        router = self.translation.router  # in the one key space (hashed alike when a key field is redacted)
        return router.key_space(owners) if router is not None else tuple(dict.fromkeys(owners))

    def settle(self) -> None:
        """Whatever the primary minted and the shadow did not pair is no longer waited for."""
        if self.translation.ids is not None:
            self.translation.ids.settle(self._expected)

    def expect(self, primary: Outcome, first: message.Message | None, over: bool) -> None:
        """Register the ids the primary minted, and learn the aliases in its answer (once: when the primary
        answered, or when the mirror gets to learning first, its shadow having answered first)."""
        if self._expect_done:
            return
        self._expect_done = True
        translation = self.translation
        plan = self.plan
        answers = self.decoded(plan, primary)
        translation.learn_aliases(self.method, answers, first)
        if plan.mints and translation.ids is not None:
            found = translation.minted_in(self.method, plan, answers, first)
            self._expected += translation.expect(self.method, found, first, self._places.order)
            if over:  # nothing will pair them now
                translation.ids.settle(self._expected)

    def primary_minted(self, index: int, payload: bytes, first: message.Message | None, over: bool) -> None:
        """One answer message of the primary's stream: its aliases learned, its minted ids pending."""
        translation = self.translation
        plan = self.plan
        answers = translation.decode_answers(plan, (payload,))
        translation.learn_aliases(self.method, answers, first)
        if not plan.mints or translation.ids is None:
            return
        found = translation.minted_in(self.method, plan, answers, first)
        self._minted[index] = (found, answers)
        pendings = translation.expect(self.method, found, first, self._places.order)
        self._expected += pendings
        self._pending_at[index] = pendings
        if over:
            translation.ids.settle(pendings)
        elif index in self._shadow_minted:
            del self._minted[index]
            self._pair(index, (found, answers), self._shadow_minted.pop(index), first)

    def shadow_message(self, index: int, payload: bytes, first: message.Message | None) -> None:
        """One answer message of the shadow's stream: pairs with the primary's message at the same place."""
        translation = self.translation
        plan = self.plan
        if not plan.mints or translation.ids is None:
            return
        answers = translation.decode_answers(plan, (payload,))
        found = translation.minted_in(self.method, plan, answers, first)
        if index in self._minted:
            self._pair(index, self._minted.pop(index), (found, answers), first)
        else:
            self._shadow_minted[index] = (found, answers)

    def _pair(
        self,
        index: int,
        primary: tuple[list[Found], list[message.Message]],
        shadow: tuple[list[Found], list[message.Message]],
        first: message.Message | None,
    ) -> None:
        """The ids of one message of each stream (each with the message they were found in), at the same
        place in both, paired: unless these two messages hold ids in other places (one side sent a message
        the other did not), from which on nothing of this call is paired. What the primary's message minted
        and the shadow's did not pair is settled then: nothing will pair it, and a call naming it (in
        another session, say) is stopped as unmapped at once rather than wait, holding its place, for this
        stream to end."""
        translation = self.translation
        bank, bk = (primary[0], shadow[0]) if translation.primary_is_bank else (shadow[0], primary[0])
        if not self.astray and astray(bank, bk, self._known(first)) is not None:
            self.astray = True
            translation.counters.inc("ids_unpaired_streams_astray", self.method)
        if not self.astray:
            self._pair_up(primary, shadow, first)
        if translation.ids is not None:
            translation.ids.settle(self._pending_at.pop(index, ()))

    def _known(self, first: message.Message | None) -> Known:
        """Whether an id of a side's answers has a pair in memory already (`comparators.ids.astray`)."""
        translation = self.translation
        ids = translation.ids
        assert ids is not None
        scopes = translation.scopes(self.method, first, self.plan.learnable)

        def known(found: Found, side: str) -> bool:
            pair = resolve(found, lambda kind, value: ids.remembered(side, kind, value, scopes.get(kind, "")))
            return isinstance(pair, str)

        return known

    def decoded(self, plan: IdPlan, outcome: Outcome) -> list[message.Message]:
        """One side's answers to this call, decoded once."""
        found = self.answers.get(id(outcome))
        if found is None:
            found = self.answers[id(outcome)] = self.translation.decode_answers(plan, outcome.messages)
        return found

    def learn(self, primary: Outcome, shadow: Outcome, first: message.Message | None) -> None:
        """Learn the pairs of the ids this call minted, from the two whole answers."""
        translation = self.translation
        plan = self.plan
        if not plan.mints or shadow.local or primary.code != 0 or shadow.code != 0 or self.unmapped:
            return
        primary_answers, shadow_answers = self.decoded(plan, primary), self.decoded(plan, shadow)
        primary_found = translation.minted_in(self.method, plan, primary_answers, first)
        shadow_found = translation.minted_in(self.method, plan, shadow_answers, first)
        self._pair_up(
            (primary_found, primary_answers), (shadow_found, shadow_answers), first
        )  # `pair_up` stops where astray

    def _pair_up(
        self,
        primary: tuple[list[Found], list[message.Message]],
        shadow: tuple[list[Found], list[message.Message]],
        first: message.Message | None,
    ) -> None:
        """Learn the pairs of the ids the two sides minted (each with the answers they were found in): a list
        the rules let BK answer in another order pairs as its rule pairs its elements
        (`comparators.ids.pair_answers`); the pairs of elements it cannot tell apart are kept for this
        call's comparison alone."""
        translation = self.translation
        ids, router = translation.ids, translation.router
        assert ids is not None
        (bank, in_bank), (bk, in_bk) = (primary, shadow) if translation.primary_is_bank else (shadow, primary)
        registry = router.registry if router is not None else None
        known = self._known(first)
        if registry is None or self._rules is None or not bank or not bk:
            translation.pair(self.method, self.plan, pair_up(bank, bk, known=known), first)
            return

        def read_as_bank(found: Found) -> str | None:  # BK's references, through the pairs in memory
            known = resolve(found, lambda kind, value: ids.remembered("bk", kind, value))
            return known if isinstance(known, str) else None

        rules = self._rules()
        told, unsure = pair_answers(
            ids.fields, registry, rules, self.method, (in_bank, in_bk), (bank, bk), read_as_bank, known
        )
        translation.pair(self.method, self.plan, told, first)
        self._unsure += [(a.kind, a.value, b.value) for a, b in unsure if a.kind in self.plan.learnable]

    async def pairs(
        self, primary: Outcome, shadow: Outcome, primary_is_bank: bool, first: message.Message | None
    ) -> tuple[tuple[str, str, str], ...]:
        """The pairs of the ids in the two answers, for the comparison: those known, and those of elements of
        a list its rule could not tell apart (paired as the comparison pairs them, never learned)."""
        if shadow.local:
            return ()
        bank, bk = (primary, shadow) if primary_is_bank else (shadow, primary)
        plan = self.plan

        def answer(outcome: Outcome) -> tuple[Outcome, list[message.Message]]:
            return outcome, self.decoded(plan, outcome) if plan.response else []

        known = await self.translation.known_pairs(self.method, answer(bank), answer(bk), first)
        if not self._unsure:
            return known
        taken = {(kind, "bank", bank_id) for kind, bank_id, _ in known}
        taken |= {(kind, "bk", bk_id) for kind, _, bk_id in known}
        unsure = tuple(
            (kind, bank_id, bk_id)
            for kind, bank_id, bk_id in dict.fromkeys(self._unsure)
            if (kind, "bank", bank_id) not in taken and (kind, "bk", bk_id) not in taken
        )
        return known + unsure

    def stopped_by(self, unmapped: list[Found], ambiguous: list[Ambiguous]) -> None:
        self.unmapped, self.ambiguous = unmapped, ambiguous

    def note(self) -> str:
        return _unmapped_note(self.unmapped, self.ambiguous)

    def for_exchange(self) -> tuple[tuple[str, str, str], ...]:
        """The ids that stopped the call, as the exchange records them: (kind, where, value)."""
        return tuple((f.kind, where(f), f.value) for f in self.unmapped) + tuple(
            ("|".join(kind for kind, _ in a.counterparts), "request", a.value) for a in self.ambiguous
        )


def where(found: Found) -> str:
    index, *rest = found.path
    text = "request" if index == 0 else f"request[{index}]"
    for part in rest:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _unmapped_note(unmapped: list[Found], ambiguous: list[Ambiguous] | None = None) -> str:
    parts = []
    if unmapped:
        named = ", ".join(f"{f.kind} {f.value!r} ({where(f)})" for f in unmapped[:3])
        more = f" and {len(unmapped) - 3} more" if len(unmapped) > 3 else ""
        parts.append(
            f"the request names {named}{more}, with no known counterpart on the shadow (unmapped-id)"
        )
    if ambiguous:
        parts.append("the request names " + "; ".join(str(a) for a in ambiguous[:3]) + " (ambiguous id)")
    return "; ".join(parts)
