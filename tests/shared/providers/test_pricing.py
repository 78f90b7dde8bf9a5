"""Every model prices as PROVIDERS.md says, exactly, in Decimal."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from shared.providers.catalog import get_catalog

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
    spec = get_catalog().get(model)
    estimate = spec.estimate(options)
    assert isinstance(estimate, Decimal)
    assert estimate == price
    assert spec.estimate(options, outputs=3) == price * 3


def test_every_wavespeed_model_is_in_the_catalog_with_a_dated_price() -> None:
    wavespeed = [m for m in get_catalog().models if m.provider == "wavespeed"]
    assert len(wavespeed) == 14
    assert all(m.pricing.taken.year >= 2025 and m.pricing.currency == "USD" for m in wavespeed)
