"""The docs hold: the README and the docs' examples are valid configs, and the command-line reference
is what the commands' own parsers say."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest

from comparators import DescriptorRegistry
from shim.config import build, load_file
from shim.parts import load_ids, load_rules
from shim.routing import Router
from tests.helpers import toml_blocks

ROOT = Path(__file__).resolve().parent.parent


def test_the_config_example_builds_and_checks_against_the_sample_descriptors(tmp_path: Path) -> None:
    """The docs' config file example, beside the sample's descriptor set and rules, is a valid config."""
    (example,) = toml_blocks("config.md", "# Config file")
    shutil.copy(ROOT / "sample_ledger" / "bank.binpb", tmp_path / "bank.binpb")
    shutil.copy(ROOT / "sample_ledger" / "rules.toml", tmp_path / "rules.toml")
    path = tmp_path / "shim.toml"
    path.write_text(example, encoding="utf-8")
    config = build(load_file(path))
    registry = DescriptorRegistry.from_files(config.descriptors.descriptor_sets)
    rules = load_rules(config, registry)
    Router(registry, config.methods, config.sampling.reads, config.sampling.by_key, config.ordering.strict)
    assert config.mode == "shadow"
    assert len(rules.bindings) == len(config.rules) > 1


def _differing(example: object, default: object, path: str = "") -> list[str]:
    """The settings (dotted) whose values differ between two configs."""
    if dataclasses.is_dataclass(example) and dataclasses.is_dataclass(default):
        found = []
        for field in dataclasses.fields(example):
            name = f"{path}.{field.name}".lstrip(".")
            found += _differing(getattr(example, field.name), getattr(default, field.name), name)
        return found
    return [] if example == default else [path]


def test_the_config_example_names_every_value_it_shows_that_is_not_a_default(tmp_path: Path) -> None:
    """Under the config file example, the list of its values that are not defaults is whole: each one
    that differs from a config that gives only the upstreams is named there (the upstreams' targets,
    the rules files and the rules besides)."""
    (example,) = toml_blocks("config.md", "# Config file")
    shutil.copy(ROOT / "sample_ledger" / "bank.binpb", tmp_path / "bank.binpb")
    shutil.copy(ROOT / "sample_ledger" / "rules.toml", tmp_path / "rules.toml")
    (tmp_path / "shim.toml").write_text(example, encoding="utf-8")
    (tmp_path / "bare.toml").write_text(
        '[upstreams.bank]\ntarget = "legacy-bank:50051"\n[upstreams.bk]\ntarget = "bk:50051"\n',
        encoding="utf-8",
    )
    differing = _differing(build(load_file(tmp_path / "shim.toml")), build(load_file(tmp_path / "bare.toml")))
    text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    listed = text[
        text.index("Most values above are the defaults; these are not:") : text.index("## Reloading")
    ]
    named = {
        "serving.listen": "`listen",
        "descriptors.descriptor_sets": "`descriptor_sets`",
        "methods": '`[methods."bank.v1.Ledger/PostTrade"]`',
        "ids": "`[ids.trade]`",
        "rules": "`[[rules]]`",
        "rule_locations": "`[[rules]]`",
        "shadow.max_in_flight_streams": "`[shadow] max_in_flight_streams",
        "store.url": "`[store] url",
        "store.retain": "`[store] retain",
        "store.correlation_header": "`[store] correlation_header",
        "noise.reads": "`[noise] reads",
        "redact.fields": "`[redact] fields`",
        "gate.methods": "`[gate] methods`",
    }
    assert sorted(differing) == sorted(named)
    assert [name for name, words in named.items() if words not in listed] == []


def test_the_rules_examples_check_against_the_sample_descriptors(tmp_path: Path) -> None:
    """Every [[rules]] example of the "Comparison rules" section builds against the sample's descriptors."""
    registry = DescriptorRegistry.from_files([ROOT / "sample_ledger" / "bank.binpb"])
    blocks = toml_blocks("rules.md", "# Comparison rules")
    assert blocks
    for index, block in enumerate(blocks):
        path = tmp_path / f"rules{index}.toml"
        path.write_text('[upstreams.bank]\ntarget = "127.0.0.1:1"\n' + block, encoding="utf-8")
        config = build(load_file(path))
        assert load_rules(config, registry).bindings


