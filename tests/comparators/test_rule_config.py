"""Rule specs are checked at start: every mistake is one error naming the rule's place ("FILE line N")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from comparators import RuleError, build_rules
from shim.config import build, load_file
from shim.errors import ConfigError
from shim.parts import load_registry, load_rules
from shim.units import parse_duration
from tests.comparators._exchanges import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
BANK_BINPB = ROOT / "sample_ledger" / "bank.binpb"
WHERE = "rules.toml line 7"

Spec = dict[str, Any]

# every leaf of every answer, but not the lists' own fields (which hold messages every field of which it
# matches): every answer held the same all the same
EVERY_LEAF = "bank[.]v1[.](?!List(Accounts|Trades)Response[.](accounts|trades)$).*"

BAD_SPECS: list[Any] = [
    pytest.param(
        {"path": "bank.v1.Trade.fee", "rule": "fuzzy"}, "rule 'fuzzy' is not one of", id="unknown-rule"
    ),
    pytest.param({"path": "bank.v1.Trade.fee"}, "rule is missing: give one of", id="no-rule"),
    pytest.param(
        {"path": "bank.v1.Trade.fee", "rule": "decimal", "precision": 2},
        "unknown setting precision for rule 'decimal'",
        id="unknown-setting",
    ),
    pytest.param(
        {"path": "bank.v1.Trade.fee", "rule": "ignore", "tolerance": "1s"},
        "unknown setting tolerance for rule 'ignore'",
        id="setting-of-another-rule",
    ),
    pytest.param({"regex": r"bank\.v1\.(Trade", "rule": "ignore"}, "is not valid", id="bad-regex"),
    pytest.param(
        {"path": "bank.v1.Trade.fee", "rule": "ignore", "methods": ["bank.v1.Ledger/Nope"]},
        "unknown method bank.v1.Ledger/Nope",
        id="unknown-method",
    ),
    pytest.param(
        {"path": "bank.v1.Trade.fee", "rule": "ignore", "methods": "bank.v1.Ledger/PostTrade x"},
        "unknown method",
        id="method-not-a-method-name",
    ),
    pytest.param(
        {"path": "bank.v1.Trade.fees", "rule": "decimal"}, "names no field", id="path-names-no-field"
    ),
    pytest.param(
        {"regex": r"bank\.v1\.Trade", "rule": "ignore"}, "names no field", id="regex-names-no-field"
    ),
    pytest.param(
        {"path": "bank.v1.Trade.symbol", "rule": "keyed", "key": ["symbol"]},
        "names no repeated field or streaming method",
        id="keyed-on-a-field-that-is-not-repeated",
    ),
    pytest.param(
        {"path": "bank.v1.Ledger/GetPortfolio", "rule": "multiset"},
        "names no repeated field or streaming method",
        id="list-rule-on-a-unary-method",
    ),
    pytest.param(
        {"path": "bank.v1.Portfolio.positions", "rule": "keyed", "key": ["ticker"]},
        "key field 'ticker' is not a field of the elements of bank.v1.Portfolio.positions",
        id="key-is-not-a-field",
    ),
    pytest.param(
        {"path": "bank.v1.SettlementReport.settled_trade_ids", "rule": "keyed", "key": ["id"]},
        "key field 'id' is not a field",
        id="key-on-a-list-of-strings",
    ),
    pytest.param(
        {"path": "bank.v1.Portfolio.positions", "rule": "keyed"}, "key must be", id="keyed-without-key"
    ),
    pytest.param(
        {"rule": "status", "equivalent": [["NOT_FOUND", "NOTFOUND"]]},
        "'NOTFOUND' is not a gRPC status code name",
        id="status-bad-code-name",
    ),
    pytest.param(
        {"rule": "status", "equivalent": ["NOT_FOUND"]},
        "list of [Bank code, BK code] pairs",
        id="status-not-pairs",
    ),
    # a rule that holds anything the same on every field of every answer: any BK passes (a method named
    # with `methods` scopes it, deliberately)
    *(
        pytest.param(
            {target: value, "rule": "ignore"},
            f"'ignore' on '{value}' would hold every field of every answer the same",
            id=f"ignore-everything-{target}-{value}",
        )
        for target, value in (
            *(("path", v) for v in ("*", "*.*", "?*", "[a-z]*", "bank.*", "bank.v1.*")),
            *(("regex", v) for v in (".*", ".+", "bank[.].*", "[a-z].*", EVERY_LEAF)),
        )
    ),
    # a broken call (a status neither OK nor a refusal) may or may not have been carried out: held the same
    # as an answer or a refusal, BK's INTERNAL matched Bank's refusal, and a broken BK passed the gate
    *(
        pytest.param(
            {"rule": "status", "equivalent": [pair]},
            f"status: {pair[0]} and {pair[1]} cannot be equivalent: one says the call broke",
            id=f"status-{pair[0]}-{pair[1]}",
        )
        for pair in (["NOT_FOUND", "INTERNAL"], ["OK", "UNKNOWN"], ["DEADLINE_EXCEEDED", "INVALID_ARGUMENT"])
    ),
    pytest.param(
        {"rule": "status", "details": "(unclosed"}, "not a valid regex", id="status-bad-details-regex"
    ),
    pytest.param(
        {"path": "bank.v1.Trade.fee", "rule": "status"}, 'takes path = "status"', id="status-on-a-field"
    ),
    pytest.param(
        {"path": "status", "rule": "ignore"},
        'path "status" takes rule = "status" (its details and equivalent settings say how statuses'
        " compare), not 'ignore'",
        id="ignore-on-status",
    ),
    pytest.param(
        {"path": "status", "rule": "timestamp", "tolerance": "1s"},
        'path "status" takes rule = "status"',
        id="timestamp-on-status",
    ),
    pytest.param(
        {"path": "status.rich_details", "rule": "decimal"},
        "status.rich_details takes ignore or bk-may-add, not 'decimal': rules name the fields inside it",
        id="decimal-on-the-rich-details",
    ),
    pytest.param(
        {"path": "bank.v1.Trade.booked_at", "rule": "timestamp"},
        "tolerance is missing",
        id="timestamp-no-tolerance",
    ),
    pytest.param(
        {"path": "bank.v1.Trade.booked_at", "rule": "timestamp", "tolerance": "2 parsecs"},
        "tolerance: '2 parsecs' is not a duration",
        id="timestamp-bad-tolerance",
    ),
    pytest.param(
        {"path": "bank.v1.Trade.fee", "rule": "decimal", "scale": -1}, "scale must be >= 0", id="scale"
    ),
    pytest.param(
        {"path": "bank.v1.Trade.fee", "rule": "number", "absolute": "a lot"},
        "float",
        id="number-not-a-number",
    ),
    pytest.param(
        {"path": "bank.v1.Trade.fee", "rule": "number", "relative": -0.1},
        "must be >= 0",
        id="number-negative",
    ),
    pytest.param(
        {"path": "bank.v1.Trade.symbol", "rule": "string", "case": "false"},
        "must be true or false",
        id="string-setting-not-a-boolean",
    ),
    pytest.param(
        {"path": "bank.v1.Trade.side", "rule": "enum-map", "map": {}},
        "map must be a table",
        id="enum-map-empty",
    ),
    pytest.param(
        {"path": "bank.v1.Trade.fee", "rule": "custom", "callable": "tests.comparators.nowhere:rule"},
        "cannot import tests.comparators.nowhere:rule",
        id="custom-not-importable",
    ),
    pytest.param(
        {
            "path": "bank.v1.Trade.fee",
            "rule": "custom",
            "callable": "tests.comparators._custom_rules:same_prefix",
            "options": {"x": 1},
        },
        "is not a class, so it takes no options",
        id="custom-options-for-a-function",
    ),
    pytest.param(
        {
            "path": "bank.v1.Trade.fee",
            "rule": "custom",
            "callable": "tests.comparators._custom_rules:WithinPercent",
            "options": {"percentage": 1},
        },
        "percentage",
        id="custom-option-the-class-does-not-take",
    ),
    pytest.param({"rule": "ignore"}, "give exactly one of path or regex", id="no-target"),
    pytest.param(
        {"path": "bank.v1.Trade.fee", "regex": "x", "rule": "ignore"},
        "exactly one of path or regex",
        id="both",
    ),
    pytest.param({"path": 3, "rule": "ignore"}, "path must be a non-empty string", id="path-not-text"),
    pytest.param(
        {"metadata": "x-*", "path": "bank.v1.Trade.fee", "rule": "ignore"},
        "give one of path, regex or metadata",
        id="metadata-and-path",
    ),
    pytest.param(
        {"metadata": "", "rule": "ignore"}, "metadata must be a non-empty glob", id="metadata-empty"
    ),
    pytest.param(
        {"metadata": "x-*", "rule": "multiset"},
        "a metadata rule is ignore or a rule on values",
        id="metadata-list",
    ),
    pytest.param(
        {"metadata": "x-*", "rule": "ignore", "methods": ["bank.v1.Ledger/Nope"]},
        "unknown method bank.v1.Ledger/Nope",
        id="metadata-unknown-method",
    ),
    pytest.param(
        {"path": "bank.v1.Trade.fee", "rule": "ignore", "name": 5}, "name must be a string", id="name"
    ),
    pytest.param(  # meant: 50ms; it was 50 s, silently
        {"path": "bank.v1.Trade.booked_at", "rule": "timestamp", "tolerance": 50},
        'tolerance: 50 has no unit: write "50ms" or "50s"',
        id="tolerance-without-unit",
    ),
]


@pytest.mark.parametrize(("spec", "says"), BAD_SPECS)
def test_each_mistake_is_a_rule_error_naming_its_place(spec: Spec, says: str) -> None:
    """A rule spec the descriptors or the rule itself cannot accept raises one RuleError whose message
    starts with the spec's location and says what is wrong."""
    good = {"path": "bank.v1.Trade.venue", "rule": "bk-may-add"}
    with pytest.raises(RuleError) as caught:
        build_rules([good, spec], REGISTRY, parse_duration, ["rules.toml line 2", WHERE])
    message = str(caught.value)
    assert message.startswith(f"{WHERE}: ")
    assert says in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("target", "value"),
    [
        ("path", "bank.v1.Trade.*"),
        ("path", "*.fee"),
        ("path", "bank.v1.*_at"),
        ("regex", r"bank\.v1\.Trade\..*"),
    ],
)
def test_ignore_on_a_pattern_that_leaves_some_answer_fields_compared_is_accepted(
    target: str, value: str
) -> None:
    """A pattern refused is one that every field of every method's answer matches; one that leaves some
    compared (a message's fields, a suffix) is a rule like any other."""
    rules = build_rules([{target: value, "rule": "ignore"}], REGISTRY, parse_duration)
    assert len(rules.bindings) == 1


