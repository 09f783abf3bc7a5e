"""The shim's exceptions: one tree, all rooted at ShimError, each raised on purpose.

ShimError
├── ConfigError      a config file or flag is wrong; the message names the key (shim.config)
│   └── NeedsDescriptors  a setting needs descriptors and the shim has none (shim.parts, at start)
├── StartupError     the shim could not start: a busy port, unreadable descriptors, Bank's reflection
├── StoreError       the store could not be opened, read or written (shim.store)
│   └── Unopened     a stored id of a redacted field does not open under this key (shim.store._sealing)
├── ReconcileError   a side could not be listed: the sweep can say nothing (shim.reconcile)
├── SwitchTimeout    the calls in flight did not finish in time: the mode did not change (shim.modes)
├── Unswitched       a fleet switch was given up on every replica, nothing recorded (shim.fleet)
├── Unapplied        a fleet switch recorded that this replica's data plane did not apply yet (shim.fleet)
├── Refused          the admin API refuses a switch, with the gRPC status to answer (shim.admin)
├── UnreadableCopy   a copy Envoy sent cannot be turned back into messages (shim.dataplane.processor)
├── RoutesNotApplied Envoy did not confirm the routes the shim wrote in time (shim.dataplane)
├── RecordingError   a recording file cannot be read or written whole (shim.recording.format)
├── ReplayError      a replay cannot start or go on: bad recording, BK down, seed failed (shim.replay)
└── Abort            raised by an adapter: end the call with this status (shim.adapters)

Each is defined beside the code that raises it, and `tests/test_boundaries.py` checks that every
public exception of the shim is in this tree. Private ones (`_Exited`, `_Undecodable`, ...) are
control flow that never leaves its module. gRPC failures are never raised: they become `Outcome`
values at the boundary. The comparators (pure, never importing the shim) have their own errors
(`DescriptorError`, `IdError`, `RuleError`, `RedactError`), which the shim turns into ConfigError
or StartupError at start.
"""

from __future__ import annotations

import signal


class ShimError(Exception):
    """Base of every error the shim raises on purpose."""


class ConfigError(ShimError):
    """The configuration is invalid; str(error) is one line naming the problem."""


class NeedsDescriptors(ConfigError):
    """A setting ([ids], redaction, a routing key, ...) needs descriptors and there are none; `shim serve`
    adds why Bank's reflection gave none, when it was asked."""


class StartupError(ShimError):
    """The shim could not start serving."""


def how_it_ended(returncode: int) -> str:
    """What a child process's status says, as words: "exited with status 3", "was killed by SIGKILL"."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name}"
