"""The shim's configuration: one TOML file, validated at start; flags override it.

Each feature declares the settings of its own table next to its code (`shim.settings` says how);
this module assembles them: one attribute per table (`config.shadow.max_in_flight`), the upstreams,
the per-method, id, alias, reconcile and rules tables, `mode` and `adapters`, and two groups of
top-level keys, each declared like a table but without one: `config.serving` (`listen`, `workers`,
`grace_period`, ..., in `shim.serving_settings`) and `config.descriptors` (`descriptor_sets`,
`descriptor_source`, `reflection`, in `shim.descriptor_settings`). The file names these keys at its
top level and so do `parse`, `merged`, the flags and a reload (`changed`: "grace_period"); `build`
folds them into their groups. Every setting is described in `docs/config.md`, and listed in
`docs/config-reference.md` (written from the declarations by `tools/config_reference.py`). Relative
paths are relative to the config file.


Over 400 lines: reading a config file (its tables, upstreams, rules files, and the errors that name the
file and the key meant) and assembling the Config from every feature's settings are one path, read top to
bottom."""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from comparators.files import read_regular
from comparators.ids import IdKind
from shim._noise import NoiseSettings
from shim.admin_settings import AdminSettings
from shim.aliases import AliasKind
from shim.aliases import parse as parse_aliases
from shim.dataplane.settings import EnvoySettings
from shim.descriptor_settings import DescriptorSettings
from shim.errors import ConfigError
from shim.gate import GateSettings
from shim.ids_settings import parse as parse_ids
from shim.pipeline import ComparisonSettings, RedactSettings
from shim.reconcile_settings import ReconcileSettings
from shim.reconcile_settings import parse as parse_reconcile
from shim.recording.settings import RecordSettings
from shim.routing import MethodSettings, SamplingSettings, parse_methods
from shim.serving_settings import ServingSettings
from shim.settings import (
    ADDRESS,
    BOOL,
    PATH,
    TEXT,
    Group,
    Resolve,
    Section,
    Setting,
    as_table,
    check_address,
    check_choice,
    declared,
    duration,
    finish,
    one_of,
    read,
    same_server,
    setting,
    take,
)
from shim.shadow.settings import OrderingSettings, ShadowSettings
from shim.sinks import DiffLogSettings
from shim.store_settings import StoreSettings
from shim.tls_settings import TlsSettings
from shim.verify import VerifySettings

# who answers the client, and who is mirrored and compared:
#   bank        Bank answers; nothing is mirrored
#   shadow      Bank answers; BK is mirrored and compared
#   bk-primary  BK answers; Bank is mirrored and compared (rolling back is going back to shadow)
#   bk          BK answers; nothing is mirrored (Bank retired)
MODES = ("bank", "shadow", "bk-primary", "bk")
S = TypeVar("S", bound=Section)

# the groups of top-level settings: each a Config attribute (its GROUP), its keys top-level in the file
GROUPS: tuple[type[Group], ...] = (ServingSettings, DescriptorSettings)

# the tables of settings, each declared by its feature, in the order the reference lists them
SECTIONS: tuple[type[Section], ...] = (
    EnvoySettings,
    AdminSettings,
    TlsSettings,
    ShadowSettings,
    ComparisonSettings,
    DiffLogSettings,
    StoreSettings,
    NoiseSettings,
    RedactSettings,
    GateSettings,
    SamplingSettings,
    OrderingSettings,
    VerifySettings,
    RecordSettings,
)
# the tables whose keys are names (of methods, id kinds, ...) or that hold more than settings: each is
# read by its own parser and described on its own page
TABLES = {
    "upstreams": ("`[upstreams.bank]` and `[upstreams.bk]`: the services the shim calls", "config.md"),
    "methods": ('`[methods."package.Service/Method"]`: routing key, read, strict, adapter', "ordering.md"),
    "ids": ("`[ids.KIND]`: ids each side mints, translated between them", "ids.md"),
    "key_aliases": ("`[key_aliases.NAME]`: other names of routing keys", "ids.md"),
    "reconcile": (
        "`[reconcile]`: what `shim reconcile` and the checks of keys out of step read",
        "reconcile.md",
    ),
    "rules": ("`[[rules]]`: comparison rules, checked against the descriptors at start", "rules.md"),
    "rules_files": ("files holding more `[[rules]]` tables, read after the config's own", "rules.md"),
}
RELOADABLE_TABLES = ("rules",)  # a reloaded config's rules apply at once
_TARGET = "required, here or by `--bank` / `--bk`"  # (an upstream's target, in the config reference)
_TARGET_FORMS = "HOST:PORT, or a gRPC target (dns:, ipv4:, ipv6:, unix:)"


