"""Each method's kind, as the descriptors say, looked up once when the shim starts."""

from __future__ import annotations

from dataclasses import dataclass

from comparators import DescriptorRegistry


@dataclass(frozen=True, slots=True)
class Kind:
    unary: bool  # one request, one answer
    client_streaming: bool
    server_streaming: bool
    # named by the descriptors; without any descriptors every method counts as described
    described: bool = True

    @property
    def unary_answer(self) -> bool:
        """One answer message, not a stream."""
        return not self.server_streaming


class MethodKinds:
    """The kind of every method of the descriptors, compiled at start. A method they do not name is none
    of unary, client streaming or server streaming: its calls take one place in the lanes, unkeyed (or,
    when there are descriptors, none: a made-up method is mirrored but never ordered)."""

    __slots__ = ("_kinds", "_other")

    def __init__(self, registry: DescriptorRegistry | None) -> None:
        methods = registry.methods if registry is not None else {}
        self._kinds = {
            path: Kind(info.unary, info.client_streaming, info.server_streaming)
            for path, info in methods.items()
        }
        self._other = Kind(False, False, False, described=registry is None)

    def of(self, method: str) -> Kind:
        return self._kinds.get(method, self._other)
