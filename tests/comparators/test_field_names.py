"""Every field name protobuf accepts works in every comparator path: keywords, builtins, API names.

protobuf's runtime (upb) takes any identifier as a field name and refuses only
names that are not identifiers ("a-b", "1x", "é"); a field may even be named
like a method of the message API (`HasField`, `DESCRIPTOR`), which it then
hides on the message. So every name below is in, and message types built
from descriptors mix them with random identifiers, in fields of every shape.
"""

from __future__ import annotations

import keyword
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, message
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from comparators import (
    Comparison,
    DescriptorError,
    DescriptorRegistry,
    Outcome,
    RuleSet,
    Verdict,
    build_rules,
    compare,
)
from comparators.ids import Found, IdFields, IdKind
from comparators.message_api import serialize
from comparators.redact import Redactor
from shim.units import parse_duration
from tests.comparators._exchanges import exchange

_F = descriptor_pb2.FieldDescriptorProto
PROPERTIES = settings(max_examples=40, deadline=None)

# Python's keywords and soft keywords; names the compiled walk uses for its own variables, and
# builtins; protobuf's message API; leading underscores, digits, capitals.
KEYWORDS = sorted({*keyword.kwlist, *keyword.softkwlist})
SHADOWING = [
    *("self", "x", "y", "a", "b", "has", "hx", "hy", "prefix", "walk", "fd0", "d0", "MISSING"),
    *("getattr", "len", "type", "object", "str", "int", "items", "keys", "values", "key", "value", "get"),
]
MESSAGE_API = [
    *("DESCRIPTOR", "HasField", "ListFields", "ClearField", "WhichOneof", "CopyFrom", "MergeFrom"),
    *("ParseFromString", "SerializeToString", "FromString", "ByteSize", "Extensions", "IsInitialized"),
    *("SetInParent", "__class__", "__init__", "__eq__", "__dict__", "__slots__", "__module__"),
]
ODD = ["_", "__", "_x", "__x", "_1", "a1", "x_1_", "CamelCase", "HTTPStatus", "fooBar", "Z"]
AWKWARD = list(dict.fromkeys([*KEYWORDS, *SHADOWING, *MESSAGE_API, *ODD]))
names = st.one_of(st.sampled_from(AWKWARD), st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True))

# -- message types built from descriptors -------------------------------------------------------

SCALARS = {
    "string": _F.TYPE_STRING,
    "int64": _F.TYPE_INT64,
    "double": _F.TYPE_DOUBLE,
    "bool": _F.TYPE_BOOL,
    "bytes": _F.TYPE_BYTES,
    "enum": _F.TYPE_ENUM,
}
OTHERS = ["optional", "strings", "ints", "leaf", "leaves", "map", "leaf_map", "choice_string", "choice_leaf"]
KINDS = [*SCALARS, *OTHERS]
CHOICE = ("choice_string", "choice_leaf")  # members of the oneof "choice"
MSG, LEAF, GET = "fn.v1.Msg", "fn.v1.Leaf", "/fn.v1.Svc/Get"


@dataclass(frozen=True)
class Schema:
    """fn.v1.Msg with `fields` (name, kind), fn.v1.Leaf{string leaf[0], int64 leaf[1]}, fn.v1.Svc/Get."""

    registry: DescriptorRegistry
    fields: tuple[tuple[str, str], ...]
    leaf: tuple[str, str]

    def names_of(self, *kinds: str) -> list[str]:
        return [name for name, kind in self.fields if kind in kinds]


def _json_name(name: str) -> str:
    """protoc's JSON name of a field (two fields of a message may not share one)."""
    parts = name.split("_")
    return parts[0] + "".join(part[:1].upper() + part[1:] for part in parts[1:])


