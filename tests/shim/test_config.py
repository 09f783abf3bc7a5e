"""The config file and the flags: what they build, and the one-line error that names each mistake."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path

import pytest

from comparators.ids import IdKind
from shim import cli
from shim.cli import serve as serve_command
from shim.config import GROUPS, Config, Upstream, build, load_file, merged
from shim.descriptor_settings import DescriptorSettings
from shim.errors import ConfigError
from shim.pipeline import ComparisonSettings
from shim.serving_settings import ServingSettings
from shim.settings import declared
from shim.shadow.settings import ShadowSettings
from shim.sinks import DiffLogSettings
from shim.units import parse_duration, parse_size

MiB = 1024**2


def _serve_settings(*argv: str | Path) -> Config:
    """The Config `shim serve ARGV` would run with (the CLI's own path from flags and file to Config)."""
    args = cli.parser().parse_args(["serve", *map(str, argv)])
    return serve_command.settings_of(args)


def _config_file(folder: Path, text: str | bytes) -> Path:
    path = folder / "shim.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


BANK = Upstream("bank", "legacy-bank:50051")
BK = Upstream("bk", "bk:50051")

FULL = """
listen = "0.0.0.0:6000"
mode = "shadow"
descriptor_sets = ["bank.binpb", "protos/more.binpb", "/abs/other.binpb"]
max_message_size = "unlimited"
grace_period = "5s"

[upstreams.bank]
target = "legacy-bank:50051"
[upstreams.bk]
target = "bk:50051"
timeout = "250ms"

[shadow]
max_in_flight = 50
max_capture = "1MiB"

[comparison]
max_pending = 7

[diff_log]
path = "logs/diff.jsonl"
"""

VALID: list[object] = [
    pytest.param(
        '[upstreams.bank]\ntarget = "legacy-bank:50051"\n',
        lambda d: Config(bank=BANK, mode="bank"),
        id="bank-only-defaults-to-bank-mode",
    ),
    pytest.param(
        '[upstreams.bank]\ntarget = "legacy-bank:50051"\n[upstreams.bk]\ntarget = "bk:50051"\n',
        lambda d: Config(bank=BANK, bk=BK, mode="shadow"),
        id="with-bk-defaults-to-shadow-mode",
    ),
    pytest.param(
        FULL,
        lambda d: Config(
            bank=BANK,
            bk=Upstream("bk", "bk:50051", timeout=0.25),
            mode="shadow",
            serving=ServingSettings(listen="0.0.0.0:6000", max_message_size=-1, grace_period=5.0),
            descriptors=DescriptorSettings(
                descriptor_sets=(str(d / "bank.binpb"), str(d / "protos/more.binpb"), "/abs/other.binpb")
            ),
            shadow=ShadowSettings(max_in_flight=50, max_capture=MiB),
            comparison=ComparisonSettings(max_pending=7),
            diff_log=DiffLogSettings(path=str(d / "logs/diff.jsonl")),
        ),
        id="every-setting-relative-paths-resolved-against-the-file",
    ),
    pytest.param(
        'mode = "bank"\nmax_message_size = 1024\ngrace_period = "100ms"\n'
        '[upstreams.bank]\ntarget = "unix:/run/bank.sock"\n[upstreams.bk]\ntarget = "[::1]:9"\n'
        '[diff_log]\npath = "-"\n',
        lambda d: Config(
            bank=Upstream("bank", "unix:/run/bank.sock"),
            bk=Upstream("bk", "[::1]:9"),
            mode="bank",
            serving=ServingSettings(max_message_size=1024, grace_period=0.1),
            diff_log=DiffLogSettings(path="-"),
        ),
        id="bank-mode-with-bk-unix-target-ipv6-stdout",
    ),
    pytest.param(
        'descriptor_source = "reflection"\n[upstreams.bank]\ntarget = "legacy-bank:50051"\n',
        lambda d: Config(
            bank=BANK, mode="bank", descriptors=DescriptorSettings(descriptor_source="reflection")
        ),
        id="descriptors-by-reflection",
    ),
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_valid_files_build_the_expected_config(
    tmp_path: Path, text: str, expected: Callable[[Path], Config]
) -> None:
    """A valid file gives exactly the Config it describes, with defaults for what it leaves out."""
    assert _serve_settings("--config", _config_file(tmp_path, text)) == expected(tmp_path)


def test_relative_config_path_resolves_against_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paths in a config given by a relative path are relative to the config's folder, not to the cwd."""
    (tmp_path / "conf").mkdir()
    _config_file(tmp_path / "conf", '[upstreams.bank]\ntarget = "b:1"\n[diff_log]\npath = "d.jsonl"\n')
    monkeypatch.chdir(tmp_path)
    assert (
        Path(_serve_settings("--config", "conf/shim.toml").diff_log.path).resolve()
        == tmp_path / "conf" / "d.jsonl"
    )


BANK_TABLE = '[upstreams.bank]\ntarget = "b:1"\n'

MISTAKES: list[object] = [
    pytest.param('colour = "blue"\n' + BANK_TABLE, "unknown setting colour", id="unknown-top-level-key"),
    pytest.param(
        BANK_TABLE + "retries = 3\n", "unknown setting upstreams.bank.retries", id="unknown-upstream-key"
    ),
    pytest.param(
        BANK_TABLE + "[upstreams.cobol]\ntarget = 'c:1'\n", "upstreams.cobol", id="unknown-upstream"
    ),
    pytest.param(BANK_TABLE + "[shadow]\nmax_inflight = 5\n", "shadow.max_inflight", id="unknown-shadow-key"),
    pytest.param(
        BANK_TABLE + "[comparison]\nthreads = 5\n", "comparison.threads", id="unknown-comparison-key"
    ),
    pytest.param(BANK_TABLE + "[diff_log]\nfile = 'x'\n", "diff_log.file", id="unknown-diff-log-key"),
    pytest.param('grace_period = "5 parsecs"\n' + BANK_TABLE, "grace_period", id="bad-duration"),
    pytest.param("grace_period = -1\n" + BANK_TABLE, "grace_period", id="negative-duration"),
    pytest.param("grace_period = true\n" + BANK_TABLE, "grace_period", id="boolean-duration"),
    pytest.param(
        BANK_TABLE + "[upstreams.bk]\ntarget = 'k:1'\ntimeout = 'soon'\n",
        "upstreams.bk.timeout",
        id="bad-timeout",
    ),
    pytest.param('max_message_size = "64 MB!"\n' + BANK_TABLE, "max_message_size", id="bad-size"),
    pytest.param("max_message_size = 0\n" + BANK_TABLE, "max_message_size", id="zero-size"),
    pytest.param(BANK_TABLE + "[shadow]\nmax_capture = '1TB'\n", "shadow.max_capture", id="bad-capture-size"),
    pytest.param(BANK_TABLE + "[shadow]\nmax_in_flight = 0\n", "shadow.max_in_flight", id="zero-in-flight"),
    pytest.param(
        BANK_TABLE + "[comparison]\nmax_pending = '10'\n", "comparison.max_pending", id="text-as-integer"
    ),
    pytest.param('mode = "bogus"\n' + BANK_TABLE, "mode", id="bad-mode"),
    pytest.param(
        'descriptor_source = "grpc"\n' + BANK_TABLE, "descriptor_source", id="bad-descriptor-source"
    ),
    pytest.param(
        "descriptor_source = 1\n" + BANK_TABLE, "descriptor_source", id="descriptor-source-not-text"
    ),
    pytest.param('listen = "localhost"\n' + BANK_TABLE, "listen", id="address-without-port"),
    pytest.param('listen = "localhost:99999"\n' + BANK_TABLE, "listen", id="port-out-of-range"),
    pytest.param("listen = 50051\n" + BANK_TABLE, "listen", id="address-not-text"),
    pytest.param('[upstreams.bank]\ntarget = "bank"\n', "upstreams.bank.target", id="bad-bank-address"),
    pytest.param(BANK_TABLE + '[upstreams.bk]\ntarget = ":1"\n', "upstreams.bk.target", id="bad-bk-address"),
    pytest.param('[upstreams.bank]\ntimeout = "1s"\n', "upstreams.bank.target", id="missing-bank-target"),
    pytest.param('listen = "127.0.0.1:1"\n', "upstreams.bank", id="no-bank-at-all"),
    pytest.param('mode = "shadow"\n' + BANK_TABLE, "upstreams.bk", id="shadow-mode-without-bk"),
    pytest.param(
        'descriptor_sets = "bank.binpb"\n' + BANK_TABLE, "descriptor_sets", id="descriptor-sets-not-list"
    ),
    pytest.param("upstreams = 3\n", "upstreams", id="upstreams-not-a-table"),
    pytest.param('[upstreams]\nbank = "b:1"\n', "upstreams.bank", id="upstream-not-a-table"),
    pytest.param(BANK_TABLE + '[diff_log]\npath = ""\n', "diff_log.path", id="empty-path"),
    pytest.param("listen = \n", "not valid TOML", id="invalid-toml"),
    pytest.param(b'listen = "caf\xe9:1"\n', "not UTF-8", id="not-utf-8"),
    pytest.param(BANK_TABLE + "[verify]\nsettle = 'soon'\n", "verify.settle", id="bad-verify-settle"),
    pytest.param(BANK_TABLE + "[verify]\nattempts = 0\n", "verify.attempts", id="zero-verify-attempts"),
    pytest.param(BANK_TABLE + "[verify]\nretries = 3\n", "verify.retries", id="unknown-verify-key"),
    pytest.param(
        BANK_TABLE + "[ordering]\nstream_hold = 'x'\n", "ordering.stream_hold", id="bad-stream-hold"
    ),
    pytest.param(BANK_TABLE + "[ordering]\nmax_wait = '0s'\n", "ordering.max_wait", id="zero-max-wait"),
    pytest.param(BANK_TABLE + "[ordering]\nmax_wait = 'later'\n", "ordering.max_wait", id="bad-max-wait"),
    pytest.param(
        BANK_TABLE + "[ordering]\nacross_replicas = true\n[store]\nurl = ':memory:'\n",
        "ordering.across_replicas needs a store the replicas share",
        id="across-replicas-in-memory",
    ),
    pytest.param(
        "workers = 2\n" + BANK_TABLE + "[upstreams.bk]\ntarget = 'k:1'\n[store]\nurl = ':memory:'\n",
        "serving.workers: workers mirroring to BK need a store they share",
        id="workers-in-memory",
    ),
    pytest.param(
        BANK_TABLE + "[ordering]\nreplica_lease = '10s'\n",
        "ordering.replica_lease is no longer read: use store.lease, the one lease of a replica's liveness",
        id="retired-replica-lease",
    ),
    pytest.param(BANK_TABLE + "[key_aliases]\nref = 3\n", "key_aliases.ref", id="alias-not-a-table"),
    pytest.param(
        BANK_TABLE + "[key_aliases.ref]\nalias = 'a.B.c'\nkey = 'a.B.d'\n",
        "key_aliases.ref.references",
        id="alias-without-references",
    ),
    pytest.param(
        BANK_TABLE + "[key_aliases.ref]\nalias = 'a.B.c'\nkey = 'a.B.d'\nreferences = ['a.R.c']\nowner = 1\n",
        "unknown setting key_aliases.ref.owner",
        id="alias-unknown-setting",
    ),
    pytest.param(BANK_TABLE + '[store]\nrefresh = "0ms"\n', "store.refresh", id="refresh-without-pause"),
    pytest.param(BANK_TABLE + '[store]\nrefresh = "9ms"\n', "store.refresh", id="refresh-below-10ms"),
    pytest.param(BANK_TABLE + '[store]\nretain = "0s"\n', "store.retain", id="retain-nothing"),
    pytest.param(BANK_TABLE + '[store]\nretain = "59m"\n', "store.retain", id="retain-below-an-hour"),
    pytest.param("grace_period = inf\n" + BANK_TABLE, "grace_period", id="infinite-grace-period"),
    pytest.param("grace_period = nan\n" + BANK_TABLE, "grace_period", id="nan-grace-period"),
    pytest.param('grace_period = "11m"\n' + BANK_TABLE, "grace_period", id="grace-period-above-10m"),
    pytest.param(
        BANK_TABLE + "[upstreams.bk]\ntarget = 'k:1'\ntimeout = inf\n",
        "upstreams.bk.timeout",
        id="infinite-timeout",
    ),
    pytest.param(BANK_TABLE + "[shadow]\nshed_lag = nan\n", "shadow.shed_lag", id="nan-shed-lag"),
    pytest.param(BANK_TABLE + "[gate]\nwindow = 1e300\n", "gate.window", id="absurd-duration"),
    pytest.param(
        BANK_TABLE + f'[verify]\nsettle = "{"9" * 400}d"\n', "verify.settle", id="duration-overflowing"
    ),
    pytest.param(
        BANK_TABLE + '[admin]\nlisten = "0.0.0.0:9465"\n', "admin.listen", id="admin-on-every-address"
    ),
    pytest.param(BANK_TABLE + '[admin]\nlisten = "10.0.0.7:9465"\n', "admin.listen", id="admin-on-a-network"),
    pytest.param(
        BANK_TABLE + '[admin]\nlisten = "admin.internal:9465"\n', "admin.listen", id="admin-on-a-name"
    ),
    pytest.param(
        BANK_TABLE + '[record]\ninto = "store"\npath = "x.jsonl"\n',
        "record.path",
        id="record-into-store-and-path",
    ),
    pytest.param(BANK_TABLE + '[record]\nid = "r1"\n', "record.id", id="record-id-of-a-file"),
    pytest.param(
        BANK_TABLE + "[shadow]\nmax_in_flight = 10\nmax_in_flight_streams = 100\n",
        "shadow.max_in_flight_streams: 100 is more than shadow.max_in_flight (10)",
        id="more-streams-than-calls",
    ),
    pytest.param(BANK_TABLE + '[record]\ninto = "disk"\n', "record.into", id="record-into-what"),
    pytest.param(
        BANK_TABLE + '[record]\ninto = "store"\nid = "a b"\n', "record.id", id="record-id-not-an-id"
    ),
    pytest.param(
        BANK_TABLE + '[store]\nurl = ":memory:"\n[record]\ninto = "store"\n',
        "record.into",
        id="record-into-memory",
    ),
    *(
        pytest.param(
            BANK_TABLE + f'[store]\ncorrelation_header = "{name}"\n',
            "store.correlation_header",
            id=f"correlation-header-{name}",
        )
        for name in (
            "X Request Id",  # no metadata is named so: nothing would ever be found
            "x-request-id:",
            "Authorization",
            "x-auth-token",
            "x-session-id",
            "x-amz-security-token",
            "x-goog-api-key",
            "x-apikey",
            "x-client-secret",
            "x-db-password",
            "x-csrf-token",
            "grpc-cookie",
        )
    ),
]


@pytest.mark.parametrize(("text", "names"), MISTAKES)
def test_each_mistake_is_a_one_line_config_error_naming_it(
    tmp_path: Path, text: str | bytes, names: str
) -> None:
    """Every kind of mistake raises ConfigError whose message is one line naming the offending key."""
    with pytest.raises(ConfigError) as caught:
        _serve_settings("--config", _config_file(tmp_path, text))
    message = str(caught.value)
    assert names in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("path", "names"),
    [
        pytest.param("missing.toml", "No such file or directory", id="missing"),
        pytest.param(".", "Is a directory", id="directory"),
    ],
)
def test_unreadable_config_is_a_config_error(tmp_path: Path, path: str, names: str) -> None:
    """A config that cannot be read raises ConfigError naming the file and why."""
    with pytest.raises(ConfigError, match=f"cannot read config .*: {names}"):
        _serve_settings("--config", tmp_path / path)


def _with(config: Config, values: dict[str, object]) -> Config:
    """`config` with `values`, named as the file names them: `listen` is a value of `config.serving`."""
    groups = {cls.GROUP: {key for key, _, _ in declared(cls)} for cls in GROUPS}
    top = {name: value for name, value in values.items() if not any(name in keys for keys in groups.values())}
    for group, keys in groups.items():
        if given := {name: value for name, value in values.items() if name in keys}:
            top[group] = replace(getattr(config, group), **given)
    return replace(config, **top)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        pytest.param(["--listen", "127.0.0.1:0"], {"listen": "127.0.0.1:0"}, id="listen"),
        pytest.param(["--mode", "bank"], {"mode": "bank"}, id="mode"),
        pytest.param(
            ["--bank", "other-bank:1"],
            {"bank": Upstream("bank", "other-bank:1", timeout=3.0)},
            id="bank-keeps-timeout",
        ),
        pytest.param(
            ["--bk", "other-bk:2"], {"bk": Upstream("bk", "other-bk:2", timeout=0.25)}, id="bk-keeps-timeout"
        ),
        pytest.param(
            ["--shadow-timeout", "2m"], {"bk": Upstream("bk", "bk:50051", timeout=120.0)}, id="shadow-timeout"
        ),
        pytest.param(
            ["--bk", "k:3", "--shadow-timeout", "10ms"],
            {"bk": Upstream("bk", "k:3", timeout=0.01)},
            id="bk-and-timeout",
        ),
        pytest.param(
            ["--descriptor-set", "a.binpb", "--descriptor-set", "b.binpb"],
            {"descriptor_sets": ("a.binpb", "b.binpb")},
            id="descriptor-sets-replace-the-files",
        ),
        pytest.param(["--diff-log", "-"], {"diff_log": DiffLogSettings(path="-")}, id="diff-log"),
        pytest.param(
            ["--descriptor-source", "reflection"], {"descriptor_source": "reflection"}, id="descriptor-source"
        ),
    ],
)
def test_flags_override_the_file(tmp_path: Path, flags: list[str], expected: dict[str, object]) -> None:
    """A flag replaces the file's value for its setting and leaves every other setting as the file says."""
    text = FULL.replace(
        '[upstreams.bank]\ntarget = "legacy-bank:50051"',
        '[upstreams.bank]\ntarget = "legacy-bank:50051"\ntimeout = "3s"',
    )
    path = _config_file(tmp_path, text)
    from_file = _serve_settings("--config", path)
    overridden = _serve_settings("--config", path, *flags)
    assert overridden == _with(from_file, expected)
    assert overridden != from_file


