"""`shim reconcile`: read the whole book from both sides; report every key that differs or went unread.

The step before the point of no return. The config's `[reconcile]` table names
a listing read that pages through every key (e.g. every account), and the reads
that show one key's state (e.g. its balance and positions):

    [reconcile]
    list = "pay.v1.Payments/ListAccounts"  # a read listing every key, page by page
    items = "accounts"                     # the answer's repeated field of items
    key = "account_id"                     # the item's field holding the key (none: items are keys)
    page_size = "page_size"                # request field for the page size (optional)
    page_token = "page_token"              # request field for the next page's token (optional)
    next_page_token = "next_page_token"    # answer field of that token (with page_token)
    reads = [                              # each asked of both sides for every key
      { method = "pay.v1.Payments/GetBalance", key = "account_id" },
      { method = "pay.v1.Payments/ListHolds", key = "account_id" },
    ]

Each side is listed with its own page tokens; a listing whose paging is not
named is refused rather than read half (a full page, or an answer with a field
like a next page's token: see docs/reconcile.md). A key only one side lists is a
difference; every read is asked of Bank and of BK (through the adapters when
BK speaks its own interface) and the two answers are compared with the
config's rules and id map, exactly as mirrored calls are. Each key is read as
the account it names on its side (`shim.reconcile_keys`): where the id spaces
overlap, a key BK lists that the map pairs with no Bank id is BK's alone,
never taken for Bank's account of the same text. Keys out of step (see `shim
resync`) are reported as such: their difference is already known.
A key whose state a read did not show (an error on Bank, a failed or late call,
answers that could not be compared, a key the read's key field cannot take) is
unreadable: reported, never agreeing.
The table is parsed and checked in `shim.reconcile_settings`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from google.protobuf import message
from grpc import aio

import comparators
from comparators import Code, DescriptorRegistry, Difference, DiffKind, Exchange, Outcome, Verdict, compare
from comparators.message_api import copy_from, serialize
from comparators.redact import Redactor
from comparators.rules import RuleSet
from shim._outcome import snapshot
from shim.adapters import Channel
from shim.errors import ShimError
from shim.ids import IdBook
from shim.reconcile_keys import Keys, Target, set_key
from shim.reconcile_settings import KEY_SOURCES, Read, ReconcileSettings, check, parse
from shim.store.records import NO_KEY, OutOfStep

CONCURRENCY = 8  # keys read at once
EMPTY_PAGES = 100  # empty pages in a row, each with a new token, after which a listing is taken to be endless
_ENDLESS = "the listing would never end"
# no state read: the call did not get through
_UNREADABLE = frozenset({Code.CANCELLED, Code.DEADLINE_EXCEEDED, Code.INTERNAL, Code.UNAVAILABLE})
# verdicts that compared the two answers: any other (skipped, error) shows nothing of the key
_COMPARED = frozenset({Verdict.MATCH, Verdict.MISMATCH, Verdict.SHADOW_ERROR})


def _side(side: str) -> str:
    return "BK" if side == "bk" else "Bank"


# -- the sweep ------------------------------------------------------------------------------------


@dataclass
class KeyResult:
    key: str
    differences: list[tuple[str, Difference]] = field(default_factory=list)  # (method, difference)
    out_of_step: str = ""  # why, when the key is known to be out of step
    marked_by: str = ""  # the replica that marked it out of step, when the mark names one
    unreadable: str = ""  # why a side's state could not be read (its read failed or timed out), "" if read
    side: str = "bank"  # "bk": the key is BK's id, of an account no Bank id pairs with (`Target.bk_only`)


@dataclass
class Result:
    keys: int
    reads: int
    differing: list[KeyResult]  # keys with differences
    seconds: float
    unreadable: list[KeyResult] = field(
        default_factory=list
    )  # keys not shown to agree: a read or compare failed

    @property
    def agree(self) -> bool:
        """Both sides shown to agree on every key: none differs, none went unread."""
        return not self.differing and not self.unreadable


class Sweep:
    def __init__(
        self,
        settings: ReconcileSettings,
        registry: DescriptorRegistry,
        rules: RuleSet,
        bank: Channel,
        bk: Channel,
        ids: IdBook | None = None,
        marks: Sequence[OutOfStep] = (),
        timeout: float = 30.0,
        redactor: Redactor | None = None,
    ) -> None:
        self.settings = settings
        self.redactor = redactor  # the shim's checks: redacted fields differ as hashes, as in comparisons
        self.registry = registry
        self.rules = rules
        self.sides = {"bank": bank, "bk": bk}
        self.ids = ids
        self.names = Keys(ids)
        # the keys out of step, as the store has them (an older shim's mark on every key, and the mark of
        # the writes with no key, name none)
        self.marks = [mark for mark in marks if mark.key not in ("*", NO_KEY)]
        self.timeout = timeout

    async def keys(self, side: str) -> list[Target]:
        """Every key the side lists, following its own page tokens."""
        s = self.settings
        info = self.registry.method("/" + s.list)
        assert info is not None
        request_class = self.registry.message_class(info.input_type)
        answer_class = self.registry.message_class(info.output_type)
        found: list[Target] = []
        token = ""
        seen: set[object] = set()  # the page tokens followed: one that comes back would loop forever
        empty = 0  # empty pages in a row that gave a token
        while True:
            request = request_class()
            if s.page_size:
                setattr(request, s.page_size, s.size)
            if s.page_token and token:
                setattr(request, s.page_token, token)
            outcome = await self._ask(side, "/" + s.list, serialize(request))
            if outcome.code != 0 or not outcome.messages:
                raise ReconcileError(
                    f"listing {s.list} on {_side(side)} failed: "
                    f"{outcome.status} {outcome.details or outcome.local}"
                )
            answer = answer_class.FromString(outcome.messages[0])
            listed = [str(getattr(item, s.key) if s.key else item) for item in getattr(answer, s.items)]
            if s.page_size and not s.page_token and len(listed) >= s.size:  # more may be behind it
                raise ReconcileError(
                    f"listing {s.list} on {_side(side)}: a full page ({len(listed)} keys, reconcile.size) "
                    "and no reconcile.page_token: the keys after it would go unread; name page_token and "
                    "next_page_token, or raise reconcile.size above the number of keys"
                )
            if side == "bk":  # BK's ids: the accounts they name
                found += await self._as_bank_keys(info.path, answer, listed)
            else:
                found += map(Target, listed)
            token = getattr(answer, s.next_page_token) if s.next_page_token else ""
            if not token:
                return found
            empty = 0 if listed else empty + 1
            never = f"listing {s.list} on {_side(side)}: "
            if token in seen:
                raise ReconcileError(f"{never}the page token {token!r} came back a second time: {_ENDLESS}")
            if empty >= EMPTY_PAGES:
                raise ReconcileError(
                    f"{never}{empty} empty pages in a row, each with a new page token: {_ENDLESS}"
                )
            seen.add(token)

    async def _as_bank_keys(self, method: str, answer: message.Message, listed: list[str]) -> list[Target]:
        """BK's listed keys as the accounts they name: the Bank id the map pairs each with, or BK's alone
        (`Keys.of_bk`; keys both sides spell alike are kept)."""
        if self.ids is None:
            return [Target(key) for key in listed]
        kinds: dict[int, tuple[str, ...]] = {}
        for found in self.ids.fields.find(method, "response", [answer], None):
            path = found.path
            key = self.settings.key  # the item's field, or none: the item itself
            if path[1:2] == (self.settings.items,) and (path[3:] == (key,) if key else len(path) == 3):
                kinds[int(path[2])] = found.every_kind
        return [await self.names.of_bk(key, kinds.get(index, ())) for index, key in enumerate(listed)]

    async def _for_bk(self, method: str, request: message.Message) -> bytes:
        """A read for BK: the Bank ids it names replaced by BK's, where the id map pairs them."""
        if self.ids is None:
            return serialize(request)
        fields = self.ids.fields
        found = fields.find(method, "request", [request], None)
        if not found:
            return serialize(request)
        mapping: dict[str, str] = {}
        for f in found:
            for kind in f.every_kind:
                other = await self.ids.counterpart("bank", kind, f.value)
                if other is not None:
                    mapping[f.value] = other
                    break
        copy = type(request)()
        copy_from(copy, request)
        fields.rewrite(method, "request", [copy], lambda f: mapping.get(f.value))
        return serialize(copy)

    async def _ask(self, side: str, method: str, payload: bytes) -> Outcome:
        started = time.perf_counter()
        call = self.sides[side].unary_unary(method)(payload, timeout=self.timeout)
        try:
            answer = await call
        except aio.AioRpcError:
            answer = None
        return await snapshot(call, (answer,) if answer is not None else (), time.perf_counter() - started)

    async def key(self, key: str) -> KeyResult:
        """`key` (Bank's id) read on both sides with every state read, and compared."""
        result = KeyResult(key)
        for read in self.settings.reads:
            info = self.registry.method("/" + read.method)
            assert info is not None
            request = self.registry.message_class(info.input_type)()
            try:  # a key the read's request cannot hold (a text for an integer field) shows nothing
                set_key(request, read.key, key)
            except (TypeError, ValueError) as exc:
                what = f"{read.method}: {key!r} is not a valid value for field {read.key} ({exc})"
                result.unreadable = result.unreadable or what
                continue
            payload = serialize(request)
            try:
                for_bk = await self._for_bk(info.path, request)
            except (TypeError, ValueError) as exc:
                what = f"{read.method}: BK's id for {key!r} cannot be written in field {read.key} ({exc})"
                result.unreadable = result.unreadable or what
                continue
            bank, bk = await asyncio.gather(
                self._ask("bank", info.path, payload), self._ask("bk", info.path, for_bk)
            )
            exchange = Exchange(
                method=info.path,
                requests=(payload,),
                primary=bank,
                shadow=bk,
                is_write=False,
                routing_key=key,
                started_at=time.time(),
                ids=await self._pairs(info.path, info.output_type, bank, bk),
            )
            fields = self.ids.fields if self.ids else None
            comparison = compare(exchange, self.registry, self.rules, fields, self.redactor)
            said = functools.partial(comparators.hashed_quotes, exchange, self.registry, self.redactor)
            for side, outcome in (("Bank", bank), ("BK", bk)):
                if not result.unreadable and (outcome.local or outcome.code in _UNREADABLE):
                    what = outcome.local or said(f"{outcome.status} {outcome.details}".strip())
                    result.unreadable = f"{read.method} on {side}: {what}"
            if not result.unreadable and bank.code != 0:  # the read does not show this key's state
                what = said(f"{bank.status} {bank.details}".strip())
                result.unreadable = f"{read.method} on Bank: {what} (the read does not show the key's state)"
            if not result.unreadable and comparison.verdict not in _COMPARED:  # skipped, or not made
                what = f"not compared ({comparison.verdict}): {comparison.reason}".rstrip(": ")
                result.unreadable = f"{read.method}: {what}"
            if comparison.verdict is Verdict.SHADOW_ERROR:  # BK gave no usable answer
                failed = Difference("status", DiffKind.STATUS, bank.status, comparison.reason)
                result.differences.append((read.method, failed))
            result.differences += [(read.method, d) for d in comparison.real_differences]
        return result

    async def _pairs(
        self, method: str, output_type: str, bank: Outcome, bk: Outcome
    ) -> tuple[tuple[str, str, str], ...]:
        """(kind, Bank id, BK id) for the ids in either answer that the id map knows: BK's are read as Bank's,
        and where the id spaces overlap, a Bank id's pair tells that BK's own id of its text is another."""
        if self.ids is None:
            return ()
        cls = self.registry.message_class(output_type)
        pairs: dict[tuple[str, str, str], None] = {}
        for side, outcome in (("bk", bk), ("bank", bank)):
            try:
                answers = [cls.FromString(raw) for raw in outcome.messages]
            except message.DecodeError:
                continue
            for found in self.ids.fields.find(method, "response", answers, None):
                other_id = await self.ids.counterpart(side, found.kind, found.value)
                if other_id is not None:
                    pair = (found.value, other_id) if side == "bank" else (other_id, found.value)
                    pairs[(found.kind, *pair)] = None
        return tuple(pairs)

    def _listed_once(self, target: Target, only: str) -> KeyResult:
        """A key one side lists and the other does not."""
        s, key = self.settings, target.key
        path = f"{s.items}[{s.key}={key}]" if s.key else f"{s.items}[{key}]"
        if only == "Bank":
            difference = Difference(path, DiffKind.REMOVED, key, None)
        else:
            difference = Difference(path, DiffKind.ADDED, None, key)
        return KeyResult(key, [(s.list, difference)], side="bk" if target.bk_only else "bank")

    async def as_bank_key(self, key: str) -> str:
        """A key given in either side's ids, in Bank's (`Keys.as_bank_key`)."""
        return await self.names.as_bank_key(key)

    async def read(self, target: Target) -> KeyResult:
        """The account `target` read on both sides; BK's alone cannot be shown to agree with Bank."""
        if target.bk_only:
            why = f"BK's id {target.key!r} pairs with no Bank id: Bank's state of it is not known"
            return KeyResult(target.key, unreadable=why, side="bk")
        return await self.key(target.key)

    async def marked(self, key: str, side: str = "") -> KeyResult:
        """`key`, out of step, read on both sides as the account(s) its mark names (`side`: whose id its mark
        says it is, "" for neither: `Keys.targets`). A key that names two accounts (a mark that says neither,
        on a text both sides have) agrees only when both do; each difference says which was read."""
        targets = await self.names.targets(key, side)
        if len(targets) == 1:
            result = await self.read(targets[0])
            result.key = key
            return result
        result = KeyResult(key)
        for target in targets:
            one, reading = await self.read(target), target.reading(key)
            result.differences += [(f"{method} ({reading})", d) for method, d in one.differences]
            if one.unreadable and not result.unreadable:
                result.unreadable = f"{one.unreadable} ({reading})"
        return result

    async def run(
        self,
        progress: Callable[[int, int], None] | None = None,
        keys: Sequence[str] | None = None,
        marked: bool = False,
    ) -> Result:
        """Read every key on both sides: those the sides list, or `keys` (in either side's ids, from the
        store or a file), read on both sides with no listing, and with `marked` the keys out of step too (as
        the accounts their marks name)."""
        started = time.perf_counter()
        known: dict[Target, OutOfStep] = {}  # the accounts out of step, by the marks that name them
        for mark in self.marks:
            for target in await self.names.targets(mark.key, mark.side):
                known.setdefault(target, mark)
        if keys is None:
            bank_keys, bk_keys = await asyncio.gather(self.keys("bank"), self.keys("bk"))
        else:
            given = [Target(await self.as_bank_key(key)) for key in dict.fromkeys(keys)]
            bank_keys = bk_keys = given + (list(known) if marked else [])
        every = sorted(set(bank_keys) | set(bk_keys))
        if not every:  # a sweep of nothing would say both sides agree
            nothing = (
                f"neither Bank nor BK lists any key ({self.settings.list})" if keys is None else "no key"
            )
            raise ReconcileError(f"{nothing}: a sweep of nothing would say both sides agree")
        results: list[KeyResult] = []
        done = 0
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(target: Target) -> None:
            nonlocal done
            async with gate:
                if target in bank_listed and target in bk_listed:
                    result = await self.read(target)
                else:
                    result = self._listed_once(target, only="Bank" if target in bank_listed else "BK")
                mark = known.get(target)
                if mark is not None:
                    result.out_of_step, result.marked_by = mark.reason, mark.replica
                results.append(result)
                done += 1
                if progress is not None:
                    progress(done, len(every))

        bank_listed, bk_listed = set(bank_keys), set(bk_keys)
        await asyncio.gather(*(one(target) for target in every))
        results.sort(key=lambda r: (r.key, r.side))
        differing = [r for r in results if r.differences]
        unreadable = [r for r in results if r.unreadable]
        seconds = time.perf_counter() - started
        return Result(len(every), len(self.settings.reads), differing, seconds, unreadable)


class ReconcileError(ShimError):
    """A side could not be listed: the sweep cannot say anything."""


__all__ = [
    "KEY_SOURCES",
    "KeyResult",
    "Read",
    "ReconcileError",
    "ReconcileSettings",
    "Result",
    "Sweep",
    "Target",
    "check",
    "parse",
]
