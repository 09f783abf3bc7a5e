"""Identifiers each side mints on its own, and where they sit in the messages.

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
again by a method path is one location there: its id is found once (`comparators._id_places` says which
overlaps are refused).

`IdFields` finds, and rewrites, the ids in decoded messages. It is pure: the
map of pairs lives in the shim; a comparison receives the pairs it needs with
its exchange. It is built in layers, one module each: the kinds and an id as
found (`_id_kinds`), the places checked against the descriptors (`_id_places`),
the walk over messages (`_id_walk`), and here what the shim asks of them; the
pairs between two answers are in `_id_pairs`, which element of a list a rule lets
BK answer in another order faces which in `_id_lists`. Import them all from here.
"""

from __future__ import annotations

import hashlib

from google.protobuf import message

from comparators._id_kinds import OWNERS, Ambiguous, Found, IdError, IdKind, resolve
from comparators._id_lists import Moved, Moves, list_moves
from comparators._id_pairs import (
    Known,
    astray,
    ids_in,
    pair_answers,
    pair_up,
    read_as_bank,
    read_ids,
    text_reads_as,
    translate_answer,
)
from comparators._id_walk import Walk
from comparators.message_api import copy_from, serialize

__all__ = [
    "OWNERS",
    "Ambiguous",
    "Found",
    "IdError",
    "IdFields",
    "IdKind",
    "Known",
    "Moved",
    "Moves",
    "astray",
    "ids_in",
    "list_moves",
    "pair_answers",
    "pair_up",
    "read_as_bank",
    "read_ids",
    "resolve",
    "text_reads_as",
    "translate_answer",
]


class IdFields(Walk):
    """The id locations of some kinds, checked against the descriptors (`Places`), and what the shim asks
    of them: whether a method's messages hold ids, and the ids in its messages, found or rewritten."""

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
