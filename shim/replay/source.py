"""The calls to replay: a recording checked whole before anything is sent, and the --key and --until filters.

`open_source` reads the file once through (`Recording.check`): a truncated or corrupt file, or one from
another service (a method of its header or of one of its calls that the config's descriptors lack, or
one of its header they describe otherwise), is refused here, before BK gets anything. `Source.calls()`
then reads the calls lazily, in the order they arrived, so memory does not grow with the recording.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from comparators import DescriptorRegistry
from comparators.ids import IdFields
from shim.errors import ShimError
from shim.recording.format import Ending, Header, RecordedCall, Recording, RecordingError, fingerprint
from shim.replay.owners import KeyIds


class ReplayError(ShimError):
    """A replay cannot start or go on; str(error) is one line saying why (nothing is left half-written)."""


@dataclass(frozen=True, slots=True)
class Filters:
    """Which calls of a recording are replayed."""

    key: str = ""  # only this key's history (and the unkeyed writes, which count on every key; and the
    # calls naming an id or alias minted on the key: `Source.calls`)
    until: str = ""  # stop after the call with this correlation id (inclusive)

    def takes(self, call: RecordedCall) -> bool:
        if not self.key:
            return True
        return self.key in call.keys or (not call.keys and call.is_write)


class Source:
    """A recording checked whole, and the calls of it to replay."""

    def __init__(
        self,
        recording: Recording,
        ending: Ending,
        filters: Filters,
        registry: DescriptorRegistry | None = None,
        ids: Sequence[IdFields] = (),
    ) -> None:
        self.recording = recording
        self.ending = ending
        self.filters = filters
        self._registry = registry
        self._ids = list(ids)  # the config's id kinds and key aliases: the owners --key learns

    @property
    def header(self) -> Header:
        return self.recording.header

    @property
    def path(self) -> Path:
        return self.recording.path

    def calls(self) -> Iterator[RecordedCall]:
        """The calls to replay, in the order they arrived."""
        filters = self.filters
        owned = None
        if filters.key and self._ids and self._registry is not None:
            owned = KeyIds(filters.key, self._registry, self._ids)
        for call in self.recording.calls():
            if filters.takes(call) or (owned is not None and owned.names_one(call)):
                yield call
            if owned is not None:
                owned.learn(call)
            if filters.until and call.correlation_id == filters.until:
                return


def open_source(
    path: Path,
    registry: DescriptorRegistry | None,
    filters: Filters,
    *,
    truncated: bool = False,
    ids: Sequence[IdFields] = (),
) -> Source:
    """The recording at `path`, checked: whole (or, with `truncated`, cut short but otherwise sound), from
    the service the descriptors describe, and holding the --until call if one is named. `ids`: the
    config's id kinds and key aliases, whose owners --key learns from the recorded answers."""
    try:
        recording = Recording(path, truncated=truncated)
        ending = recording.check()
    except RecordingError as exc:
        raise ReplayError(str(exc)) from None
    header = recording.header
    if header.answered_by != "bank":
        raise ReplayError(
            f"{path}: it holds {header.answered_by}'s answers; replay compares BK with Bank's recorded ones"
        )
    check_descriptors(path, header, registry)
    assert registry is not None  # check_descriptors refuses a config without descriptors
    for method in sorted(ending.methods):  # a header may list none (recorded without descriptors)
        check_method(path, method, registry)
    if filters.until:
        try:
            found = any(call.correlation_id == filters.until for call in recording.calls())
        except RecordingError as exc:
            raise ReplayError(str(exc)) from None
        if not found:
            raise ReplayError(f"--until {filters.until!r}: no call of {path} has this correlation id")
    if filters.key:
        try:
            found = any(filters.key in call.keys for call in recording.calls())
        except RecordingError as exc:
            raise ReplayError(str(exc)) from None
        if not found:  # replaying the writes without a key alone would compare nothing of the key
            raise ReplayError(
                f"--key {filters.key!r}: no call of {path} is on this key (keys are the routing keys as"
                " recorded, after redaction where the recording hashed them)"
            )
    return Source(recording, ending, filters, registry, ids)


def check_descriptors(path: Path, header: Header, registry: DescriptorRegistry | None) -> None:
    """Every recorded method is described by the config's descriptors, with the same shape."""
    if registry is None:
        raise ReplayError(
            "replay needs the service's descriptors to compare answers: give descriptor_sets in --config"
        )
    for method, recorded in sorted(header.methods.items()):
        check_method(path, method, registry)
        if recorded and fingerprint(registry, method) != recorded:
            raise ReplayError(
                f"{path}: recorded from another service: {method} has other request or answer types"
                " than the config's descriptors give it"
            )


def check_method(path: Path, method: str, registry: DescriptorRegistry) -> None:
    """A method the recording holds (in its header, or a call of it) is one the config's descriptors
    describe: a call of another is never sent (BK could not be asked it, nor its answer compared)."""
    if registry.method(method) is None:
        raise ReplayError(
            f"{path}: recorded from another service: {method} is not in the config's descriptors"
        )
