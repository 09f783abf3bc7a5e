"""Small helpers shared by tests."""

from __future__ import annotations

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor

from comparators import DescriptorRegistry


def descriptor_set(*files: FileDescriptor) -> descriptor_pb2.FileDescriptorSet:
    """A FileDescriptorSet holding `files` and everything they import, dependencies first."""
    fds = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        fds.file.append(proto)

    for file in files:
        add(file)
    return fds


def registry_of(*files: FileDescriptor) -> DescriptorRegistry:
    registry = DescriptorRegistry()
    registry.add_set(descriptor_set(*files))
    return registry
