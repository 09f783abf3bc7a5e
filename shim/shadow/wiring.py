"""The mirroring of one side, made from the config and the parts the shim made at start."""

from __future__ import annotations

from shim._breaker import Breaker
from shim._noise import Noise
from shim._overload import LoopLag
from shim.adapters import Channel
from shim.books import Books
from shim.config import Config, Upstream
from shim.parts import Parts
from shim.shadow.dispatcher import ShadowDispatcher
from shim.shadow.shared import Submit


def mirroring(
    config: Config,
    shadow: Upstream,
    channel: Channel,
    primary: Channel,
    submit: Submit,
    parts: Parts,
    books: Books,
    overload: LoopLag,
) -> tuple[ShadowDispatcher, Noise | None]:
    """The dispatcher mirroring calls to `shadow` on `channel` (their answers compared with `primary`'s,
    handed to `submit`), and the primary asked again for noise, when `[noise] reads` asks for it."""
    noise = None
    if config.noise.reads > 0:
        # a fleet (PostgreSQL) or workers: writes through the other processes are unseen here
        shared = config.serving.workers > 1 or (books.store is not None and books.store.conninfo is not None)
        noise = Noise(primary, config.noise.reads, shadow.timeout, parts.counters, shared=shared)
    dispatcher = ShadowDispatcher(
        channel,
        submit,
        parts.counters,
        timeout=shadow.timeout,
        max_in_flight=config.shadow.max_in_flight,
        max_capture=config.shadow.max_capture,
        plans=parts.plans,
        primary_is_bank=shadow is not config.bank,
        router=parts.router,
        breaker=Breaker(
            parts.counters,
            failures=config.shadow.breaker_failures,
            open_for=config.shadow.breaker_open_for,
        ),
        ids=books.ids,
        aliases=books.aliases,
        steps=books.steps,
        intents=books.intents,
        correlation_header=config.store.correlation_header,
        noise=noise,
        overload=overload,
        shed_lag=config.shadow.shed_lag,
        stream_hold=config.ordering.stream_hold,
        max_wait=config.ordering.max_wait,
        max_in_flight_streams=config.shadow.max_in_flight_streams,
        max_capture_total=config.shadow.max_capture_total,
        stream_idle=config.shadow.stream_idle,
        key_order=books.key_order,
        lateness=books.lateness,
        rules=lambda: parts.rules,  # those in force: a reload changes them
    )
    dispatcher.shared.free_text = parts.free_text_of()  # marks quote refusals: redacted values hashed
    return dispatcher, noise
