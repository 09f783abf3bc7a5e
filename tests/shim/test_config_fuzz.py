"""Random configs through the loader: always either a valid config or one clear error naming the problem."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sample_ledger
from comparators import DescriptorRegistry
from shim.app import Shim
from shim.config import build, parse
from shim.errors import ShimError

REGISTRY = DescriptorRegistry.from_files([Path(sample_ledger.__file__).parent / "bank.binpb"])
SAMPLE_CONFIG = tomllib.loads((Path(sample_ledger.__file__).parent / "shim.toml").read_text(encoding="utf-8"))

# the config's own words, so that random tables often reach deep into the validation
WORDS = [
    "listen", "mode", "descriptor_sets", "descriptor_source", "max_message_size", "grace_period",
    "upstreams", "bank", "bk", "target", "timeout", "tls", "ca", "cert", "key", "server_name",
    "shadow", "max_in_flight", "max_capture", "breaker_failures", "breaker_open_for", "comparison",
    "max_pending", "executor", "workers", "diff_log", "path", "store", "url", "id_cache", "refresh",
    "retain", "payloads", "max_buffer", "correlation_header", "noise", "reads", "relative", "absolute",
    "redact", "fields", "key_env", "gate", "window", "min_compared", "max_mismatch_rate", "methods",
    "sampling", "by_key", "ordering", "strict", "read", "ids", "trade", "minted", "references",
    "owner_key", "learn_from", "scope", "rules", "rule", "regex", "name", "client_ca",
    "max_unproven_rate", "stream_hold", "verify", "settle", "attempts", "key_aliases", "client_ref",
    "alias", "bank.v1.Trade.client_order_id", "bank.v1.Trade.account_id",
    "bank.v1.Ledger/PostTrade", "bank.v1.Trade.trade_id", "shadow", "process", "thread", "2s", "30d",
]  # fmt: skip
scalars = st.one_of(
    st.sampled_from(WORDS),
    st.text(max_size=12),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(WORDS), inner, max_size=5)
    ),
    max_leaves=25,
)
configs = st.dictionaries(st.sampled_from(WORDS), values, max_size=8)


def _mutated(base: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """`base` with the value at `path` (a chain of table keys) replaced or added."""
    out = dict(base)
    if len(path) == 1:
        out[path[0]] = value
        return out
    inner = out.get(path[0])
    out[path[0]] = _mutated(inner if isinstance(inner, dict) else {}, path[1:], value)
    return out


def _error_of(data: dict[str, Any]) -> str | None:
    """Load as `shim serve` would (parse, build, the checks a Shim makes against the descriptors):
    None when the config is valid, else the one error's message. Any other exception escapes."""
    try:
        Shim(build(parse(data, base=Path("/nonexistent"))), registry=REGISTRY)
    except ShimError as exc:
        return str(exc)
    return None


def _one_line(error: str | None) -> bool:
    return error is None or (bool(error) and "\n" not in error)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=configs)
def test_a_random_config_is_valid_or_one_clear_error(data: dict[str, Any]) -> None:
    """Whatever the tables hold, loading gives a config or a ShimError of one line; never a crash."""
    assert _one_line(_error_of(data))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),
    value=values,
)
def test_the_sample_config_with_one_value_changed_is_valid_or_one_clear_error(
    path: list[str], value: Any
) -> None:
    """The sample's real config, one setting replaced by anything: a config or a one-line ShimError."""
    data = _mutated(SAMPLE_CONFIG, path, value)
    data.setdefault("upstreams", {})
    data.pop("descriptor_sets", None)  # relative to the sample's folder: the registry is given instead
    data.pop("rules_files", None)
    assert _one_line(_error_of(data))


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_random_text_through_the_loader_is_a_config_or_one_clear_error(text: str) -> None:
    """Random text that happens to be TOML goes through the same loader: a config or one clear error."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    assert _one_line(_error_of(data))