TLS_UPSTREAMS = """
[upstreams.bank]
target = "bank.internal:443"
ca = "ca.pem"
server_name = "bank.example"

[upstreams.bk]
target = "bk.internal:443"
timeout = "5s"
ca = "ca.pem"
cert = "client.pem"
key = "client.key"
"""


@pytest.mark.parametrize(
    ("flags", "bank_target", "bk_target", "bk_timeout"),
    [
        pytest.param(["--bank", "10.0.0.1:443"], "10.0.0.1:443", "bk.internal:443", 5.0, id="bank"),
        pytest.param(["--bk", "10.0.0.2:443"], "bank.internal:443", "10.0.0.2:443", 5.0, id="bk"),
        pytest.param(
            ["--shadow-timeout", "9s"], "bank.internal:443", "bk.internal:443", 9.0, id="shadow-timeout"
        ),
        pytest.param(
            ["--bank", "b:1", "--bk", "k:2", "--shadow-timeout", "1s"], "b:1", "k:2", 1.0, id="all-three"
        ),
    ],
)
def test_an_upstream_flag_keeps_the_rest_of_the_files_upstream(
    tmp_path: Path, flags: list[str], bank_target: str, bk_target: str, bk_timeout: float
) -> None:
    """--bank, --bk and --shadow-timeout replace the target or the timeout alone: the file's TLS settings
    (CAs, client certificate, server name) still hold, so that the shim never calls a TLS upstream in plain
    text, or without its client certificate, because a flag named its address."""
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("-", encoding="utf-8")
    config = _serve_settings("--config", _config_file(tmp_path, TLS_UPSTREAMS), *flags)
    assert config.bk is not None
    assert (config.bank.target, config.bk.target, config.bk.timeout) == (bank_target, bk_target, bk_timeout)
    assert (config.bank.tls, config.bank.ca, config.bank.server_name) == (
        True,
        str(tmp_path / "ca.pem"),
        "bank.example",
    )
    assert (config.bk.tls, config.bk.cert, config.bk.key) == (
        True,
        str(tmp_path / "client.pem"),
        str(tmp_path / "client.key"),
    )


