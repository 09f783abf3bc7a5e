"""The shim's channels to its upstreams: opened with their TLS and the config's message limits, their
certificates read again on SIGHUP (when a file changed, new calls take a new channel; calls in flight
finish on the old one, closed once they are over), and closed at the end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from grpc import aio

from comparators import DescriptorRegistry
from comparators.redact import Redactor
from shim._grpc_compat import LARGE_METADATA
from shim._timeouts import bounded
from shim.adapters import AdaptedChannel, Adapter, Channel
from shim.config import Config, Upstream
from shim.errors import ConfigError
from shim.metrics import Counters
from shim.tls import UpstreamFiles, channel_credentials, channel_options, upstream_files

OLD_CALLS_WITHIN = 3600.0


def size_options(config: Config) -> list[tuple[str, int]]:
    size = config.serving.max_message_size
    return [("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)]


def _channel(
    upstream: Upstream, config: Config, credentials: grpc.ChannelCredentials | None = None
) -> aio.Channel:
    # no flow-control window growth (BDP probing): a client that reads slowly makes the upstream wait, rather
    # than push a whole large answer into the shim's memory
    options = [
        *size_options(config), *channel_options(upstream), ("grpc.http2.bdp_probe", 0), *LARGE_METADATA,
    ]  # fmt: skip
    if credentials is not None:
        return aio.secure_channel(upstream.target, credentials, options=options)
    return aio.insecure_channel(upstream.target, options=options)


def upstream_channel(upstream: Upstream, config: Config) -> aio.Channel:
    """A channel to `upstream` with its TLS and the config's channel settings (for commands)."""
    credentials = channel_credentials(upstream) if upstream.tls else None
    return _channel(upstream, config, credentials)


class Channels:
    """Every channel the shim opened, by upstream. TLS files are read when this is made: a bad one stops
    the shim before it opens anything."""

    def __init__(
        self,
        config: Config,
        adapters: dict[str, Adapter],
        registry: DescriptorRegistry | None,
        counters: Counters,
        is_write: Callable[[str], bool] = lambda method: True,
        redactor: Redactor | None = None,
    ) -> None:
        self._config = config
        self._is_write = is_write  # which methods are writes (shim.routing)
        self._redactor = redactor  # the adapters' log lines hash the redacted values their calls quote
        self._adapters = adapters
        self._registry = registry
        self._counters = counters
        self._files: dict[str, UpstreamFiles] = {
            upstream.name: upstream_files(upstream)
            for upstream in (config.bank, config.bk)
            if upstream is not None and upstream.tls
        }
        self._credentials = {
            name: channel_credentials(upstream, self._files[name])
            for upstream in (config.bank, config.bk)
            if upstream is not None and (name := upstream.name) in self._files
        }
        self._open: list[tuple[Upstream, aio.Channel]] = []
        # a channel replaced by a reload is closed once its calls are over, or after this long (the calls
        # still on it then end UNAVAILABLE)
        self.old_calls_within = OLD_CALLS_WITHIN
        self._retired: dict[asyncio.Task[None], aio.Channel] = {}  # old channels closing after a reload

    def open(self, upstream: Upstream) -> Channel:
        """A channel to `upstream`; BK's with the adapters in front, when there are any."""
        channel = _channel(upstream, self._config, self._credentials.get(upstream.name))
        self._open.append((upstream, channel))
        if upstream is self._config.bk and self._adapters:
            assert self._registry is not None  # load_adapters asks for descriptors
            size = self._config.serving.max_message_size
            return AdaptedChannel(
                channel, self._adapters, self._registry, self._counters, self._is_write, size, self._redactor
            )
        return channel

    def reload_certificates(self, holders: Iterable[tuple[Any, str]]) -> list[str]:
        """Read the upstreams' TLS files again: when an upstream's changed, each holder's attribute
        (`(object, name)`) that holds one of its old channels gets a new one. Returns what could not be
        reloaded, each kept as it was."""
        holders = list(holders)
        errors: list[str] = []
        changed: set[str] = set()
        for upstream in {u.name: u for u, _ in self._open if u.tls}.values():
            try:
                files = upstream_files(upstream)
            except ConfigError as exc:
                errors.append(str(exc))
                continue
            if files != self._files.get(upstream.name):
                self._files[upstream.name] = files
                self._credentials[upstream.name] = channel_credentials(upstream, files)
                changed.add(upstream.name)
        for index, (upstream, old) in enumerate(self._open):
            if upstream.name not in changed:
                continue
            new = _channel(upstream, self._config, self._credentials[upstream.name])
            self._open[index] = (upstream, new)
            for holder, name in holders:
                current = getattr(holder, name, None)
                if current is old:
                    setattr(holder, name, new)
                elif isinstance(current, AdaptedChannel) and current.channel is old:
                    current.channel = new
            task = asyncio.get_running_loop().create_task(old.close(grace=self.old_calls_within))
            self._retired[task] = old
            task.add_done_callback(self._retired.pop)
        return errors

    async def unreachable(self, within: float = 3.0) -> list[Upstream]:
        """The upstreams the shim could not connect to within `within` seconds (it goes on trying)."""

        async def reachable(channel: aio.Channel) -> bool:
            try:
                await bounded(channel.channel_ready(), within)
            except TimeoutError:
                return False
            return True

        found = await asyncio.gather(*(reachable(channel) for _, channel in self._open))
        return [upstream for (upstream, _), ok in zip(self._open, found, strict=True) if not ok]

    async def close(self) -> None:
        for task, channel in list(self._retired.items()):
            task.cancel()
            await channel.close()
        for _, channel in self._open:
            await channel.close()
        self._open.clear()
