"""What the shim knows of each method: read or write, routing keys, read sampling, and their config."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.message import Message
from structlog.testing import capture_logs

import sample_ledger
from comparators import DescriptorRegistry
from comparators.message_api import serialize
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from shim import routing
from shim.app import Shim
from shim.config import Config, Upstream, build, load_file
from shim.errors import ConfigError
from shim.metrics import Counters
from shim.routing import MethodSettings, Router
from tests.comparators._odd import REGISTRY as ODD_REGISTRY

LEDGER = DescriptorRegistry.from_files([Path(sample_ledger.__file__).parent / "bank.binpb"])
F = descriptor_pb2.FieldDescriptorProto


def _orders() -> DescriptorRegistry:
    """A tiny service whose request has nested, repeated and non-string fields."""
    file = descriptor_pb2.FileDescriptorProto(name="route_test.proto", package="route.v1", syntax="proto3")
    leg = file.message_type.add(name="Leg")
    leg.field.add(name="account_id", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    order = file.message_type.add(name="Order")
    order.field.add(name="account_id", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    order.field.add(
        name="leg", number=2, type=F.TYPE_MESSAGE, type_name=".route.v1.Leg", label=F.LABEL_OPTIONAL
    )
    order.field.add(
        name="legs", number=3, type=F.TYPE_MESSAGE, type_name=".route.v1.Leg", label=F.LABEL_REPEATED
    )
    order.field.add(name="tags", number=4, type=F.TYPE_STRING, label=F.LABEL_REPEATED)
    order.field.add(name="number", number=5, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    service = file.service.add(name="Orders")
    service.method.add(name="Place", input_type=".route.v1.Order", output_type=".route.v1.Order")
    registry = DescriptorRegistry()
    registry.add_set(descriptor_pb2.FileDescriptorSet(file=[file]))
    return registry


ORDERS = _orders()
PLACE = "/route.v1.Orders/Place"


def _order(**fields: object) -> bytes:
    message: Message = ORDERS.message_class("route.v1.Order")()
    for name, value in fields.items():
        target = getattr(message, name)
        if name == "leg":
            target.account_id = value
        elif name == "legs":
            for account in value:  # type: ignore[attr-defined]
                target.add(account_id=account)
        elif name == "tags":
            target.extend(value)
        else:
            setattr(message, name, value)
    return message.SerializeToString()


# ---- read or write ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registry", "methods", "method", "write"),
    [
        pytest.param(LEDGER, {}, "/bank.v1.Ledger/Deposit", True, id="no-idempotency-level-is-a-write"),
        pytest.param(LEDGER, {}, "/bank.v1.Ledger/GetBalance", False, id="no-side-effects-is-a-read"),
        pytest.param(LEDGER, {}, "/bank.v1.Ledger/StreamLedgerEntries", False, id="streaming-read"),
        pytest.param(LEDGER, {}, "/bank.v1.Ledger/BookTrades", True, id="streaming-write"),
        pytest.param(
            LEDGER,
            {"bank.v1.Ledger/GetBalance": MethodSettings(read=False)},
            "/bank.v1.Ledger/GetBalance",
            True,
            id="override-read-to-write",
        ),
        pytest.param(
            LEDGER,
            {"bank.v1.Ledger/SettleTrades": MethodSettings(read=True)},
            "/bank.v1.Ledger/SettleTrades",
            False,
            id="override-write-to-read",
        ),
        pytest.param(LEDGER, {}, "/other.v1.Svc/Get", True, id="undescribed-method-is-a-write"),
        pytest.param(None, {}, "/bank.v1.Ledger/GetBalance", True, id="no-descriptors-every-method-a-write"),
        pytest.param(
            None,
            {"bank.v1.Ledger/GetBalance": MethodSettings(read=True)},
            "/bank.v1.Ledger/GetBalance",
            False,
            id="no-descriptors-but-configured-read",
        ),
    ],
)
def test_is_write_follows_the_descriptor_unless_configured(
    registry: DescriptorRegistry | None, methods: dict[str, MethodSettings], method: str, write: bool
) -> None:
    """A method is a read when its descriptor says NO_SIDE_EFFECTS or the config says read; else a write."""
    assert Router(registry, methods).is_write(method) is write


@pytest.mark.parametrize(
    ("default", "setting", "strict"),
    [(False, None, False), (True, None, True), (False, True, True), (True, False, False)],
)
def test_strict_ordering_per_method_overrides_the_default(
    default: bool, setting: bool | None, strict: bool
) -> None:
    """A method's own `strict` wins over `[ordering] strict`; without one the default applies."""
    router = Router(LEDGER, {"bank.v1.Ledger/Deposit": MethodSettings(strict=setting)}, strict=default)
    assert router.strict("/bank.v1.Ledger/Deposit") is strict
    assert router.strict("/bank.v1.Ledger/PostTrade") is default