def test_an_upstreams_target_may_come_from_its_flag_alone(tmp_path: Path) -> None:
    """A file may leave an upstream's target to --bank or --bk (one file for several environments); without
    the flag, the missing target is an error naming both ways to give it."""
    text = '[upstreams.bank]\ntimeout = "4s"\n\n[upstreams.bk]\ntimeout = "6s"\n'
    path = _config_file(tmp_path, text)
    config = _serve_settings("--config", path, "--bank", "b:1", "--bk", "k:2")
    assert config.bk is not None
    assert (config.bank.target, config.bank.timeout, config.bk.target, config.bk.timeout) == (
        "b:1",
        4.0,
        "k:2",
        6.0,
    )
    with pytest.raises(ConfigError, match=r"^upstreams\.bk\.target is missing: give it, or --bk HOST:PORT$"):
        _serve_settings("--config", path, "--bank", "b:1")
    with pytest.raises(
        ConfigError, match=r"^upstreams\.bank\.target is missing: give it, or --bank HOST:PORT$"
    ):
        _serve_settings("--config", path, "--bk", "k:2")


@pytest.mark.parametrize(
    ("bank", "bk"),
    [("127.0.0.1:7101", "127.0.0.1:7101"), ("localhost:7101", "127.0.0.1:7101"),
     ("dns:///Bank.internal:443", "bank.internal:443"), ("ipv4:127.0.0.1:7101", "[::1]:7101")],
)  # fmt: skip
def test_bk_at_bank_s_own_address_is_refused(bank: str, bk: str) -> None:
    """BK's target naming Bank's own server (the same address, written another way, or loopback either
    way): every write the clients make would be applied to Bank's book twice, and every answer match.
    Refused, naming both; another port or host is BK's."""
    with pytest.raises(ConfigError, match=r"^upstreams\.bk\.target .* is Bank's own address .*twice"):
        _serve_settings("--bank", bank, "--bk", bk).check_sides()
    _serve_settings("--bank", bank, "--bk", "127.0.0.1:7102").check_sides()
    _serve_settings("--bank", "bank-a:7101", "--bk", "bank-b:7101").check_sides()