@dataclass(frozen=True, slots=True)
class Upstream:
    """One gRPC target the shim calls: `[upstreams.bank]` or `[upstreams.bk]`."""

    name: str
    target: str = field(metadata={Setting: Setting(ADDRESS, _TARGET_FORMS, shown=_TARGET)})
    timeout: float = setting(
        2.0,
        duration(),
        "how long the shadow may take after the primary answered (or after it was sent, if later); a call"
        " with a client's deadline is cut sooner when that ends first: the mirrored call carries it, the"
        " time the client had left when the call came, counted from when it is sent (`no answer within"
        " the client's deadline`)",
    )
    tls: bool = setting(False, BOOL, "call it over TLS (implied by ca, cert or server_name)")
    ca: str = setting("", PATH, "PEM file of the CAs to trust", shown="the system's")
    cert: str = setting("", PATH, "PEM client certificate chain, for mTLS", shown="none")
    key: str = setting("", PATH, "its private key", shown="none")
    server_name: str = setting(
        "",
        TEXT,
        "the name to expect in its certificate (and send as authority), when the target differs; a "
        "`unix:` target over TLS needs it",
        shown="the target's host",
    )

    def __post_init__(self) -> None:
        where = f"upstreams.{self.name}"
        if bool(self.cert) != bool(self.key):
            raise ConfigError(f"{where}: cert and key go together (a client certificate and its key)")
        if (self.ca or self.cert or self.server_name) and not self.tls:
            object.__setattr__(self, "tls", True)
        if self.tls and not self.server_name and self.target.partition(":")[0] in ("unix", "unix-abstract"):
            # grpc would refuse every certificate, and Envoy would check no name: neither is TLS
            raise ConfigError(
                f"{where}: {self.target!r} is a unix socket, which names no host to expect in its"
                " certificate: set server_name (the name in the certificate)"
            )


