"""Comparator rules: small callables, configured in `__init__`, applied in `__call__`.

Over 400 lines: every built-in rule and the reading of their config tables, one small class each,
sharing one table of rule names.

A *leaf rule* decides whether two different values of one field are equivalent:
`rule(bank_value, bk_value) -> bool`. Values are normalised first: strings,
ints, floats, bools, bytes, enum names, and Timestamp/Duration as integer
nanoseconds. A leaf rule placed on a message field tolerates any difference in
that message (that is what `Ignore` does).

A *list rule* decides how the elements of a repeated field (or of a response
stream) are paired before they are compared: in order, as a multiset, or by key.

`BkMayAdd` tolerates a field present in BK's answer only; `StatusRule` says how
gRPC statuses compare. A user's own leaf rule is any callable with the leaf
signature, named by its dotted path in the config.

Every rule has a `name`; a difference a rule tolerates carries that name, so a
report can say why it was tolerated.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import math
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from comparators._model import REFUSALS, STATUS_NAMES
from comparators.descriptors import DescriptorRegistry, money_shape


class RuleError(ValueError):
    """A rule specification is invalid; the message names the rule's line when known."""


LeafRule = Callable[[Any, Any], bool]


# -- leaf rules -------------------------------------------------------------------------


class Ignore:
    """Any difference at this path (and below it) is tolerated."""

    def __init__(self, name: str = "ignore") -> None:
        self.name = name

    def __call__(self, bank: Any, bk: Any) -> bool:
        return True


class DecimalEquivalence:
    """Decimal strings equal as numbers: "100.5" == "100.50". Never a float tolerance.

    Only plain decimals are numbers: an optional sign, ASCII digits, an optional
    fraction and exponent ("-0", "1e2", "100.50"); any other text ("1_000",
    " 1000", "1000.", non-ASCII digits, NaN) is compared as text.
    With `scale`, both values must also have at most that many decimal places.
    An empty string counts as zero (proto3's unset string). On a money-like
    message field (nothing but units + nanos, or one decimal string, beside an
    optional currency) the walker passes "<currency> <amount>": currencies must
    be equal, amounts equal as numbers. A message with any other field is walked
    field by field instead.
    """

    def __init__(self, scale: int | None = None, name: str = "decimal") -> None:
        if scale is not None and scale < 0:
            raise RuleError("decimal: scale must be >= 0")
        self.scale = scale
        self.name = name

    def _parse(self, value: Any) -> tuple[str, Decimal] | None:
        """(currency, amount) of "100.5" or, for a money-like message, "USD 100.5"."""
        if not isinstance(value, str):
            return None
        currency, space, amount = value.rpartition(" ")
        if space and (not currency or currency != currency.strip()):
            return None  # a space is only ever the one between a currency and its amount
        number = plain_decimal(amount)
        if number is None:
            return None
        if self.scale is not None:
            exponent = number.as_tuple().exponent
            if isinstance(exponent, int) and -exponent > self.scale:
                return None
        return currency, number

    def __call__(self, bank: Any, bk: Any) -> bool:
        if self.scale is None and type(bank) is str and type(bk) is str and " " not in bank and " " not in bk:
            # the common case, two plain decimal strings: "100.50" against "100.5"
            left, right = plain_decimal(bank), plain_decimal(bk)
            return left is not None and right is not None and left == right
        parsed_left, parsed_right = self._parse(bank), self._parse(bk)
        return parsed_left is not None and parsed_right is not None and parsed_left == parsed_right


# a decimal as a client writes one: an optional sign, ASCII digits, an optional fraction and exponent
_PLAIN_DECIMAL = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_ZERO = Decimal(0)


def plain_decimal(text: str) -> Decimal | None:
    """The number a plain decimal string writes ("" is proto3's unset string: zero); None for any other
    text, however Python's Decimal() would read it ("1_000", " 1000", "1000.", non-ASCII digits, NaN)."""
    if not text:
        return _ZERO
    if _PLAIN_DECIMAL.fullmatch(text) is None:
        return None
    return Decimal(text)


