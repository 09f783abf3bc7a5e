"""Loading the adapters the config names, each checked at start (re-exported by `shim.adapters`), and what
the adapted channel keeps of each (`AdaptedMethod`)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf import descriptor_pool, message, message_factory

from comparators import DescriptorRegistry
from comparators.descriptors import MethodInfo
from shim._adapter_threads import is_async
from shim.errors import ConfigError, NeedsDescriptors

Adapter = Callable[..., Any]


def resolve(dotted: str, where: str) -> Any:
    """The object a dotted path ("package.module:name" or "package.module.name") names."""
    if not isinstance(dotted, str) or (":" not in dotted and "." not in dotted):
        raise ConfigError(f"{where}: {dotted!r} is not a dotted path such as 'mypackage.adapters:move'")
    module_name, sep, attr = dotted.partition(":")
    if not sep:
        module_name, _, attr = dotted.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(f"{where}: cannot import {module_name!r}: {exc}") from exc
    except SystemExit as exc:  # sys.exit at import (argparse reading options of its own): never the shim's
        raise ConfigError(
            f"{where}: cannot import {module_name!r}: it exited (SystemExit: {exc}) at import"
        ) from exc
    try:
        target = module
        for part in attr.split("."):
            target = getattr(target, part)
    except AttributeError as exc:
        raise ConfigError(f"{where}: {module_name!r} has no {attr!r}") from exc
    return target


def load_adapters(
    per_method: Mapping[str, str], module: str, registry: DescriptorRegistry | None
) -> dict[str, Adapter]:
    """The adapters the config names, by method path ("/pkg.Svc/Method"), each checked at start.

    `module` names a mapping of method names to adapters (`adapters = "pkg.mod"` reads
    `pkg.mod.ADAPTERS`); `per_method` ([methods."M"] adapter) adds to it and wins.
    """
    found: dict[str, tuple[str, Any]] = {}
    if module:
        table = resolve(module if ":" in module else f"{module}:ADAPTERS", "adapters")
        if not isinstance(table, Mapping):
            raise ConfigError(f"adapters: {module} must name a mapping of method names to adapters")
        for name, adapter in table.items():
            found["/" + str(name).lstrip("/")] = (f"adapters ({module})", adapter)
    for name, dotted in per_method.items():
        where = f'methods."{name.lstrip("/")}".adapter'
        found["/" + name.lstrip("/")] = (where, resolve(dotted, where))
    if found and registry is None:
        raise NeedsDescriptors("adapters need the descriptors of Bank's interface (descriptor_sets)")
    out: dict[str, Adapter] = {}
    for method, (where, adapter) in found.items():
        assert registry is not None
        if registry.method(method) is None:
            raise ConfigError(f"{where}: {method.lstrip('/')} is not a method of the descriptors")
        if not callable(adapter):
            raise ConfigError(f"{where}: the adapter for {method.lstrip('/')} is not callable")
        try:
            inspect.signature(adapter).bind(None, None)
        except TypeError as exc:
            raise ConfigError(
                f"{where}: the adapter for {method.lstrip('/')} must take (request, bk): {exc}"
            ) from exc
        except ValueError:  # no signature to inspect (a builtin): trust it
            pass
        out[method] = adapter
    return out


def _name_of(adapter: Adapter) -> str:
    module = getattr(adapter, "__module__", None) or "?"
    return f"{module}.{getattr(adapter, '__qualname__', type(adapter).__name__)}"


def _message_class(registry: DescriptorRegistry, full_name: str) -> type[message.Message]:
    """The generated class when the adapter's code imported it (so adapters get their own types)."""
    try:
        return message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(full_name))
    except KeyError:
        return registry.message_class(full_name)


class AdaptedMethod:
    """One method's adapter, with what serving it needs: its descriptor, its request class, whether it
    runs on the loop, and whether the method is a write."""

    __slots__ = ("adapter", "info", "is_async", "name", "request_class", "write")

    def __init__(self, adapter: Adapter, info: MethodInfo, registry: DescriptorRegistry, write: bool) -> None:
        self.adapter = adapter
        self.is_async = is_async(adapter)  # else it runs in a thread of its own (shim._adapter_threads)
        self.info = info
        self.name = _name_of(adapter)
        self.request_class = _message_class(registry, info.input_type)
        self.write = write