@dataclass(frozen=True, slots=True)
class Config:
    bank: Upstream
    bk: Upstream | None = None
    mode: str = setting(
        "shadow",
        one_of(*MODES),
        "who answers the clients and who is mirrored (`docs/modes.md`)",
        shown='"shadow" with a BK upstream, else "bank"',
    )
    adapters: str = setting(
        "",
        TEXT,
        'BK speaks its own interface: a module (or "module:name") of adapters by method',
        shown="none",
    )
    serving: ServingSettings = field(default_factory=ServingSettings)  # listen, workers, ... (top-level)
    descriptors: DescriptorSettings = field(default_factory=DescriptorSettings)  # descriptor_sets, ...
    methods: dict[str, MethodSettings] = field(default_factory=dict)  # [methods."pkg.Svc/Method"]
    ids: tuple[IdKind, ...] = ()  # [ids.KIND] declarations, checked against the descriptors at start
    key_aliases: tuple[AliasKind, ...] = ()  # [key_aliases.NAME]: other names of routing keys (shim.aliases)
    reconcile: ReconcileSettings | None = None  # [reconcile]: what `shim reconcile` sweeps
    rules: tuple[dict[str, Any], ...] = ()  # [[rules]] tables, checked against the descriptors at start
    rule_locations: tuple[str, ...] = field(default=(), compare=False)  # "FILE line N" of each rule
    envoy: EnvoySettings = field(default_factory=EnvoySettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    shadow: ShadowSettings = field(default_factory=ShadowSettings)
    comparison: ComparisonSettings = field(default_factory=ComparisonSettings)
    diff_log: DiffLogSettings = field(default_factory=DiffLogSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    noise: NoiseSettings = field(default_factory=NoiseSettings)
    redact: RedactSettings = field(default_factory=RedactSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    ordering: OrderingSettings = field(default_factory=OrderingSettings)
    verify: VerifySettings = field(default_factory=VerifySettings)
    record: RecordSettings = field(default_factory=RecordSettings)

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        check_address("upstreams.bank.target", self.bank.target)
        if self.bk is not None:
            check_address("upstreams.bk.target", self.bk.target)
        self.record.check(self.serving.workers, self.store.url)
        self.ordering.check_store(self.store.url, self.serving.workers if self.bk is not None else 1)
        if self.mode != "bank" and self.bk is None:
            raise ConfigError(
                f"mode {self.mode} needs a BK upstream (--bk HOST:PORT or [upstreams.bk] target)"
            )

    def check_sides(self) -> None:
        """For the commands that call both sides (`shim serve`, `shim reconcile`): a ConfigError when BK's
        target names Bank's own server (a replay calls BK alone, where Bank may have been recorded)."""
        if self.bk is not None and same_server(self.bank.target, self.bk.target):
            raise ConfigError(
                f"upstreams.bk.target {self.bk.target!r} is Bank's own address ({self.bank.target!r}):"
                " Bank would be compared with itself, and sent every write twice; give BK's address"
            )

    @property
    def method_adapters(self) -> dict[str, str]:
        """The adapters named per method ([methods."M"] adapter), by method name."""
        return {name: settings.adapter for name, settings in self.methods.items() if settings.adapter}


_SECTIONS_BY_NAME = {cls.SECTION: cls for cls in SECTIONS}
_SECTION_NAMES = frozenset(_SECTIONS_BY_NAME)
_GROUP_NAMES = frozenset(cls.GROUP for cls in GROUPS)
_HOLDERS = _SECTION_NAMES | _GROUP_NAMES  # the Config's attributes that hold declared settings
_GROUP_OF_KEY = {key: cls.GROUP for cls in GROUPS for key, _, _ in declared(cls)}  # "listen": "serving"


def section(settings: Mapping[str, Any], cls: type[S]) -> S:
    """One table's settings out of `parse`'s (or `load_file`'s) result, defaults for what it leaves out."""
    value = settings.get(cls.SECTION)
    if isinstance(value, cls):
        return value
    return cls(**value) if isinstance(value, Mapping) else cls()


def merged(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Settings (as `parse` gives them), each layer's over the ones before it; a table's values one by
    one: `merged(from_file, {"store": {"url": url}})` keeps the file's other [store] settings. A group
    given whole (`serving`) is a table too, over the keys of it that layers before gave top-level."""
    out: dict[str, Any] = {}
    for layer in layers:
        for name, value in layer.items():
            if name in _GROUP_NAMES:  # what it gives replaces those keys given before it, top-level
                for key in value if isinstance(value, Mapping) else (f.name for f in fields(value)):
                    out.pop(key, None)
            before = out.get(name)
            if name in _HOLDERS and isinstance(value, Mapping) and before is not None:
                out[name] = {**before, **value} if isinstance(before, Mapping) else replace(before, **value)
            else:
                out[name] = value
    return out


def changed(old: Config, new: Config) -> list[str]:
    """The settings whose values differ, named as in the config file: "grace_period", "shadow.shed_lag",
    "upstreams.bk" (the rules' locations go with the rules)."""
    names = []
    for f in fields(Config):
        was, now = getattr(old, f.name), getattr(new, f.name)
        if f.name in _HOLDERS:
            prefix = f"{f.name}." if f.name in _SECTION_NAMES else ""  # a group's keys are top-level
            names += [
                f"{prefix}{key}"
                for key, _, _ in declared(type(was))
                if getattr(was, key) != getattr(now, key)
            ]
        elif f.name != "rule_locations" and was != now:
            names.append(f"upstreams.{f.name}" if f.name in ("bank", "bk") else f.name)
    return names


def reloadable() -> frozenset[str]:
    """The settings a running shim takes from a reloaded config (SIGHUP), named as `changed` names them."""
    tables = (f"{cls.SECTION}.{key}" for cls in SECTIONS for key, decl, _ in declared(cls) if decl.reloadable)
    groups = (key for cls in GROUPS for key, decl, _ in declared(cls) if decl.reloadable)
    return frozenset([*RELOADABLE_TABLES, *tables, *groups])


def keeping(new: Config, old: Config, names: list[str]) -> Config:
    """`new`, with `old`'s values of the settings `names` (as `changed` names them)."""
    top: dict[str, Any] = {}
    tables: dict[str, dict[str, Any]] = {}  # a table's kept values, set at once (`tls.cert` and `tls.key`)
    for name in names:
        table, _, key = name.rpartition(".")
        table = table or _GROUP_OF_KEY.get(key, "")  # "listen": a key of the group `serving`
        if table in _HOLDERS:
            tables.setdefault(table, {})[key] = getattr(getattr(old, table), key)
        else:
            top[key] = getattr(old, key)
    top.update({table: replace(getattr(new, table), **kept) for table, kept in tables.items()})
    return replace(new, **top)


def _read_toml(path: Path, what: str = "config") -> tuple[str, dict[str, Any]]:
    try:
        text = read_regular(path).decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from exc
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from exc


def importable(folder: Path) -> None:
    """Modules in `folder` can be imported, after those of every other place Python looks: the custom rules'
    callables and the adapters a config names (`module:function`) may sit beside the file that names them.
    The comparison processes, spawned, start with this process's sys.path."""
    entry = str(folder.resolve())
    if entry not in sys.path:
        sys.path.append(entry)


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into the settings `build` takes; its folder becomes importable."""
    path = Path(path)
    text, data = _read_toml(path)
    importable(path.parent)
    try:
        return parse(data, base=path.parent, text=text, source=str(path))
    except ConfigError as exc:  # a key of its own no table takes: which file says where to look
        if str(exc).startswith("unknown setting"):
            raise ConfigError(f"{path}: {exc}") from None
        raise


_RULES_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*rules[ \t]*\]\]", re.M)


def rule_locations(text: str, source: str, count: int) -> tuple[str, ...]:
    """Where each [[rules]] table starts: "FILE line N" (the file when a line cannot be told)."""
    lines = [text.count("\n", 0, m.start()) + 1 for m in _RULES_HEADER.finditer(text)]
    if len(lines) != count:  # rules given inline (rules = [...]): no line per rule
        return tuple(f"{source} rule {i + 1}" for i in range(count))
    return tuple(f"{source} line {line}" for line in lines)


def load_rules_file(path: str | Path) -> tuple[tuple[dict[str, Any], ...], tuple[str, ...]]:
    """A file holding only [[rules]] tables (the --rules flag); its folder becomes importable."""
    path = Path(path)
    text, data = _read_toml(path, "rules file")
    importable(path.parent)
    rules = _rules(data.pop("rules", None), text, str(path))
    try:
        finish("", data, ["rules"])
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc} (a rules file holds [[rules]] tables alone)") from None
    return rules


def _rules(value: Any, text: str, source: str) -> tuple[tuple[dict[str, Any], ...], tuple[str, ...]]:
    if value is None:
        return (), ()
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{source}: rules must be tables written as [[rules]]")
    return tuple(value), rule_locations(text, source, len(value))


def parse(
    data: dict[str, Any], base: Path | None = None, text: str = "", source: str = "config"
) -> dict[str, Any]:
    """Validate a config mapping; returns the settings `build` takes: the top-level values given (those
    of the groups among them, by their own names), and for each table given the values it gives (a
    dict, over which flags may write)."""
    top = dict(data)

    def resolve(p: str) -> str:
        return str(base / p) if base is not None and p != "-" and not Path(p).is_absolute() else p

    out = take(Config, "", top, resolve)
    for group in GROUPS:
        out |= take(group, "", top, resolve)
    for cls in SECTIONS:
        if (v := top.pop(cls.SECTION, None)) is not None:
            out[cls.SECTION] = read(cls, v, resolve)
    if (v := top.pop("upstreams", None)) is not None:
        upstreams = as_table("upstreams", v)
        for name in ("bank", "bk"):
            if (u := upstreams.pop(name, None)) is not None:
                out[name] = _upstream(name, u, resolve)
        finish("upstreams.", upstreams)
    if (v := top.pop("reconcile", None)) is not None:
        out["reconcile"] = parse_reconcile(as_table("reconcile", v))
    if (v := top.pop("methods", None)) is not None:
        out["methods"] = parse_methods(as_table("methods", v))
    if (v := top.pop("key_aliases", None)) is not None:
        out["key_aliases"] = parse_aliases(as_table("key_aliases", v))
    if (v := top.pop("ids", None)) is not None:
        out["ids"] = parse_ids(as_table("ids", v))
    if (v := top.pop("rules", None)) is not None:
        out["rules"], out["rule_locations"] = _rules(v, text, source)
    if (v := top.pop("rules_files", None)) is not None:
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise ConfigError("rules_files: expected a list of file paths")
        for path in v:
            rules, locations = load_rules_file(resolve(path))
            out["rules"] = (*out.get("rules", ()), *rules)
            out["rule_locations"] = (*out.get("rule_locations", ()), *locations)
    finish("", top, _top_level_keys())
    return out


def _top_level_keys() -> list[str]:
    """The keys a config file's top level takes: settings, groups' settings, sections and tables."""
    holders: tuple[type[Any], ...] = (Config, *GROUPS)
    keys = [key for cls in holders for key, _, _ in declared(cls)]
    keys += [cls.SECTION for cls in SECTIONS]
    return [*keys, "upstreams", "reconcile", "methods", "key_aliases", "ids", "rules", "rules_files"]


def _upstream(name: str, value: object, resolve: Resolve) -> Upstream:
    prefix = f"upstreams.{name}."
    table = as_table(f"upstreams.{name}", value)
    found = take(Upstream, prefix, table, resolve)
    found.setdefault("target", "")  # a flag may give it (--bank, --bk); `build` says if none did
    upstream = Upstream(name=name, **found)
    finish(prefix, table, (key for key, _, _ in declared(Upstream)))
    return upstream


def build(settings: Mapping[str, Any]) -> Config:
    """A Config from parsed settings (file values already overridden by flags); a table may be given as
    its dataclass or as a dict of the values it changes. The top-level keys of a group (`listen`) go
    into it (`config.serving`), over what it is given whole, if it is, like a table."""
    settings = {
        name: _SECTIONS_BY_NAME[name](**value)
        if name in _SECTIONS_BY_NAME and isinstance(value, Mapping)
        else value
        for name, value in settings.items()
    }
    for cls in GROUPS:
        keys = {key: settings.pop(key) for key, _, _ in declared(cls) if key in settings}
        given = settings.get(cls.GROUP)
        if given is None or isinstance(given, Mapping):
            settings[cls.GROUP] = cls(**{**(given or {}), **keys})
        elif keys:
            settings[cls.GROUP] = replace(given, **keys)
    settings.setdefault("mode", "shadow" if settings.get("bk") is not None else "bank")
    bank = settings.pop("bank", None)
    if bank is None:
        raise ConfigError("no Bank upstream: give --bank HOST:PORT or [upstreams.bank] target")
    for up in (bank, settings.get("bk")):
        if up is not None and not up.target:
            raise ConfigError(f"upstreams.{up.name}.target is missing: give it, or --{up.name} HOST:PORT")
    return Config(bank=bank, **settings)