def _entry_name(name: str) -> str:
    """protoc's name of a map field's entry type."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_")) + "Entry"


def build_schema(fields: list[tuple[str, str]], leaf: tuple[str, str]) -> Schema | None:
    """The message types, or None when protobuf refuses them (two names that clash)."""
    file = descriptor_pb2.FileDescriptorProto(name="fn/v1/fn.proto", package="fn.v1", syntax="proto3")
    color = file.enum_type.add(name="Color")
    for number, value in enumerate(("COLOR_UNSET", "COLOR_RED", "COLOR_BLUE")):
        color.value.add(name=value, number=number)
    leaf_type = file.message_type.add(name="Leaf")
    leaf_type.field.add(name=leaf[0], number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    leaf_type.field.add(name=leaf[1], number=2, type=_F.TYPE_INT64, label=_F.LABEL_OPTIONAL)
    msg = file.message_type.add(name="Msg")
    if any(kind in CHOICE for _, kind in fields):
        msg.oneof_decl.add(name="choice")  # real oneofs before proto3's synthetic ones
    for number, (name, kind) in enumerate(fields, start=1):
        fd = msg.field.add(name=name, number=number, label=_F.LABEL_OPTIONAL, type=_F.TYPE_MESSAGE)
        if kind in SCALARS:
            fd.type = SCALARS[kind]  # type: ignore[assignment]
            if kind == "enum":
                fd.type_name = ".fn.v1.Color"
        elif kind in ("optional", "choice_string"):
            fd.type = _F.TYPE_STRING
            if kind == "optional":
                fd.proto3_optional = True
                fd.oneof_index = len(msg.oneof_decl)
                msg.oneof_decl.add(name=f"_{name}")
            else:
                fd.oneof_index = 0
        elif kind in ("strings", "ints"):
            fd.type = _F.TYPE_STRING if kind == "strings" else _F.TYPE_INT32
            fd.label = _F.LABEL_REPEATED
        elif kind in ("leaf", "leaves", "choice_leaf"):
            fd.type_name = ".fn.v1.Leaf"
            if kind == "leaves":
                fd.label = _F.LABEL_REPEATED
            elif kind == "choice_leaf":
                fd.oneof_index = 0
        else:  # a map
            entry = msg.nested_type.add(name=_entry_name(name))
            entry.options.map_entry = True
            key_type, value_type = (
                (_F.TYPE_STRING, _F.TYPE_STRING) if kind == "map" else (_F.TYPE_INT64, _F.TYPE_MESSAGE)
            )
            entry.field.add(name="key", number=1, type=key_type, label=_F.LABEL_OPTIONAL)
            value = entry.field.add(name="value", number=2, type=value_type, label=_F.LABEL_OPTIONAL)
            if kind == "leaf_map":
                value.type_name = ".fn.v1.Leaf"
            fd.type_name = f".fn.v1.Msg.{entry.name}"
            fd.label = _F.LABEL_REPEATED
    file.service.add(name="Svc").method.add(name="Get", input_type=".fn.v1.Msg", output_type=".fn.v1.Msg")
    registry = DescriptorRegistry()
    try:
        registry.add_set(descriptor_pb2.FileDescriptorSet(file=[file]))
    except DescriptorError:
        return None
    return Schema(registry, tuple(fields), leaf)


@st.composite
def schemas(draw: st.DrawFn) -> Schema:
    """Msg always has a string field and a repeated Leaf field, then fields of random kinds."""
    kinds = ["string", "leaves", *draw(st.lists(st.sampled_from(KINDS), max_size=10))]
    field_names = draw(st.lists(names, min_size=len(kinds), max_size=len(kinds), unique_by=_json_name))
    leaf = draw(st.lists(names, min_size=2, max_size=2, unique_by=_json_name))
    schema = build_schema(list(zip(field_names, kinds, strict=True)), (leaf[0], leaf[1]))
    assume(schema is not None)
    assert schema is not None
    return schema


# -- values ----------------------------------------------------------------------------------------

Values = dict[str, Any]  # field name -> plain value (None: unset); a Leaf is a dict of its two fields
INT64 = st.integers(-(2**63), 2**63 - 1)


def value_of(kind: str, leaf: tuple[str, str]) -> st.SearchStrategy[Any]:
    leaves = st.fixed_dictionaries({leaf[0]: st.text(max_size=3), leaf[1]: INT64})
    return {
        "string": st.text(max_size=4),
        "int64": INT64,
        "double": st.floats(),
        "bool": st.booleans(),
        "bytes": st.binary(max_size=4),
        "enum": st.sampled_from([0, 1, 2, 7]),  # 7: a number the enum does not name
        "optional": st.none() | st.text(max_size=3),
        "strings": st.lists(st.text(max_size=3), max_size=3),
        "ints": st.lists(st.integers(-(2**31), 2**31 - 1), max_size=3),
        "leaf": st.none() | leaves,
        "leaves": st.lists(leaves, max_size=3),
        "map": st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=3),
        "leaf_map": st.dictionaries(INT64, leaves, max_size=3),
        "choice_string": st.none() | st.text(max_size=3),
        "choice_leaf": st.none() | leaves,
    }[kind]


def one_choice(schema: Schema, values: Values, keep: str = "") -> Values:
    """At most one member of the oneof set: `keep` when it is set, else the last one set."""
    members = [name for name in schema.names_of(*CHOICE) if values[name] is not None]
    chosen = keep if keep in members else (members[-1] if members else "")
    return {name: None if name in members and name != chosen else value for name, value in values.items()}


@st.composite
def answers(draw: st.DrawFn, schema: Schema) -> Values:
    values = {name: draw(value_of(kind, schema.leaf)) for name, kind in schema.fields}
    return one_choice(schema, values)


def build(schema: Schema, values: Values) -> message.Message:
    cls = schema.registry.message_class(MSG)
    return cls(**{name: value for name, value in values.items() if value is not None})


def wire(schema: Schema, values: Values) -> bytes:
    return serialize(build(schema, values), deterministic=True)


def differs(kind: str, old: Any, new: Any) -> bool:
    """Whether two values of a field are different answers (NaN is NaN; 0.0 is -0.0)."""
    if kind == "double":
        return not (old == new or (math.isnan(old) and math.isnan(new)))
    return bool(old != new)


_DEFAULT_WIRE = {"string": (2, b"\0"), "bytes": (2, b"\0"), "double": (1, bytes(8))}


def defaults_first(schema: Schema) -> bytes:
    """Each implicit-presence scalar of Msg written with its default: put before an answer's bytes, it
    changes them but not the answer (a later value of a field wins)."""
    out = b""
    for number, (_, kind) in enumerate(schema.fields, start=1):
        if kind in SCALARS:
            wire_type, payload = _DEFAULT_WIRE.get(kind, (0, b"\0"))
            out += bytes([number << 3 | wire_type]) + payload
    return out


def judge(schema: Schema, bank: bytes, bk: bytes, rules: RuleSet | None = None, **kwargs: Any) -> Comparison:
    outcomes = Outcome(0, messages=(bank,)), Outcome(0, messages=(bk,))
    return compare(exchange(GET, *outcomes), schema.registry, rules, **kwargs)


def at(path: str, field_names: list[str]) -> bool:
    """Whether a difference's path lies in one of these top-level fields."""
    return any(path == name or path.startswith((f"{name}.", f"{name}[")) for name in field_names)