# ---- routing keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("paths", "request_bytes", "keys"),
    [
        pytest.param(("account_id",), _order(account_id="A"), ("A",), id="top-level"),
        pytest.param(("leg.account_id",), _order(leg="B"), ("B",), id="nested"),
        pytest.param(("leg.account_id",), _order(account_id="A"), (), id="nested-message-unset"),
        pytest.param(("legs.account_id",), _order(legs=["A", "B", "A"]), ("A", "B"), id="repeated-messages"),
        pytest.param(("tags",), _order(tags=["x", "y"]), ("x", "y"), id="repeated-scalars"),
        pytest.param(("tags",), _order(account_id="A"), (), id="repeated-empty"),
        pytest.param(("account_id",), _order(number=3), (), id="empty-string-is-no-key"),
        pytest.param(("number",), _order(number=7), ("7",), id="integer"),
        pytest.param(
            ("account_id", "leg.account_id"),
            _order(account_id="A", leg="A"),
            ("A",),
            id="equal-values-one-key",
        ),
        pytest.param(
            ("account_id", "tags"),
            _order(account_id="A", tags=["x"]),
            ("A", "x"),
            id="several-paths-in-order",
        ),
        pytest.param(("account_id",), b"\xff\xff\xff", (), id="undecodable"),
        pytest.param(("account_id",), None, (), id="no-request"),
    ],
)
def test_keys_are_the_values_of_the_configured_request_fields(
    paths: tuple[str, ...], request_bytes: bytes | None, keys: tuple[str, ...]
) -> None:
    """Each path gives the values it names in the first request (one per repeated value), distinct."""
    router = Router(ORDERS, {"route.v1.Orders/Place": MethodSettings(key=paths)})
    assert router.keys(PLACE, request_bytes) == keys


def test_keys_of_a_ledger_request() -> None:
    """A nested ledger field (TradeSession's order.account_id) is a key; unconfigured methods have none."""
    router = Router(
        LEDGER,
        {
            "bank.v1.Ledger/TradeSession": MethodSettings(key=("order.account_id",)),
            "bank.v1.Ledger/Deposit": MethodSettings(key=("account_id",)),
        },
    )
    session = pb.TradeSessionRequest(order=pb.PostTradeRequest(account_id="ACC-1")).SerializeToString()
    deposit = pb.DepositRequest(account_id="ACC-2", amount="1").SerializeToString()
    assert router.keys("/bank.v1.Ledger/TradeSession", session) == ("ACC-1",)
    assert router.keys("/bank.v1.Ledger/Deposit", deposit) == ("ACC-2",)
    assert router.keys("/bank.v1.Ledger/GetBalance", deposit) == ()
    assert router.keys("/other.v1.Svc/Get", deposit) == ()


ODD_GET = "/odd.v1.Odds/Get"


def _odd(**fields: object) -> Message:
    """An odd.v1.Odd (tests/comparators/odd.proto: a oneof, an `optional` scalar, maps)."""
    odd: Message = ODD_REGISTRY.message_class("odd.v1.Odd")()
    for name, value in fields.items():
        if name in ("tags", "legs"):
            for key, item in value.items():  # type: ignore[attr-defined]
                if name == "tags":
                    odd.tags[key] = item  # type: ignore[attr-defined]
                else:
                    odd.legs[key].id = item  # type: ignore[attr-defined]
        else:
            setattr(odd, name, value)
    return odd


