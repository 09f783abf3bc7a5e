"""[ids.KIND]: the ids each side mints and where requests name them (`shim.ids` keeps their pairs)."""

from __future__ import annotations

from typing import Any

from comparators.ids import IdError, IdKind
from shim.errors import ConfigError
from shim.settings import FIELDS, TEXT, as_table, finish

_OPTIONAL = ("references", "owner_key", "learn_from", "scope")


def parse(table: dict[str, Any]) -> tuple[IdKind, ...]:
    """The [ids.KIND] tables: minted, references, owner_key, learn_from, scope (shim.config reads them)."""
    kinds = []
    for name, entry in table.items():
        prefix = f"ids.{name}."
        settings = as_table(prefix.rstrip("."), entry)
        minted = settings.pop("minted", None)
        if minted is None:
            raise ConfigError(f"{prefix}minted is missing: name the answer fields that mint {name} ids")
        given = {k: settings.pop(k) for k in _OPTIONAL if k in settings}
        finish(prefix, settings, ("minted", *_OPTIONAL))
        parsers = {"references": FIELDS, "owner_key": FIELDS, "learn_from": TEXT, "scope": TEXT}
        try:
            kinds.append(
                IdKind(
                    name=name,
                    minted=FIELDS.parse(prefix + "minted", minted),
                    **{k: parsers[k].parse(prefix + k, v) for k, v in given.items()},
                )
            )
        except IdError as exc:
            raise ConfigError(str(exc)) from exc
    return tuple(kinds)
