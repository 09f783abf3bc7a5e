"""Settings declared by each feature: how a table is read, the errors that name the key, and what a
reload compares."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import pytest

from shim.config import GROUPS, SECTIONS, Config, Upstream, build, changed, keeping, merged, parse, reloadable
from shim.errors import ConfigError
from shim.settings import (
    BOOL,
    FIELDS,
    POSITIVE,
    SHARE,
    SIZE,
    declared,
    duration,
    one_of,
    read,
    setting,
)


@dataclass(frozen=True, slots=True)
class Example:
    """A table as a feature declares one."""

    SECTION: ClassVar[str] = "example"
    count: int = setting(3, POSITIVE, "how many")
    wait: float = setting(0.25, duration(at_least=0.1), "how long")
    on: bool = setting(False, BOOL, "whether")
    how: str = setting("fast", one_of("fast", "slow"), "which way")
    fields: tuple[str, ...] = setting((), FIELDS, "which fields")
    not_a_setting: int = 0


def test_a_table_gives_the_values_it_sets_parsed_and_nothing_else() -> None:
    """read() returns only the keys the table sets, each parsed by its kind ("500ms" is 0.5 s)."""
    assert read(Example, {"wait": "500ms", "on": True, "fields": "a.B.c"}) == {
        "wait": 0.5,
        "on": True,
        "fields": ("a.B.c",),
    }
    assert read(Example, {}) == {}


@pytest.mark.parametrize(
    ("table", "error"),
    [
        pytest.param(
            {"cuont": 1}, "unknown setting example.cuont (did you mean example.count?)", id="unknown"
        ),
        pytest.param(  # too short for difflib to call close: one slip of the keys
            {"no": True}, "unknown setting example.no (did you mean example.on?)", id="swapped-letters"
        ),
        pytest.param({"b": 1, "a": 2}, "unknown setting example.a, example.b", id="unknowns-all-named"),
        pytest.param({"not_a_setting": 1}, "unknown setting example.not_a_setting", id="undeclared-field"),
        pytest.param({"count": 0}, "example.count: 0 is not a positive integer", id="positive"),
        pytest.param({"count": True}, "example.count: True is not a positive integer", id="bool-is-no-int"),
        pytest.param(
            {"wait": "50ms"}, "example.wait: '50ms' is out of bounds: it must be at least 100ms", id="bound"
        ),
        pytest.param({"on": "yes"}, "example.on: 'yes' is not true or false", id="bool"),
        pytest.param({"how": "slowly"}, "example.how: 'slowly' is not one of fast, slow", id="choice"),
        pytest.param({"how": 3}, "example.how: 3 is not a non-empty string", id="choice-not-text"),
    ],
)
def test_each_mistake_in_a_table_is_one_line_naming_the_key(table: dict[str, Any], error: str) -> None:
    """A bad value or an unknown key is a ConfigError of one line that starts with the key at fault."""
    with pytest.raises(ConfigError) as caught:
        read(Example, table)
    assert str(caught.value) == error


def test_a_table_that_is_no_table_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^example: expected a table \(\[example\]\)$"):
        read(Example, 3)


def _every_declared_setting() -> list[tuple[str, type[Any], str]]:
    found = [("", cls, key) for cls in (Config, *GROUPS) for key, _, _ in declared(cls)]
    found += [("upstreams.bk.", Upstream, key) for key, _, _ in declared(Upstream)]
    found += [(f"{cls.SECTION}.", cls, key) for cls in SECTIONS for key, _, _ in declared(cls)]
    return found


@pytest.mark.parametrize(
    ("prefix", "cls", "key"),
    _every_declared_setting(),
    ids=[f"{p}{k}" for p, _, k in _every_declared_setting()],
)
def test_every_declared_setting_given_a_bad_value_names_its_key(
    prefix: str, cls: type[Any], key: str
) -> None:
    """Whatever the setting, a value of no kind it takes (a table) is refused in one line naming it."""
    data: dict[str, Any] = {"upstreams": {"bank": {"target": "b:1"}, "bk": {"target": "k:1"}}}
    if not prefix:  # a top-level key, the Config's own or of one of its groups
        data[key] = {"oops": 1}
    elif cls is Upstream:
        data["upstreams"]["bk"][key] = {"oops": 1}
    else:
        data[cls.SECTION] = {key: {"oops": 1}}
    with pytest.raises(ConfigError) as caught:
        build(parse(data))
    message = str(caught.value)
    assert message.startswith(f"{prefix}{key}: "), message
    assert "\n" not in message


def test_every_declared_default_is_a_value_of_its_kind_and_has_help() -> None:
    """Each default reads back as itself through its own kind (what the reference shows is what
    the shim uses), and every setting says what it does."""
    for cls in (Config, *GROUPS, Upstream, *SECTIONS):
        for key, decl, default in declared(cls):
            assert decl.help, f"{cls.__name__}.{key} has no help"
            if decl.shown:  # a default its value cannot say ("", None, half of another)
                continue
            shown = decl.kind.show(default)
            value = shown.strip('"') if shown.startswith('"') else parse_literal(shown)
            assert decl.kind.parse(key, value) == default, f"{cls.__name__}.{key}: {shown}"


def parse_literal(text: str) -> object:
    import tomllib

    return tomllib.loads(f"v = {text}")["v"]


def test_durations_and_sizes_are_shown_as_the_config_writes_them() -> None:
    assert duration().show(0.05) == '"50ms"'
    assert duration().show(86_400.0) == '"1d"'
    assert SIZE.show(64 * 1024**2) == '"64MiB"'
    assert SIZE.show(-1) == '"unlimited"'
    assert SHARE.show(0.5) == "0.5"


def test_a_table_given_as_a_dict_changes_only_its_values() -> None:
    """build() takes a table as its dataclass or as the values it changes; merged() lays settings over
    others value by value, so a flag's store url keeps the file's other [store] settings."""
    base = {"bank": Upstream("bank", "b:1"), "store": {"refresh": 0.5, "payloads": True}}
    config = build(merged(base, {"store": {"url": ":memory:"}}))
    assert (config.store.url, config.store.refresh, config.store.payloads) == (":memory:", 0.5, True)
    config = build(merged({**base, "store": config.store}, {"store": {"refresh": 2.0}}))
    assert (config.store.url, config.store.refresh) == (":memory:", 2.0)


def test_a_reload_names_changed_settings_as_the_config_file_does() -> None:
    """changed() names settings by their TOML names; keeping() puts back the old values of those named,
    and leaves the others new."""
    old = Config(bank=Upstream("bank", "b:1"), mode="bank")
    new = replace(
        old,
        serving=replace(old.serving, grace_period=7.0),
        bank=Upstream("bank", "b:2"),
        shadow=replace(old.shadow, max_in_flight=5, shed_lag=0.2),
        gate=replace(old.gate, window=60.0),
    )
    assert changed(old, new) == [
        "upstreams.bank",
        "grace_period",
        "shadow.max_in_flight",
        "shadow.shed_lag",
        "gate.window",
    ]
    assert {"shadow.shed_lag", "gate.window", "rules"} <= reloadable()
    assert not {"grace_period", "shadow.max_in_flight", "upstreams.bank"} & reloadable()
    kept = keeping(new, old, ["upstreams.bank", "grace_period", "shadow.max_in_flight"])
    assert changed(old, kept) == ["shadow.shed_lag", "gate.window"]
    assert (kept.shadow.max_in_flight, kept.shadow.shed_lag, kept.bank.target) == (1000, 0.2, "b:1")
