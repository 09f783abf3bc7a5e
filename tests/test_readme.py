"""The README's examples are valid: its config file builds, its rules check against the descriptors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from comparators import DescriptorRegistry
from shim.app import load_ids, load_rules
from shim.config import build, load_file
from shim.routing import Router

ROOT = Path(__file__).resolve().parent.parent


def _toml_blocks(after_heading: str) -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(after_heading) :]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    return re.findall(r"```toml\n(.*?)```", section, re.S)


def test_the_config_example_builds_and_checks_against_the_sample_descriptors(tmp_path: Path) -> None:
    """The README's config file, beside the sample's descriptor set and rules, is a valid config."""
    (example,) = _toml_blocks("### Config file")
    shutil.copy(ROOT / "sample_ledger" / "bank.binpb", tmp_path / "bank.binpb")
    shutil.copy(ROOT / "sample_ledger" / "rules.toml", tmp_path / "rules.toml")
    path = tmp_path / "shim.toml"
    path.write_text(example, encoding="utf-8")
    config = build(load_file(path))
    registry = DescriptorRegistry.from_files(config.descriptor_sets)
    rules = load_rules(config, registry)
    Router(registry, config.methods, config.sampling_reads, config.sampling_by_key, config.ordering_strict)
    assert config.mode == "shadow"
    assert len(rules.bindings) == len(config.rules) > 1


def test_the_rules_examples_check_against_the_sample_descriptors(tmp_path: Path) -> None:
    """Every [[rules]] example of the "Comparison rules" section builds against the sample's descriptors."""
    registry = DescriptorRegistry.from_files([ROOT / "sample_ledger" / "bank.binpb"])
    blocks = _toml_blocks("## Comparison rules")
    assert blocks
    for index, block in enumerate(blocks):
        path = tmp_path / f"rules{index}.toml"
        path.write_text('[upstreams.bank]\ntarget = "127.0.0.1:1"\n' + block, encoding="utf-8")
        config = build(load_file(path))
        assert load_rules(config, registry).bindings


def test_the_id_translation_example_checks_against_the_sample_descriptors(tmp_path: Path) -> None:
    """The [ids] example of the "ID translation" section is a valid declaration for the sample."""
    registry = DescriptorRegistry.from_files([ROOT / "sample_ledger" / "bank.binpb"])
    (block,) = _toml_blocks("## ID translation")
    path = tmp_path / "ids.toml"
    path.write_text('[upstreams.bank]\ntarget = "127.0.0.1:1"\n' + block, encoding="utf-8")
    config = build(load_file(path))
    fields = load_ids(config, registry)
    assert fields is not None
    assert sorted(fields.kinds) == ["page", "trade"]


def test_the_reconcile_example_checks_against_the_sample_descriptors() -> None:
    """The [reconcile] table of "Reconciling the books" parses and checks against the sample's descriptors."""
    import tomllib

    from shim.reconcile import check, parse

    (example,) = _toml_blocks("## Reconciling the books")
    registry = DescriptorRegistry.from_files([ROOT / "sample_ledger" / "bank.binpb"])
    check(parse(tomllib.loads(example)["reconcile"]), registry)


def test_the_key_aliases_example_checks_against_the_custody_descriptors(tmp_path: Path) -> None:
    """The [key_aliases] example of the "Key aliases" section is a valid declaration for the custody ledger
    (tests/services/custody), the service it is taken from."""
    from shim.aliases import fields_of
    from tests.services.custody import REGISTRY as CUSTODY

    (block,) = _toml_blocks("## Key aliases")
    path = tmp_path / "aliases.toml"
    path.write_text('[upstreams.bank]\ntarget = "127.0.0.1:1"\n' + block, encoding="utf-8")
    config = build(load_file(path))
    fields = fields_of(config.key_aliases, CUSTODY)
    assert fields is not None
    assert sorted(fields.kinds) == ["client_ref"]
