"""What the shim makes of its config and descriptors once, at start, before it opens anything: the rules,
the id and alias fields, redaction, adapters, routing and each method's plan, and the counters and
latencies they report to. A bad config stops the shim here (ConfigError), with nothing to close.

The `load_*` functions are also what the commands that read a config without serving (reconcile, report,
the tests of rules) use, so that they check it as `shim serve` does.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence

import structlog

from comparators import DescriptorError, DescriptorRegistry
from comparators.ids import IdError, IdFields
from comparators.redact import FreeText, FreeTextOf, RedactError, Redactor
from comparators.rules import RuleError, RuleSet, build_rules
from shim import aliases, reconcile
from shim.adapters import Adapter, load_adapters
from shim.config import Config
from shim.errors import ConfigError, NeedsDescriptors, StartupError
from shim.evidence.record import PayloadFilter, replica_name
from shim.exporter import Latencies, VerdictCounts
from shim.metrics import Counters, MethodLabels
from shim.pipeline import ComparisonPipeline, Sink, WorkerSetup
from shim.plan import Plans
from shim.routing import Router
from shim.store import Sealer
from shim.units import parse_duration

_log = structlog.get_logger("shim")
_RPC_STATUS = "google.rpc.Status"  # rich error details (`grpc-status-details-bin`)


def load_registry(paths: Sequence[str]) -> DescriptorRegistry | None:
    if not paths:
        return None
    try:
        return DescriptorRegistry.from_files(paths)
    except DescriptorError as exc:
        raise StartupError(str(exc)) from exc


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
        raise NeedsDescriptors("ids: id translation needs descriptors (--descriptor-set or descriptor_sets)")
    try:
        return IdFields(config.ids, registry)
    except IdError as exc:
        raise ConfigError(str(exc)) from exc


def load_redactor(config: Config, registry: DescriptorRegistry | None) -> Redactor | None:
    """The config's redacted fields, keyed by the secret in config.redact.key_env.

    Without that variable, a random key of this process: hashes then differ between shim processes
    (`Parts.warn_of_a_random_key` says so, once the config is known to be good).
    """
    if not config.redact.fields:
        return None
    if registry is None:
        raise NeedsDescriptors("redact: redaction needs descriptors (--descriptor-set or descriptor_sets)")
    secret = os.environ.get(config.redact.key_env, "")
    key = secret.encode() if secret else secrets.token_bytes(32)
    try:
        return Redactor(config.redact.fields, registry, key)
    except RedactError as exc:
        raise ConfigError(str(exc)) from exc


def sealed_kinds(config: Config, fields: IdFields | None) -> dict[str, str]:
    """The id kinds any of whose fields (ids, references, owner keys) is redacted, each with such a field."""
    if fields is None or not config.redact.fields:
        return {}
    redacted = set(config.redact.fields)
    found = {kind: sorted(fields.fields_of(kind) & redacted) for kind in fields.kinds}
    return {kind: hit[0] for kind, hit in found.items() if hit}


def sealed_aliases(config: Config, fields: IdFields | None, hashed_keys: frozenset[str]) -> dict[str, str]:
    """The key alias kinds the store keeps sealed, each with a redacted field: all of them when routing keys
    are hashed (`hashed_keys`: the redacted fields keys come from), else those with a field redacted."""
    if fields is None or not config.redact.fields:
        return {}
    redacted = set(config.redact.fields)
    found = {kind: sorted(fields.fields_of(kind) & redacted) or sorted(hashed_keys) for kind in fields.kinds}
    return {kind: hit[0] for kind, hit in found.items() if hit}


def load_sealer(
    config: Config,
    fields: IdFields | None,
    redactor: Redactor | None,
    *,
    aliases_of: frozenset[str] | None = None,
) -> Sealer | None:
    """What seals the stored ids of the kinds whose fields are redacted (`shim.store._sealing`), under the
    redaction key; with `aliases_of` (the redacted fields routing keys come from), what seals the key
    aliases of `fields`, the alias kinds. A lasting store needs that key from the environment: under a
    random one, what is stored would not open after a restart, nor in another worker or replica (a
    ConfigError then)."""
    if aliases_of is None:
        sealed, table, what = sealed_kinds(config, fields), "ids", "ids"
    else:
        sealed, table, what = sealed_aliases(config, fields, aliases_of), "key_aliases", "aliases"
    if not sealed or redactor is None:
        return None
    in_memory = config.store.url.strip().lower() in (":memory:", "sqlite::memory:")
    if not os.environ.get(config.redact.key_env) and not in_memory:
        kind, field = next(iter(sealed.items()))
        raise ConfigError(
            f"{table}.{kind}: {field} is redacted (redact.fields), so its {what} are stored sealed under the"
            f" redaction key, and ${config.redact.key_env} (redact.key_env) is not set: under a random key"
            " they would not open after a restart, nor in another worker or replica"
        )
    return Sealer(redactor.key, sealed, redactor.hash)


def check(config: Config) -> None:
    """The config compiled against its descriptor files, as a shim starting on it compiles it: its fault
    (a method or field the descriptors do not have) raised before any port is taken, not hidden behind a
    port in use. Descriptors from Bank's reflection are not fetched here: a shim asks Bank as it starts."""
    source = config.descriptors.descriptor_source
    if source == "files" or (source == "auto" and config.descriptors.descriptor_sets):
        Parts(config, load_registry(config.descriptors.descriptor_sets))


