"""Semantic comparison of two answers to the same gRPC call.

Pure functions over bytes and descriptors: this package never imports grpc or
the shim, so it can be tested, reused and run in worker threads or processes
on its own.
"""

from comparators._compare import compare, hashed_quotes
from comparators._diff import diff_values, format_path
from comparators._metadata import carries_credentials
from comparators._model import (
    REFUSALS,
    STATUS_NAMES,
    Code,
    Comparison,
    Difference,
    DiffKind,
    Exchange,
    Metadata,
    Outcome,
    StampSegment,
    Verdict,
    jsonable,
    status_name,
)
from comparators._walk import LATE_MARGIN
from comparators.descriptors import DescriptorError, DescriptorRegistry, MethodInfo
from comparators.rules import RuleError, RuleSet, build_rules

__all__ = [
    "LATE_MARGIN",
    "REFUSALS",
    "STATUS_NAMES",
    "Code",
    "Comparison",
    "DescriptorError",
    "DescriptorRegistry",
    "DiffKind",
    "Difference",
    "Exchange",
    "Metadata",
    "MethodInfo",
    "Outcome",
    "RuleError",
    "RuleSet",
    "StampSegment",
    "Verdict",
    "build_rules",
    "carries_credentials",
    "compare",
    "diff_values",
    "format_path",
    "hashed_quotes",
    "jsonable",
    "status_name",
]
