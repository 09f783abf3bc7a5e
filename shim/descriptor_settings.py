"""Where the shim finds the services' descriptors, and who answers gRPC reflection. Top-level keys of
the config file (no table of their own), grouped here as `config.descriptors`; `shim.config` reads
them, `shim.reflection` uses them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shim.errors import ConfigError
from shim.settings import Kind, check_choice, one_of, setting

DESCRIPTOR_SOURCES = ("auto", "files", "reflection")
# who answers gRPC server reflection: the primary (forwarded, never mirrored: clients see what Bank shows,
# or hides), or the shim itself from its descriptors
REFLECTION = ("primary", "shim")


def _paths(key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
        raise ConfigError(f"{key}: expected a list of file paths")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class DescriptorSettings:
    """The descriptors the shim reads (files, or Bank's reflection), and who answers reflection."""

    GROUP: ClassVar[str] = "descriptors"  # its attribute of Config; its keys are top-level in the file
    descriptor_sets: tuple[str, ...] = setting(
        (),
        Kind("list of paths", _paths, resolve=lambda paths, resolve: tuple(map(resolve, paths))),
        "FileDescriptorSet files (protoc --include_imports)",
    )
    descriptor_source: str = setting(
        "auto",
        one_of(*DESCRIPTOR_SOURCES),
        "the descriptors: the files; with none, Bank's reflection if it serves it (auto)",
    )
    reflection: str = setting(
        "primary", one_of(*REFLECTION), "who answers gRPC reflection: the primary (forwarded), or the shim"
    )

    def __post_init__(self) -> None:
        for name, choices in (("descriptor_source", DESCRIPTOR_SOURCES), ("reflection", REFLECTION)):
            check_choice(name, getattr(self, name), choices)
