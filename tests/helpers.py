"""Small helpers shared by tests."""

from __future__ import annotations

from google.protobuf.descriptor import FileDescriptor

from comparators import DescriptorRegistry
from comparators.descriptors import descriptor_set_of as descriptor_set

__all__ = ["descriptor_set", "registry_of"]


def registry_of(*files: FileDescriptor) -> DescriptorRegistry:
    registry = DescriptorRegistry()
    registry.add_set(descriptor_set(*files))
    return registry