class NumericTolerance:
    """Numbers within an absolute or relative tolerance (for doubles such as FX rates)."""

    def __init__(self, absolute: float = 0.0, relative: float = 0.0, name: str = "number") -> None:
        if absolute < 0 or relative < 0:
            raise RuleError("number: tolerances must be >= 0")
        self.absolute = absolute
        self.relative = relative
        self.name = name

    def __call__(self, bank: Any, bk: Any) -> bool:
        if isinstance(bank, bool) or isinstance(bk, bool):
            return False
        if not isinstance(bank, int | float) or not isinstance(bk, int | float):
            return False
        if isinstance(bank, int) and isinstance(bk, int):  # exactly: 64-bit integers do not fit a double
            apart = abs(bank - bk)
            return apart <= self.absolute or apart <= self.relative * max(abs(bank), abs(bk))
        return math.isclose(bank, bk, rel_tol=self.relative, abs_tol=self.absolute)


class TimestampTolerance:
    """Timestamps (or durations) no further apart than `tolerance` seconds."""

    def __init__(self, tolerance: float, name: str = "timestamp") -> None:
        if tolerance < 0:
            raise RuleError("timestamp: tolerance must be >= 0")
        self.tolerance_ns = round(tolerance * 1e9)
        self.name = name

    def __call__(self, bank: Any, bk: Any) -> bool:
        if isinstance(bank, Instant) and isinstance(bk, Instant):
            return abs(bank.nanos - bk.nanos) <= self.tolerance_ns
        return False


class TextNormalisation:
    """Strings equal after folding case and/or collapsing whitespace."""

    def __init__(self, case: bool = True, whitespace: bool = True, name: str = "string") -> None:
        self.case = case
        self.whitespace = whitespace
        self.name = name

    def _norm(self, value: str) -> str:
        if self.whitespace:
            value = " ".join(value.split())
        if self.case:
            value = value.casefold()
        return value

    def __call__(self, bank: Any, bk: Any) -> bool:
        return isinstance(bank, str) and isinstance(bk, str) and self._norm(bank) == self._norm(bk)


class EnumMap:
    """Enum values (by name) that BK uses for Bank's: {"BANK_NAME": "BK_NAME"}."""

    def __init__(self, mapping: dict[str, str], name: str = "enum-map") -> None:
        if not mapping or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
            raise RuleError("enum-map: map must be a table of Bank enum name = BK enum name")
        self.mapping = dict(mapping)
        self.name = name

    def __call__(self, bank: Any, bk: Any) -> bool:
        return bool(self.mapping.get(bank) == bk)


# -- list rules -------------------------------------------------------------------------


class Ordered:
    """Elements are paired by position; extra elements are added/removed."""

    name = "ordered"


class Multiset:
    """Order does not matter; equal elements pair up first, the rest in order."""

    def __init__(self, name: str = "multiset") -> None:
        self.name = name


class Keyed:
    """Elements pair up by the values of one or more of their fields."""

    def __init__(self, key: Sequence[str], name: str = "keyed") -> None:
        if not key or not all(isinstance(k, str) and k for k in key):
            raise RuleError("keyed: key must be a non-empty list of field names")
        self.key = tuple(key)
        self.name = name


ListRule = Ordered | Multiset | Keyed
_ORDERED = Ordered()


# -- other rules ------------------------------------------------------------------------


class BkMayAdd:
    """A field present in BK's answer only is tolerated (BK may know more than Bank; never the reverse)."""

    def __init__(self, name: str = "bk-may-add") -> None:
        self.name = name


BROKE = "broke"  # a status neither OK nor a refusal (`REFUSALS`)
_REFUSED = frozenset(STATUS_NAMES[code.value] for code in REFUSALS)


def _meaning(code: str) -> str:
    """What a status says of a call: carried out ("OK"), certainly not ("refused"), or it broke."""
    return "OK" if code == "OK" else "refused" if code in _REFUSED else BROKE