class Parts:
    """The config and the descriptors compiled: made once at start; only `rules` changes, on a reload."""

    def __init__(self, config: Config, registry: DescriptorRegistry | None) -> None:
        self.registry = registry
        # the metrics' method labels: described methods (or, without descriptors, the first 1000 named)
        self.method_labels = MethodLabels(
            (lambda method: registry.method(method) is not None) if registry is not None else None,
            also=[*(k.name for k in config.ids), *(k.name for k in config.key_aliases)],  # id events' labels
        )
        self.counters = Counters(self.method_labels)
        self.rules = load_rules(config, registry)
        self.id_fields = load_ids(config, registry)
        self.alias_fields = aliases.fields_of(config.key_aliases, registry)
        self.redactor = load_redactor(config, registry)
        self.sealer = load_sealer(config, self.id_fields, self.redactor)  # the stored ids of redacted fields
        self._random_key_env = (
            config.redact.key_env if self.redactor and not os.environ.get(config.redact.key_env) else ""
        )
        if config.descriptors.reflection == "shim" and registry is None:
            raise NeedsDescriptors(
                'reflection: "shim" answers gRPC reflection from the descriptors, and there are none'
                ' (give --descriptor-set FILE or descriptor_source = "reflection")'
            )
        self.adapters: dict[str, Adapter] = load_adapters(config.method_adapters, config.adapters, registry)
        if config.reconcile is not None:
            reconcile.check(config.reconcile, registry)
        self.router = Router(
            registry,
            config.methods,
            read_rate=config.sampling.reads,
            by_key=config.sampling.by_key,
            strict=config.ordering.strict,
            hide=self.redactor.hash if self.redactor is not None else None,
            hidden_fields=frozenset(config.redact.fields),
            counters=self.counters,
            key_sources=(*(o for k in config.ids for o in k.owner_key), *(a.key for a in config.key_aliases)),
        )
        self.plans = Plans(self.router, self.id_fields, self.alias_fields)
        # the stored aliases of redacted fields, or of any alias when keys are hashed
        self.alias_sealer = load_sealer(
            config, self.alias_fields, self.redactor, aliases_of=self.router.hashed_key_fields
        )
        self.verdict_counts = VerdictCounts(self.method_labels)  # comparisons by verdict, for the metrics
        self.primary_latencies = Latencies(self.method_labels)
        self.replica = replica_name()  # this process, as the store names it

    def warn_of_a_random_key(self) -> None:
        """Say, once the whole config is known to be good (a config error is then the one line said), that
        redaction runs on a random key of this process."""
        if self._random_key_env:
            _log.warning(
                "no redaction key: using a random one; equal values hash alike within this process only",
                key_env=self._random_key_env,
            )

    def worker_setup(self, config: Config) -> WorkerSetup:
        """What a comparison process needs to compare as this one does."""
        return WorkerSetup(
            self.registry.descriptor_set().SerializeToString() if self.registry is not None else None,
            config.rules,
            config.rule_locations,
            config.ids,
            config.redact.fields,
            self.redactor.key if self.redactor is not None else b"",
        )

    def pipeline(self, config: Config, sinks: Sequence[Sink]) -> ComparisonPipeline:
        """The comparison pipeline `config` asks for, its comparisons handed to `sinks`."""
        return ComparisonPipeline(
            self.registry,
            list(sinks),
            self.counters,
            max_pending=config.comparison.max_pending,
            rules=self.rules,
            executor=config.comparison.executor,
            workers=config.comparison.workers,
            setup=self.worker_setup(config),
            ids=self.id_fields,
            redactor=self.redactor,
        )

    def free_text_of(self) -> FreeTextOf | None:
        """With redaction: for one call (method, requests, answers, rich error details), what hashes the
        values of redacted fields its free text quotes (`comparators.redact.FreeText`)."""
        redactor, registry = self.redactor, self.registry
        if redactor is None or registry is None:
            return None

        def free_text(
            method: str,
            requests: Sequence[bytes],
            answers: Sequence[bytes],
            rich: Sequence[bytes | str | None],
        ) -> FreeText:
            return FreeText.of(redactor, registry, method, requests, answers, rich)

        return free_text

    def payload_filter(self) -> PayloadFilter | None:
        """With redaction, stored messages are decoded, redacted and encoded again (or not kept); side
        "status" is the google.rpc.Status of rich error details (`grpc-status-details-bin`)."""
        redactor, registry = self.redactor, self.registry
        if redactor is None or registry is None:
            return None

        def keep(method: str, side: str, raw: bytes) -> bytes | None:
            if side == "status":  # rich error details: a google.rpc.Status, its details in Any
                try:
                    return redactor.redact_bytes(registry.message_class(_RPC_STATUS), raw)
                except KeyError:  # googleapis-common-protos absent: they cannot be read
                    return None
            info = registry.method(method)
            if info is None:
                return None
            cls = registry.message_class(info.input_type if side == "request" else info.output_type)
            return redactor.redact_bytes(cls, raw)

        return keep