def test_a_spec_without_a_location_is_named_by_its_position() -> None:
    """Rules given without locations are named "rule N" (counting from 1) in errors."""
    with pytest.raises(RuleError, match=r"^rule 2: "):
        build_rules(
            [{"path": "*.fee", "rule": "decimal"}, {"path": "nope", "rule": "ignore"}],
            REGISTRY,
            parse_duration,
        )


def test_without_descriptors_paths_are_not_checked() -> None:
    """With no descriptors to check against, a rule's path is taken as written (the rule itself still is)."""
    rules = build_rules([{"path": "any.Thing.at_all", "rule": "ignore"}], None, parse_duration)
    assert [b.pattern for b in rules.bindings] == ["any.Thing.at_all"]
    with pytest.raises(RuleError, match=r"^rule 1: rule 'fuzzy'"):
        build_rules([{"path": "any.Thing.at_all", "rule": "fuzzy"}], None, parse_duration)


# ---- through the config file, as the shim reads it ---------------------------------------

HEAD = f'listen = "127.0.0.1:0"\ndescriptor_sets = ["{BANK_BINPB}"]\n'
GOOD_RULE = '[[rules]]\npath = "bank.v1.Trade.venue"\nrule = "bk-may-add"\n'
UPSTREAM = '\n[upstreams.bank]\ntarget = "127.0.0.1:1"\n'


