"""A request stream under way across a switch of modes (`Mirror.spanned_switch`). It goes on with the side it
started on (a batch's mirrored call once the old primary answers it, a session's messages each to the old
primary first), while the writes on its keys after the switch go to the new primary first: their order on
the two sides is unknown, so its keys go out of step, a session's at the switch and each later message's."""

from __future__ import annotations

from shim.shadow.shared import Shared

BATCH = (
    "a batch (client stream) under way across a switch of modes: the writes on its keys through the new"
    " primary while it came may have reached the two sides in another order"
)
SESSION = (
    "a session (bidi stream) under way across a switch of modes: its messages go on to the old primary first,"
    " the writes on its keys through the new primary to the new one first: in another order on each side"
)


def mark(
    shared: Shared, method: str, keys: tuple[str, ...], session: bool, is_write: bool, first: bool
) -> None:
    """Put a spanning stream's `keys` out of step (a write's); `first`: as the switch found it (counted)."""
    if first:
        shared.counters.inc(f"{'sessions' if session else 'batches'}_across_switches", method)
    if shared.steps is not None and is_write:
        shared.steps.mark(keys, method, SESSION if session else BATCH, shared.translation.client_side)
