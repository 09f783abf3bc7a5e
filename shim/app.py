"""The shim as one object: start it, serve, stop it (in-process or from the CLI).

Over 400 lines: this is where every part is put together (channels, store, pipeline, mirrors,
servers), and it is to become a composition root of its own when the serving side is split by
concern (the data-plane issue's restructure), not before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import replace

import grpc
import structlog
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from comparators import DescriptorError, DescriptorRegistry
from comparators.ids import IdError, IdFields
from comparators.redact import RedactError, Redactor
from comparators.rules import RuleError, RuleSet, build_rules
from shim import aliases, reconcile
from shim._breaker import Breaker
from shim._handler import ProxyHandler, Route
from shim._noise import Noise
from shim._overload import LoopLag
from shim._primary_only import REFLECTION_METHODS, PrimaryOnly
from shim._proto.shim.v1 import admin_pb2_grpc
from shim.adapters import AdaptedChannel, Channel, load_adapters
from shim.admin import AdminServicer
from shim.admin_settings import ADMIN_LISTEN
from shim.config import Config, Upstream, changed, keeping, reloadable
from shim.errors import ConfigError, StartupError
from shim.evidence.record import CountsFlusher, PayloadFilter, StoreSink, replica_name
from shim.exporter import Exporter, Latencies, VerdictCounts
from shim.front import Front
from shim.ids import IdBook
from shim.intents import Intents
from shim.metrics import Counters, MethodLabels
from shim.modes import Modes, SwitchTimeout
from shim.pipeline import ComparisonPipeline, Sink, WorkerSetup
from shim.plan import Plans
from shim.routing import Router
from shim.shadow.dispatcher import ShadowDispatcher
from shim.steps import Steps
from shim.store import Store, StoreError
from shim.tls import ServerTls, channel_credentials, channel_options
from shim.units import parse_duration
from shim.verify import Verifier

_log = structlog.get_logger("shim")


def _size_options(config: Config) -> list[tuple[str, int]]:
    size = config.serving.max_message_size
    return [("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)]


def _channel(
    upstream: Upstream, config: Config, credentials: grpc.ChannelCredentials | None = None
) -> aio.Channel:
    # no flow-control window growth (BDP probing): a client that reads slowly makes the upstream wait, rather
    # than push a whole large answer into the shim's memory
    options = [*_size_options(config), *channel_options(upstream), ("grpc.http2.bdp_probe", 0)]
    if credentials is not None:
        return aio.secure_channel(upstream.target, credentials, options=options)
    return aio.insecure_channel(upstream.target, options=options)


def upstream_channel(upstream: Upstream, config: Config) -> aio.Channel:
    """A channel to `upstream` with its TLS and the config's channel settings (for commands)."""
    credentials = channel_credentials(upstream) if upstream.tls else None
    return _channel(upstream, config, credentials)


def load_rules(config: Config, registry: DescriptorRegistry | None) -> RuleSet:
    """The config's rules, each checked against the descriptors (errors name the rule's line)."""
    try:
        return build_rules(config.rules, registry, parse_duration, config.rule_locations)
    except RuleError as exc:
        raise ConfigError(str(exc)) from exc


def load_ids(config: Config, registry: DescriptorRegistry | None) -> IdFields | None:
    """The config's id kinds, each location checked against the descriptors."""
    if not config.ids:
        return None
    if registry is None:
        raise ConfigError("ids: id translation needs descriptors (--descriptor-set or descriptor_sets)")
    try:
        return IdFields(config.ids, registry)
    except IdError as exc:
        raise ConfigError(str(exc)) from exc


def load_redactor(config: Config, registry: DescriptorRegistry | None) -> Redactor | None:
    """The config's redacted fields, keyed by the secret in config.redact.key_env.

    Without that variable, a random key of this process: hashes then differ between shim processes.
    """
    if not config.redact.fields:
        return None
    if registry is None:
        raise ConfigError("redact: redaction needs descriptors (--descriptor-set or descriptor_sets)")
    secret = os.environ.get(config.redact.key_env, "")
    if not secret:
        _log.warning(
            "no redaction key: using a random one; equal values hash alike within this process only",
            key_env=config.redact.key_env,
        )
    key = secret.encode() if secret else secrets.token_bytes(32)
    try:
        return Redactor(config.redact.fields, registry, key)
    except RedactError as exc:
        raise ConfigError(str(exc)) from exc