def test_flags_alone_need_no_file() -> None:
    """Without a config file the flags are the whole configuration; --bk alone selects shadow mode."""
    assert _serve_settings("--bank", "b:1") == Config(bank=Upstream("bank", "b:1"), mode="bank")
    assert _serve_settings("--bank", "b:1", "--bk", "k:2") == Config(
        bank=Upstream("bank", "b:1"), bk=Upstream("bk", "k:2"), mode="shadow"
    )


# ---- the groups of top-level settings (config.serving, config.descriptors) -----------------------

GROUPED = """
listen = "0.0.0.0:6000"
max_message_size = "1MiB"
grace_period = "7s"
workers = 3
metrics_listen = "127.0.0.1:9100"
event_loop = "asyncio"
dataplane = "python"
descriptor_sets = ["bank.binpb"]
descriptor_source = "files"
reflection = "shim"
[upstreams.bank]
target = "b:1"
"""


def test_top_level_keys_load_into_their_groups_under_their_own_names(tmp_path: Path) -> None:
    """The file names these settings at its top level, as ever; parse() gives them by those names, and
    the Config holds them in its groups."""
    path = _config_file(tmp_path, GROUPED)
    parsed = load_file(path)
    assert {"listen", "grace_period", "dataplane", "descriptor_sets", "reflection"} <= set(parsed)
    assert not {"serving", "descriptors"} & set(parsed)
    config = build(parsed)
    assert config.serving == ServingSettings(
        listen="0.0.0.0:6000",
        max_message_size=MiB,
        grace_period=7.0,
        workers=3,
        metrics_listen="127.0.0.1:9100",
        event_loop="asyncio",
        dataplane="python",
    )
    assert config.descriptors == DescriptorSettings(
        descriptor_sets=(str(tmp_path / "bank.binpb"),), descriptor_source="files", reflection="shim"
    )
    assert _serve_settings("--config", path) == config


def test_a_listen_flag_overrides_the_files_and_keeps_the_rest_of_its_group(tmp_path: Path) -> None:
    path = _config_file(tmp_path, GROUPED)
    config = _serve_settings("--config", path, "--listen", "127.0.0.1:0", "--dataplane", "envoy")
    assert (config.serving.listen, config.serving.dataplane) == ("127.0.0.1:0", "envoy")
    assert (config.serving.grace_period, config.serving.workers) == (7.0, 3)
    assert config.descriptors.reflection == "shim"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param(
            'lisen = "0.0.0.0:6000"\n', "unknown setting lisen (did you mean listen?)", id="misspelt"
        ),
        pytest.param("[serving]\nlisten = '0.0.0.0:6000'\n", "unknown setting serving", id="group-as-table"),
        pytest.param(
            "descriptors = []\n",
            "unknown setting descriptors (did you mean descriptor_sets?)",
            id="group-name",
        ),
        pytest.param('listen = "nowhere"\n', "listen: 'nowhere' is not HOST:PORT", id="listen"),
        pytest.param(
            'grace_period = "11m"\n',
            "grace_period: '11m' is out of bounds: it must be at most 10m; a stop would wait that long "
            "for the calls in flight",
            id="grace-period",
        ),
        pytest.param(
            "grace_period = 5\n",
            'grace_period: 5 has no unit: write "5ms" or "5s" (a duration such as "250ms", "2s", "1m", "24h"'
            ' or "30d")',
            id="grace-period-without-unit",
        ),
        pytest.param(
            'grace_period = "0s"\n',
            'grace_period "0s" is shorter than switch_pause "100ms": a mode switch (a rollback too) holds the'
            " calls in flight no longer than the grace period, and none could be made; give grace_period at"
            " least switch_pause",
            id="grace-period-under-switch-pause",
        ),
        pytest.param(
            'grace_period = "1s"\nswitch_pause = "2s"\n',
            'grace_period "1s" is shorter than switch_pause "2s": a mode switch (a rollback too) holds the'
            " calls in flight no longer than the grace period, and none could be made; give grace_period at"
            " least switch_pause",
            id="switch-pause-over-grace-period",
        ),
        pytest.param(
            'dataplane = "nginx"\n', "dataplane: 'nginx' is not one of auto, envoy, python", id="dataplane"
        ),
        pytest.param('reflection = "bk"\n', "reflection: 'bk' is not one of primary, shim", id="reflection"),
    ],
)
def test_top_level_keys_are_refused_as_before(tmp_path: Path, text: str, error: str) -> None:
    """An unknown top-level key, or the name of a group, is refused as an unknown setting; a bad
    value of a grouped one, with its own name."""
    path = _config_file(tmp_path, text + BANK_TABLE)
    with pytest.raises(ConfigError) as caught:
        _serve_settings("--config", path)
    assert str(caught.value).removeprefix(f"{path}: ") == error


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        pytest.param({"listen": "nowhere"}, "listen: 'nowhere' is not HOST:PORT", id="listen"),
        pytest.param({"metrics_listen": "m"}, "metrics_listen: 'm' is not HOST:PORT", id="metrics-listen"),
        pytest.param(
            {"event_loop": "trio"}, "event_loop: 'trio' is not one of auto, uvloop, asyncio", id="event-loop"
        ),
        pytest.param(
            {"serving": {"dataplane": "nginx"}},
            "dataplane: 'nginx' is not one of auto, envoy, python",
            id="group-given-whole",
        ),
        pytest.param(
            {"descriptor_source": "bk"},
            "descriptor_source: 'bk' is not one of auto, files, reflection",
            id="descriptor-source",
        ),
    ],
)
def test_a_group_checks_its_values_however_it_is_built(settings: dict[str, object], error: str) -> None:
    """Values that skip the file's parsing (tests, embedders) are checked by the groups themselves."""
    with pytest.raises(ConfigError) as caught:
        build({"bank": BANK, **settings})
    assert str(caught.value) == error