class StatusRule:
    """How the gRPC statuses of the two answers compare.

    - `equivalent`: (Bank code, BK code) pairs that count as the same, in the
      status and in the `code` of its rich details (google.rpc.Status);
    - `details`: "exact" (default), "ignore", or a regular expression that both
      details must match, the captured groups being equal: the same text, or,
      given the exchange's id pairs, BK's group a BK id paired with Bank's.
    """

    def __init__(
        self,
        equivalent: Iterable[tuple[str, str]] = (),
        details: str = "exact",
        name: str = "status",
    ) -> None:
        names = set(STATUS_NAMES.values())
        pairs = set()
        for pair in equivalent:
            bank, bk = pair
            for code in (bank, bk):
                if code not in names:
                    raise RuleError(f"status: {code!r} is not a gRPC status code name")
            said = {_meaning(bank), _meaning(bk)}
            if BROKE in said and len(said) > 1:  # a broken call may or may not have been carried out
                raise RuleError(
                    f"status: {bank} and {bk} cannot be equivalent: one says the call broke (it may or may"
                    " not have been carried out), the other what was done; a broken call proves nothing"
                )
            pairs.add((bank, bk))
        self.equivalent = frozenset(pairs)
        self.details = details
        self.pattern: re.Pattern[str] | None = None
        if details not in ("exact", "ignore"):
            try:
                self.pattern = re.compile(details, re.S)
            except re.error as exc:
                raise RuleError(f"status: details pattern {details!r} is not a valid regex: {exc}") from exc
        self.name = name

    def codes_equivalent(self, bank: str, bk: str) -> bool:
        return (bank, bk) in self.equivalent

    @property
    def exact(self) -> bool:
        """Details compared as they are (no pattern, not ignored)."""
        return self.pattern is None and self.details != "ignore"

    def details_equivalent(self, bank: str, bk: str, pairs: Collection[tuple[str, str]] = ()) -> bool:
        """Whether the two details count as the same; `pairs` are (Bank id, BK id) of the exchange, by
        which a group BK captured reads as the Bank id it pairs with."""
        if self.details == "ignore":
            return True
        if self.pattern is None:
            return False
        left, right = self.pattern.fullmatch(bank), self.pattern.fullmatch(bk)
        if left is None or right is None:
            return False
        return all(
            a == b or (a is not None and b is not None and (a, b) in pairs)
            for a, b in zip(left.groups(), right.groups(), strict=True)
        )


_EXACT_STATUS = StatusRule(name="status")


class Instant:
    """A Timestamp or Duration as integer nanoseconds, shown as its JSON text.

    The text is made only when something shows the value (most tolerated
    timestamps never are). An Instant equals another of the same kind and
    nanoseconds, and equals its own text.
    """

    __slots__ = ("_text", "duration", "nanos")

    def __init__(self, nanos: int, duration: bool = False, text: str | None = None) -> None:
        self.nanos = nanos
        self.duration = duration
        self._text = text

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = _instant_text(self.nanos, self.duration)
        return self._text

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return repr(self.text)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Instant):
            return self.nanos == other.nanos and self.duration == other.duration
        if isinstance(other, str):
            return self.text == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Instant, (self.nanos, self.duration, self.text))


def _instant_text(nanos: int, duration: bool) -> str:
    from google.protobuf import duration_pb2, timestamp_pb2

    seconds, rest = divmod(nanos, 1_000_000_000)
    if duration and nanos < 0 and rest:
        seconds, rest = seconds + 1, rest - 1_000_000_000
    try:
        value = (duration_pb2.Duration if duration else timestamp_pb2.Timestamp)(seconds=seconds, nanos=rest)
        return str(value.ToJsonString())
    except ValueError:  # outside what JSON text can express, or a message can hold (past int64 seconds)
        return f"{seconds}s{rest:+d}ns"


# -- binding rules to paths -------------------------------------------------------------


@dataclass(frozen=True)
class Binding:
    """One configured rule: where it applies and what it does."""

    rule: Any
    pattern: str  # glob over "package.Message.field" or "package.Service/Method"
    regex: re.Pattern[str] | None = None
    methods: frozenset[str] = frozenset()  # empty: every method
    metadata: bool = False  # the pattern is a glob over the answers' metadata keys (`metadata = "..."`)

    def matches(self, target: str) -> bool:
        if self.regex is not None:
            return self.regex.fullmatch(target) is not None
        return fnmatch.fnmatchcase(target, self.pattern)

    def applies(self, method: str, target: str) -> bool:
        if self.methods and method not in self.methods:
            return False
        return self.matches(target)


