"""A whole replay, in the order that leaves nothing half-done: the output store checked, the recording
checked (whole, from this service, --until found), BK reachable (or started), the seed run; only then
is anything sent. The store is renamed into place once every call is compared, and removed otherwise."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from shim import config as config_mod
from shim.aliases import fields_of
from shim.config import Config, Upstream
from shim.parts import load_ids, load_registry
from shim.pipeline import Sink
from shim.replay import MIN_SPEED
from shim.replay.bk import Bk, seed
from shim.replay.driver import IN_FLIGHT, Replayer, Summary, replay_config
from shim.replay.output import Output
from shim.replay.source import Filters, ReplayError, open_source

ORIGIN_UNKNOWN = (
    "the recording began while Bank was running (origin: running) and no --seed gave BK Bank's state:"
    " every key's state is unknown"
)
LOST = "the recorder lost {lost} calls of the recording: which keys they changed is unknown"


@dataclass(frozen=True)
class Options:
    """What `shim replay` is asked to do (its flags)."""

    recording: Path
    config: Path
    store: str
    bk: str = ""  # HOST:PORT of a BK already serving
    bk_command: str = ""  # or a command that starts one ("{port}": a free port)
    speed: float = 0.0  # 0: as fast as order allows
    key: str = ""
    until: str = ""
    seed: str = ""  # a shell command giving BK its starting state
    truncated: bool = False
    in_flight: int = IN_FLIGHT


@dataclass(frozen=True)
class Replayed:
    summary: Summary
    recording: Path
    store: Path
    bk: str  # where BK served


def load_config(path: Path, bk: str, store: str) -> Config:
    """The shim's config as a replay runs it (`replay_config`); no Bank upstream is needed."""
    settings = dict(config_mod.load_file(path))
    for name in ("bank", "bk"):  # Bank is never called: its answers are recorded
        current = settings.get(name)
        settings[name] = (
            replace(current, target=current.target or bk) if current else Upstream(name, target=bk)
        )
    settings.pop("mode", None)
    return replay_config(config_mod.build(settings), bk, store)


async def replay(options: Options, sinks: Sequence[Sink] = ()) -> Replayed:
    """Replay a recording into a new store; ReplayError (or another ShimError) when it cannot, with
    nothing left behind. `sinks` get every comparison too."""
    if options.speed and not (math.isfinite(options.speed) and options.speed >= MIN_SPEED):
        raise ReplayError(
            f"--speed {options.speed:g} is not a speed from {MIN_SPEED:g} up (slower, the replay could never"
            " finish)"
        )
    output = Output(options.store)
    output.refuse_held()
    config = load_config(options.config, options.bk or "127.0.0.1:1", str(output.partial))
    registry = load_registry(config.descriptors.descriptor_sets)
    filters = Filters(options.key, options.until)
    ids = [f for f in (load_ids(config, registry), fields_of(config.key_aliases, registry)) if f is not None]
    source = open_source(options.recording, registry, filters, truncated=options.truncated, ids=ids)
    if registry is None:  # open_source refuses a config without descriptors
        raise ReplayError("no descriptors")
    unknown = ""
    if source.ending.lost:
        unknown = LOST.format(lost=source.ending.lost)
    elif source.header.origin != "empty" and not options.seed:
        unknown = ORIGIN_UNKNOWN
    async with Bk(options.bk, options.bk_command) as address:
        if options.seed:
            await seed(options.seed, address)
        config = load_config(options.config, address, str(output.partial))
        replayer = Replayer(
            config,
            registry,
            source,
            speed=options.speed,
            unknown_state=unknown,
            in_flight=options.in_flight,
            sinks=sinks,
        )
        output.open()
        try:
            summary = await replayer.run()
        except BaseException:
            output.discard()
            raise
    try:
        path = output.keep()
    except ReplayError:
        output.discard()
        raise
    except OSError as exc:
        output.discard()
        raise ReplayError(f"--store {output.path}: cannot write it: {exc.strerror or exc}") from None
    return Replayed(summary, source.path, path, address)