def test_a_group_may_be_given_whole_and_its_top_level_keys_go_over_it() -> None:
    """build() takes a group as its dataclass or a dict, like a table; merged() lays a later layer's
    values over an earlier one's, top-level keys and whole groups alike."""
    assert build({"bank": BANK, "serving": {"workers": 2}}).serving == ServingSettings(workers=2)
    given = ServingSettings(listen="127.0.0.1:0", workers=2)
    config = build(merged({"bank": BANK, "serving": given}, {"workers": 4}))
    assert config.serving == ServingSettings(listen="127.0.0.1:0", workers=4)
    config = build(merged({"bank": BANK, "workers": 4, "listen": "127.0.0.1:0"}, {"serving": {"workers": 2}}))
    assert config.serving == ServingSettings(listen="127.0.0.1:0", workers=2)
    config = build(merged({"bank": BANK, "workers": 4}, {"serving": given}))
    assert config.serving == given


def test_the_config_has_at_most_26_attributes() -> None:
    """Settings that belong together are grouped (a table, or a group of top-level keys): the Config
    stays small enough to read."""
    assert len(fields(Config)) <= 26, [f.name for f in fields(Config)]


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        pytest.param([], "--bank", id="no-bank"),
        pytest.param(["--bank", "b:1", "--mode", "shadow"], "--bk", id="shadow-without-bk"),
        pytest.param(
            ["--bank", "b:1", "--shadow-timeout", "soon"], "--shadow-timeout", id="bad-shadow-timeout"
        ),
        pytest.param(["--bank", "b"], "upstreams.bank.target", id="bad-bank-address"),
        pytest.param(["--bank", "b:1", "--listen", "nowhere"], "listen", id="bad-listen"),
        pytest.param(["--bank", "b:1", "--retain", "0s"], "--retain", id="retain-nothing"),
        pytest.param(["--bank", "b:1", "--retain", "30m"], "--retain", id="retain-below-an-hour"),
        pytest.param(
            ["--bank", "b:1", "--shadow-timeout", "9" * 400 + "s"], "--shadow-timeout", id="infinite"
        ),
    ],
)
def test_bad_flags_are_config_errors(flags: list[str], names: str) -> None:
    """Mistakes in flags raise ConfigError too, naming the flag or the setting."""
    with pytest.raises(ConfigError, match=names):
        _serve_settings(*flags)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("2s", 2.0),
        ("1.5s", 1.5),
        (" 1m ", 60.0),
        ("2h", 7200.0),
        ("0s", 0.0),
        (0, 0.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    """Durations are a number with ms, s, m, h or d; 0 alone needs no unit."""
    assert parse_duration("k", text) == seconds


@pytest.mark.parametrize("value", [3, 0.5, 500, "500"])
def test_a_duration_without_its_unit_is_refused_in_the_file_as_by_the_flags(
    tmp_path: Path, value: object
) -> None:
    """`timeout = 500` (meant: 500ms) was taken as 500 s, while `--shadow-timeout 500` was refused: a
    number without its unit is refused in the file too, naming the two it may have meant."""
    path = _config_file(tmp_path, BANK_TABLE + f"[upstreams.bk]\ntarget = 'k:1'\ntimeout = {value!r}\n")
    with pytest.raises(ConfigError) as caught:
        _serve_settings("--config", path)
    if isinstance(value, str):
        assert str(caught.value) == (
            'upstreams.bk.timeout: \'500\' is not a duration such as "250ms", "2s", "1m", "24h" or "30d"'
        )
    else:
        assert str(caught.value) == (
            f'upstreams.bk.timeout: {value!r} has no unit: write "{value:g}ms" or "{value:g}s" (a duration'
            ' such as "250ms", "2s", "1m", "24h" or "30d")'
        )


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("unlimited", -1),
        ("4MiB", 4 * MiB),
        ("1KiB", 1024),
        ("1KB", 1000),
        ("2 MB", 2_000_000),
        ("10", 10),
        (10, 10),
        ("8GiB", 2**31 - 1),
        (2**40, 2**31 - 1),
    ],
)
def test_sizes(text: object, size: int) -> None:
    """Sizes take binary and decimal units, or "unlimited", and stop at the largest size gRPC accepts."""
    assert parse_size("k", text) == size


@pytest.mark.parametrize(
    ("text", "names"),
    [
        pytest.param(BANK_TABLE + '[comparison]\nexecutor = "fork"\n', "comparison.executor", id="executor"),
        pytest.param(BANK_TABLE + "[comparison]\nworkers = 0\n", "comparison.workers", id="workers"),
        pytest.param(
            BANK_TABLE + "[comparison]\nworkers = 1000\n", "comparison.workers: 1000 is not", id="many"
        ),
        pytest.param(
            BANK_TABLE + "[envoy]\nconcurrency = 1000\n", "envoy.concurrency: 1000 is not", id="threads"
        ),
    ],
)
def test_comparison_worker_settings_are_checked(tmp_path: Path, text: str, names: str) -> None:
    """A comparison executor other than process/thread, no worker, or a thousand (processes a machine
    would choke on), is a config error naming the key; so is a thousand Envoy threads."""
    path = tmp_path / "shim.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        build(load_file(path))