@pytest.mark.parametrize(
    ("paths", "odd", "keys"),
    [
        pytest.param(
            ("tags.key",), _odd(tags={"acct-1": "x", "acct-2": "y"}), ("acct-1", "acct-2"), id="map-keys"
        ),
        pytest.param(("tags.value",), _odd(tags={"a": "acct-1"}), ("acct-1",), id="map-values"),
        pytest.param(("legs.key",), _odd(legs={7: "L"}), ("7",), id="map-number-keys"),
        pytest.param(
            ("legs.value.id",), _odd(legs={7: "L7", 8: "L8"}), ("L7", "L8"), id="map-message-values"
        ),
        pytest.param(("tags.key",), _odd(count=1), (), id="map-empty"),
        pytest.param(("num",), _odd(text="acct-7"), (), id="oneof-number-unset"),
        pytest.param(("num",), _odd(num=0), ("0",), id="oneof-number-set-to-zero"),
        pytest.param(("maybe",), _odd(count=3), (), id="optional-number-unset"),
        pytest.param(("maybe",), _odd(maybe=0), ("0",), id="optional-number-set-to-zero"),
        pytest.param(("count",), _odd(text="x"), ("0",), id="number-without-presence"),
        pytest.param(("num", "maybe"), _odd(text="acct-7"), (), id="neither-set"),
    ],
)
def test_keys_of_maps_and_of_fields_with_presence(
    paths: tuple[str, ...], odd: Message, keys: tuple[str, ...]
) -> None:
    """A map's `key` gives its keys, its `value` its values; a scalar with presence (a oneof's member, an
    `optional` field) that the request leaves unset gives no key. Before, `tags.key` was accepted and
    raised at every call, and an unset number in a oneof was the key "0"."""
    router = Router(ODD_REGISTRY, {"odd.v1.Odds/Get": MethodSettings(key=paths)})
    assert sorted(router.keys_of(ODD_GET, odd)) == list(keys)  # a map's entries come in no set order


@pytest.mark.parametrize(
    ("path", "accepted"),
    [
        ("tags.key", True),
        ("tags.value", True),
        ("legs.value.id", True),
        ("tags", False),
        ("legs.value", False),
    ],
)
def test_a_map_key_path_names_its_keys_or_values(path: str, accepted: bool) -> None:
    settings = {"odd.v1.Odds/Get": MethodSettings(key=(path,))}
    if accepted:
        Router(ODD_REGISTRY, settings)
    else:
        with pytest.raises(ConfigError, match="names no field"):
            Router(ODD_REGISTRY, settings)


def test_a_key_that_cannot_be_read_leaves_the_call_unkeyed_counted_and_logged_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(msg: object, parts: list[str]) -> list[str]:
        raise RuntimeError("a bug in reading keys")

    counters = Counters()
    router = Router(ORDERS, {"route.v1.Orders/Place": MethodSettings(key=("account_id",))}, counters=counters)
    monkeypatch.setattr(routing, "_values", broken)
    with capture_logs() as logs:
        assert router.keys(PLACE, _order(account_id="A")) == ()
        assert router.keys(PLACE, _order(account_id="B")) == ()
        assert router.values_of(PLACE, router.decode(PLACE, _order(account_id="C"))) is None
    assert counters.get("keys_not_read", PLACE) == 3
    assert [(entry["method"], entry["path"]) for entry in logs] == [(PLACE, "account_id")]
    assert "a bug in reading keys" in logs[0]["error"]


