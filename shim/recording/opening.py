"""Opening the recorder `[record]` asks for: the recording's header, and its writer (a file, or the store's
`into_store.StoreWriter`)."""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

from shim.errors import StartupError
from shim.recording.format import Header, RecordingError
from shim.recording.identity import fingerprint, key_id
from shim.recording.recorder import KeysOf, Recorder
from shim.recording.settings import RecordSettings

if TYPE_CHECKING:
    from shim.config import Config
    from shim.parts import Parts
    from shim.store import Store


def header_of(
    settings: RecordSettings,
    registry: Any,
    mode: str,
    redacted: tuple[str, ...],
    key: bytes | None,
    replica: str,
) -> Header:
    """The recording's first line: the descriptors and each method's fingerprint, redaction, sampling."""
    methods = {m: fingerprint(registry, m) for m in sorted(registry.methods)} if registry is not None else {}
    return Header(
        created_at=time.time(),
        methods=methods,
        descriptors=registry.descriptor_set().SerializeToString() if registry is not None else b"",
        mode=mode,
        answered_by="bk" if mode in ("bk-primary", "bk") else "bank",
        origin=settings.origin,
        redacted=redacted if key is not None else (),
        redaction_key=key_id(key) if key is not None else "",
        sampled=settings.sample,
        replica=replica,
    )


async def open_recorder(
    config: Config, parts: Parts, keys_of: KeysOf, store: Store | None = None
) -> Recorder | None:
    """The recorder `config.record` asks for (None: nothing is recorded); a StartupError when its file
    cannot be written, or the store cannot be recorded into (`store`: the shim's, when it opened one)."""
    settings = config.record
    if not settings.on:
        return None
    redactor = parts.redactor
    header = header_of(
        settings,
        parts.registry,
        config.mode,
        tuple(config.redact.fields),
        redactor.key if redactor is not None else None,
        parts.replica,
    )
    recorder = functools.partial(
        Recorder,
        settings,
        header,
        keys_of,
        parts.payload_filter(),
        parts.counters,
        config.store.correlation_header,
        free_text=parts.free_text_of(),
    )
    if settings.into == "store":
        from shim.recording.into_store import store_writer

        writer, where, closing = await store_writer(config, header, parts.replica, parts.counters, store)
        return recorder(writer=writer, where=where, closing=closing)
    try:
        return recorder()
    except RecordingError as exc:
        raise StartupError(f"record.path: {exc}") from None
