"""The providers editq can call, each registered once, as data.

A provider differs from another in a few facts: how it is built from the settings
(and whether its key is there), its rate and concurrency limits, whether it gets a
circuit breaker, whether it runs in-process, and, if it calls back, how its webhooks
are verified and read. Each fact is a field of its `ProviderEntry` below, and every
place that needs one asks the registry (`Services` for clients, limiters and
breakers, the fallback for in-process models, the API's webhook route), so no code
outside this module compares provider names, and a new provider is one entry here
(plus its client and `ImageEditProvider`, its models in catalog.toml, and its rules
in `classify.py` if its errors need new ones: the clients apply those themselves).

The entries are immutable; a process's `Services` holds the `Registry` it uses, so a
test registers a fake provider by giving its `Services` a registry with one more entry,
and nothing leaks into the next test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from shared.config import Settings
from shared.errors import EditqError, ProviderNotConfigured
from shared.guards.ratelimit import Limits
from shared.providers import wavespeed_webhooks
from shared.providers.base import ImageEditProvider
from shared.providers.local import LocalProvider
from shared.providers.stability import StabilityEditProvider
from shared.providers.stability_client import StabilityClient
from shared.providers.wavespeed import WaveSpeedEditProvider
from shared.providers.wavespeed_client import WaveSpeedClient


@dataclass(frozen=True)
class Webhooks:
    """How a provider's callbacks are believed and read.

    `verify(provider, headers, body)` raises (a 401 `EditqError`) unless the call is
    the provider's; it may block, e.g. to ask the provider for its signing secret, so
    the API runs it in a thread. `request_id(body)` is the provider's request id the
    call is about (an `InvalidInput` when the body has none).
    """

    verify: Callable[[ImageEditProvider, Mapping[str, str], bytes], None]
    request_id: Callable[[bytes], str]


def no_limits(settings: Settings) -> Limits | None:
    return None


@dataclass(frozen=True)
class ProviderEntry:
    """One provider, as the rest of editq needs to know it."""

    name: str  # as catalog.toml's `provider` and the jobs' `provider` column spell it
    # Builds the provider and its HTTP client (one pool per process): raises
    # ProviderNotConfigured when the settings lack what it needs (its API key).
    build: Callable[[Settings], ImageEditProvider]
    # Its limits, shared by every worker (shared.guards.ratelimit); None: none.
    limits: Callable[[Settings], Limits | None] = no_limits
    # Whether its failures open a circuit breaker (shared.guards.breaker).
    breaker: bool = True
    # Runs inside the worker: no network, and edits of its own kind, so the fallback
    # never moves a remote job onto it.
    in_process: bool = False
    # How its callbacks are checked and read; None: it calls none (looks only).
    webhooks: Webhooks | None = None


class Registry:
    """The providers one process knows, by name (the built-in ones unless told)."""

    def __init__(self, entries: Iterable[ProviderEntry] | None = None) -> None:
        self._entries: dict[str, ProviderEntry] = {}
        for entry in PROVIDERS if entries is None else entries:
            if entry.name in self._entries:
                raise ValueError(f"provider {entry.name!r} is registered twice")
            self._entries[entry.name] = entry

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def find(self, name: str) -> ProviderEntry | None:
        return self._entries.get(name)

    def entry(self, name: str) -> ProviderEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise EditqError(f"provider {name!r} is not available in this build",
                             provider=name) from None


def _local(settings: Settings) -> ImageEditProvider:
    return LocalProvider()


def _wavespeed(settings: Settings) -> ImageEditProvider:
    if settings.wavespeed_api_key is None:
        raise ProviderNotConfigured("WaveSpeed models need EDITQ_WAVESPEED_API_KEY",
                                    provider="wavespeed")
    client = WaveSpeedClient(settings.wavespeed_base_url,
                             settings.wavespeed_api_key.get_secret_value(),
                             submit_timeout=settings.provider_submit_timeout_seconds,
                             look_timeout=settings.provider_look_timeout_seconds,
                             download_timeout=settings.provider_download_timeout_seconds,
                             trusted_hosts=settings.output_allowed_host_set)
    return WaveSpeedEditProvider(client, settings.max_output_bytes)


def _wavespeed_limits(settings: Settings) -> Limits:
    # WaveSpeed counts submits per minute and running tasks; its result reads are free.
    return Limits(settings.wavespeed_rate_per_minute, 60.0,
                  settings.wavespeed_max_concurrency, count_looks=False)


def _stability(settings: Settings) -> ImageEditProvider:
    if settings.stability_api_key is None:
        raise ProviderNotConfigured("Stability operations need EDITQ_STABILITY_API_KEY",
                                    provider="stability")
    client = StabilityClient(settings.stability_base_url,
                             settings.stability_api_key.get_secret_value(),
                             timeout=settings.stability_timeout_seconds,
                             look_timeout=settings.provider_look_timeout_seconds,
                             accept_json=settings.stability_accept_json)
    return StabilityEditProvider(client,
                                 filtered_is_success=settings.stability_filtered_is_success,
                                 look_interval=settings.stability_look_interval,
                                 max_result_bytes=settings.max_output_bytes)


def _stability_limits(settings: Settings) -> Limits:
    # Stability counts every request, result reads too, and locks an account out for
    # 60 s past its limit; it has no concurrency cap.
    return Limits(settings.stability_rate_limit, settings.stability_rate_window_seconds,
                  0, count_looks=True, look_gap_seconds=settings.stability_look_interval)


PROVIDERS: tuple[ProviderEntry, ...] = (
    ProviderEntry("local", _local, breaker=False, in_process=True),
    ProviderEntry("wavespeed", _wavespeed, _wavespeed_limits,
                  webhooks=Webhooks(wavespeed_webhooks.check, wavespeed_webhooks.request_id)),
    ProviderEntry("stability", _stability, _stability_limits),
)