def test_the_id_translation_example_checks_against_the_sample_descriptors(tmp_path: Path) -> None:
    """The [ids] example of the "ID translation" section is a valid declaration for the sample."""
    registry = DescriptorRegistry.from_files([ROOT / "sample_ledger" / "bank.binpb"])
    (block,) = toml_blocks("ids.md", "## ID translation")
    path = tmp_path / "ids.toml"
    path.write_text('[upstreams.bank]\ntarget = "127.0.0.1:1"\n' + block, encoding="utf-8")
    config = build(load_file(path))
    fields = load_ids(config, registry)
    assert fields is not None
    assert sorted(fields.kinds) == ["page", "trade"]


def test_the_reconcile_example_checks_against_the_sample_descriptors() -> None:
    """The [reconcile] tables of "Reconciling the books" check against their services' descriptors."""
    import tomllib

    from shim.reconcile import check, parse
    from tests.services.custody import REGISTRY as CUSTODY

    listing, from_store = toml_blocks("reconcile.md", "# Reconciling the books")
    registry = DescriptorRegistry.from_files([ROOT / "sample_ledger" / "bank.binpb"])
    check(parse(tomllib.loads(listing)["reconcile"]), registry)
    settings = parse(tomllib.loads(from_store)["reconcile"])  # the custody service's, with no listing
    check(settings, CUSTODY)
    assert (settings.keys, settings.list) == ("store", "")


def test_the_key_aliases_example_checks_against_the_custody_descriptors(tmp_path: Path) -> None:
    """The [key_aliases] example of the "Key aliases" section is a valid declaration for the custody ledger
    (tests/services/custody), the service it is taken from."""
    from shim.aliases import fields_of
    from tests.services.custody import REGISTRY as CUSTODY

    (block,) = toml_blocks("ids.md", "## Key aliases")
    path = tmp_path / "aliases.toml"
    path.write_text('[upstreams.bank]\ntarget = "127.0.0.1:1"\n' + block, encoding="utf-8")
    config = build(load_file(path))
    fields = fields_of(config.key_aliases, CUSTODY)
    assert fields is not None
    assert sorted(fields.kinds) == ["client_ref"]


def _commands() -> list[list[str]]:
    """Every command path of `shim` ([], ["serve"], ["mode", "set"], ...), from its parser."""
    import argparse

    from shim.cli import parser

    found: list[list[str]] = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        found.append(path)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])

    walk(parser(), [])
    return found


