"""A tiny described service with what the ledger lacks: doubles, a map, a wrapper, a repeated enum.

The ledger's money is decimal strings, so rules for numbers, maps and wrappers
are exercised on this message instead, built as a descriptor set in memory:

    package probe.v1;
    enum Level { LEVEL_UNSPECIFIED = 0; LEVEL_LOW = 1; LEVEL_HIGH = 2; }
    message Reading {
      double rate = 1;
      map<string, string> labels = 2;
      repeated double samples = 3;
      google.protobuf.DoubleValue wrapped = 4;
      optional string note = 5;
      repeated Level levels = 6;
    }
    service Probe { rpc Read(Reading) returns (Reading); }
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, message, text_format, wrappers_pb2

from comparators import DescriptorRegistry
from tests.helpers import descriptor_set

READ = "/probe.v1.Probe/Read"

_PROBE = """
name: "probe/v1/probe.proto"
package: "probe.v1"
dependency: "google/protobuf/wrappers.proto"
syntax: "proto3"
enum_type {
  name: "Level"
  value { name: "LEVEL_UNSPECIFIED" number: 0 }
  value { name: "LEVEL_LOW" number: 1 }
  value { name: "LEVEL_HIGH" number: 2 }
}
message_type {
  name: "Reading"
  field { name: "rate" number: 1 label: LABEL_OPTIONAL type: TYPE_DOUBLE }
  field {
    name: "labels" number: 2 label: LABEL_REPEATED type: TYPE_MESSAGE
    type_name: ".probe.v1.Reading.LabelsEntry"
  }
  field { name: "samples" number: 3 label: LABEL_REPEATED type: TYPE_DOUBLE }
  field {
    name: "wrapped" number: 4 label: LABEL_OPTIONAL type: TYPE_MESSAGE
    type_name: ".google.protobuf.DoubleValue"
  }
  field {
    name: "note" number: 5 label: LABEL_OPTIONAL type: TYPE_STRING
    oneof_index: 0 proto3_optional: true
  }
  field { name: "levels" number: 6 label: LABEL_REPEATED type: TYPE_ENUM type_name: ".probe.v1.Level" }
  nested_type {
    name: "LabelsEntry"
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_STRING }
    options { map_entry: true }
  }
  oneof_decl { name: "_note" }
}
service {
  name: "Probe"
  method { name: "Read" input_type: ".probe.v1.Reading" output_type: ".probe.v1.Reading" }
}
"""


def probe_registry(base: DescriptorRegistry | None = None) -> DescriptorRegistry:
    """A registry holding probe.v1 (added to `base` when given)."""
    registry = base if base is not None else DescriptorRegistry()
    files = descriptor_set(wrappers_pb2.DESCRIPTOR)
    files.file.append(text_format.Parse(_PROBE, descriptor_pb2.FileDescriptorProto()))
    registry.add_set(files, source="probe")
    return registry


PROBE_REGISTRY = probe_registry()
Reading: type[message.Message] = PROBE_REGISTRY.message_class("probe.v1.Reading")


def reading(**fields: Any) -> message.Message:
    """A probe.v1.Reading with `fields` set (maps and lists as dicts and lists)."""
    return Reading(**fields)