@pytest.mark.parametrize(
    ("hidden", "sources", "hashed"),
    [
        pytest.param({"route.v1.Order.tags"}, (), True, id="a-key-path-redacted"),
        pytest.param(
            {"route.v1.Leg.account_id"}, ("route.v1.Leg.account_id",), True, id="an-owner-key-redacted"
        ),
        pytest.param(
            {"route.v1.Leg.account_id"},
            ("route.v1.Orders/Place:response.leg.account_id",),
            True,
            id="an-owner-key-on-a-method-redacted",
        ),
        pytest.param({"route.v1.Leg.account_id"}, (), False, id="a-redacted-field-no-key-comes-from"),
    ],
)
def test_every_key_is_hashed_when_a_field_keys_come_from_is_redacted(
    hidden: set[str], sources: tuple[str, ...], hashed: bool
) -> None:
    """One key space: a key is hashed whichever field it came from, or none is."""
    router = Router(
        ORDERS,
        {"route.v1.Orders/Place": MethodSettings(key=("account_id", "tags"))},
        hide=lambda value: f"redacted:{value}",
        hidden_fields=frozenset(hidden),
        key_sources=sources,
    )
    keys = router.keys(PLACE, _order(account_id="A", tags=["x", ""]))
    assert keys == (("redacted:A", "redacted:x") if hashed else ("A", "x"))
    assert router.key_space(["A", "A1", ""]) == (("redacted:A", "redacted:A1") if hashed else ("A", "A1"))


