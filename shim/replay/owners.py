"""--key's calls that name the key only through an id: learned from Bank's recorded answers.

A call naming an id (a cancel naming a trade) is on the key of the id's owner (`owner_key` in
[ids.KIND]), and a call naming a key alias (a client's reference) on the key it stands for. A shim that
mirrors knows those owners when it records and writes them in the call's `keys`; one recording in `bank`
mode with no BK does not, and keys the call by its `key` paths alone. So `--key K` reads the answers as it
goes: an id or alias minted with K among its owners makes every later call naming it one of K's.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import message

from comparators import DescriptorRegistry
from comparators.ids import OWNERS, IdFields
from shim.recording.format import RecordedCall


class KeyIds:
    """The ids and aliases minted with `key` among their owners, so far in the recording."""

    def __init__(self, key: str, registry: DescriptorRegistry, fields: Sequence[IdFields]) -> None:
        self.key = key
        self._registry = registry
        self._fields = list(fields)
        self._owned: set[tuple[str, str]] = set()  # (kind, value); grows with the key's history alone

    def names_one(self, call: RecordedCall) -> bool:
        """Whether the call's requests name an id or alias owned by the key."""
        if not self._owned:
            return False
        requests = self._decoded(call.method, call.requests, answers=False)
        for fields in self._fields:
            for found in fields.find(call.method, "request", requests, None):
                if any((kind, found.value) in self._owned for kind in found.every_kind):
                    return True
        return False

    def learn(self, call: RecordedCall) -> None:
        """The ids and aliases the call's answers mint with the key among their owners."""
        if not call.responses:
            return
        answers = self._decoded(call.method, call.responses, answers=True)
        requests = self._decoded(call.method, call.requests[:1], answers=False)
        first = requests[0] if requests else None
        for fields in self._fields:
            for found in fields.find(call.method, "response", answers, first):
                if found.minted and self.key in found.owner.split(OWNERS):
                    self._owned.update((kind, found.value) for kind in found.every_kind)

    def _decoded(self, method: str, raw: Sequence[bytes], *, answers: bool) -> list[message.Message]:
        info = self._registry.method(method)
        if info is None:
            return []
        cls = self._registry.message_class(info.output_type if answers else info.input_type)
        out = []
        for one in raw:
            decoded = cls()
            try:
                decoded.ParseFromString(one)
            except message.DecodeError:
                continue  # a redacted message that did not decode is recorded empty: it names nothing
            out.append(decoded)
        return out