def _write(path: Path, *parts: str) -> Path:
    path.write_text("".join(parts), encoding="utf-8")
    return path


def _config_with(folder: Path, bad_rule: str) -> tuple[Path, int]:
    """A config file with a good [[rules]] table and then a bad one; its path and the bad table's line."""
    before = HEAD + GOOD_RULE + "\n# the mistake\n"
    path = _write(folder / "shim.toml", before, "[[rules]]\n", bad_rule, "\n", UPSTREAM)
    return path, before.count("\n") + 1


@pytest.mark.parametrize(
    ("bad_rule", "says"),
    [
        pytest.param('path = "bank.v1.Trade.fees"\nrule = "decimal"', "names no field", id="no-such-field"),
        pytest.param('path = "bank.v1.Trade.fee"\nrule = "fuzzy"', "rule 'fuzzy'", id="unknown-rule"),
        pytest.param(
            'path = "bank.v1.Trade.booked_at"\nrule = "timestamp"\ntolerance = "soon"',
            "tolerance: 'soon' is not a duration",
            id="bad-duration",
        ),
    ],
)
def test_config_file_rule_errors_name_the_file_and_line(tmp_path: Path, bad_rule: str, says: str) -> None:
    """A bad [[rules]] table in the config file is one ConfigError naming "FILE line N" of its header."""
    path, line = _config_with(tmp_path, bad_rule)
    config = build(load_file(path))
    with pytest.raises(ConfigError) as caught:
        load_rules(config, load_registry(config.descriptors.descriptor_sets))
    message = str(caught.value)
    assert message.startswith(f"{path} line {line}: ")
    assert says in message