# ---- [ids.KIND] and [store] ------------------------------------------------------------------

TRADE_ID = "bank.v1.Trade.trade_id"


def _ids_of(tmp_path: Path, text: str) -> tuple[IdKind, ...]:
    return build(load_file(_config_file(tmp_path, text + "\n" + BANK_TABLE))).ids


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            f'[ids.trade]\nminted = "{TRADE_ID}"\n',
            (IdKind("trade", minted=(TRADE_ID,)),),
            id="one-string-and-defaults",
        ),
        pytest.param(
            '[ids.trade]\nminted = ["a.B.c", "a.D.e"]\nreferences = "a.F.g"\n'
            'owner_key = ["a.B.o", "a.D.o"]\n',
            (
                IdKind(
                    "trade", minted=("a.B.c", "a.D.e"), references=("a.F.g",), owner_key=("a.B.o", "a.D.o")
                ),
            ),
            id="lists-and-strings",
        ),
        pytest.param(
            '[ids.trade]\nminted = "a.B.c"\nreferences = ["a.F.g", "a.H.i"]\nowner_key = "a.B.o"\n',
            (IdKind("trade", minted=("a.B.c",), references=("a.F.g", "a.H.i"), owner_key=("a.B.o",)),),
            id="owner-key-as-one-string",
        ),
        pytest.param(
            '[ids.page]\nminted = "a.R.next"\nreferences = "a.Q.token"\n'
            'learn_from = "all"\nscope = "query"\n',
            (
                IdKind(
                    "page", minted=("a.R.next",), references=("a.Q.token",), learn_from="all", scope="query"
                ),
            ),
            id="page-tokens",
        ),
        pytest.param(
            '[ids.trade]\nminted = "a.B.c"\n[ids.page]\nminted = "a.R.next"\nlearn_from = "writes"\n'
            'scope = "global"\n',
            (IdKind("trade", minted=("a.B.c",)), IdKind("page", minted=("a.R.next",))),
            id="several-kinds-in-file-order",
        ),
        pytest.param(
            '[ids.trade]\nminted = "bank.v1.Ledger/PostTrade:response.trade_id"\n'
            'owner_key = "bank.v1.Ledger/PostTrade:request.account_id"\n',
            (
                IdKind(
                    "trade",
                    minted=("bank.v1.Ledger/PostTrade:response.trade_id",),
                    owner_key=("bank.v1.Ledger/PostTrade:request.account_id",),
                ),
            ),
            id="method-paths",
        ),
    ],
)
def test_ids_tables_build_id_kinds(tmp_path: Path, text: str, expected: tuple[IdKind, ...]) -> None:
    """Each [ids.KIND] table is one IdKind; a single location may be a string; learn_from/scope default."""
    assert _ids_of(tmp_path, text) == expected


def test_no_ids_table_declares_no_kinds(tmp_path: Path) -> None:
    """Without [ids] the shim translates no ids."""
    assert _ids_of(tmp_path, "") == ()


ID_MISTAKES: list[object] = [
    pytest.param(
        "[ids.trade]\nreferences = 'a.B.c'\n",
        "ids.trade.minted is missing: name the answer fields that mint trade ids",
        id="missing-minted",
    ),
    pytest.param(
        "[ids.trade]\nminted = []\n",
        "ids.trade.minted: name at least one field that mints ids of this kind",
        id="empty-minted",
    ),
    pytest.param(
        "[ids.trade]\nminted = 'a.B.c'\nbogus = 1\n", "unknown setting ids.trade.bogus", id="unknown-key"
    ),
    pytest.param(
        "[ids.trade]\nminted = 'a.B.c'\nowners = 'a.B.o'\nmint = 'x'\n",
        "unknown setting ids.trade.mint, ids.trade.owners",
        id="unknown-keys-all-named",
    ),
    pytest.param("[ids.trade]\nminted = [1]\n", "ids.trade.minted: expected a field", id="minted-not-text"),
    pytest.param(
        "[ids.trade]\nminted = ''\n", "ids.trade.minted: expected a field", id="minted-empty-string"
    ),
    pytest.param(
        "[ids.trade]\nminted = 'a.B.c'\nreferences = ['a.F.g', 2]\n",
        "ids.trade.references: expected a field",
        id="reference-not-text",
    ),
    pytest.param(
        "[ids.trade]\nminted = 'a.B.c'\nowner_key = [true]\n",
        "ids.trade.owner_key: expected a field",
        id="owner-key-not-text",
    ),
    pytest.param(
        "[ids.trade]\nminted = 'a.B.c'\nreferences = {field = 'a.F.g'}\n",
        "ids.trade.references: expected a field",
        id="references-a-table",
    ),
    pytest.param(
        "[ids.trade]\nminted = 'a.B.c'\nlearn_from = 'reads'\n",
        "ids.trade.learn_from: 'reads' is not one of writes, all",
        id="bad-learn-from",
    ),
    pytest.param(
        "[ids.trade]\nminted = 'a.B.c'\nlearn_from = 1\n",
        "ids.trade.learn_from: 1 is not a non-empty string",
        id="learn-from-not-text",
    ),
    pytest.param(
        "[ids.trade]\nminted = 'a.B.c'\nscope = 'session'\n",
        "ids.trade.scope: 'session' is not one of global, query",
        id="bad-scope",
    ),
    pytest.param(
        "[ids.page]\nminted = 'a.R.next'\nscope = 'query'\nowner_key = 'a.R.o'\n",
        "ids.page.owner_key: an id scoped to one query has no owner",
        id="query-scope-with-owner",
    ),
    pytest.param("[ids]\ntrade = 'a.B.c'\n", "ids.trade: expected a table", id="kind-not-a-table"),
    pytest.param("ids = 3\n", "ids: expected a table", id="ids-not-a-table"),
]


@pytest.mark.parametrize(("text", "error"), ID_MISTAKES)
def test_ids_mistakes_are_one_line_errors_naming_the_key(tmp_path: Path, text: str, error: str) -> None:
    """Each mistake in an [ids.KIND] table is a one-line ConfigError that starts with the key at fault."""
    with pytest.raises(ConfigError) as caught:
        _ids_of(tmp_path, text)
    message = str(caught.value).removeprefix(f"{tmp_path / 'shim.toml'}: ")  # an unknown key names its file
    assert message.startswith(error), message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        pytest.param("references = 0", "ids.trade.references", id="references-zero"),
        pytest.param("owner_key = false", "ids.trade.owner_key", id="owner-key-false"),
        pytest.param('learn_from = ""', "ids.trade.learn_from", id="learn-from-empty"),
        pytest.param("scope = false", "ids.trade.scope", id="scope-false"),
    ],
)
def test_ids_settings_of_the_wrong_type_are_errors_even_when_falsy(
    tmp_path: Path, setting: str, key: str
) -> None:
    """A falsy value of the wrong type in an [ids.KIND] table is a ConfigError, like any other wrong type."""
    with pytest.raises(ConfigError, match=f"^{re.escape(key)}"):
        _ids_of(tmp_path, f"[ids.trade]\nminted = 'a.B.c'\n{setting}\n")


