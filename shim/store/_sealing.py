"""Ids of redacted fields as the store keeps them: sealed, so that no such id is stored as it was.

An id kind any of whose fields (minted, references or owner keys) is redacted is *sealed*: its pairs'
Bank and BK ids, their owner, and its unpaired ids are stored encrypted with AES-SIV, under a key derived
with HKDF-SHA256 from the redaction key (`[redact] key_env`), the kind as associated data. AES-SIV is
deterministic: one id always seals to the same text, so the store still finds a pair by either of its
ids with SQL equality, and the shim opens what it reads back. A sealed value is `sealed:` and the
ciphertext in unpadded base64url. A value sealed under another key does not open (`Unopened`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shim.store._errors import StoreError

if TYPE_CHECKING:
    from shim.store.backends import Db
    from shim.store.engine import Engine

PREFIX = "sealed:"
_INFO = b"shim: the stored ids of redacted fields"


class Unopened(StoreError):
    """A sealed value that does not open under this key (sealed under another, or damaged)."""


class Sealer:
    """Seals and opens the stored ids of `kinds` under a key derived from the redaction key `key`; `hash`
    gives what a log line or `shim ids` shows of one (the redaction's hash of the id)."""

    def __init__(self, key: bytes, kinds: Collection[str], hash: Callable[[str], str]) -> None:
        derived = HKDF(algorithm=SHA256(), length=64, salt=None, info=_INFO).derive(key)
        self._siv = AESSIV(derived)  # AES-256-SIV: two keys of 256 bits
        self.kinds = frozenset(kinds)
        self.hash = hash

    def seal(self, kind: str, value: str) -> str:
        """`value` as the store keeps it (as it is for a kind not sealed, and "" as ""): equal values, equal
        text."""
        if kind not in self.kinds or not value:
            return value
        sealed = self._siv.encrypt(value.encode("utf-8", "surrogatepass"), [kind.encode()])
        return PREFIX + base64.urlsafe_b64encode(sealed).decode("ascii").rstrip("=")

    def seal_once(self, kind: str, value: str) -> str:
        """`value` sealed, unless sealed already (a row an older shim stored as it was, being sealed)."""
        return value if sealed(value) else self.seal(kind, value)

    def open(self, kind: str, stored: str) -> str:
        """A value as the store keeps it, opened (an Unopened error when it does not open)."""
        if kind not in self.kinds or not stored.startswith(PREFIX):
            return stored
        text = stored[len(PREFIX) :]
        try:
            sealed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            return self._siv.decrypt(sealed, [kind.encode()]).decode("utf-8", "surrogatepass")
        except (InvalidTag, binascii.Error, ValueError):
            raise Unopened(f"a stored {kind} id does not open under this redaction key") from None

    def shown(self, kind: str, value: str) -> str:
        """An id (as it was) as a log line shows it: its hash when its kind is sealed."""
        return self.hash(value) if kind in self.kinds and value else value


def sealed(value: str) -> bool:
    """Whether a stored value is a sealed one."""
    return value.startswith(PREFIX)


class SealedRows:
    """What a repository keeping values sealed shares: the sealer it was given (`seal_with`; none: values
    are stored as they are), how many rows it read that did not open (sealed under another key), and the
    sealing of the rows an older shim stored as they were (`seal_stored`, each repository's `_seal_rows`)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.sealer: Sealer | None = None
        self.unopened = 0

    async def seal_stored(self) -> int:
        """The rows of the sealed kinds stored as they were (by a shim that did not seal them), sealed in
        place, in one transaction: how many."""
        sealer = self.sealer
        if sealer is None or not sealer.kinds:
            return 0

        def work(db: Db) -> int:
            return sum(self._seal_rows(db, kind, sealer.seal_once) for kind in sorted(sealer.kinds))

        return await self._engine.transaction(work, write=True)

    def _seal_rows(self, db: Db, kind: str, seal: Callable[[str, str], str]) -> int:
        raise NotImplementedError

    def seal_with(self, sealer: Sealer | None) -> None:
        """Store the values of `sealer.kinds` sealed, and open them as they are read."""
        self.sealer = sealer

    def _seal(self, kind: str, value: str) -> str:
        return self.sealer.seal(kind, value) if self.sealer is not None else value

    def _open(self, kind: str, value: str) -> str:
        return self.sealer.open(kind, value) if self.sealer is not None else value