def test_inline_rules_are_named_by_their_position_in_the_file(tmp_path: Path) -> None:
    """Rules written as an inline list have no line of their own: errors name "FILE rule N"."""
    inline = (
        'rules = [{ path = "bank.v1.Trade.venue", rule = "bk-may-add" }, { path = "x.Y.z", rule = "ignore" }]'
    )
    path = _write(tmp_path / "shim.toml", HEAD, inline, "\n", UPSTREAM)
    config = build(load_file(path))
    with pytest.raises(ConfigError) as caught:
        load_rules(config, load_registry(config.descriptors.descriptor_sets))
    assert str(caught.value).startswith(f"{path} rule 2: path 'x.Y.z' names no field")


def _serve(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shim", "serve", *map(str, argv), "--store", ":memory:"],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_shim_serve_refuses_a_bad_rule_in_its_config(tmp_path: Path) -> None:
    """`shim serve --config FILE` with a bad [[rules]] table exits 2 with one stderr line naming FILE and
    the table's line."""
    path, line = _config_with(
        tmp_path, 'path = "bank.v1.Portfolio.positions"\nrule = "keyed"\nkey = "ticker"'
    )
    done = _serve("--config", path)
    assert done.returncode == 2
    [message] = done.stderr.splitlines()
    assert message.startswith(f"shim: error: {path} line {line}: key field 'ticker' is not a field")


def test_shim_serve_refuses_a_bad_rule_in_a_rules_file(tmp_path: Path) -> None:
    """`shim serve --rules FILE` with a bad [[rules]] table exits 2 with one stderr line naming FILE and
    the table's line (counted in that file)."""
    bad_rule = '[[rules]]\npath = "bank.v1.Nothing.at_all"\nrule = "ignore"\n'
    rules = _write(tmp_path / "rules.toml", GOOD_RULE, "\n", bad_rule)
    flags = ["--listen", "127.0.0.1:0", "--bank", "127.0.0.1:1", "--descriptor-set", str(BANK_BINPB)]
    done = _serve(*flags, "--rules", rules)
    assert done.returncode == 2
    [message] = done.stderr.splitlines()
    assert message.startswith(f"shim: error: {rules} line 5: path 'bank.v1.Nothing.at_all' names no field")
