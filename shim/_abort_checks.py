"""An adapter's `Abort`, and what is wrong with it before it reaches the client ("" when nothing is).

An Abort ends the call with an error status: `OK` is no answer (an adapter returns its answer). Its
trailing metadata goes to the client as the status's trailers, so it must be what gRPC sends: gRPC
refuses malformed trailers with a bare `INTERNAL 'Invalid metadata'`, never ends the call on a text
value under a `-bin` key, and aborts the whole process on some keys of its own (`grpc-timeout`).
Its `status_details` must be a `google.rpc.Status` of the Abort's own code and message, or the client's
`rpc_status.from_call` fails on them. Each such Abort is an adapter error naming what was wrong, never a
status blamed on BK.
"""

from __future__ import annotations

import re
from typing import Any

import grpc
from google.protobuf import message
from google.rpc import status_pb2

from comparators import Metadata
from shim.errors import ShimError

STATUS_DETAILS = "grpc-status-details-bin"
_KEY = re.compile(r"[0-9a-z_.\-]+")
_TEXT = re.compile(r"[\x20-\x7e]*")  # printable ASCII: what a text header value may hold
# gRPC's and HTTP/2's own headers: gRPC drops them from trailers, or fails on them
_RESERVED = frozenset({"content-type", "content-length", "te"})


class Abort(ShimError):
    """Raised by an adapter: end the call with this status (what Bank would answer).

    `status_details` is a serialized `google.rpc.Status` (rich error details), sent
    as Bank sends them, in the `grpc-status-details-bin` trailer. An Abort with OK,
    or with trailers gRPC cannot send, is an adapter error (shim._abort_checks).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str = "",
        *,
        status_details: bytes = b"",
        trailing_metadata: Metadata = (),
    ) -> None:
        super().__init__(f"{getattr(code, 'name', code)}: {details}")
        self.code = code
        self.details = details
        trailing = tuple(trailing_metadata)
        if status_details:
            trailing = (*trailing, (STATUS_DETAILS, status_details))
        self.trailing_metadata = trailing


def abort_problem(code: Any, details: Any, trailing: Any) -> str:
    """Why this Abort cannot end a call ("" when it can)."""
    if not isinstance(code, grpc.StatusCode):
        return f"aborted with {code!r}, not a grpc.StatusCode"
    if code is grpc.StatusCode.OK:
        return "aborted with OK: an Abort needs an error code (return the answer instead)"
    if not isinstance(details, str):
        return f"aborted with details of type {type(details).__name__}, not str"
    for item in trailing:
        problem = _pair_problem(item)
        if problem:
            return f"aborted with invalid trailing metadata: {problem}"
    for key, value in trailing:
        problem = _status_problem(code, details, value) if key == STATUS_DETAILS else ""
        if problem:
            return f"aborted with invalid status_details: {problem}"
    return ""


def _status_problem(code: grpc.StatusCode, details: str, value: bytes) -> str:
    """Why rich details would fail in the client (grpc_status's `from_call` refuses a Status whose code or
    message is not the call's), "" when they would not."""
    status = status_pb2.Status()
    try:
        status.ParseFromString(value)
    except message.DecodeError:
        return "they are not a serialized google.rpc.Status"
    if status.code != code.value[0]:
        named = next((c.name for c in grpc.StatusCode if c.value[0] == status.code), str(status.code))
        return f"its google.rpc.Status has code {named}, not the Abort's {code.name}"
    if status.message != details:
        return f"its google.rpc.Status has message {status.message!r}, not the Abort's details {details!r}"
    return ""


def metadata_problem(metadata: Any) -> str:
    """Why metadata an adapter gives (`Backend.send_initial_metadata`, `set_trailing_metadata`) cannot go to
    the client ("" when it can): the same checks as an Abort's trailers."""
    if isinstance(metadata, str | bytes | dict) or not isinstance(metadata, tuple | list):
        return f"{type(metadata).__name__} is not a sequence of (key, value) pairs"
    for item in metadata:
        problem = _pair_problem(item)
        if problem:
            return problem
    return ""


def _pair_problem(item: Any) -> str:
    if not isinstance(item, tuple | list) or len(item) != 2:
        return f"{item!r} is not a (key, value) pair"
    key, value = item
    if not isinstance(key, str):
        return f"key {key!r} is {type(key).__name__}, not str"
    if not _KEY.fullmatch(key):
        return f"key {key!r}: keys are lowercase ASCII letters, digits, '-', '_' and '.'"
    if (key.startswith("grpc-") and key != STATUS_DETAILS) or key in _RESERVED:
        return f"key {key!r} is gRPC's own"
    if key.endswith("-bin"):
        if not isinstance(value, bytes):
            return f"{key!r} ends in -bin: its value must be bytes, not {type(value).__name__}"
        return ""
    if isinstance(value, bytes):
        return f"{key!r} is a text key: its value must be str, not bytes (binary values need a -bin key)"
    if not isinstance(value, str):
        return f"the value of {key!r} is {type(value).__name__}, not str"
    if not _TEXT.fullmatch(value):
        return f"the value of {key!r} is not printable ASCII: {value!r}"
    return ""
