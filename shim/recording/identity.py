"""What a recording is checked against before it is replayed: each method's shape, and which redaction key
hashed its redacted fields."""

from __future__ import annotations

import hashlib
import hmac

from comparators import DescriptorRegistry

KEY_ID_CONTEXT = b"shim-record-key-id"


def key_id(key: bytes) -> str:
    """Which redaction key hashed a recording's redacted fields (an id of it; the key cannot be had back)."""
    return hmac.new(key, KEY_ID_CONTEXT, hashlib.sha256).hexdigest()[:16]


def fingerprint(registry: DescriptorRegistry, method: str) -> str:
    """A method's shape, hashed: its kind, and its request and answer types with every field they reach
    (number, name, type, whether repeated, and the message or enum it names, with its own). Equal for
    descriptors that encode and decode its messages alike; unrelated messages and files do not enter it."""
    info = registry.method(method)
    if info is None:
        return ""
    lines = [f"{method} {info.client_streaming} {info.server_streaming}"]
    pending, seen = [info.input_type, info.output_type], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        desc = registry.pool.FindMessageTypeByName(name)
        lines.append(f"message {name}")
        for f in sorted(desc.fields, key=lambda f: f.number):
            named = f.message_type.full_name if f.message_type else ""
            if f.enum_type is not None:
                named = (
                    f.enum_type.full_name + ":" + ",".join(f"{v.name}={v.number}" for v in f.enum_type.values)
                )
            lines.append(f"{f.number} {f.name} {f.type} {f.is_repeated} {named}")
            if f.message_type is not None:
                pending.append(f.message_type.full_name)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
