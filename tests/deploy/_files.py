"""The deployment files (Dockerfile, deploy/kubernetes, deploy/systemd) read as the tools that use them
read them: the Kustomize base rendered from its `resources:`, the Dockerfile's instructions, a systemd
unit's keys; and the shim config the ConfigMap ships."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from shim import config as config_mod

ROOT = Path(__file__).resolve().parent.parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
SYSTEMD = ROOT / "deploy" / "systemd"
DOCKERFILE = ROOT / "Dockerfile"
CONFIG_KEY = "shim.toml"  # the ConfigMap's key: the file mounted beside the others in /etc/shim

# What a stop after SIGTERM can take beyond the steps that each get `grace_period` (`Shim.stop` in
# shim/app.py: the calls in flight, the Python server's own, the mirrored calls, those given up, the
# comparisons; the store gets what is left of the first, and at least 1 s), and the supervisor then gives
# Envoy up to 5 s to exit (shim/dataplane/supervisor.py, `Envoy.stop`).
GRACE_STEPS, STORE_AT_LEAST, ENVOY_STOP = 5, 1.0, 5.0


def stop_bound(grace_period: float) -> float:
    """The longest `shim serve` on Envoy takes from SIGTERM to its exit, for a `grace_period` (two of the
    steps get at least a second)."""
    return GRACE_STEPS * max(grace_period, 1.0) + STORE_AT_LEAST + ENVOY_STOP


def render(folder: Path = KUBERNETES) -> list[dict[str, Any]]:
    """The documents a Kustomize base renders to, without kubectl: the `resources:` of its
    kustomization.yaml, each a file of YAML documents or a folder that is a kustomization itself."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    unsupported = set(kustomization) - {"apiVersion", "kind", "resources"}
    assert not unsupported, f"this loader applies only resources:, not {sorted(unsupported)}"
    documents: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        path = folder / resource
        if path.is_dir():
            documents += render(path)
        else:
            documents += [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    return documents


def one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The one document of `kind`."""
    (document,) = [doc for doc in documents if doc["kind"] == kind]
    return document


def shipped_config_text(documents: list[dict[str, Any]] | None = None) -> str:
    """The shim.toml the ConfigMap holds."""
    text: str = one(documents or render(), "ConfigMap")["data"][CONFIG_KEY]
    return text


def shipped_config(tmp_path: Path) -> config_mod.Config:
    """The ConfigMap's shim.toml as the shim reads it."""
    path = tmp_path / CONFIG_KEY
    path.write_text(shipped_config_text(), encoding="utf-8")
    return config_mod.build(config_mod.load_file(path))


def port_of(address: str) -> int:
    """The port of HOST:PORT."""
    return int(address.rpartition(":")[2])


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, (INSTRUCTION, arguments), continuation lines joined and comments
    left out."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        word, _, rest = (pending + line).strip().partition(" ")
        instructions.append((word.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return instructions


def shell_commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line joined by `&&`, each split into words."""
    return [shlex.split(part) for part in re.split(r"\s*&&\s*", line.strip()) if part]


def unit(path: Path) -> Iterator[tuple[str, str, str]]:
    """A systemd unit's settings: (section, key, value), in order, comments left out."""
    section = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a setting: {raw!r}"
        yield section, key.strip(), value.strip()