@dataclass
class RuleSet:
    """The rules of a config, looked up by (method, field) with first-match-wins."""

    bindings: list[Binding] = field(default_factory=list)
    _cache: dict[tuple[str, str, str], Any] = field(default_factory=dict, repr=False)
    _by_method: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def _first(self, kind: str, method: str, target: str, accept: Callable[[Any], bool]) -> Any:
        key = (kind, method, target)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = None
        metadata = kind == "metadata"
        for binding in self.bindings:
            if binding.metadata is metadata and accept(binding.rule) and binding.applies(method, target):
                found = binding.rule
                break
        self._cache[key] = found
        return found

    def value_rule(self, method: str, target: str) -> Any:
        """The leaf rule (or Ignore) for a field, if any."""
        return self._first("value", method, target, _is_value_rule)

    def value_rules(self, method: str) -> dict[str, Any]:
        """value_rule(method, target) for every target, as a dict filled on first use."""
        rules = self._by_method.get(method)
        if rules is None:
            rules = self._by_method[method] = _ValueRules(self, method)
        return rules

    def list_rule(self, method: str, target: str) -> ListRule:
        found = self._first("list", method, target, lambda r: isinstance(r, Ordered | Multiset | Keyed))
        return found if found is not None else _ORDERED

    def may_add(self, method: str, target: str) -> BkMayAdd | None:
        found = self._first("add", method, target, _is_may_add)
        return found if isinstance(found, BkMayAdd) else None

    def metadata_rule(self, method: str, key: str) -> Any:
        """The rule (`ignore` or a value rule) for one key of the answers' metadata, if any."""
        return self._first("metadata", method, key, _is_value_rule)

    def status_rule(self, method: str) -> StatusRule:
        found = self._first("status", method, "status", lambda r: isinstance(r, StatusRule))
        return found if isinstance(found, StatusRule) else _EXACT_STATUS


class _ValueRules(dict[str, Any]):
    """Target -> value rule of one method, looked up in the RuleSet on a miss."""

    def __init__(self, rules: RuleSet, method: str) -> None:
        super().__init__()
        self._rules = rules
        self._method = method

    def __missing__(self, target: str) -> Any:
        rule = self[target] = self._rules.value_rule(self._method, target)
        return rule


def _is_may_add(rule: Any) -> bool:
    return isinstance(rule, BkMayAdd)


def _is_value_rule(rule: Any) -> bool:
    return callable(rule) and not isinstance(rule, Ordered | Multiset | Keyed | BkMayAdd | StatusRule)


# -- building rules from config specs -------------------------------------------------

_SHARED_KEYS = {"path", "regex", "metadata", "rule", "methods", "name"}
_RULE_KEYS: dict[str, set[str]] = {
    "ignore": set(),
    "decimal": {"scale"},
    "number": {"absolute", "relative"},
    "timestamp": {"tolerance"},
    "string": {"case", "whitespace"},
    "enum-map": {"map"},
    "ordered": set(),
    "multiset": set(),
    "keyed": {"key"},
    "bk-may-add": set(),
    "status": {"equivalent", "details"},
    "custom": {"callable", "options"},
}