def with_ids(schema: Schema, values: Values, change: Callable[[str], str]) -> Values:
    """`values` with every non-empty text at Msg's first string field and at Leaf's string field changed."""

    def leaf(value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None or not value[schema.leaf[0]]:
            return value
        return {**value, schema.leaf[0]: change(value[schema.leaf[0]])}

    out = dict(values)
    first = schema.names_of("string")[0]
    out[first] = change(values[first]) if values[first] else ""
    for name, kind in schema.fields:
        if kind in ("leaf", "choice_leaf"):
            out[name] = leaf(values[name])
        elif kind == "leaves":
            out[name] = [leaf(item) for item in values[name]]
        elif kind == "leaf_map":
            out[name] = {key: leaf(item) for key, item in values[name].items()}
    return out


def id_texts(schema: Schema, values: Values) -> list[str]:
    seen: list[str] = []

    def keep(text: str) -> str:
        seen.append(text)
        return text

    with_ids(schema, values, keep)
    return sorted(seen)


# -- invariants ------------------------------------------------------------------------------------


@PROPERTIES
@given(st.data())
def test_an_answer_always_matches_itself(data: st.DataObject) -> None:
    """Two encodings of the same answer match, decoded and redacted, whatever its fields are named."""
    schema = data.draw(schemas())
    values = data.draw(answers(schema))
    first = schema.names_of("string")[0]
    redactor = Redactor([f"{MSG}.{first}", f"{LEAF}.{schema.leaf[0]}"], schema.registry, b"key")
    ids = IdFields([IdKind("ref", (f"{MSG}.{first}", f"{LEAF}.{schema.leaf[0]}"))], schema.registry)
    bank = wire(schema, values)
    comparison = judge(schema, bank, defaults_first(schema) + bank, ids=ids, redactor=redactor)
    assert comparison.verdict is Verdict.MATCH, comparison.reason
    assert comparison.decoded  # the bytes differ: both answers were decoded and compared
    assert comparison.differences == ()


@PROPERTIES
@given(st.data())
def test_changing_one_field_is_a_real_difference_at_that_field(data: st.DataObject) -> None:
    """A field of any name and shape given another value is a mismatch whose differences all lie in it."""
    schema = data.draw(schemas())
    values = data.draw(answers(schema))
    name, kind = data.draw(st.sampled_from(schema.fields))
    new = data.draw(value_of(kind, schema.leaf))
    assume(differs(kind, values[name], new))
    changed = one_choice(schema, {**values, name: new}, keep=name)
    comparison = judge(schema, wire(schema, values), wire(schema, changed))
    assert comparison.verdict is Verdict.MISMATCH, comparison.reason
    where = schema.names_of(*CHOICE) if kind in CHOICE else [name]  # a oneof's member set clears the others
    assert comparison.differences
    assert all(at(d.path, where) and not d.rule for d in comparison.differences), comparison.differences
    assert any(at(d.path, [name]) for d in comparison.differences)


@PROPERTIES
@given(st.data())
def test_an_ignore_rule_on_a_field_of_any_name_tolerates_its_changes(data: st.DataObject) -> None:
    """`rule = "ignore"` on package.Message.<name> tolerates every difference in that field."""
    schema = data.draw(schemas())
    values = data.draw(answers(schema))
    name, kind = data.draw(st.sampled_from(schema.fields))
    new = data.draw(value_of(kind, schema.leaf))
    assume(differs(kind, values[name], new))
    where = schema.names_of(*CHOICE) if kind in CHOICE else [name]
    specs = [{"rule": "ignore", "path": f"{MSG}.{field}"} for field in where]
    rules = build_rules(specs, schema.registry, parse_duration)
    changed = one_choice(schema, {**values, name: new}, keep=name)
    comparison = judge(schema, wire(schema, values), wire(schema, changed), rules)
    assert comparison.verdict is Verdict.MATCH, comparison.reason
    assert comparison.differences
    assert all(d.rule for d in comparison.differences)


@PROPERTIES
@given(st.data())
def test_a_keyed_rule_pairs_elements_by_a_field_of_any_name(data: st.DataObject) -> None:
    """A keyed list rule whose key is a field of any name pairs a reordered list element by element."""
    schema = data.draw(schemas())
    values = data.draw(answers(schema))
    leaves = schema.names_of("leaves")[0]
    key, number = schema.leaf
    element = st.fixed_dictionaries({key: st.text(max_size=3), number: INT64})
    items = data.draw(st.lists(element, min_size=2, max_size=4, unique_by=lambda item: item[key]))
    bank, bk = wire(schema, {**values, leaves: items}), wire(schema, {**values, leaves: items[::-1]})
    spec = {"rule": "keyed", "path": f"{MSG}.{leaves}", "key": [key]}
    rules = build_rules([spec], schema.registry, parse_duration)
    assert judge(schema, bank, bk).verdict is Verdict.MISMATCH  # in order, the elements differ
    comparison = judge(schema, bank, bk, rules)
    assert comparison.verdict is Verdict.MATCH, comparison.differences
    assert comparison.differences == ()


@PROPERTIES
@given(st.data())
def test_a_multiset_pairs_elements_alike_under_a_rule_on_a_field_of_any_name(data: st.DataObject) -> None:
    """A multiset of elements whose fields have any names, each element's number one more on BK's side
    under a `number` rule on it, in another order: each pairs with its own (told apart by the other
    field, read by name)."""
    schema = data.draw(schemas())
    values = data.draw(answers(schema))
    leaves = schema.names_of("leaves")[0]
    key, number = schema.leaf
    element = st.fixed_dictionaries({key: st.text(max_size=3), number: st.integers(-(2**40), 2**40)})
    items = data.draw(st.lists(element, min_size=2, max_size=4, unique_by=lambda item: item[key]))
    moved = [{key: item[key], number: item[number] + 1} for item in items[::-1]]
    bank, bk = wire(schema, {**values, leaves: items}), wire(schema, {**values, leaves: moved})
    specs = [
        {"rule": "multiset", "path": f"{MSG}.{leaves}"},
        {"rule": "number", "path": f"{LEAF}.{number}", "absolute": 1},
    ]
    comparison = judge(schema, bank, bk, build_rules(specs, schema.registry, parse_duration))
    assert comparison.verdict is Verdict.MATCH, comparison.differences
    assert len(comparison.differences) == len(items)


@PROPERTIES
@given(st.data())
def test_ids_at_fields_of_any_name_are_found_and_rewritten(data: st.DataObject) -> None:
    """IdFields finds every id at a field of any name, at any depth, and rewrites each in place."""
    schema = data.draw(schemas())
    values = data.draw(answers(schema))
    first = schema.names_of("string")[0]
    fields = IdFields([IdKind("ref", (f"{MSG}.{first}", f"{LEAF}.{schema.leaf[0]}"))], schema.registry)
    msg = build(schema, values)
    found = fields.find(GET, "response", [msg], None)
    assert sorted(f.value for f in found) == id_texts(schema, values)
    left = fields.rewrite(GET, "response", [msg], lambda f: f"bk-{f.value}")
    assert left == []
    assert msg == build(schema, with_ids(schema, values, lambda text: f"bk-{text}"))


@PROPERTIES
@given(st.data())
def test_redaction_replaces_fields_of_any_name(data: st.DataObject) -> None:
    """A Redactor replaces the values of redacted fields of any name, at any depth, and nothing else."""
    schema = data.draw(schemas())
    values = data.draw(answers(schema))
    first = schema.names_of("string")[0]
    redactor = Redactor([f"{MSG}.{first}", f"{LEAF}.{schema.leaf[0]}"], schema.registry, b"key")
    msg = build(schema, values)
    redactor.redact(msg)
    assert msg == build(schema, with_ids(schema, values, redactor.hash))


# -- each awkward name, in each kind of field ------------------------------------------------------

LEAF_A, LEAF_B = {"n": "a", "m": 1}, {"n": "b", "m": 1}
CHANGES: dict[str, tuple[Any, Any]] = {
    "string": ("a", "b"),
    "int64": (1, -1),
    "double": (0.5, math.nan),
    "bool": (False, True),
    "bytes": (b"", b"\0"),
    "enum": (1, 7),
    "optional": (None, ""),
    "strings": (["a"], ["a", "b"]),
    "ints": ([1, 2], [2, 1]),
    "leaf": (None, LEAF_A),
    "leaves": ([LEAF_A], [LEAF_B]),
    "map": ({"k": "a"}, {"k": "b"}),
    "leaf_map": ({1: LEAF_A}, {1: LEAF_B, 2: LEAF_A}),
    "choice_string": ("a", "b"),
    "choice_leaf": (LEAF_A, LEAF_B),
}


@pytest.mark.parametrize("name", AWKWARD)
def test_each_awkward_name_works_in_every_kind_of_field(name: str) -> None:
    """A field named `name` (also inside the nested message) gives a mismatch at `name`, of every kind."""
    for kind, (old, new) in CHANGES.items():
        schema = build_schema([(name, kind)], ("n", "m") if name in ("n", "m") else (name, "m"))
        if schema is None:  # a map's entry type is named after its field: "_1" would make "1Entry"
            assert kind in ("map", "leaf_map"), kind
            assert not _entry_name(name).isidentifier()
            continue
        leaf_name = schema.leaf[0]

        def value(plain: Any, leaf_name: str = leaf_name) -> Any:  # LEAF_* name their string field "n"
            if isinstance(plain, dict) and "n" in plain:
                return {leaf_name: plain["n"], "m": plain["m"]}
            if isinstance(plain, dict):
                return {key: value(item) for key, item in plain.items()}
            if isinstance(plain, list):
                return [value(item) for item in plain]
            return plain

        bank, bk = wire(schema, {name: value(old)}), wire(schema, {name: value(new)})
        comparison = judge(schema, bank, bk)
        assert comparison.verdict is Verdict.MISMATCH, (kind, comparison.reason)
        assert comparison.differences, kind
        assert all(at(d.path, [name]) for d in comparison.differences), (kind, comparison.differences)
        assert judge(schema, bank, defaults_first(schema) + bank).verdict is Verdict.MATCH, kind


@pytest.mark.parametrize("name", AWKWARD)
def test_each_awkward_name_works_for_ids_and_redaction(name: str) -> None:
    """Ids and redacted values at Leaf.<name>, inside Msg.<name>, are found, rewritten and redacted."""
    schema = build_schema([(name, "leaf")], ("n", "m") if name in ("n", "m") else (name, "m"))
    assert schema is not None
    leaf_field = schema.leaf[0]
    fields = IdFields([IdKind("ref", (f"{LEAF}.{leaf_field}",))], schema.registry)
    msg = build(schema, {name: {leaf_field: "T1", "m": 1}})
    assert fields.find(GET, "response", [msg], None) == [Found("ref", True, (0, name, leaf_field), "T1", "")]
    assert fields.rewrite(GET, "response", [msg], lambda f: "bk-1") == []
    assert msg == build(schema, {name: {leaf_field: "bk-1", "m": 1}})
    redactor = Redactor([f"{LEAF}.{leaf_field}"], schema.registry, b"key")
    redactor.redact(msg)
    assert msg == build(schema, {name: {leaf_field: redactor.hash("bk-1"), "m": 1}})


# -- the reported case, and each comparator feature at a keyword-named field ----------------------------


def _keyword_registry() -> DescriptorRegistry:
    """kw.v1.Transfer{from, to, repeated Item items}, Item{class, def}, served by kw.v1.Svc/Get."""
    file = descriptor_pb2.FileDescriptorProto(name="kw/v1/kw.proto", package="kw.v1", syntax="proto3")
    item = file.message_type.add(name="Item")
    item.field.add(name="class", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    item.field.add(name="def", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    transfer = file.message_type.add(name="Transfer")
    transfer.field.add(name="from", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    transfer.field.add(name="to", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    transfer.field.add(
        name="items", number=3, type=_F.TYPE_MESSAGE, type_name=".kw.v1.Item", label=_F.LABEL_REPEATED
    )
    file.service.add(name="Svc").method.add(
        name="Get", input_type=".kw.v1.Transfer", output_type=".kw.v1.Transfer"
    )
    registry = DescriptorRegistry()
    registry.add_set(descriptor_pb2.FileDescriptorSet(file=[file]))
    return registry


KW = _keyword_registry()
TRANSFER = KW.message_class("kw.v1.Transfer")


def _transfer(**fields: Any) -> message.Message:
    return TRANSFER(**{"from" if name == "from_" else name: value for name, value in fields.items()})


def _judge_transfers(bank: message.Message, bk: message.Message, rules: RuleSet | None = None) -> Comparison:
    bank_answer = Outcome(0, messages=(bank.SerializeToString(),))
    bk_answer = Outcome(0, messages=(bk.SerializeToString(),))
    return compare(exchange("/kw.v1.Svc/Get", bank_answer, bk_answer), KW, rules)


def test_a_field_named_from_compares_like_any_other() -> None:
    """Two answers that differ at a field named `from` (a Python keyword) are a mismatch at `from`."""
    comparison = _judge_transfers(_transfer(from_="A1", to="B1"), _transfer(from_="A2", to="B1"))
    assert comparison.verdict is Verdict.MISMATCH, comparison.reason
    assert [(d.path, d.bank, d.bk) for d in comparison.differences] == [("from", "A1", "A2")]


def test_an_ignore_rule_on_a_keyword_named_field_tolerates_it() -> None:
    """`rule = "ignore"` on kw.v1.Transfer.from tolerates a difference at `from`."""
    rules = build_rules([{"rule": "ignore", "path": "kw.v1.Transfer.from"}], KW, parse_duration)
    comparison = _judge_transfers(_transfer(from_="A1"), _transfer(from_="A2"), rules)
    assert comparison.verdict is Verdict.MATCH
    assert [(d.path, d.rule) for d in comparison.differences] == [("from", "ignore from")]


def test_a_keyed_rule_keyed_on_a_keyword_named_field_pairs_by_it() -> None:
    """A keyed list rule with key ["class"] pairs elements by their `class` field."""
    rules = build_rules(
        [{"rule": "keyed", "path": "kw.v1.Transfer.items", "key": ["class"]}], KW, parse_duration
    )
    a, b = {"class": "a", "def": "1"}, {"class": "b", "def": "2"}
    comparison = _judge_transfers(_transfer(items=[a, b]), _transfer(items=[{**b, "def": "3"}, a]), rules)
    assert comparison.verdict is Verdict.MISMATCH
    assert [(d.path, d.bank, d.bk) for d in comparison.differences] == [("items[class=b].def", "2", "3")]


def test_key_values_holding_the_separators_are_different_keys() -> None:
    """Elements keyed by two fields whose values joined by "," and "=" read alike are still told apart."""
    rules = build_rules(
        [{"rule": "keyed", "path": "kw.v1.Transfer.items", "key": ["class", "def"]}], KW, parse_duration
    )
    bank = _transfer(items=[{"class": "a,def=b", "def": "c"}])
    bk = _transfer(items=[{"class": "a", "def": "b,def=c"}])
    comparison = _judge_transfers(bank, bk, rules)
    assert [(d.kind.value, d.bank is None, d.bk is None) for d in comparison.differences] == [
        ("removed", False, True),
        ("added", True, False),
    ]


def test_an_id_at_a_keyword_named_field_is_found_and_rewritten() -> None:
    """IdFields finds an id declared at kw.v1.Transfer.from, and rewrites it."""
    fields = IdFields([IdKind("account", ("kw.v1.Transfer.from",))], KW)
    msg = _transfer(from_="A1")
    assert fields.find("/kw.v1.Svc/Get", "response", [msg], None) == [
        Found("account", True, (0, "from"), "A1", "")
    ]
    assert fields.rewrite("/kw.v1.Svc/Get", "response", [msg], lambda f: "acc_1") == []
    assert msg == _transfer(from_="acc_1")


def test_a_keyword_named_field_is_redacted() -> None:
    """A Redactor on kw.v1.Transfer.from replaces that field's value and leaves the others."""
    redactor = Redactor(["kw.v1.Transfer.from"], KW, b"key")
    msg = _transfer(from_="Alice", to="Bob")
    redactor.redact(msg)
    assert msg == _transfer(from_=redactor.hash("Alice"), to="Bob")


def _packing_registry() -> DescriptorRegistry:
    """anyid.v1.Outer{google.protobuf.Any from}, Inner{ParseFromString, SerializeToString}; Svc/Get."""
    file = descriptor_pb2.FileDescriptorProto(
        name="anyid.proto", package="anyid.v1", syntax="proto3", dependency=["google/protobuf/any.proto"]
    )
    inner = file.message_type.add(name="Inner")
    inner.field.add(name="ParseFromString", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    inner.field.add(name="SerializeToString", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    outer = file.message_type.add(name="Outer")
    outer.field.add(
        name="from", number=1, type=_F.TYPE_MESSAGE, type_name=".google.protobuf.Any", label=_F.LABEL_OPTIONAL
    )
    file.service.add(name="Svc").method.add(
        name="Get", input_type=".anyid.v1.Outer", output_type=".anyid.v1.Outer"
    )
    registry = DescriptorRegistry()  # it holds google/protobuf/any.proto already
    registry.add_set(descriptor_pb2.FileDescriptorSet(file=[file]))
    return registry


def test_a_packed_message_whose_fields_shadow_the_message_api_is_unpacked() -> None:
    """A message in an Any, with fields named ParseFromString and SerializeToString, is compared field by
    field and its ids are found and rewritten."""
    registry = _packing_registry()
    inner_class, outer_class = (
        registry.message_class("anyid.v1.Inner"),
        registry.message_class("anyid.v1.Outer"),
    )

    def outer(id_value: str, other: str) -> message.Message:
        packed = getattr(outer_class(), "from")
        packed.type_url = "type.googleapis.com/anyid.v1.Inner"
        packed.value = serialize(inner_class(ParseFromString=id_value, SerializeToString=other))
        return outer_class(**{"from": packed})

    outcomes = (
        Outcome(0, messages=(serialize(outer("T1", "a")),)),
        Outcome(0, messages=(serialize(outer("T1", "b")),)),
    )
    comparison = compare(exchange("/anyid.v1.Svc/Get", *outcomes), registry)
    assert [(d.path, d.bank, d.bk) for d in comparison.differences] == [("from.SerializeToString", "a", "b")]
    fields = IdFields([IdKind("ref", ("anyid.v1.Inner.ParseFromString",))], registry)
    msg = outer("T1", "a")
    assert [f.value for f in fields.find("/anyid.v1.Svc/Get", "response", [msg], None)] == ["T1"]
    assert fields.rewrite("/anyid.v1.Svc/Get", "response", [msg], lambda f: "bk-1") == []
    assert msg == outer("bk-1", "a")
