"""Every model prices as PROVIDERS.md says, exactly, in Decimal; configuration overrides."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings
from shared.providers.catalog import load_catalog
from shared.services import Services

CATALOG = load_catalog()  # the shipped file, no overrides
pytestmark = pytest.mark.timeout(30)

D = Decimal


@pytest.mark.parametrize(("model", "options", "price"), [
    ("qwen-edit", {}, D("0.02")),
    ("qwen-edit-plus", {}, D("0.02")),
    ("step1x-edit", {}, D("0.03")),
    ("hidream-e1-full", {}, D("0.024")),
    ("seededit-v3", {}, D("0.027")),
    ("wan-2.5-edit", {}, D("0.035")),
    ("flux-kontext-pro", {}, D("0.04")),
    ("flux-kontext-pro-multi", {}, D("0.04")),
    ("flux-kontext-max", {}, D("0.08")),
    ("ideogram-character", {"rendering_speed": "Turbo"}, D("0.10")),
    ("ideogram-character", {}, D("0.15")),
    ("ideogram-character", {"rendering_speed": "Quality"}, D("0.20")),
    ("nano-banana-pro-edit-ultra", {}, D("0.15")),
    ("nano-banana-pro-edit-ultra", {"resolution": "8k"}, D("0.18")),
    ("gpt-image-1-edit", {"quality": "low"}, D("0.011")),
    ("gpt-image-1-edit", {"quality": "low", "size": "1024*1536"}, D("0.016")),
    ("gpt-image-1-edit", {}, D("0.042")),
    ("gpt-image-1-edit", {"size": "1536*1024"}, D("0.063")),
    ("gpt-image-1-edit", {"quality": "high", "size": "1024*1024"}, D("0.167")),
    ("gpt-image-1-edit", {"quality": "high", "size": "1024*1536"}, D("0.25")),
    ("gpt-image-1-edit", {"quality": "high", "size": "auto"}, D("0.167")),
    ("z-image-turbo-inpaint", {}, D("0.02")),
    ("image-zoom-out", {}, D("0.02")),
    ("local-pillow", {}, D("0")),
])
def test_price_per_image(model: str, options: dict[str, Any], price: Decimal) -> None:
    spec = CATALOG.get(model)
    estimate = spec.estimate(options)
    assert isinstance(estimate, Decimal)
    assert estimate == price
    assert spec.estimate(options, outputs=3) == price * 3


def test_every_wavespeed_model_is_in_the_catalog_with_a_dated_price() -> None:
    wavespeed = [m for m in CATALOG.models if m.provider == "wavespeed"]
    assert len(wavespeed) == 14
    assert all(m.pricing.taken.year >= 2025 and m.pricing.currency == "USD" for m in wavespeed)


@pytest.mark.parametrize(("model", "credits"), [
    ("stability-inpaint", 5), ("stability-outpaint", 4), ("stability-erase", 5),
    ("stability-search-replace", 5), ("stability-search-recolor", 5),
    ("stability-remove-background", 5), ("stability-relight", 8),
    ("stability-upscale-fast", 2), ("stability-upscale-conservative", 40),
    ("stability-upscale-creative", 60),
])
def test_stability_operations_price_in_credits(model: str, credits: int) -> None:
    price = CATALOG.get(model).price({}, outputs=1)
    assert (price.units, price.unit, price.unit_price) == (D(credits), "credit", D("0.01"))
    assert price.amount == D(credits) / 100
    assert CATALOG.get(model).estimate() == D(credits) / 100


def test_every_price_is_itemized_with_its_rule_and_date() -> None:
    for spec in CATALOG.models:
        price = spec.price({}, outputs=2)
        assert price.rule == spec.pricing.rule
        assert price.taken == spec.pricing.taken and price.currency == "USD"
        assert price.amount == spec.estimate({}, 2) == price.units * price.unit_price


def test_an_override_replaces_the_fields_it_names_and_says_when_and_where() -> None:
    catalog = load_catalog(price_overrides={
        "qwen-edit": {"usd": "0.025", "taken": "2026-12-01"},
        "stability-erase": {"credits": "6", "taken": "2026-12-01", "source": "invoice"},
        "ideogram-character": {"rule": "flat", "usd": "0.12", "taken": "2026-12-01"},
    })
    qwen = catalog.get("qwen-edit").price()
    assert (qwen.amount, qwen.taken, qwen.source) == (D("0.025"), date(2026, 12, 1),
                                                      "configuration")
    erase = catalog.get("stability-erase").price()
    assert (erase.units, erase.amount, erase.source) == (D(6), D("0.06"), "invoice")
    # a different rule replaces the old one whole: no rendering speed matters any more
    assert catalog.get("ideogram-character").estimate({"rendering_speed": "Quality"}) == \
        D("0.12")
    # and the models not named keep the catalog's price
    assert catalog.get("flux-kontext-max").estimate() == D("0.08")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"no-such-model": {"usd": "1", "taken": "2026-12-01"}}, "unknown model"),
    ({"qwen-edit": {"usd": "cheap", "taken": "2026-12-01"}}, "decimal"),
    ({"qwen-edit": {"rule": "credits", "taken": "2026-12-01"}}, "credits"),
])
def test_a_bad_override_stops_start_up(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_catalog(price_overrides=overrides)


def test_overrides_come_from_a_file_and_the_environment_which_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a prices file and an environment variable that both override qwen-edit
    prices = tmp_path / "prices.toml"
    prices.write_text('[qwen-edit]\nusd = "0.021"\ntaken = 2026-12-01\n'
                      '[step1x-edit]\nusd = "0.031"\ntaken = 2026-12-01\n')
    monkeypatch.setenv("EDITQ_PRICES_FILE", str(prices))
    monkeypatch.setenv("EDITQ_PRICE_OVERRIDES",
                       '{"qwen-edit": {"usd": "0.022", "taken": "2026-12-02"}}')
    # when a process builds its services from the environment
    catalog = Services(Settings(database_url="sqlite://")).catalog
    # then both apply, the variable over the file
    assert catalog.get("qwen-edit").estimate() == D("0.022")
    assert catalog.get("step1x-edit").estimate() == D("0.031")


def test_the_catalog_takes_its_prices_from_the_settings_it_is_given(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # given an override in the environment, and settings built without it
    monkeypatch.setenv("EDITQ_PRICE_OVERRIDES",
                       '{"qwen-edit": {"usd": "0.5", "taken": "2026-12-02"}}')
    given = Settings(database_url="sqlite://", price_overrides={
        "qwen-edit": {"usd": "0.023", "taken": "2026-12-02"}})
    # when services (and an app) are built over those settings
    from api.app import create_app

    app = create_app(given)
    # then the catalog prices what the given settings say, not what the environment says
    assert Services(given).catalog.get("qwen-edit").estimate() == D("0.023")
    assert app.state.services.catalog.get("qwen-edit").estimate() == D("0.023")
    assert load_catalog().get("qwen-edit").estimate() == D("0.02")


def test_settings_refuse_an_override_without_its_date(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="taken"):
        Settings(price_overrides={"qwen-edit": {"usd": "0.03"}})
    with pytest.raises(ValueError, match="cannot be read"):
        Settings(prices_file=tmp_path / "missing.toml")