def load_registry(paths: Sequence[str]) -> DescriptorRegistry | None:
    if not paths:
        return None
    try:
        return DescriptorRegistry.from_files(paths)
    except DescriptorError as exc:
        raise StartupError(str(exc)) from exc


class Shim:
    """A running shim: a gRPC server forwarding to the primary and mirroring to the shadow."""

    def __init__(
        self, config: Config, sinks: Sequence[Sink] = (), registry: DescriptorRegistry | None = None
    ):
        self.config = config
        self.registry = (
            registry if registry is not None else load_registry(config.descriptors.descriptor_sets)
        )
        # the metrics' method labels: described methods (or, without descriptors, the first 1000 named)
        described = self.registry
        self.method_labels = MethodLabels(
            (lambda method: described.method(method) is not None) if described is not None else None,
            also=[*(k.name for k in config.ids), *(k.name for k in config.key_aliases)],  # id events' labels
        )
        self.counters = Counters(self.method_labels)
        self.rules = load_rules(config, self.registry)
        self.id_fields = load_ids(config, self.registry)
        self.alias_fields = aliases.fields_of(config.key_aliases, self.registry)
        self.redactor = load_redactor(config, self.registry)
        if config.descriptors.reflection == "shim" and self.registry is None:
            raise ConfigError(
                'reflection: "shim" answers gRPC reflection from the descriptors, and there are none'
                ' (give --descriptor-set FILE or descriptor_source = "reflection")'
            )
        self.adapters = load_adapters(config.method_adapters, config.adapters, self.registry)
        if config.reconcile is not None:
            reconcile.check(config.reconcile, self.registry)
        self.router = Router(
            self.registry,
            config.methods,
            read_rate=config.sampling.reads,
            by_key=config.sampling.by_key,
            strict=config.ordering.strict,
            hide=self.redactor.hash if self.redactor is not None else None,
            hidden_fields=frozenset(config.redact.fields),
        )
        self.plans = Plans(self.router, self.id_fields, self.alias_fields)
        self.verdict_counts = VerdictCounts(self.method_labels)  # comparisons by verdict, for the metrics
        self.primary_latencies = Latencies(self.method_labels)
        self.exporter: Exporter | None = None
        self._sinks: list[Sink] = [*sinks, self.verdict_counts]
        self._server: aio.Server | None = None
        self._channels: list[aio.Channel] = []
        self._upstreams: list[tuple[Upstream, aio.Channel]] = []
        self.pipeline: ComparisonPipeline | None = None
        self.dispatchers: dict[str, ShadowDispatcher] = {}  # by the side they mirror to
        self.modes = Modes(config.mode)
        self.mode_lock = asyncio.Lock()  # a switch and its record, or a re-read of the store's modes
        self.routes: dict[str, Route] = {}
        self.store: Store | None = None
        self.ids: IdBook | None = None
        self.aliases: aliases.KeyAliases | None = None
        self.steps: Steps | None = None
        self.intents: Intents | None = None
        self.verifier: Verifier | None = None
        self.replica = replica_name()
        self.store_sink: StoreSink | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self.loop_lag = LoopLag()  # how late the event loop runs: mirrors are shed when it is late
        self._lag_probe: asyncio.Task[None] | None = None
        self._mode_watch: asyncio.Task[None] | None = None
        self._admin_server: aio.Server | None = None
        self.admin_port = 0
        self.admin_address = ""  # where the admin API listens ("": it does not)
        self.port = 0
        # TLS files are read now: a bad one stops the shim before it opens anything
        self.server_tls = (
            ServerTls(config.tls.cert, config.tls.key, config.tls.client_ca) if config.tls.cert else None
        )
        self._credentials = {
            upstream.name: channel_credentials(upstream)
            for upstream in (config.bank, config.bk)
            if upstream is not None and upstream.tls
        }
        self._noises: list[Noise] = []
        self._closing: set[asyncio.Task[None]] = set()  # old channels closing after a reload
        self.health = health.aio.HealthServicer()  # grpc.health.v1: SERVING, NOT_SERVING while draining
        self.bk_channel: Channel | None = None
        # BK answered clients at some time (bk-primary or bk): they may hold BK's ids, even after a rollback
        self.bk_answered_before = False
        self.front: Front | None = None  # what carries the clients' calls in front of this server (Envoy)

    @property
    def address(self) -> str:
        """Where the clients call: this server, or what is in front of it."""
        if self.front is not None:
            return self.front.address
        host = self.config.serving.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        config = self.config
        bank = self._open_channel(config.bank)
        bk = self._open_channel(config.bk) if config.bk is not None else None
        self.bk_channel = bk
        routes = {"bank": Route(bank, None)}  # with BK configured, its id map too (below)
        if bk is not None:  # every mode can be switched to at run time: both directions are ready
            assert config.bk is not None
            await self._open_store()
            assert self.store is not None
            try:
                self.modes.restore(await self.store.modes.current())  # as the last switch left them
                history = await self.store.modes.history(limit=100_000)
            except StoreError as exc:
                await self._close_store()
                raise StartupError(str(exc)) from exc
            self.bk_answered_before = any(
                mode in ("bk-primary", "bk")
                for mode in [*self.modes.table().values(), *(change.to_mode for change in history)]
            )
            self.store_sink = StoreSink(
                self.store,
                max_buffer=config.store.max_buffer,
                payloads=config.store.payloads,
                keep=self._payload_filter(),
            )
            self.pipeline = ComparisonPipeline(
                self.registry,
                [*self._sinks, self.store_sink],
                self.counters,
                max_pending=config.comparison.max_pending,
                rules=self.rules,
                executor=config.comparison.executor,
                workers=config.comparison.workers,
                setup=self._worker_setup(),
                ids=self.id_fields,
                redactor=self.redactor,
            )
            self.dispatchers = {
                "bk": self._dispatcher(bk, config.bk, primary=bank),  # shadow mode: BK is mirrored
                "bank": self._dispatcher(bank, config.bank, primary=bk),  # bk-primary: Bank is
            }
            self._start_verifier(bank, bk)
            routes["bank"] = Route(bank, None, ids=self.dispatchers["bk"])
            routes["shadow"] = Route(bank, self.dispatchers["bk"])
            routes["bk-primary"] = Route(bk, self.dispatchers["bank"])
            routes["bk"] = Route(bk, None, ids=self.dispatchers["bank"])
            self._housekeeping = asyncio.get_running_loop().create_task(
                self._keep_house(CountsFlusher(self.store, self.counters, self.store_sink)),
                name="store housekeeping",
            )
            self._mode_watch = asyncio.get_running_loop().create_task(
                self._follow_modes(), name="modes from the store"
            )
        self.routes = routes
        handler = ProxyHandler(
            routes, self.modes, self.plans, self.counters, self.router, self.primary_latencies
        )
        server = aio.server(
            # one port for every worker of `--workers N`; otherwise a port in use is an error
            options=[*_size_options(config), ("grpc.so_reuseport", 1 if config.serving.workers > 1 else 0)],
            maximum_concurrent_rpcs=None,
        )
        # the shim's own health comes first: every other method goes to the primary
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        await self.health.set(health.OVERALL_HEALTH, health_pb2.HealthCheckResponse.SERVING)
        if (
            config.descriptors.reflection == "shim" and self.registry is not None
        ):  # answered from the descriptors
            services = sorted({path.split("/")[1] for path in self.registry.methods})
            names = [*services, reflection.SERVICE_NAME]  # what the descriptors can describe
            reflection.enable_server_reflection(names, server, pool=self.registry.pool)
        # reflection the shim does not answer goes to the primary alone: clients see what it shows
        server.add_generic_rpc_handlers(
            [PrimaryOnly(REFLECTION_METHODS, routes, self.modes, self.counters, self.primary_latencies)]
        )
        server.add_generic_rpc_handlers([handler])
        try:
            if self.server_tls is not None:
                self.port = server.add_secure_port(config.serving.listen, self.server_tls.credentials())
            else:
                self.port = server.add_insecure_port(config.serving.listen)
        except RuntimeError as exc:
            await self._close_channels()
            await self._close_store()
            raise StartupError(
                f"cannot listen on {config.serving.listen}: address in use or not available"
            ) from exc
        await server.start()
        self._server = server
        if self.intents is not None:
            await self.recover_intents()
        if config.admin.listen or os.environ.get(config.admin.token_env):
            await self._start_admin()
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

    async def _start_admin(self) -> None:
        """The admin API, on its own (loopback) address, behind its token."""
        config = self.config
        token = os.environ.get(config.admin.token_env, "")
        if not token:
            await self.stop(grace=0)
            raise StartupError(
                f"admin.listen is set but ${config.admin.token_env} is empty: the admin API needs a token"
            )
        listen = config.admin.listen or ADMIN_LISTEN
        # never shared (grpc would set SO_REUSEPORT): two shims on one admin address would each take some
        # of the `shim mode` calls, and one could promote the other's service
        server = aio.server(options=[("grpc.so_reuseport", 0)])
        admin_pb2_grpc.add_AdminServicer_to_server(AdminServicer(self, token), server)  # type: ignore[no-untyped-call]
        try:
            self.admin_port = server.add_insecure_port(listen)
        except RuntimeError as exc:
            await self.stop(grace=0)
            raise StartupError(
                f"cannot serve the admin API on {listen}: address in use or not available"
                " (another shim there? set [admin] listen)"
            ) from exc
        self.admin_address = f"{listen.rpartition(':')[0]}:{self.admin_port}"
        await server.start()
        self._admin_server = server

    async def _follow_modes(self) -> None:
        """Re-read the modes every store.refresh: a switch made through another replica applies here
        too (the calls in flight here finish first)."""
        while True:
            await asyncio.sleep(max(self.config.store.refresh, 0.05))
            await self.follow_modes()

    async def follow_modes(self) -> dict[str, str]:
        """Re-read the modes once; apply those the store holds and this shim does not: the changes."""
        assert self.store is not None
        async with self.mode_lock:  # not while a switch through this replica is being recorded
            try:
                stored = await self.store.modes.current()
            except StoreError as exc:
                _log.warning("modes not re-read", error=str(exc))
                return {}
            table = self.modes.table()
            changed = {scope: mode for scope, mode in stored.items() if table.get(scope) != mode}
            if not changed:
                return {}
            try:
                await self.modes.switch(changed, within=self.config.serving.grace_period)
            except SwitchTimeout as exc:
                _log.warning("mode switch from the store not applied yet", error=str(exc))
                return {}
            _log.warning("modes changed by another replica applied", modes=changed)
            return changed

    def _dispatcher(self, channel: Channel, shadow: Upstream, primary: Channel) -> ShadowDispatcher:
        """The mirroring of calls to `shadow` (whose answers are compared with `primary`'s)."""
        config = self.config
        noise = None
        if config.noise.reads > 0:
            noise = Noise(primary, config.noise.reads, shadow.timeout, self.counters)
            self._noises.append(noise)
        assert self.pipeline is not None
        return ShadowDispatcher(
            channel,
            self.pipeline.submit,
            self.counters,
            timeout=shadow.timeout,
            max_in_flight=config.shadow.max_in_flight,
            max_capture=config.shadow.max_capture,
            plans=self.plans,
            primary_is_bank=shadow is not config.bank,
            router=self.router,
            breaker=Breaker(
                self.counters,
                failures=config.shadow.breaker_failures,
                open_for=config.shadow.breaker_open_for,
            ),
            ids=self.ids,
            aliases=self.aliases,
            steps=self.steps,
            intents=self.intents,
            correlation_header=config.store.correlation_header,
            noise=noise,
            overload=self.loop_lag,
            shed_lag=config.shadow.shed_lag,
            stream_hold=config.ordering.stream_hold,
            max_wait=config.ordering.max_wait,
            max_in_flight_streams=config.shadow.max_in_flight_streams,
            max_capture_total=config.shadow.max_capture_total,
            stream_idle=config.shadow.stream_idle,
        )

    def _start_verifier(self, bank: Channel, bk: Channel) -> None:
        """Keys out of step are verified with the [reconcile] reads, when the config has them."""
        config = self.config
        if config.reconcile is None or self.steps is None or self.registry is None:
            return
        timeout = max(config.bank.timeout, config.bk.timeout if config.bk is not None else 0.0, 5.0)
        sweep = reconcile.Sweep(
            config.reconcile, self.registry, self.rules, bank, bk, self.ids, timeout=timeout
        )
        shadow_timeout = min(config.bank.timeout, config.bk.timeout if config.bk is not None else 2.0)
        quick = reconcile.Sweep(  # for a check that holds the key's place: within half the shadow's time
            config.reconcile,
            self.registry,
            self.rules,
            bank,
            bk,
            self.ids,
            timeout=max(shadow_timeout / 2, 0.05),
        )
        verifier = Verifier(
            sweep.key,
            self.steps,
            lambda: self.dispatcher.shared.lanes if self.dispatcher is not None else None,
            self.store,
            self.counters,
            self.replica,
            settle=config.verify.settle,
            attempts=config.verify.attempts,
            check_now=quick.key,
        )
        for dispatcher in self.dispatchers.values():
            dispatcher.shared.verifier = verifier
        self.steps.listen(verifier.schedule)
        for mark in self.steps.keys.values():  # marks left by earlier runs or other replicas
            if mark.key != "*":
                verifier.schedule(mark)
        self.verifier = verifier

    async def recover_intents(self) -> int:
        """Claim the intents of mirrored writes whose shim is gone: their keys go out of step (and are
        verified). Returns how many were claimed."""
        assert self.intents is not None
        config = self.config
        stale = max(config.bank.timeout, config.bk.timeout if config.bk is not None else 0.0)
        stale += config.serving.grace_period + 30.0
        try:
            orphans = await self.intents.orphans(stale)
        except StoreError as exc:
            _log.warning("intents not read", error=str(exc))
            return 0
        for intent in orphans:
            self.counters.inc("intents_orphaned", intent.method)
            if self.steps is not None:
                self.steps.mark(
                    intent.keys,
                    intent.method,
                    f"a mirrored write was in flight when its shim ({intent.replica}) stopped without"
                    " recording its outcome: whether BK applied it is unknown",
                )
        if orphans:
            _log.warning("mirrored writes lost by a stopped shim", writes=len(orphans))
        return len(orphans)

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
        old = self.config
        rules = load_rules(new, self.registry)  # raises before anything changes
        live = reloadable()
        if not self._noises and new.noise.reads > 0:
            live -= {"noise.reads"}  # asking Bank again needs the channel set up at start
        restart = [name for name in changed(old, new) if name not in live]
        applied = keeping(new, old, restart)
        if self.pipeline is not None and (new.rules, new.rule_locations) != (old.rules, old.rule_locations):
            self.pipeline.update_rules(
                rules, replace(self._worker_setup(), rules=new.rules, rule_locations=new.rule_locations)
            )
        self.rules = rules
        self.router.read_rate = applied.sampling.reads
        self.router.by_key = applied.sampling.by_key
        for noise in self._noises:
            noise.share = applied.noise.reads
        for dispatcher in self.dispatchers.values():
            dispatcher.shed_lag = applied.shadow.shed_lag
        self.config = applied
        return restart

    def _open_channel(self, upstream: Upstream) -> Channel:
        """A channel to `upstream`; BK's with the adapters in front, when there are any."""
        channel = _channel(upstream, self.config, self._credentials.get(upstream.name))
        self._channels.append(channel)
        self._upstreams.append((upstream, channel))
        if upstream is self.config.bk and self.adapters:
            assert self.registry is not None  # load_adapters asks for descriptors
            return AdaptedChannel(channel, self.adapters, self.registry, self.counters)
        return channel

    def _worker_setup(self) -> WorkerSetup:
        config = self.config
        return WorkerSetup(
            self.registry.descriptor_set().SerializeToString() if self.registry is not None else None,
            config.rules,
            config.rule_locations,
            config.ids,
            config.redact.fields,
            self.redactor.key if self.redactor is not None else b"",
        )

    async def reload_certificates(self) -> list[str]:
        """Read the TLS files again (SIGHUP): the listener's for the next handshakes, the upstreams'
        for new channels (calls in flight finish on the old ones). Returns what could not be
        reloaded, each kept as it was."""
        errors: list[str] = []
        if self.server_tls is not None:
            try:
                self.server_tls.reload()
            except ConfigError as exc:
                errors.append(str(exc))
        for index, (upstream, old) in enumerate(self._upstreams):
            if not upstream.tls:
                continue
            try:
                credentials = channel_credentials(upstream)
            except ConfigError as exc:
                errors.append(str(exc))
                continue
            new = _channel(upstream, self.config, credentials)
            self._upstreams[index] = (upstream, new)
            self._channels = [new if c is old else c for c in self._channels]
            holders = [
                *((route, "primary") for route in self.routes.values()),
                *((noise, "channel") for noise in self._noises),
                *((dispatcher, "channel") for dispatcher in self.dispatchers.values()),
            ]
            for holder, name in holders:
                current = getattr(holder, name, None)
                if current is old:
                    setattr(holder, name, new)
                elif isinstance(current, AdaptedChannel) and current.channel is old:
                    current.channel = new
            task = asyncio.get_running_loop().create_task(old.close(grace=self.config.serving.grace_period))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return errors

    def _payload_filter(self) -> PayloadFilter | None:
        """With redaction, stored messages are decoded, redacted and encoded again (or not kept)."""
        redactor, registry = self.redactor, self.registry
        if redactor is None or registry is None:
            return None

        def keep(method: str, side: str, raw: bytes) -> bytes | None:
            info = registry.method(method)
            if info is None:
                return None
            cls = registry.message_class(info.input_type if side == "request" else info.output_type)
            return redactor.redact_bytes(cls, raw)

        return keep

    async def _open_store(self) -> None:
        """The store of id pairs and keys out of step; the id map is filled from it."""
        config = self.config
        try:
            store = Store.open(config.store.url)
            await store.start()
        except StoreError as exc:
            raise StartupError(str(exc)) from exc
        self.store = store
        self.steps = Steps(store, self.counters, refresh=config.store.refresh)
        self.intents = Intents(store, self.replica, self.counters)
        try:
            await self.steps.start()
            if self.id_fields is not None:
                self.ids = IdBook(self.id_fields, store, self.counters, cache=config.store.id_cache)
                await self.ids.preload()
            if self.alias_fields is not None:
                self.aliases = aliases.KeyAliases(
                    self.alias_fields, store, self.counters, cache=config.store.id_cache
                )
                await self.aliases.preload()
        except StoreError as exc:
            await self._close_store()
            raise StartupError(str(exc)) from exc

    async def _keep_house(self, counts: CountsFlusher) -> None:
        """Now and then: record what was not stored; delete comparisons older than store.retain."""
        assert self.store is not None
        retain, last_retention = self.config.store.retain, 0.0
        try:
            while True:
                if retain is not None and time.time() - last_retention >= min(retain, 3600.0):
                    last_retention = time.time()
                    try:
                        gone = await self.store.comparisons.delete_before(last_retention - retain)
                    except StoreError as exc:
                        _log.warning("retention failed", error=str(exc))
                    else:
                        if gone:
                            _log.info("retention", deleted=gone, older_than_s=retain)
                await asyncio.sleep(max(self.config.store.refresh, 0.05) * 5)
                counts.flush()
                if self.intents is not None:
                    await self.recover_intents()
        finally:
            counts.flush()

    async def _close_store(self, within: float | None = None) -> None:
        """Stop what reads the store, then close it, waiting at most `within` seconds for it to commit
        (a database that does not answer: see Store.close)."""
        if self.verifier is not None:
            await self.verifier.stop()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
            self._housekeeping = None
        if self.steps is not None:
            await self.steps.stop()
        if self.store is not None:
            await self.store.close(within)

    async def drain(self) -> None:
        """Wait until every mirrored call has finished and been compared."""
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
        if self._mode_watch is not None:
            self._mode_watch.cancel()
        await self.health.enter_graceful_shutdown()
        if self.front is not None:  # no new call comes in; those in flight finish (within grace)
            await self.front.stop(max(deadline - asyncio.get_running_loop().time(), 0.1))
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        with contextlib.suppress(TimeoutError):  # mirrored calls get the same grace as the clients'
            await asyncio.wait_for(self._mirrors_done(), timeout=max(grace, 0.1))
        if any(d.in_flight for d in self.dispatchers.values()):
            given_up = sum(d.give_up_all() for d in self.dispatchers.values())
            _log.warning("stopping: mirrored calls given up and recorded", calls=given_up)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._mirrors_done(), timeout=max(grace, 1.0))
        if self.pipeline is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.pipeline.drain(), timeout=max(grace, 1.0))
        if self._lag_probe is not None:
            self._lag_probe.cancel()
        await self._close_channels()
        if self.pipeline is not None:  # its sinks finish before the store closes
            await asyncio.get_running_loop().run_in_executor(None, self.pipeline.close)
        await self._close_store(within=max(deadline - asyncio.get_running_loop().time(), 1.0))

    async def _mirrors_done(self) -> None:
        for dispatcher in self.dispatchers.values():
            await dispatcher.drain()

    async def unreachable_upstreams(self, within: float = 3.0) -> list[Upstream]:
        """The upstreams the shim could not connect to within `within` seconds (it goes on trying)."""

        async def reachable(channel: aio.Channel) -> bool:
            try:
                await asyncio.wait_for(channel.channel_ready(), timeout=within)
            except TimeoutError:
                return False
            return True

        found = await asyncio.gather(*(reachable(channel) for _, channel in self._upstreams))
        return [upstream for (upstream, _), ok in zip(self._upstreams, found, strict=True) if not ok]

    async def _close_channels(self) -> None:
        for channel in self._channels:
            await channel.close()
        self._channels.clear()

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