def _store_of(tmp_path: Path, text: str) -> Config:
    return build(load_file(_config_file(tmp_path, text + "\n" + BANK_TABLE)))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('[store]\nrefresh = "10ms"\nretain = "1h"\n', id="least-refresh-and-retain"),
        pytest.param('grace_period = "10m"\n', id="longest-grace-period"),
        pytest.param('[store]\nretain = "3650d"\n', id="ten-years-of-evidence"),
        pytest.param('[admin]\nlisten = "[::1]:9465"\n', id="admin-on-ipv6-loopback"),
        pytest.param('[admin]\nlisten = "localhost:0"\n', id="admin-on-localhost"),
        pytest.param('[admin]\nlisten = "127.0.0.2:9465"\n', id="admin-on-loopback-net"),
        *(
            pytest.param(f'[store]\ncorrelation_header = "{name}"\n', id=f"correlation-header-{name}")
            for name in ("x-request-id", "traceparent", "x-correlation-id", "x-idempotency-key")
        ),
    ],
)
def test_settings_at_their_bounds_are_accepted(tmp_path: Path, text: str) -> None:
    """The guarded settings accept what a careful operator sets: the bounds themselves, loopback
    addresses for the admin API, request ids for the correlation header."""
    assert _store_of(tmp_path, text) is not None


def test_store_defaults(tmp_path: Path) -> None:
    """Without [store]: shim.db, a million cached id pairs, re-read every second."""
    config = _store_of(tmp_path, "")
    assert (config.store.url, config.store.id_cache, config.store.refresh) == ("shim.db", 1_000_000, 1.0)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("state/shim.db", lambda d: str(d / "state/shim.db"), id="relative-file"),
        pytest.param("/var/lib/shim.db", lambda d: "/var/lib/shim.db", id="absolute-file"),
        pytest.param(":memory:", lambda d: ":memory:", id="memory"),
        pytest.param(
            "postgresql://shim@db:5432/shim", lambda d: "postgresql://shim@db:5432/shim", id="postgresql"
        ),
        pytest.param("sqlite:relative.db", lambda d: "sqlite:relative.db", id="sqlite-url"),
    ],
)
def test_store_url(tmp_path: Path, url: str, expected: Callable[[Path], str]) -> None:
    """A relative store file is resolved against the config's folder; URLs and :memory: are kept as given."""
    assert _store_of(tmp_path, f'[store]\nurl = "{url}"\n').store.url == expected(tmp_path)


def test_store_settings(tmp_path: Path) -> None:
    """[store] id_cache is a count and refresh a duration."""
    config = _store_of(tmp_path, '[store]\nurl = ":memory:"\nid_cache = 5000\nrefresh = "250ms"\n')
    assert (config.store.url, config.store.id_cache, config.store.refresh) == (":memory:", 5000, 0.25)
    assert _store_of(tmp_path, '[store]\nrefresh = "3s"\n').store.refresh == 3.0


def test_store_flag_overrides_the_file(tmp_path: Path) -> None:
    """--store replaces [store] url and keeps the other store settings."""
    path = _config_file(tmp_path, BANK_TABLE + '[store]\nurl = "a.db"\nid_cache = 7\n')
    config = _serve_settings("--config", path, "--store", ":memory:")
    assert (config.store.url, config.store.id_cache) == (":memory:", 7)


STORE_MISTAKES: list[object] = [
    pytest.param("[store]\nid_cache = 0\n", "store.id_cache: 0 is not a positive integer", id="zero-cache"),
    pytest.param(
        "[store]\nid_cache = -5\n", "store.id_cache: -5 is not a positive integer", id="negative-cache"
    ),
    pytest.param(
        "[store]\nid_cache = '10'\n", "store.id_cache: '10' is not a positive integer", id="cache-text"
    ),
    pytest.param(
        "[store]\nid_cache = true\n", "store.id_cache: True is not a positive integer", id="cache-bool"
    ),
    pytest.param("[store]\nrefresh = 'soon'\n", "store.refresh: 'soon' is not a duration", id="bad-refresh"),
    pytest.param("[store]\nrefresh = -1\n", "store.refresh: -1 is not a duration", id="negative-refresh"),
    pytest.param(
        "[store]\nrefresh = 3\n", 'store.refresh: 3 has no unit: write "3ms" or "3s"', id="bare-refresh"
    ),
    pytest.param("[store]\nurl = ''\n", "store.url: '' is not a non-empty string", id="empty-url"),
    pytest.param("[store]\nurl = 5\n", "store.url: 5 is not a non-empty string", id="url-not-text"),
    pytest.param("[store]\npath = 'x.db'\n", "unknown setting store.path", id="unknown-key"),
    pytest.param("store = 'x.db'\n", "store: expected a table", id="store-not-a-table"),
]


@pytest.mark.parametrize(("text", "error"), STORE_MISTAKES)
def test_store_mistakes_are_one_line_errors_naming_the_key(tmp_path: Path, text: str, error: str) -> None:
    """Each mistake in [store] is a one-line ConfigError that starts with the key at fault."""
    with pytest.raises(ConfigError) as caught:
        _store_of(tmp_path, text)
    message = str(caught.value).removeprefix(f"{tmp_path / 'shim.toml'}: ")  # an unknown key names its file
    assert message.startswith(error), message
    assert "\n" not in message


