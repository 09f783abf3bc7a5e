"""What the commands that read the store share: their --config and --store flags, the store's url and
the config's settings, and the types of their numeric flags."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from shim import config as config_mod
from shim.errors import ConfigError, ShimError
from shim.store_settings import StoreSettings


def store_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="the shim's config file (its [store], [noise], [gate])"
    )
    parser.add_argument("--store", metavar="URL", help="the store (overrides the config's)")


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (0 or more)")
    return value


def share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share between 0 and 1 (e.g. 0.001)")
    return value


def evidence_settings(args: argparse.Namespace, existing: bool = True) -> tuple[str, dict[str, Any]]:
    """The store url (--store, the config's, or the default) and the config's settings; with `existing`, a
    SQLite file that is not there is refused (a command that reads it would make an empty store)."""
    settings: dict[str, Any] = config_mod.load_file(args.config) if args.config else {}
    url = args.store or config_mod.section(settings, StoreSettings).url
    # a url naming a host is the store's to refuse or open (a path of it would show its password)
    if existing and not re.match(r"(postgres(ql)?://|:memory:$|[a-z][a-z0-9+.-]*://[^/])", url, flags=re.I):
        rest = url[len("sqlite:") :] if url.lower().startswith("sqlite:") else url
        path = Path(rest[2:] if rest.startswith("//") else rest)
        if not path.exists():  # opening it would make an empty store, and report nothing
            raise ShimError(
                f"no store at {path}: nothing was recorded there (give --store URL or --config FILE)"
            )
    return url, settings


def time_of(flag: str, text: str) -> float:
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not an ISO 8601 time such as 2026-11-27T08:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def method_arg(value: str) -> str:
    """A method's full name, as `[gate] methods` takes it: a short name would match no method, silently."""
    name = value.lstrip("/")
    service, _, method = name.rpartition("/")
    if not service or not method or "/" in service:
        raise argparse.ArgumentTypeError(f'{value!r} is not a "package.Service/Method" name')
    return name