def _awkward_names() -> DescriptorRegistry:
    """awk.v1.Svc/Call(Req): fields named like Python keywords and like protobuf's message API."""
    file = descriptor_pb2.FileDescriptorProto(name="awk.proto", package="awk.v1", syntax="proto3")
    inner = file.message_type.add(name="Inner")
    inner.field.add(name="from", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    inner.field.add(name="DESCRIPTOR", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    request = file.message_type.add(name="Req")
    for number, name in enumerate(("DESCRIPTOR", "HasField"), start=1):
        request.field.add(
            name=name, number=number, type=F.TYPE_MESSAGE, type_name=".awk.v1.Inner", label=F.LABEL_OPTIONAL
        )
    request.field.add(name="class", number=3, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    request.field.add(name="ParseFromString", number=4, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    file.service.add(name="Svc").method.add(name="Call", input_type=".awk.v1.Req", output_type=".awk.v1.Req")
    registry = DescriptorRegistry()
    registry.add_set(descriptor_pb2.FileDescriptorSet(file=[file]))
    return registry


def test_keys_are_read_from_fields_of_any_name() -> None:
    """Key paths through fields named like keywords or like protobuf's own methods give their values."""
    registry = _awkward_names()
    keys = ("DESCRIPTOR.from", "HasField.from", "class", "ParseFromString")
    router = Router(registry, {"awk.v1.Svc/Call": MethodSettings(key=keys)})
    request = registry.message_class("awk.v1.Req")(
        **{"DESCRIPTOR": {"from": "A", "DESCRIPTOR": "x"}, "class": "C", "ParseFromString": "P"}
    )
    assert router.keys("/awk.v1.Svc/Call", serialize(request)) == ("A", "C", "P")  # HasField unset: none


@pytest.mark.parametrize(
    ("registry", "methods", "names"),
    [
        pytest.param(
            LEDGER,
            {"bank.v1.Ledger/Nope": MethodSettings(read=True)},
            ["bank.v1.Ledger/Nope", "unknown method"],
            id="unknown-method",
        ),
        pytest.param(
            LEDGER,
            {"bank.v1.Ledger/Deposit": MethodSettings(key=("acount_id",))},
            ["bank.v1.Ledger/Deposit", "'acount_id' names no field", "bank.v1.DepositRequest"],
            id="misspelt-field",
        ),
        pytest.param(
            LEDGER,
            {"bank.v1.Ledger/SettleTrades": MethodSettings(key=("settle_through",))},
            ["bank.v1.Ledger/SettleTrades", "'settle_through' names no field", "string or a number"],
            id="key-naming-a-message",
        ),
        pytest.param(
            LEDGER,
            {"bank.v1.Ledger/Deposit": MethodSettings(key=("account_id.more",))},
            ["bank.v1.Ledger/Deposit", "'account_id.more'"],
            id="path-through-a-scalar",
        ),
        pytest.param(
            LEDGER,
            {"bank.v1.Ledger/TradeSession": MethodSettings(key=("order.acount",))},
            ["bank.v1.Ledger/TradeSession", "'order.acount'"],
            id="nested-field-missing",
        ),
        pytest.param(
            None,
            {"bank.v1.Ledger/Deposit": MethodSettings(key=("account_id",))},
            ["bank.v1.Ledger/Deposit", "descriptors"],
            id="key-without-descriptors",
        ),
    ],
)
def test_method_settings_are_checked_against_the_descriptors(
    registry: DescriptorRegistry | None, methods: dict[str, MethodSettings], names: list[str]
) -> None:
    """A method the descriptors lack, a key naming no field, or a key without descriptors is a ConfigError."""
    with pytest.raises(ConfigError) as caught:
        Router(registry, methods)
    for name in names:
        assert name in str(caught.value)


def test_a_shim_with_a_bad_method_setting_does_not_start() -> None:
    """The shim checks its method settings when it is built, before it listens."""
    config = Config(
        bank=Upstream("bank", "127.0.0.1:1"),
        mode="bank",
        methods={"bank.v1.Ledger/Deposit": MethodSettings(key=("acount_id",))},
    )
    with pytest.raises(ConfigError, match="acount_id"):
        Shim(config, registry=LEDGER)


# ---- read sampling ------------------------------------------------------------------------------

DRAWS = 10_000
# at p = 0.1 over 10,000 draws the share's standard deviation is 0.003: +-0.015 is five of them
TOLERANCE = 0.015


def test_reads_are_sampled_at_the_configured_rate() -> None:
    """Without by_key, about `rate` of reads are mirrored."""
    router = Router(LEDGER, {}, read_rate=0.1, rng=random.Random(7))
    share = sum(router.sampled(("ACC-1",)) for _ in range(DRAWS)) / DRAWS
    assert abs(share - 0.1) <= TOLERANCE


def test_by_key_sampling_is_the_same_for_the_same_keys_and_holds_the_rate() -> None:
    """With by_key the same keys are always or never sampled (whatever the rng); about `rate` of keys are."""
    routers = [Router(LEDGER, {}, read_rate=0.1, by_key=True, rng=random.Random(seed)) for seed in (1, 2)]
    keys = [(f"ACC-{i}",) for i in range(DRAWS)]
    decisions = [routers[0].sampled(k) for k in keys]
    assert [routers[1].sampled(k) for k in keys] == decisions
    assert [routers[0].sampled(k) for k in keys] == decisions
    assert abs(sum(decisions) / DRAWS - 0.1) <= TOLERANCE


def test_by_key_sampling_of_unkeyed_reads_still_holds_the_rate() -> None:
    """A read without keys cannot be hashed: it is sampled at random at the rate."""
    router = Router(LEDGER, {}, read_rate=0.1, by_key=True, rng=random.Random(3))
    share = sum(router.sampled(()) for _ in range(DRAWS)) / DRAWS
    assert abs(share - 0.1) <= TOLERANCE


@pytest.mark.parametrize(("rate", "sampled"), [(0.0, False), (1.0, True)])
@pytest.mark.parametrize("by_key", [False, True])
def test_rates_zero_and_one_never_and_always_sample(rate: float, sampled: bool, by_key: bool) -> None:
    """Rate 0 mirrors no read and rate 1 every read, with or without by_key."""
    router = Router(LEDGER, {}, read_rate=rate, by_key=by_key)
    assert {router.sampled((f"ACC-{i}",)) for i in range(1000)} | {router.sampled(())} == {sampled}


# ---- the config file's [methods], [sampling] and [ordering] -----------------------------------

BANK_TABLE = '[upstreams.bank]\ntarget = "b:1"\n'


def _load(folder: Path, text: str) -> Config:
    path = folder / "shim.toml"
    path.write_text(text, encoding="utf-8")
    return build(load_file(path))


def test_routing_tables_build_the_expected_config(tmp_path: Path) -> None:
    """[methods."..."], [sampling] and [ordering] give the Config fields they describe."""
    config = _load(
        tmp_path,
        BANK_TABLE
        + '[methods."bank.v1.Ledger/Deposit"]\nkey = "account_id"\n'
        + '[methods."bank.v1.Ledger/TradeSession"]\nkey = ["order.account_id"]\nread = false\nstrict = true\n'
        + '[methods."bank.v1.Ledger/GetBalance"]\nread = true\n'
        + "[sampling]\nreads = 0.25\nby_key = true\n"
        + "[ordering]\nstrict = true\n",
    )
    assert config.methods == {
        "bank.v1.Ledger/Deposit": MethodSettings(key=("account_id",)),
        "bank.v1.Ledger/TradeSession": MethodSettings(key=("order.account_id",), read=False, strict=True),
        "bank.v1.Ledger/GetBalance": MethodSettings(read=True),
    }
    assert (config.sampling.reads, config.sampling.by_key, config.ordering.strict) == (0.25, True, True)


@pytest.mark.parametrize(("text", "rate"), [("reads = 0", 0.0), ("reads = 1", 1.0), ("reads = 0.5", 0.5)])
def test_sampling_rate_bounds_are_accepted(tmp_path: Path, text: str, rate: float) -> None:
    """Integers 0 and 1 and any share between are valid rates."""
    assert _load(tmp_path, BANK_TABLE + f"[sampling]\n{text}\n").sampling.reads == rate


def test_routing_defaults() -> None:
    """Without the tables, every read is mirrored, by chance not key, and writes are not serialised."""
    config = Config(bank=Upstream("bank", "b:1"), mode="bank")
    assert (config.methods, config.sampling.reads, config.sampling.by_key, config.ordering.strict) == (
        {},
        1.0,
        False,
        False,
    )


DEPOSIT = '[methods."bank.v1.Ledger/Deposit"]\n'
MISTAKES: list[object] = [
    pytest.param("[sampling]\nreads = 2\n", "sampling.reads", id="rate-above-one"),
    pytest.param("[sampling]\nreads = -0.1\n", "sampling.reads", id="negative-rate"),
    pytest.param("[sampling]\nreads = true\n", "sampling.reads", id="boolean-rate"),
    pytest.param('[sampling]\nreads = "10%"\n', "sampling.reads", id="text-rate"),
    pytest.param('[sampling]\nby_key = "yes"\n', "sampling.by_key", id="text-by-key"),
    pytest.param("[sampling]\nrate = 0.1\n", "sampling.rate", id="unknown-sampling-key"),
    pytest.param("sampling = 0.1\n", "sampling", id="sampling-not-a-table"),
    pytest.param("[ordering]\nstrict = 1\n", "ordering.strict", id="integer-strict"),
    pytest.param("[ordering]\nfifo = true\n", "ordering.fifo", id="unknown-ordering-key"),
    pytest.param(DEPOSIT + "key = 3\n", 'methods."bank.v1.Ledger/Deposit".key', id="key-not-text"),
    pytest.param(DEPOSIT + 'key = [""]\n', 'methods."bank.v1.Ledger/Deposit".key', id="empty-key"),
    pytest.param(DEPOSIT + 'key = ["a", 3]\n', 'methods."bank.v1.Ledger/Deposit".key', id="key-list-mixed"),
    pytest.param(DEPOSIT + 'read = "yes"\n', 'methods."bank.v1.Ledger/Deposit".read', id="text-read"),
    pytest.param(DEPOSIT + 'strict = "no"\n', 'methods."bank.v1.Ledger/Deposit".strict', id="text-strict"),
    pytest.param(
        DEPOSIT + 'keys = ["a"]\n', 'methods."bank.v1.Ledger/Deposit".keys', id="unknown-method-key"
    ),
    pytest.param('[methods."x"]\nkey = 3\n', 'methods."x"', id="method-name-without-service"),
    pytest.param('[methods."bad"]\nread = "yes"\n', 'methods."bad"', id="bad-method-name"),
    pytest.param(
        '[methods."/a.B/C"]\nread = true\n', 'methods."/a.B/C"', id="method-name-with-leading-slash"
    ),
    pytest.param('[methods]\n"a.B/C" = 3\n', 'methods."a.B/C"', id="method-not-a-table"),
    pytest.param("methods = 3\n", "methods", id="methods-not-a-table"),
]


@pytest.mark.parametrize(("text", "names"), MISTAKES)
def test_each_routing_mistake_is_a_one_line_config_error_naming_it(
    tmp_path: Path, text: str, names: str
) -> None:
    """Every mistake in [methods], [sampling] or [ordering] raises a one-line ConfigError naming the key."""
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, BANK_TABLE + text)
    message = str(caught.value)
    assert names in message
    assert "\n" not in message
