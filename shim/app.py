"""The shim as one object: start it, serve, stop it (in-process or from the CLI).

This is the composition root: it makes the parts from the config once (`shim.parts`), opens the channels
(`shim.channels`) and the store with what is kept in it (`shim.books`), wires the comparison pipeline
and the mirroring of each side (`shim.shadow`) to them, and serves. Each part gets what it needs, never
the Shim; the admin API and the metrics see it through the narrow protocols they declare
(`shim.admin.Switchable`, `shim.exporter.Observed`).

Over 400 lines: it is the one place where the parts are put together and taken apart in order (start,
stop, reload); split, the order would be spread over modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import replace

import structlog
from grpc import aio
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection

from comparators import DescriptorRegistry
from shim._grpc_compat import ANY_PINGS, LARGE_METADATA, TAKE_EVERY_CALL
from shim._handler import ProxyHandler, Route
from shim._health import Health
from shim._mode_guards import stretch_mark
from shim._noise import Noise
from shim._overload import LoopLag
from shim._primary_only import REFLECTION_METHODS, PrimaryOnly, reflection_from, to_the_primary
from shim._start_guard import refusal, start_refused, without_bk
from shim._timeouts import bounded
from shim.adapters import Channel
from shim.admin import serve_admin
from shim.admin_settings import ADMIN_LISTEN, TOKEN_ENV
from shim.books import Books, judged_by
from shim.channels import Channels, size_options
from shim.config import Config, Upstream, changed, keeping, reloadable
from shim.errors import ConfigError, StartupError
from shim.exporter import Exporter
from shim.fleet import Fleet, Timing
from shim.front import Front
from shim.ids import IdBook
from shim.metrics import Counters
from shim.modes import BK_ANSWERS, DEFAULT, Modes, started_in
from shim.parts import Parts, load_registry, load_rules
from shim.pipeline import ComparisonPipeline, Sink
from shim.recording.opening import open_recorder
from shim.recording.recorder import Recorder
from shim.shadow.dispatcher import ShadowDispatcher, waiting
from shim.shadow.wiring import mirroring
from shim.steps import Steps
from shim.store import Store, StoreError
from shim.tls import ServerTls
from shim.tls_settings import NAMES as TLS_NAMES
from shim.tls_settings import TlsSettings, taken_live

_log = structlog.get_logger("shim")


class Shim:
    """A running shim: a gRPC server forwarding to the primary and mirroring to the shadow."""

    def __init__(
        self, config: Config, sinks: Sequence[Sink] = (), registry: DescriptorRegistry | None = None
    ):
        self.config = config
        self.parts = Parts(
            config, registry if registry is not None else load_registry(config.descriptors.descriptor_sets)
        )
        # TLS files are read now: a bad one stops the shim before it opens anything
        self.server_tls = (
            ServerTls(config.tls.cert, config.tls.key, config.tls.client_ca) if config.tls.cert else None
        )
        self.channels = Channels(
            config,
            self.parts.adapters,
            self.parts.registry,
            self.parts.counters,
            self.parts.router.is_write,
            self.parts.redactor,
        )
        self.books = Books()
        self._sinks: list[Sink] = [*sinks, self.parts.verdict_counts]
        self.pipeline: ComparisonPipeline | None = None
        self.dispatchers: dict[str, ShadowDispatcher] = {}  # by the side they mirror to
        self._noises: list[Noise] = []
        self.modes = Modes(config.mode)
        self.mode_lock = asyncio.Lock()  # a switch and its record, or a re-read of the store's modes
        self.fleet: Fleet | None = None  # with a store: this replica's part in the fleet's switches
        self.routes: dict[str, Route] = {}
        self.bk_channel: Channel | None = None
        self._server: aio.Server | None = None
        self.port = 0
        self.health = health.aio.HealthServicer()  # the overall health: SERVING, NOT_SERVING while draining
        self.health_checks: Health | None = None  # grpc.health.v1, once it serves
        self.loop_lag = LoopLag()  # how late the event loop runs: mirrors are shed when it is late
        self._lag_probe: asyncio.Task[None] | None = None
        self._unrecorded: asyncio.Task[None] | None = None  # a start without BK, recorded once it can be
        self._judging: asyncio.Task[None] | None = None  # a reload's rules, recorded as judging from then on
        self._admin_server: aio.Server | None = None
        self.admin_port = 0
        self.admin_address = ""  # where the admin API listens ("": it does not)
        self.exporter: Exporter | None = None
        self.front: Front | None = None  # what carries the clients' calls in front of this server (Envoy)
        self.recorder: Recorder | None = None  # with [record]: the clients' calls, to a file or the store

    # what the parts made at start hold, as the commands, the data plane and the tests read it
    @property
    def registry(self) -> DescriptorRegistry | None:
        return self.parts.registry

    @property
    def counters(self) -> Counters:
        return self.parts.counters

    @property
    def store(self) -> Store | None:
        return self.books.store

    @property
    def steps(self) -> Steps | None:
        return self.books.steps

    @property
    def ids(self) -> IdBook | None:
        return self.books.ids

    @property
    def bk_answered_before(self) -> bool:
        """BK answered clients at some time (bk-primary or bk, in any scope, before this process or in it):
        they may hold BK's ids, even after a rollback (`Modes.bk_answered`)."""
        return self.modes.bk_answered

    @property
    def address(self) -> str:
        """Where the clients call: this server, or what is in front of it."""
        if self.front is not None:
            return self.front.address
        host = self.config.serving.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        config, parts = self.config, self.parts
        bank = self.channels.open(config.bank)
        bk = self.channels.open(config.bk) if config.bk is not None else None
        self.bk_channel = bk
        routes = {"bank": Route(bank, None)}  # with BK configured, its id map too (below)
        if bk is None:  # every call to Bank alone: a stretch in bank mode, for the store's evidence
            try:
                await without_bk(config, parts.registry, parts.replica)
            except StartupError:
                await self.channels.close()
                raise
            except StoreError as exc:  # Bank is served all the same; the start is recorded once it can be
                _log.warning("a start without BK is not recorded yet: tried again", error=str(exc))
                self._unrecorded = asyncio.get_running_loop().create_task(self._record_without_bk())
        if bk is not None:  # every mode can be switched to at run time: both directions are ready
            assert config.bk is not None
            store = await self.books.open(config, parts)
            try:
                stored = await store.modes.current()
                self.modes.restore(stored)  # as the last switch left them
                if stored.get(DEFAULT, config.mode) != config.mode:
                    _log.warning(
                        "the config's mode is not in force",
                        config_mode=config.mode,
                        mode=stored[DEFAULT],
                        why="a mode set at run time holds across restarts; shim mode set changes it",
                    )
                history = await store.modes.history(limit=100_000)
                started = started_in(self.modes.default, stored, history)
                if started is not None:  # the config's mode, in the history (the gate reads it there)
                    # guarded as a switch to it at run time would be (`shim._start_guard`)
                    if refused := await start_refused(
                        store, config, parts.registry, stored, started, parts.replica
                    ):
                        if not config.serving.forced_start:
                            raise StartupError(refusal(started, refused))
                        _log.warning(
                            "started in the config's mode, forced", mode=started.to_mode, refused=refused
                        )
                        started = replace(started, forced=True)
                    await store.modes.started(started)
                    if (mark := stretch_mark([started], config, parts.registry, parts.replica)) is not None:
                        store.marks.put([mark])  # a start in bank mode: writes to Bank alone
                    history.insert(0, started)
            except (StoreError, StartupError) as exc:
                await self.books.close()
                raise StartupError(str(exc)) from exc
            if any(change.to_mode in BK_ANSWERS for change in history):
                self.modes.bk_answered = True
            assert self.books.sink is not None
            self.pipeline = parts.pipeline(config, [*self._sinks, self.books.sink])
            self.dispatchers = {
                "bk": self._dispatcher(bk, config.bk, primary=bank),  # shadow mode: BK is mirrored
                "bank": self._dispatcher(bank, config.bank, primary=bk),  # bk-primary: Bank is
            }
            self.modes.explain = lambda: waiting(self.dispatchers.values())
            self.modes.unsettled = lambda: [m for d in self.dispatchers.values() for m in d.unsettled()]
            verifier = self.books.start_verifier(
                config,
                parts,
                bank,
                bk,
                lambda: self.dispatcher.shared.lanes if self.dispatcher is not None else None,
            )
            for dispatcher in self.dispatchers.values():
                dispatcher.shared.verifier = verifier
            routes["bank"] = Route(bank, None, ids=self.dispatchers["bk"])
            routes["shadow"] = Route(bank, self.dispatchers["bk"])
            routes["bk-primary"] = Route(bk, self.dispatchers["bank"])
            routes["bk"] = Route(bk, None, ids=self.dispatchers["bank"])
            self.books.start_housekeeping(config, parts)
            assert self.books.fleet_store is not None
            self.fleet = Fleet(
                parts.replica, self.modes, self.books.fleet_store, self.mode_lock, self._timing()
            )
        self.routes = routes
        handler = ProxyHandler(
            routes, self.modes, parts.plans, parts.counters, parts.router, parts.primary_latencies
        )
        server = aio.server(
            # one port for every worker of `--workers N`; otherwise a port in use is an error
            options=[
                *size_options(config),
                ("grpc.so_reuseport", 1 if config.serving.workers > 1 else 0),
                *TAKE_EVERY_CALL,
                *LARGE_METADATA,
                *ANY_PINGS,
            ],
            maximum_concurrent_rpcs=None,
        )
        # health comes first: the overall check is the shim's own, a named service's the primary's
        await self.health.set(health.OVERALL_HEALTH, health_pb2.HealthCheckResponse.SERVING)
        self.health_checks = Health(
            self.health, to_the_primary(routes, self.modes, parts.counters, parts.primary_latencies)
        )
        server.add_generic_rpc_handlers([self.health_checks])
        if (
            config.descriptors.reflection == "shim" and parts.registry is not None
        ):  # answered from the descriptors
            services = sorted({path.split("/")[1] for path in parts.registry.methods})
            names = [*services, reflection.SERVICE_NAME]  # what the descriptors can describe
            reflection.enable_server_reflection(names, server, pool=parts.registry.pool)
        # reflection the shim does not answer goes to the primary alone: clients see what it shows; but
        # a BK with adapters in front has an interface of its own, so while it answers, the descriptors do
        own = reflection_from(parts.registry) if parts.adapters and parts.registry is not None else None
        only = PrimaryOnly(
            REFLECTION_METHODS, routes, self.modes, parts.counters, parts.primary_latencies, own
        )
        server.add_generic_rpc_handlers([only])
        server.add_generic_rpc_handlers([handler])
        try:
            if self.server_tls is not None:
                self.port = server.add_secure_port(config.serving.listen, self.server_tls.credentials())
            else:
                self.port = server.add_insecure_port(config.serving.listen)
            keys_of = self.dispatcher.keys_of if self.dispatcher is not None else parts.router.keys
            handler.recorder = self.recorder = await open_recorder(config, parts, keys_of, self.books.store)
        except (RuntimeError, StartupError) as exc:
            await self.channels.close()
            await self.books.close()
            if isinstance(exc, StartupError):
                raise
            raise StartupError(
                f"cannot listen on {config.serving.listen}: address in use or not available"
            ) from exc
        if self.fleet is not None:  # before serving: a switch under way is taken part in first
            await self.fleet.start()
        await server.start()
        self._server = server
        if self.books.intents is not None:
            await self.recover_intents(starting=True)
        if config.admin.listen or os.environ.get(config.admin.token_env):
            await self._start_admin()
        elif config.admin.token_env != TOKEN_ENV:  # named on purpose, and not set
            _log.warning(
                "no admin API: its token's variable is not set; modes cannot change at run time, a rollback"
                " neither",
                token_env=config.admin.token_env,
            )
        if config.serving.metrics_listen:
            try:
                self.exporter = Exporter(self, config.serving.metrics_listen)
            except OSError as exc:
                await self.stop(grace=0)
                raise StartupError(
                    f"cannot serve metrics on {config.serving.metrics_listen}: {exc.strerror}"
                    " (another shim there? set metrics_listen or --metrics)"
                ) from exc
        if self.pipeline is not None:
            await self.pipeline.start()  # its worker processes, set up before the first comparison
        if self.dispatchers and config.shadow.shed_lag > 0:  # the start-up work is done: lag counts
            self._lag_probe = asyncio.get_running_loop().create_task(
                self.loop_lag.run(), name="event loop lag probe"
            )

    async def _record_without_bk(self) -> None:
        """Try again, every few seconds, to record this start without BK in the store (`without_bk`)."""
        while True:
            await asyncio.sleep(max(self.config.store.refresh, 2.0))
            try:
                await without_bk(self.config, self.parts.registry, self.parts.replica)
            except StoreError:
                continue
            except StartupError as exc:  # serving already: said, not undone
                _log.error("a start without BK that the store's modes refuse", error=str(exc))
                return
            _log.info("the start without BK is recorded")
            return

    async def _start_admin(self) -> None:
        try:
            self._admin_server, self.admin_port = await serve_admin(self, self.config.admin)
        except StartupError:
            await self.stop(grace=0)
            raise
        listen = self.config.admin.listen or ADMIN_LISTEN
        self.admin_address = f"{listen.rpartition(':')[0]}:{self.admin_port}"

    async def follow_modes(self) -> dict[str, str]:
        """Re-read the modes once; apply those the store holds and this shim does not: the changes."""
        assert self.fleet is not None
        return await self.fleet.follow()

    def _timing(self) -> Timing:
        store = self.config.store
        serving = self.config.serving
        return Timing(max(store.refresh, 0.05), store.lease, serving.grace_period, serving.switch_pause)

    def _dispatcher(self, channel: Channel, shadow: Upstream, primary: Channel) -> ShadowDispatcher:
        """The mirroring of calls to `shadow` (whose answers are compared with `primary`'s)."""
        assert self.pipeline is not None
        dispatcher, noise = mirroring(
            self.config, shadow, channel, primary, self.pipeline.submit, self.parts, self.books, self.loop_lag
        )
        if noise is not None:
            self._noises.append(noise)
        return dispatcher

    async def recover_intents(self, starting: bool = False) -> int:
        """Claim the intents of mirrored writes whose shim is gone: their keys go out of step (and are
        verified). Returns how many were claimed."""
        return await self.books.recover_intents(self.config, self.parts, starting)

    @property
    def dispatcher(self) -> ShadowDispatcher | None:
        """The mirroring the default mode uses (BK's in `bank` and `bk` modes, which mirror nothing)."""
        if not self.dispatchers:
            return None
        return self.dispatchers["bank" if self.modes.default == "bk-primary" else "bk"]

    def reconfigure(self, new: Config) -> list[str]:
        """Apply a reloaded config (SIGHUP): rules, sampling, noise shares, shedding and the gate's
        criteria change at once. Returns the settings that changed but need a restart; they keep
        their running values. A config whose rules do not check is refused (ConfigError), and
        nothing changes."""
        old, parts = self.config, self.parts
        rules = load_rules(new, parts.registry)  # raises before anything changes
        live = reloadable()
        if not self._noises and new.noise.reads > 0:
            live -= {"noise.reads"}  # asking Bank again needs the channel set up at start
        if not taken_live(old.tls, new.tls):
            live -= set(TLS_NAMES)  # the listener is set up with TLS (and client certificates) or without
        restart = [name for name in changed(old, new) if name not in live]
        applied = keeping(new, old, restart)
        if self.pipeline is not None and (new.rules, new.rule_locations) != (old.rules, old.rule_locations):
            self.pipeline.update_rules(
                rules,
                replace(parts.worker_setup(old), rules=new.rules, rule_locations=new.rule_locations),
            )
        parts.rules = rules
        if self.books.store is not None and judged_by(applied) != self.books.judging:
            self._judging = asyncio.get_running_loop().create_task(self.books.judge_by(applied))
        parts.router.read_rate = applied.sampling.reads
        parts.router.by_key = applied.sampling.by_key
        for noise in self._noises:
            noise.share = applied.noise.reads
        for dispatcher in self.dispatchers.values():
            dispatcher.shed_lag = applied.shadow.shed_lag
        self.config = applied
        return restart

    async def reload_certificates(self, tls: TlsSettings | None = None) -> list[str]:
        """Read the TLS files again (SIGHUP): the listener's (those `tls` names, when a reloaded config
        names others: `tls_settings.taken_live`) for the next handshakes, the upstreams' for new channels
        (calls in flight finish on the old ones). Returns what could not be reloaded, each kept as it
        was."""
        errors: list[str] = []
        if self.server_tls is not None:
            try:
                self.server_tls.reload((tls.cert, tls.key, tls.client_ca) if tls else None)
            except ConfigError as exc:
                errors.append(str(exc))
        holders = [
            *((route, "primary") for route in self.routes.values()),
            *((noise, "channel") for noise in self._noises),
            *((dispatcher, "channel") for dispatcher in self.dispatchers.values()),
        ]
        return errors + self.channels.reload_certificates(holders)

    async def evidence_stored(self, within: float) -> bool:
        """Whether the comparisons of the calls mirrored so far are in the store, within `within` seconds
        (what a promotion's gate judges: BK may not have answered the mirrors in flight yet, and the
        comparison plane may be behind its clients). A stream still open is not waited for: it is
        compared once it ends, and judged by the next gate."""
        deadline = time.monotonic() + within
        waited = [(dispatcher, dispatcher.mirrors()) for dispatcher in self.dispatchers.values()]
        while any(not mirrors.isdisjoint(d.mirrors()) for d, mirrors in waited):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        left = max(deadline - time.monotonic(), 0.0)
        if self.pipeline is not None and not await self.pipeline.caught_up(left):
            return False
        if self.store is not None:
            await self.store.flush()
        return True

    async def drain(self) -> None:
        """Wait until every mirrored call has finished and been compared (on Envoy, those of the calls
        answered so far whose copies were still on their way too)."""
        if self.front is not None:
            await self.front.settle()
        for dispatcher in self.dispatchers.values():
            await dispatcher.drain()
        if self.pipeline is not None:
            await self.pipeline.drain()

    async def stop(self, grace: float | None = None) -> None:
        """Drain and stop: health says NOT_SERVING; no new call is taken; calls in flight get `grace`
        seconds, and so do the mirrored calls after them; those still running are then given up and
        recorded (a write given up puts its keys out of step: nothing is lost silently); every
        comparison reaches the sinks and the store, which is flushed. The store gets what is left of
        `grace`, and at least a second: what it cannot commit by then is logged as lost."""
        grace = self.config.serving.grace_period if grace is None else grace
        deadline = asyncio.get_running_loop().time() + grace
        if self.exporter is not None:
            await asyncio.to_thread(self.exporter.close)
            self.exporter = None
        if self._admin_server is not None:
            await self._admin_server.stop(0)
            self._admin_server = None
        # the replica's view of the fleet's switches is forgotten beside the drain (its store's second)
        forgetting: asyncio.Task[None] | None = None
        if self.fleet is not None:
            await self.fleet.leave()
            forgetting = asyncio.get_running_loop().create_task(self.fleet.forget(), name="fleet: forget")
        if self.health_checks is not None:
            await self.health_checks.drain()
        await self.health.enter_graceful_shutdown()
        if self.front is not None:  # no new call comes in; those in flight finish (within grace)
            await self.front.stop(max(deadline - asyncio.get_running_loop().time(), 0.1))
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self.recorder is not None:  # every call is over: the recording ends whole
            await self.recorder.close()
        with contextlib.suppress(TimeoutError):  # mirrored calls get the same grace as the clients'
            await bounded(self._mirrors_done(), max(grace, 0.1))
        if any(d.in_flight for d in self.dispatchers.values()):
            given_up = sum(d.give_up_all() for d in self.dispatchers.values())
            _log.warning("stopping: mirrored calls given up and recorded", calls=given_up)
            with contextlib.suppress(TimeoutError):
                await bounded(self._mirrors_done(), max(grace, 1.0))
        if self.pipeline is not None:
            with contextlib.suppress(TimeoutError):
                await bounded(self.pipeline.drain(), max(grace, 1.0))
        if self._lag_probe is not None:
            self._lag_probe.cancel()
        if self._unrecorded is not None:
            self._unrecorded.cancel()
        await self.channels.close()
        # the pipeline's sinks finish before the store closes; its workers, idle, end meanwhile
        if self.pipeline is not None:
            idle = self.pipeline.pending == 0
            await asyncio.get_running_loop().run_in_executor(None, self.pipeline.close, not idle)
        if forgetting is not None:
            await forgetting
        await self.books.close(within=max(deadline - asyncio.get_running_loop().time(), 1.0))

    async def _mirrors_done(self) -> None:
        for dispatcher in self.dispatchers.values():
            await dispatcher.drain()

    async def unreachable_upstreams(self, within: float = 3.0) -> list[Upstream]:
        """The upstreams the shim could not connect to within `within` seconds (it goes on trying)."""
        return await self.channels.unreachable(within)

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def start(
    config: Config, sinks: Sequence[Sink] = (), registry: DescriptorRegistry | None = None
) -> Shim:
    """Start a shim and return it once it is serving."""
    shim = Shim(config, sinks, registry)
    await shim.start()
    return shim


__all__ = ["Shim", "StartupError", "start"]