def test_tls_settings_resolve_their_files_against_the_config_file(tmp_path: Path) -> None:
    """[tls] and an upstream's ca/cert/key are paths relative to the config file; any upstream TLS
    setting implies tls = true; server_name is kept as given."""
    path = tmp_path / "shim.toml"
    path.write_text(
        '[tls]\ncert = "certs/shim.crt"\nkey = "certs/shim.key"\nclient_ca = "/etc/ca.crt"\n'
        '[upstreams.bank]\ntarget = "bank:443"\nca = "certs/bank-ca.crt"\nserver_name = "bank.internal"\n'
        '[upstreams.bk]\ntarget = "bk:443"\ntls = true\n',
        encoding="utf-8",
    )
    config = build(load_file(path))
    assert (config.tls.cert, config.tls.key, config.tls.client_ca) == (
        str(tmp_path / "certs/shim.crt"),
        str(tmp_path / "certs/shim.key"),
        "/etc/ca.crt",
    )
    assert (config.bank.tls, config.bank.ca, config.bank.server_name) == (
        True,
        str(tmp_path / "certs/bank-ca.crt"),
        "bank.internal",
    )
    assert config.bk is not None
    assert (config.bk.tls, config.bk.ca) == (True, "")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[tls]\ncert = "a.crt"\n', "tls: cert and key go together"),
        ('[tls]\ncert = "a.crt"\nkey = "a.key"\nverify = true\n', "unknown setting tls.verify"),
        ('[tls]\nclient_ca = "ca.crt"\n', "tls.client_ca: verifying clients' certificates needs"),
        ('[upstreams.bank]\ntarget = "b:1"\ncert = "c.crt"\n', "upstreams.bank: cert and key go together"),
        ('[upstreams.bank]\ntarget = "b:1"\ntls = "yes"\n', "upstreams.bank.tls: 'yes' is not true or false"),
    ],
)
def test_bad_tls_settings_are_one_clear_error(tmp_path: Path, text: str, says: str) -> None:
    """TLS settings that cannot work are refused at load, naming the setting."""
    path = tmp_path / "shim.toml"
    if "[upstreams.bank]" not in text:
        text += '[upstreams.bank]\ntarget = "b:1"\n'
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        build(load_file(path))
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("alias", "key", "reference", "error"),
    [
        pytest.param(
            "bank.v1.Trade.client_order_id",
            "bank.v1.Trade.nope",
            "bank.v1.CancelTradeRequest.trade_id",
            "key_aliases.ref.key: bank.v1.Trade has no field 'nope'",
            id="key",
        ),
        pytest.param(
            "bank.v1.Trade.nope",
            "bank.v1.Trade.account_id",
            "bank.v1.CancelTradeRequest.trade_id",
            "key_aliases.ref.alias: bank.v1.Trade has no field 'nope'",
            id="alias",
        ),
        pytest.param(
            "bank.v1.Trade.client_order_id",
            "bank.v1.Trade.account_id",
            "bank.v1.Nope.x",
            "key_aliases.ref.references[0]: 'bank.v1.Nope.x' names no message field",
            id="reference",
        ),
    ],
)
def test_key_aliases_are_checked_against_the_descriptors(
    alias: str, key: str, reference: str, error: str
) -> None:
    """A key alias naming a field the descriptors lack is one start error naming the setting."""
    from comparators import DescriptorRegistry
    from shim.aliases import AliasKind, fields_of

    registry = DescriptorRegistry.from_files(
        [Path(__file__).resolve().parents[2] / "sample_ledger" / "bank.binpb"]
    )
    with pytest.raises(ConfigError) as caught:
        fields_of([AliasKind("ref", alias, key, (reference,))], registry)
    assert str(caught.value).startswith(error)


@pytest.mark.parametrize("url", ["postgresql://shim@db:5432/shim", "state/shim.db"])
def test_across_replicas_on_a_shared_store_loads(tmp_path: Path, url: str) -> None:
    """`ordering.across_replicas` with a PostgreSQL store (or a SQLite file, which the processes of one
    machine share) is a config, its lease the store's as given."""
    path = tmp_path / "shim.toml"
    text = BANK_TABLE + f'[store]\nurl = "{url}"\nlease = "4s"\n'
    path.write_text(text + "[ordering]\nacross_replicas = true\n", encoding="utf-8")
    config = _serve_settings("--config", path)
    assert config.ordering.across_replicas
    assert config.store.lease == 4.0


@pytest.mark.parametrize(
    ("workers", "across_workers", "ordered"), [(1, True, False), (2, True, True), (2, False, False)]
)
def test_workers_order_across_each_other_unless_told_not_to(
    workers: int, across_workers: bool, ordered: bool
) -> None:
    """Each of several workers orders its writes across the others (`across_replicas` in its own config),
    unless `ordering.across_workers` is false; one shim process has no one to order against."""
    from shim.shadow.settings import OrderingSettings

    settings = OrderingSettings(across_workers=across_workers).of_workers(workers)
    assert settings.across_replicas is ordered


def test_an_unknown_key_names_its_file_and_the_key_a_typo_likely_meant(tmp_path: Path) -> None:
    """`unknown setting rule` named neither the rules file it was in nor what was meant."""
    rules = tmp_path / "extra-rules.toml"
    rules.write_text('[[rule]]\npath = "bank.v1.Trade.price"\n')
    config = _config_file(tmp_path, f'rules_files = ["{rules.name}"]\n' + BANK_TABLE)
    with pytest.raises(ConfigError) as caught:
        load_file(config)
    assert str(caught.value) == (
        f"{rules}: unknown setting rule (did you mean rules?) (a rules file holds [[rules]] tables alone)"
    )
    typo = _config_file(tmp_path, 'grace_perod = "5s"\n' + BANK_TABLE + '[store]\nurl = "x.db"\n')
    with pytest.raises(ConfigError) as caught:
        load_file(typo)
    assert str(caught.value) == f"{typo}: unknown setting grace_perod (did you mean grace_period?)"
    section = _config_file(tmp_path, BANK_TABLE + '[store]\nurll = "x.db"\n')
    with pytest.raises(ConfigError) as caught:
        load_file(section)
    assert str(caught.value) == f"{section}: unknown setting store.urll (did you mean store.url?)"


@pytest.mark.parametrize(
    ("table", "error"),
    [
        pytest.param(
            '[reconcile]\nkeys = "store"\nreads = [{ method = "a.B/C", key = "k" }]\nnext_page_tokn = "x"\n',
            "unknown setting reconcile.next_page_tokn (did you mean reconcile.next_page_token?)",
            id="reconcile",
        ),
        pytest.param(
            '[methods."a.B/C"]\nkye = ["k"]\n',
            'unknown setting methods."a.B/C".kye (did you mean methods."a.B/C".key?)',
            id="methods",
        ),
        pytest.param(
            '[ids.trade]\nminted = ["a.T.id"]\nreferencs = ["a.R.id"]\n',
            "unknown setting ids.trade.referencs (did you mean ids.trade.references?)",
            id="ids",
        ),
        pytest.param(
            "[key_aliases.ref]\nalias = 'a.B.c'\nkey = 'a.B.d'\nreferences = ['a.R.c']\nrefrences = 1\n",
            "unknown setting key_aliases.ref.refrences (did you mean key_aliases.ref.references?)",
            id="key-aliases",
        ),
    ],
)
def test_a_typo_in_a_table_of_names_names_the_file_and_the_key_meant_too(
    tmp_path: Path, table: str, error: str
) -> None:
    """The tables read by their own parsers refuse an unknown key as every other table does. Before,
    `reconcile.next_page_tokn: unknown setting` named no file and no key meant, and [methods."M"] and
    [ids.K] named the file but not the key meant."""
    path = _config_file(tmp_path, BANK_TABLE + table)
    with pytest.raises(ConfigError) as caught:
        load_file(path)
    assert str(caught.value) == f"{path}: {error}"
