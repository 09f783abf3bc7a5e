"""What is wrong with an adapter's `Abort`, before it reaches the client ("" when nothing is).

An Abort ends the call with an error status: `OK` is no answer (an adapter returns its answer). Each
such Abort is an adapter error naming what was wrong, never a status blamed on BK.
"""

from __future__ import annotations

from typing import Any

import grpc

STATUS_DETAILS = "grpc-status-details-bin"


def abort_problem(code: Any, details: Any, trailing: Any) -> str:
    """Why this Abort cannot end a call ("" when it can)."""
    if not isinstance(code, grpc.StatusCode):
        return f"aborted with {code!r}, not a grpc.StatusCode"
    if code is grpc.StatusCode.OK:
        return "aborted with OK: an Abort needs an error code (return the answer instead)"
    if not isinstance(details, str):
        return f"aborted with details of type {type(details).__name__}, not str"
    return ""
