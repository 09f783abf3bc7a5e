"""A tiny described service with what the ledger lacks: doubles, maps, a wrapper, a repeated enum,
money messages and repeated Timestamps.

The ledger's money is decimal strings, so rules for numbers, maps and wrappers
are exercised on this message instead, built as a descriptor set in memory:

    package probe.v1;
    enum Level { LEVEL_UNSPECIFIED = 0; LEVEL_LOW = 1; LEVEL_HIGH = 2; }
    message Money { string currency = 1; int64 units = 2; int32 nanos = 3; }
    message Amount { string value = 1; string currency_code = 2; }
    message Price {
      string amount = 1; string currency = 2; int64 lots = 3; google.protobuf.Timestamp as_of = 4;
    }
    message Reading {
      double rate = 1;
      map<string, string> labels = 2;
      repeated double samples = 3;
      google.protobuf.DoubleValue wrapped = 4;
      optional string note = 5;
      repeated Level levels = 6;
      Money cash = 7;
      Price price = 8;
      repeated google.protobuf.Timestamp stamps = 9;
      map<string, google.protobuf.Timestamp> stamped = 10;
      Amount fee = 11;
    }
    service Probe { rpc Read(Reading) returns (Reading); }
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, message, text_format, timestamp_pb2, wrappers_pb2

from comparators import DescriptorRegistry
from tests.helpers import descriptor_set

READ = "/probe.v1.Probe/Read"

_PROBE = """
name: "probe/v1/probe.proto"
package: "probe.v1"
dependency: "google/protobuf/wrappers.proto"
dependency: "google/protobuf/timestamp.proto"
syntax: "proto3"
enum_type {
  name: "Level"
  value { name: "LEVEL_UNSPECIFIED" number: 0 }
  value { name: "LEVEL_LOW" number: 1 }
  value { name: "LEVEL_HIGH" number: 2 }
}
message_type {
  name: "Money"
  field { name: "currency" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "units" number: 2 label: LABEL_OPTIONAL type: TYPE_INT64 }
  field { name: "nanos" number: 3 label: LABEL_OPTIONAL type: TYPE_INT32 }
}
message_type {
  name: "Amount"
  field { name: "value" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "currency_code" number: 2 label: LABEL_OPTIONAL type: TYPE_STRING }
}
message_type {
  name: "Price"
  field { name: "amount" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "currency" number: 2 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "lots" number: 3 label: LABEL_OPTIONAL type: TYPE_INT64 }
  field {
    name: "as_of" number: 4 label: LABEL_OPTIONAL type: TYPE_MESSAGE
    type_name: ".google.protobuf.Timestamp"
  }
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
  field { name: "cash" number: 7 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".probe.v1.Money" }
  field { name: "price" number: 8 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".probe.v1.Price" }
  field { name: "fee" number: 11 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".probe.v1.Amount" }
  field {
    name: "stamps" number: 9 label: LABEL_REPEATED type: TYPE_MESSAGE
    type_name: ".google.protobuf.Timestamp"
  }
  field {
    name: "stamped" number: 10 label: LABEL_REPEATED type: TYPE_MESSAGE
    type_name: ".probe.v1.Reading.StampedEntry"
  }
  nested_type {
    name: "LabelsEntry"
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_STRING }
    options { map_entry: true }
  }
  nested_type {
    name: "StampedEntry"
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
    field {
      name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
      type_name: ".google.protobuf.Timestamp"
    }
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
    files = descriptor_set(wrappers_pb2.DESCRIPTOR, timestamp_pb2.DESCRIPTOR)
    files.file.append(text_format.Parse(_PROBE, descriptor_pb2.FileDescriptorProto()))
    registry.add_set(files, source="probe")
    return registry


PROBE_REGISTRY = probe_registry()
Reading: type[message.Message] = PROBE_REGISTRY.message_class("probe.v1.Reading")


def reading(**fields: Any) -> message.Message:
    """A probe.v1.Reading with `fields` set (maps and lists as dicts and lists)."""
    return Reading(**fields)


_Timestamp: type[message.Message] = PROBE_REGISTRY.message_class("google.protobuf.Timestamp")


def stamp(seconds: int, nanos: int = 0) -> message.Message:
    """A google.protobuf.Timestamp of the probe's registry (for Reading's stamps)."""
    return _Timestamp(seconds=seconds, nanos=nanos)