def build_rule(spec: dict[str, Any], parse_duration: Callable[[str, Any], float], where: str = "rule") -> Any:
    """The rule callable a spec describes (without checking its path).

    `where` names the spec in error messages, e.g. "shim.toml line 12".
    """
    kind = spec.get("rule")
    if kind is None:
        raise RuleError(f"{where}: rule is missing: give one of {', '.join(sorted(_RULE_KEYS))}")
    if not isinstance(kind, str) or kind not in _RULE_KEYS:
        raise RuleError(f"{where}: rule {kind!r} is not one of {', '.join(sorted(_RULE_KEYS))}")
    unknown = set(spec) - _SHARED_KEYS - _RULE_KEYS[kind]
    if unknown:
        raise RuleError(f"{where}: unknown setting {', '.join(sorted(unknown))} for rule {kind!r}")
    name = spec.get("name") or _default_name(kind, spec)
    if not isinstance(name, str):
        raise RuleError(f"{where}: name must be a string")
    try:
        return _make(kind, spec, name, parse_duration)
    except RuleError as exc:
        raise RuleError(f"{where}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise RuleError(f"{where}: {exc}") from exc


def _default_name(kind: str, spec: dict[str, Any]) -> str:
    target = spec.get("path") or spec.get("regex") or ""
    if not isinstance(target, str):  # reported by the path check
        target = ""
    short = target.rsplit(".", 1)[-1] if "/" not in target else target.rsplit("/", 1)[-1]
    return f"{kind} {short}".strip()


def _make(kind: str, spec: dict[str, Any], name: str, parse_duration: Callable[[str, Any], float]) -> Any:
    if kind == "ignore":
        return Ignore(name)
    if kind == "decimal":
        scale = spec.get("scale")
        if scale is not None and (not isinstance(scale, int) or isinstance(scale, bool)):
            raise RuleError("decimal: scale must be an integer")
        return DecimalEquivalence(scale, name)
    if kind == "number":
        return NumericTolerance(float(spec.get("absolute", 0.0)), float(spec.get("relative", 0.0)), name)
    if kind == "timestamp":
        if "tolerance" not in spec:
            raise RuleError('timestamp: tolerance is missing (e.g. tolerance = "50ms")')
        try:
            seconds = parse_duration("tolerance", spec["tolerance"])
        except RuleError:
            raise
        except Exception as exc:  # the caller's parser raises its own error type: give it the rule's place
            raise RuleError(str(exc)) from exc
        return TimestampTolerance(seconds, name)
    if kind == "string":
        case, whitespace = spec.get("case", True), spec.get("whitespace", True)
        if not isinstance(case, bool) or not isinstance(whitespace, bool):
            raise RuleError("string: case and whitespace must be true or false")
        return TextNormalisation(case, whitespace, name)
    if kind == "enum-map":
        mapping = spec.get("map")
        if not isinstance(mapping, dict):
            raise RuleError("enum-map: map must be a table of Bank enum name = BK enum name")
        return EnumMap(mapping, name)
    if kind == "ordered":
        return _ORDERED
    if kind == "multiset":
        return Multiset(name)
    if kind == "keyed":
        key = spec.get("key")
        if isinstance(key, str):
            key = [key]
        if not isinstance(key, list):
            raise RuleError("keyed: key must be a field name or a list of them")
        return Keyed(key, name)
    if kind == "bk-may-add":
        return BkMayAdd(name)
    if kind == "status":
        pairs = spec.get("equivalent", [])
        if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise RuleError("status: equivalent must be a list of [Bank code, BK code] pairs")
        details = spec.get("details", "exact")
        if not isinstance(details, str):
            raise RuleError('status: details must be "exact", "ignore" or a regular expression')
        return StatusRule([(str(a), str(b)) for a, b in pairs], details, name)
    return _custom(spec, name)


def _custom(spec: dict[str, Any], name: str) -> Any:
    dotted = spec.get("callable")
    if not isinstance(dotted, str) or (":" not in dotted and "." not in dotted):
        raise RuleError("custom: callable must be a dotted path such as 'mypackage.rules:same_account'")
    module_name, _, attr = dotted.replace(":", ".").rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise RuleError(f"custom: cannot import {dotted}: {exc}") from exc
    options = spec.get("options", {})
    if not isinstance(options, dict):
        raise RuleError("custom: options must be a table")
    rule = target(**options) if isinstance(target, type) else target
    if options and not isinstance(target, type):
        raise RuleError(f"custom: {dotted} is not a class, so it takes no options")
    if not callable(rule):
        raise RuleError(f"custom: {dotted} is not callable")
    try:
        inspect.signature(rule).bind(None, None)
    except TypeError:
        raise RuleError(f"custom: {dotted} does not take two values (Bank's, BK's)") from None
    except ValueError:  # no signature to read (a builtin): called as it is
        pass
    if not hasattr(rule, "name"):  # wrapped, never renamed: one callable may serve several rules
        rule = _Named(rule, name)
    return rule


class _Named:
    def __init__(self, rule: LeafRule, name: str) -> None:
        self.rule = rule
        self.name = name

    def __call__(self, bank: Any, bk: Any) -> bool:
        return bool(self.rule(bank, bk))


def build_rules(
    specs: Sequence[dict[str, Any]],
    registry: DescriptorRegistry | None,
    parse_duration: Callable[[str, Any], float],
    locations: Sequence[str] = (),
) -> RuleSet:
    """A RuleSet from config specs, each checked against the descriptors.

    Each spec has `rule` and a target: `path` (a glob over "package.Message.field",
    "package.Service/Method" for a response stream, or "status") or `regex`; and
    optionally `methods` ("package.Service/Method" names) and `name`.
    """
    bindings = []
    for index, spec in enumerate(specs):
        where = locations[index] if index < len(locations) else f"rule {index + 1}"
        if not isinstance(spec, dict):
            raise RuleError(f"{where}: a rule must be a table ([[rules]])")
        rule = build_rule(spec, parse_duration, where)
        bindings.append(_bind(spec, rule, registry, where))
    return RuleSet(bindings)


def _bind(spec: dict[str, Any], rule: Any, registry: DescriptorRegistry | None, where: str) -> Binding:
    path, regex_text = spec.get("path"), spec.get("regex")
    if "metadata" in spec:
        return _bind_metadata(spec, rule, registry, where)
    if isinstance(rule, StatusRule):
        if path not in (None, "status") or regex_text is not None:
            raise RuleError(f'{where}: a status rule takes path = "status" (or no path)')
        path = "status"
    elif path == "status":  # a path of the status rule's own: no other rule ever judges a status there
        raise RuleError(
            f'{where}: path "status" takes rule = "status" (its details and equivalent settings say how'
            f" statuses compare), not {spec['rule']!r}"
        )
    elif (path is None) == (regex_text is None):
        raise RuleError(
            f"{where}: give exactly one of path or regex (or metadata, for the answers' metadata)"
        )
    regex = None
    if regex_text is not None:
        if not isinstance(regex_text, str):
            raise RuleError(f"{where}: regex must be a string")
        try:
            regex = re.compile(regex_text)
        except re.error as exc:
            raise RuleError(f"{where}: regex {regex_text!r} is not valid: {exc}") from exc
    elif not isinstance(path, str) or not path:
        raise RuleError(f"{where}: path must be a non-empty string")
    elif len(path) > 2 and path[0] == "(" and path[-1] == ")":
        path = path[1:-1]  # an extension as a difference shows it, `(package.name)`: by its full name
    if spec["rule"] in _ANYTHING_GOES and not spec.get("methods") and _every_field(path, regex, registry):
        raise RuleError(
            f"{where}: {spec['rule']!r} on {path or regex_text!r} would hold every field of every answer the"
            " same, and any BK pass: name the fields it is for (or the methods, with methods = [...])"
        )
    wire = _methods(spec, registry, where)
    binding = Binding(rule, path or "", regex, wire)
    if registry is not None and path and path.rpartition(".")[2].startswith("#"):
        _check_unknown_target(path, spec["rule"], rule, registry, where)
    elif registry is not None and path != "status":
        _check_target(binding, spec["rule"], rule, registry, where)
    return binding


_ANYTHING_GOES = ("ignore", "custom")  # rules that may hold any two values the same
_PROBES = ("x", "a.b", "pkg.v1.Message.field", "pkg.v1.Message.items[0].name")


def _every_field(
    path: str | None, regex: re.Pattern[str] | None, registry: DescriptorRegistry | None
) -> bool:
    """Whether a pattern is every field: of any service (every probe path matches it: "*", "?*", ".*"), or
    of every answer the descriptors describe (each field of each method's answer message matches it, or
    holds a message every field of which does, and so on: "bank.*", "bank\\..*", a pattern of every leaf
    but a list's own field). A path without a glob's characters names fields, and is never taken so."""
    if regex is None and (not path or not set(path) & set("*?[")):
        return False

    def matches(target: str) -> bool:
        return (
            regex.fullmatch(target) is not None
            if regex is not None
            else fnmatch.fnmatchcase(target, path or "")
        )

    if all(matches(probe) for probe in _PROBES):
        return True
    if registry is None:
        return False
    covered: dict[str, bool] = {}

    def whole(message: Any) -> bool:
        """Every field of `message` matched, or (a message of the service's) every field of its own: the
        leaves are what a rule holds the same, whatever holds them (a list's elements, say)."""
        name = message.full_name
        if name not in covered:
            covered[name] = False  # (a message holding itself: not covered through itself)
            covered[name] = all(
                matches(f"{name}.{field.name}")
                or (
                    field.message_type is not None
                    and not field.message_type.full_name.startswith("google.protobuf.")  # a leaf: a time...
                    and whole(field.message_type)
                )
                for field in message.fields
            )
        return covered[name]

    answers = [
        registry.pool.FindMessageTypeByName(n) for n in {i.output_type for i in registry.methods.values()}
    ]
    return any(answer.fields for answer in answers) and all(whole(answer) for answer in answers)


def _bind_metadata(
    spec: dict[str, Any], rule: Any, registry: DescriptorRegistry | None, where: str
) -> Binding:
    """A rule on keys of the answers' metadata (`metadata = "x-trace-*"`): `ignore` or a value rule."""
    glob = spec["metadata"]
    if "path" in spec or "regex" in spec:
        raise RuleError(f"{where}: give one of path, regex or metadata")
    if not isinstance(glob, str) or not glob:
        raise RuleError(f"{where}: metadata must be a non-empty glob over metadata keys, such as 'x-trace-*'")
    if not _is_value_rule(rule):
        raise RuleError(f"{where}: a metadata rule is ignore or a rule on values, not {spec['rule']!r}")
    methods = _methods(spec, registry, where)
    return Binding(rule, glob.lower(), None, methods, metadata=True)


def _methods(spec: dict[str, Any], registry: DescriptorRegistry | None, where: str) -> frozenset[str]:
    methods = spec.get("methods", [])
    if isinstance(methods, str):
        methods = [methods]
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise RuleError(f"{where}: methods must be a list of 'package.Service/Method' names")
    wire = frozenset("/" + m.lstrip("/") for m in methods)
    if registry is not None:
        for method in wire:
            if registry.method(method) is None:
                raise RuleError(f"{where}: unknown method {method.lstrip('/')} (not in the descriptors)")
    return wire


def _check_target(binding: Binding, kind: str, rule: Any, registry: DescriptorRegistry, where: str) -> None:
    """The path must name at least one field (or streaming method) of the described services."""
    targets = registry.field_targets()
    if isinstance(rule, Ordered | Multiset | Keyed):
        targets = registry.repeated_targets() | registry.stream_targets()
    matched = [t for t in targets if binding.matches(t)]
    if not matched:
        what = binding.regex.pattern if binding.regex is not None else binding.pattern
        kind = (
            "repeated field or streaming method" if isinstance(rule, Ordered | Multiset | Keyed) else "field"
        )
        raise RuleError(
            f"{where}: path {what!r} names no {kind} in the descriptors{_extension_hint(what, registry)}"
        )
    if matched == [_RICH] and not isinstance(rule, Ignore | BkMayAdd):
        raise RuleError(
            f"{where}: {_RICH} takes ignore or bk-may-add, not {kind!r}:"
            " rules name the fields inside it (google.rpc.BadRequest.FieldViolation.description)"
        )
    if isinstance(rule, Keyed):
        for target in matched:
            missing = registry.missing_key_fields(target, rule.key)
            if missing:
                raise RuleError(f"{where}: key field {missing!r} is not a field of the elements of {target}")
    _check_applies(rule, [fd for t in matched if (fd := _field_at(registry, t)) is not None], where)


def _extension_hint(path: str, registry: DescriptorRegistry) -> str:
    """For a path naming an extension (proto2) by the message it extends, `package.Message.name`: how to name
    it instead, by its own full name."""
    holder, _, name = path.rpartition(".")
    for fd in registry.extensions():
        extended = fd.containing_type
        if fd.name == name and extended is not None and extended.full_name == holder:
            return f" ({fd.full_name} extends {holder}: name an extension by its full name, {fd.full_name})"
    return ""


_RICH = "status.rich_details"
_MAX_FIELD_NUMBER = 2**29 - 1


def _check_unknown_target(path: str, kind: str, rule: Any, registry: DescriptorRegistry, where: str) -> None:
    """`package.Message.#<number>` (or `#*`) names fields of described messages that the descriptors do
    not know, such as one a newer BK adds: only `ignore` and `bk-may-add` judge their raw values."""
    holder, _, number = path.rpartition(".")
    digits = number[1:]
    if number != "#*" and not (digits.isdigit() and 0 < int(digits) <= _MAX_FIELD_NUMBER):
        raise RuleError(f"{where}: {number!r} is not a field number: give #<number> or #*")
    if not isinstance(rule, Ignore | BkMayAdd):
        raise RuleError(
            f"{where}: a field the descriptors do not know takes ignore or bk-may-add, not {kind!r}"
        )
    messages = [desc for desc in registry.message_types() if fnmatch.fnmatchcase(desc.full_name, holder)]
    if not messages:
        raise RuleError(f"{where}: path {path!r} names no message in the descriptors")
    if number != "#*":
        known = [desc for desc in messages if int(digits) in desc.fields_by_number]
        if len(known) == len(messages):
            name = known[0].fields_by_number[int(digits)].name
            raise RuleError(
                f"{where}: field {digits} of {known[0].full_name} is known, as {name}: name it by its name"
            )


_TIMES = ("google.protobuf.Timestamp", "google.protobuf.Duration")
_NUMBERS = frozenset(
    {
        FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED64, FieldDescriptor.TYPE_SFIXED32,
    }
)  # fmt: skip


def _field_at(registry: DescriptorRegistry, target: str) -> FieldDescriptor | None:
    """The field a "package.Message.field" target names, or the extension of that full name (None for a
    method, or a target of its own)."""
    extension = registry.find_extension(target) if "/" not in target else None
    if extension is not None:
        return extension
    type_name, _, name = target.rpartition(".")
    desc = registry.find_message(type_name) if "/" not in target else None
    return desc.fields_by_name.get(name) if desc is not None else None


def _leaf(fd: FieldDescriptor) -> FieldDescriptor:
    """What a rule on the field judges: a map's values, a wrapper's value, else the field itself."""
    held = fd.message_type
    if held is not None and held.GetOptions().map_entry:
        fd = held.fields_by_name["value"]
        held = fd.message_type
    if (
        held is not None
        and held.full_name.startswith("google.protobuf.")
        and held.full_name.endswith("Value")
    ):
        return held.fields_by_name.get("value", fd)
    return fd


def _money(fd: FieldDescriptor) -> bool:
    """Whether a field holds a money message, which a `decimal` rule compares as an amount."""
    return fd.message_type is not None and money_shape(fd.message_type) is not None


def _instead(rule: Any, fields: list[FieldDescriptor]) -> str:
    """What to use instead of a `timestamp` rule on a time written as text."""
    if isinstance(rule, TimestampTolerance) and any(fd.type == FieldDescriptor.TYPE_STRING for fd in fields):
        return (
            ": a time written as text is compared as text; a clock's value each side stamps on its own is"
            ' `rule = "ignore"`, a tolerance on text times a `custom` rule (docs: rules.md)'
        )
    return ""


def _check_applies(rule: Any, fields: list[FieldDescriptor], where: str) -> None:
    """A built-in leaf rule whose fields hold none of the values it judges could never tolerate anything:
    a `timestamp` rule on a string field, a `number` rule on text, an `enum-map` naming no value of the
    enum, a `decimal` rule on neither a string nor a money message. (A pattern matching fields of several
    kinds needs one of the kind the rule judges.)"""
    fields = [_leaf(fd) for fd in fields]
    if not fields:
        return
    held = [(fd.message_type.full_name if fd.message_type is not None else "") for fd in fields]
    checks: list[tuple[type, bool, str]] = [
        (TimestampTolerance, any(name in _TIMES for name in held), "a Timestamp or Duration"),
        (NumericTolerance, any(fd.type in _NUMBERS for fd in fields), "a number"),
        (TextNormalisation, any(fd.type == FieldDescriptor.TYPE_STRING for fd in fields), "a string"),
        (EnumMap, any(fd.enum_type is not None for fd in fields), "an enum"),
        (
            DecimalEquivalence,
            any(fd.type == FieldDescriptor.TYPE_STRING or _money(fd) for fd in fields),
            "a decimal string or a money message",
        ),
    ]
    for kind, applies, what in checks:
        if isinstance(rule, kind) and not applies:
            raise RuleError(
                f"{where}: {getattr(rule, 'name', 'the rule')}: no field it names holds {what}"
                f" ({fields[0].full_name} is not one){_instead(rule, fields)}"
            )
    if isinstance(rule, EnumMap):
        names = {value.name for fd in fields if fd.enum_type is not None for value in fd.enum_type.values}
        unknown = sorted(name for name in rule.mapping if name not in names)
        if unknown:
            raise RuleError(f"{where}: {rule.name}: {', '.join(unknown)} is not a value of the enum it maps")