def test_every_option_each_command_prints_in_its_help_is_in_the_cli_reference(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from shim.cli import main

    reference = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    missing = []
    commands = _commands()
    assert ["mode", "history"] in commands
    assert ["demo"] in commands
    for path in commands:
        with pytest.raises(SystemExit):
            main([*path, "--help"])
        printed = capsys.readouterr().out
        listed = printed.split("options:", 1)[-1]
        options = set(re.findall(r"^ {2}(?:-\w[^,]*, )?(--[a-z][\w-]*)", listed, re.M)) - {"--help"}
        if path:
            heading = f"`shim {' '.join(path)}`"
            assert heading in reference, f"{heading} is not in docs/cli.md"
            section = reference[reference.index(heading) :]
            following = re.search(r"\n#+ `shim ", section[1:])
            section = section[: following.start() + 1] if following else section
            missing += [
                f"shim {' '.join(path)} {option}" for option in sorted(options) if f"`{option}" not in section
            ]
    assert not missing, f"options documented nowhere in docs/cli.md: {missing}"


def test_the_cli_reference_is_what_the_commands_parsers_say() -> None:
    """docs/cli.md is written by tools/cli_reference.py; a change to a command's options rewrites it."""
    from tools.cli_reference import TARGET, render

    assert TARGET.read_text(encoding="utf-8") == render(), (
        "docs/cli.md is stale: run python tools/cli_reference.py"
    )


def test_the_config_reference_is_what_the_declarations_say() -> None:
    """docs/config-reference.md is written by tools/config_reference.py; a change to a declared setting
    (its default, kind or help) rewrites it."""
    from tools.config_reference import TARGET, render

    assert TARGET.read_text(encoding="utf-8") == render(), (
        "docs/config-reference.md is stale: run python tools/config_reference.py"
    )


def _reference_sections() -> dict[str, str]:
    """docs/config-reference.md cut at its headings: "Top level", "[upstreams]", "[shadow]", ... -> text."""
    text = (ROOT / "docs" / "config-reference.md").read_text(encoding="utf-8")
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {heading.strip("`"): body for heading, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_every_declared_setting_is_in_the_config_reference_under_its_table() -> None:
    from shim.config import SECTIONS, TABLES, Config, Upstream
    from shim.settings import declared

    sections = _reference_sections()
    tables = [("Top level", Config), ("[upstreams]", Upstream), *((f"[{c.SECTION}]", c) for c in SECTIONS)]
    missing = [
        f"{heading} {key}"
        for heading, cls in tables
        for key, _, _ in declared(cls)
        if f"\n| `{key}` |" not in sections.get(heading, "")
    ]
    missing += [name for name in TABLES if f"\n| `{name}` |" not in sections["Top level"]]
    assert not missing, f"declared settings the reference does not list: {missing}"


def test_every_key_of_the_config_example_is_a_declared_setting() -> None:
    """The annotated example of docs/config.md uses only settings the shim declares: a key renamed or
    dropped in the code cannot linger in the docs."""
    import tomllib

    from shim.config import GROUPS, SECTIONS, TABLES, Config, Upstream
    from shim.settings import declared

    (example,) = toml_blocks("config.md", "# Config file")
    data = tomllib.loads(example)
    top = {key for cls in (Config, *GROUPS) for key, _, _ in declared(cls)}
    sections = {cls.SECTION: {key for key, _, _ in declared(cls)} for cls in SECTIONS}
    unknown = []
    for name, value in data.items():
        if name in sections:
            unknown += [f"{name}.{key}" for key in value if key not in sections[name]]
        elif name == "upstreams":
            upstream = {key for key, _, _ in declared(Upstream)}
            unknown += [
                f"upstreams.{u}.{key}" for u, table in value.items() for key in table if key not in upstream
            ]
        elif name not in top and name not in TABLES:
            unknown.append(name)
    assert len(data) > 20  # the example shows most tables
    assert not unknown, f"keys of the docs/config.md example the shim does not declare: {unknown}"


def test_the_readme_is_short_its_quick_start_is_the_ci_test_command_and_its_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count("\n") <= 200
    commands = re.findall(r"```sh\n(.*?)\n```", readme[readme.index("## Quick start") :], re.S)[:2]
    assert commands[0].endswith("&& .venv/bin/shim demo")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci.splitlines()  # the test command is CI's, word for word
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme):
        if not target.startswith("http"):
            assert (ROOT / target).is_file(), f"README links to {target}, which does not exist"
    pages = {page.name for page in (ROOT / "docs").glob("*.md")} - {"index.md"}  # the site's home
    linked = set(re.findall(r"\]\(docs/([^)#\s]+)", readme))
    assert pages <= linked, f"docs pages the README does not link to: {sorted(pages - linked)}"


def test_every_file_the_architecture_page_names_exists() -> None:
    """docs/architecture.md points a newcomer at files: each one it names is there."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"\b((?:shim|comparators)/[\w/]+\.py)\b", text))
    assert len(named) >= 25
    assert sorted(name for name in named if not (ROOT / name).is_file()) == []
