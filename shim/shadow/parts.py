"""A mirror's parts, as the modules that work on one call see it: what it is a call of, its place among
the calls (admission, places) and the ids it learns."""

from __future__ import annotations

from typing import Protocol

from shim.plan import MethodPlan
from shim.shadow.admission import Admission
from shim.shadow.learning import Learning
from shim.shadow.places import Places


class Parts(Protocol):
    """One call's mirror (`shim.shadow.mirror.Mirror`), through its parts."""

    is_write: bool

    @property
    def plan(self) -> MethodPlan: ...

    @property
    def admission(self) -> Admission: ...

    @property
    def places(self) -> Places: ...

    @property
    def learning(self) -> Learning: ...
