"""The provider registry: every provider is one entry, and nothing else knows one by name."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from shared import redis_keys
from shared.errors import EditqError, ProviderNotConfigured
from shared.guards.breaker import OPEN
from shared.guards.ratelimit import Limits
from shared.providers.catalog import load_catalog
from shared.providers.registry import PROVIDERS, ProviderEntry, Registry
from shared.services import Services
from tests.conftest import make_settings, redis_db
from tests.shared.scripted import Scripted

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[3]
KEYS = {"wavespeed_api_key": "ws-key", "stability_api_key": "st-key"}


def test_every_provider_the_catalog_uses_is_registered() -> None:
    # given the shipped catalog and the built-in registry
    used = {spec.provider for spec in load_catalog().models}
    # when each model's provider is looked up
    missing = used - set(Registry().names())
    # then every one has an entry (a model of an unregistered provider could never run)
    assert used and not missing, f"no registry entry for {sorted(missing)}"


@pytest.mark.parametrize("entry", PROVIDERS, ids=lambda entry: entry.name)
def test_each_entry_builds_the_provider_it_names(entry: ProviderEntry) -> None:
    # given settings with every provider's key
    settings = make_settings(database_url="sqlite://", **KEYS)
    # when the entry builds its provider
    provider = entry.build(settings)
    # then it is the provider of that name, and it calls back exactly when the entry says
    # how to read its callbacks
    assert provider.name == entry.name
    assert provider.webhooks == (entry.webhooks is not None)


@pytest.mark.parametrize("name", ["wavespeed", "stability"])
def test_a_remote_provider_without_its_key_is_not_configured(name: str) -> None:
    # given settings without the provider's key
    services = Services(make_settings(database_url="sqlite://"))
    # when a job asks for it
    # then it is refused as not configured (503), naming the provider, as before
    with pytest.raises(ProviderNotConfigured) as info:
        services.provider(name)
    assert info.value.extra["provider"] == name


def test_the_in_process_provider_gets_no_breaker_and_no_limiter() -> None:
    # given breakers on
    services = Services(make_settings(database_url="sqlite://", breaker_failures=5, **KEYS))
    # when the in-process provider's guards are asked for
    # then it has none, while the remote ones have a breaker (it runs in the worker: there
    # is nothing remote to be down)
    assert services.registry.entry("local").in_process
    assert services.breaker("local") is None and services.limiter("local") is None
    assert services.breaker("wavespeed") is not None
    assert services.breaker("stability") is not None


def test_the_remote_providers_limits_come_from_their_settings() -> None:
    # given limits set for both remote providers
    settings = make_settings(database_url="sqlite://", stability_rate_limit=7,
                             stability_rate_window_seconds=2.0, wavespeed_rate_per_minute=11,
                             wavespeed_max_concurrency=3, stability_look_interval=12,
                             follow_max_seconds=5, follow_lease_margin_seconds=30)
    services = Services(settings)
    # when their limiters are built
    stability, wavespeed = services.limiter("stability"), services.limiter("wavespeed")
    # then each has its own, and Stability counts its looks too
    assert stability is not None and wavespeed is not None
    assert stability.limits == Limits(7, 2.0, 0, count_looks=True, look_gap_seconds=12)
    assert wavespeed.limits == Limits(11, 60.0, 3, count_looks=False)
    # and a slot outlives the longest gap between two looks at its provider, plus the
    # margin: Stability's own floor between looks, WaveSpeed's the follow schedule's
    assert (stability.lease_seconds, wavespeed.lease_seconds) == (12 + 30, 5 + 30)


def test_a_registered_fake_provider_gets_its_limits_and_breaker_through_services(
        redis_base: str) -> None:
    # given one more entry, and no other code changed: a provider of its own name (state
    # lives in Redis), one call at a time, breaking after one failure
    name = f"acme-{uuid.uuid4().hex[:8]}"
    fake = Scripted([], name=name)
    entry = ProviderEntry(name, lambda settings: fake,
                          limits=lambda settings: Limits(100, 60.0, 1, count_looks=False))
    settings = make_settings(database_url="sqlite://", redis_url=redis_db(redis_base, "api"),
                             breaker_failures=1, breaker_cooldown_seconds=30)
    services = Services(settings, registry=Registry([*PROVIDERS, entry]))
    # when a job asks for its provider, limiter and breaker
    limiter, breaker = services.limiter(name), services.breaker(name)
    # then the provider is the entry's, the limiter holds a second job back while the
    # first is in flight, and a failure opens the breaker
    assert services.provider(name) is fake
    assert limiter is not None and breaker is not None
    assert limiter.concurrency_key == redis_keys.ratelimit_inflight(name)
    assert limiter.before_submit("job-1") == 0
    assert limiter.before_submit("job-2") > 0
    limiter.release("job-1")
    assert breaker.key == redis_keys.breaker(name)
    assert breaker.record_failure() == OPEN and breaker.allow() > 0


def test_an_unknown_provider_is_not_available_and_names_register_once() -> None:
    # given the built-in registry
    services = Services(make_settings(database_url="sqlite://"))
    # when a provider no entry names is asked for
    # then it is not available in this build
    with pytest.raises(EditqError, match="not available in this build"):
        services.provider("nobody")
    with pytest.raises(EditqError, match="not available in this build"):
        services.limiter("nobody")
    # and a second entry of a registered name is refused when the registry is made
    with pytest.raises(ValueError, match="registered twice"):
        Registry([*PROVIDERS, ProviderEntry("local", PROVIDERS[0].build)])


def _comparisons(name: str) -> re.Pattern[str]:
    quoted = rf"""['"]{re.escape(name)}['"]"""
    return re.compile(
        rf"""[=!]=\s*{quoted}|{quoted}\s*[=!]="""          # x == "name", "name" != x
        rf"""|\bin\s*[(\[{{][^)\]}}]*{quoted}"""           # x in ("name", ...)
        rf"""|\bcase\s+{quoted}""")                        # match x: case "name"


def test_no_code_outside_the_registry_compares_provider_names() -> None:
    # given the registered names, and the service's code (shared, api, worker)
    patterns = [_comparisons(name) for name in Registry().names()]
    registry = ROOT / "shared" / "providers" / "registry.py"
    files = [path for folder in ("shared", "api", "worker")
             for path in sorted((ROOT / folder).rglob("*.py")) if path != registry]
    assert len(files) > 50
    # when it is searched for a comparison with one of those names
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in files
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if any(pattern.search(line) for pattern in patterns)]
    # then there is none: what differs between providers is their registry entry's
    assert not found, "compare with the registry entry instead:\n" + "\n".join(found)


def test_the_api_and_the_worker_name_no_provider() -> None:
    # given the registered names, and the API's and the worker's code
    quoted = re.compile("|".join(rf"""['"]{re.escape(name)}['"]"""
                                 for name in Registry().names()))
    files = [path for folder in ("api", "worker") for path in sorted((ROOT / folder).rglob("*.py"))]
    # when it is searched for one of those names as a string
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in files
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if quoted.search(line)]
    # then there is none: they take a provider's name from a job, a model or a URL
    assert not found, "\n".join(found)


def test_the_comparison_search_finds_the_forms_it_forbids() -> None:
    # given the forms a provider name comparison takes
    lines = ['if name == "local":', "if 'wavespeed' != provider:",
             'if alt.provider in (spec.provider, "local"):', 'case "stability":']
    # when they are searched as the test above does
    # then each is found, and a name given as data is not
    patterns = [_comparisons(name) for name in Registry().names()]
    assert all(any(p.search(line) for p in patterns) for line in lines)
    assert not any(p.search('name = "local"') for p in patterns)
