"""Key aliases: other names of a routing key, learned from answers.

A client may address a thing by a natural key of its own rather than by the
routing key: an account looked up by the client's reference for it. Declared
once, the alias orders and taints such calls under the real key:

    [key_aliases.client_ref]
    alias = "custody.v1.Account.client_ref"    # an answer field holding the other name ...
    key = "custody.v1.Account.account_id"      # ... beside the field holding the routing key it names
    references = ["custody.v1.GetAccountByRefRequest.client_ref"]  # request fields addressing by it

Whenever the primary's answer holds a message with both fields set (the
account that OpenAccount created, or any later read of it), the pair is
learned, kept in memory (the `store.id_cache` most recent) and in the store,
so that a restarted shim or another replica knows it too. A call naming an
alias in a `references` field is then on the alias's key, as if it named the
key itself. An alias not (yet) known makes the call unkeyed (`aliases_unknown`).

With redaction on a field of an alias kind, or on any field routing keys come from (keys are then
hashed), the store keeps the kind's aliases and keys sealed, as it keeps the ids of redacted fields
(`shim.store._sealing`).

Locations are written as id locations are (`comparators.ids`): a message
field wherever its message appears, or a method path
(`pkg.Svc/Method:request.a.b`); the same checks apply at start.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from google.protobuf import message

from comparators.descriptors import DescriptorRegistry
from comparators.ids import IdError, IdFields, IdKind
from shim.errors import ConfigError, NeedsDescriptors
from shim.metrics import Counters
from shim.settings import finish
from shim.store import Sealer, Store, StoreError

_log = structlog.get_logger("shim.aliases")


@dataclass(frozen=True, slots=True)
class AliasKind:
    """One `[key_aliases.NAME]` table."""

    name: str
    alias: str  # "pkg.Message.field": where the other name is learned
    key: str  # "pkg.Message.field" beside it: the routing key it stands for
    references: tuple[str, ...]  # request fields that address a key by the alias


def parse(table: Mapping[str, Any]) -> tuple[AliasKind, ...]:
    """The `[key_aliases]` tables (shim.config reads them)."""
    kinds = []
    for name, entry in table.items():
        where = f"key_aliases.{name}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a table")
        known = {"alias", "key", "references"}
        finish(f"{where}.", {key: entry[key] for key in set(entry) - known}, known)
        for setting in ("alias", "key"):
            value = entry.get(setting)
            if not isinstance(value, str) or not value:
                raise ConfigError(f'{where}.{setting}: expected a field, "package.Message.field"')
        references = entry.get("references")
        if isinstance(references, str):
            references = [references]
        if (
            not isinstance(references, list)
            or not references
            or not all(isinstance(r, str) and r for r in references)
        ):
            raise ConfigError(f"{where}.references: expected the request fields that address a key by it")
        kinds.append(AliasKind(name, entry["alias"], entry["key"], tuple(references)))
    return tuple(kinds)


def fields_of(kinds: Sequence[AliasKind], registry: DescriptorRegistry | None) -> IdFields | None:
    """The alias locations, checked against the descriptors (errors name the setting)."""
    if not kinds:
        return None
    if registry is None:
        raise NeedsDescriptors("key_aliases: needs descriptors (--descriptor-set or descriptor_sets)")
    try:
        return IdFields(
            [IdKind(k.name, minted=(k.alias,), references=k.references, owner_key=(k.key,)) for k in kinds],
            registry,
        )
    except IdError as exc:
        text = str(exc).replace("ids.", "key_aliases.", 1)
        text = text.replace(".minted[0]", ".alias").replace(".owner_key[0]", ".key")
        raise ConfigError(text) from exc


class KeyAliases:
    """Aliases learned from answers, and the keys of the calls that name them."""

    def __init__(
        self,
        fields: IdFields,
        store: Store | None,
        counters: Counters,
        cache: int = 1_000_000,
        sealer: Sealer | None = None,
    ):
        """`sealer`: the kinds whose aliases the store keeps sealed (a redacted field, or hashed keys)."""
        self.fields = fields
        self._store = store
        if store is not None:
            store.aliases.seal_with(sealer)
        self._counters = counters
        self._cache = max(cache, 1)
        self._keys: dict[tuple[str, str], str] = {}  # (kind, alias) -> key

    def __len__(self) -> int:
        return len(self._keys)

    async def preload(self) -> None:
        """Fill the memory with the most recently learned aliases of the store."""
        if self._store is None:
            return
        stored = self._store.aliases
        if sealed := await stored.seal_stored():  # stored as they were by a shim that did not seal them
            _log.warning("key aliases of redacted fields stored as they were are sealed", rows=sealed)
        for kind, alias, key in reversed(await stored.recent(self._cache)):
            self._remember(kind, alias, key)
        if stored.unopened:
            _log.warning(
                "key aliases sealed under another redaction key are left out: their keys are unknown",
                aliases=stored.unopened,
            )

    def _remember(self, kind: str, alias: str, key: str) -> None:
        self._keys.pop((kind, alias), None)
        self._keys[(kind, alias)] = key
        while len(self._keys) > self._cache:
            del self._keys[next(iter(self._keys))]

    def learn(self, method: str, answers: Sequence[message.Message], first: message.Message | None) -> None:
        """Learn the aliases in decoded answers: an alias beside its key, both set."""
        rows = []
        now = time.time()
        for found in self.fields.find(method, "response", answers, first):
            if not found.minted or not found.owner:
                continue
            if self._keys.get((found.kind, found.value)) == found.owner:
                continue
            self._remember(found.kind, found.value, found.owner)
            rows.append((found.kind, found.value, found.owner, now))
            self._counters.inc("aliases_learned", found.kind)
        if rows and self._store is not None:
            self._store.aliases.put(rows)

    def keys(self, method: str, request: message.Message) -> list[str] | None:
        """The routing keys named through aliases in a decoded request; None when one is not known."""
        keys: list[str] = []
        for found in self.fields.find(method, "request", [request], None):
            if found.minted:
                continue
            key = next((k for kind in found.every_kind if (k := self._keys.get((kind, found.value)))), None)
            if key is None:
                self._counters.inc("aliases_unknown", method)
                return None
            keys.append(key)
        return keys

    async def lookup(self, kind: str, alias: str) -> str | None:
        """The key of an alias, from memory or the store (for commands; calls use memory only)."""
        key = self._keys.get((kind, alias))
        if key is not None or self._store is None:
            return key
        try:
            key = await self._store.aliases.find(kind, alias)
        except StoreError as exc:
            _log.warning("alias lookup failed", kind=kind, error=str(exc))
            return None
        if key is not None:
            self._remember(kind, alias, key)
        return key
