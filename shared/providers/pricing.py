"""Pricing rules, as data: each evaluates a request's options to a Decimal price per image.

Every rule carries the date its figures were taken, since provider prices
change and a ledger row must be able to say what it was charged at.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator


@dataclass(frozen=True)
class Price:
    """A priced call, as a ledger row records it: `units` x `unit_price` = `amount`.

    Per-image rules count images; Stability's rule counts credits, as Stability bills.
    """

    units: Decimal
    unit: str
    unit_price: Decimal
    currency: str
    rule: str
    taken: date
    source: str

    @property
    def amount(self) -> Decimal:
        return self.units * self.unit_price


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = "USD"
    taken: date
    source: str = ""

    def per_image(self, options: dict[str, Any]) -> Decimal:
        raise NotImplementedError

    def spread(self) -> tuple[Decimal, Decimal, str | None]:
        """(lowest, highest) price per image, and the option(s) it varies by."""
        low = self.per_image({})
        return low, low, None

    def price(self, options: dict[str, Any], outputs: int = 1) -> Price:
        """What `outputs` images cost with these options, itemized."""
        rule = getattr(self, "rule", "")
        return Price(units=Decimal(outputs), unit="image", unit_price=self.per_image(options),
                     currency=self.currency, rule=rule, taken=self.taken, source=self.source)


class Flat(_Rule):
    """The same price whatever the options."""

    rule: Literal["flat"]
    usd: Decimal

    def per_image(self, options: dict[str, Any]) -> Decimal:
        return self.usd


class ByParam(_Rule):
    """Priced by one option's value: rendering speed, resolution."""

    rule: Literal["by_param"]
    param: str
    default: str
    usd: dict[str, Decimal]

    @model_validator(mode="after")
    def _default_priced(self) -> ByParam:
        if self.default not in self.usd:
            raise ValueError(f"default {self.default!r} has no price")
        return self

    def per_image(self, options: dict[str, Any]) -> Decimal:
        return self.usd[str(options.get(self.param, self.default))]

    def spread(self) -> tuple[Decimal, Decimal, str | None]:
        return min(self.usd.values()), max(self.usd.values()), self.param


class QualitySize(_Rule):
    """Priced by quality, and by whether the output is square or rectangular."""

    rule: Literal["quality_size"]
    default_quality: str
    square: dict[str, Decimal]
    rectangular: dict[str, Decimal]

    def per_image(self, options: dict[str, Any]) -> Decimal:
        quality = str(options.get("quality", self.default_quality))
        size = str(options.get("size", "auto"))
        width, _, height = size.partition("*")
        table = self.rectangular if height and width != height else self.square
        return table[quality]

    def spread(self) -> tuple[Decimal, Decimal, str | None]:
        prices = [*self.square.values(), *self.rectangular.values()]
        return min(prices), max(prices), "quality and size"


class Credits(_Rule):
    """Priced in provider credits (Stability: 1 credit = 0.01 USD)."""

    rule: Literal["credits"]
    credits: Decimal
    credit_usd: Decimal = Decimal("0.01")

    def per_image(self, options: dict[str, Any]) -> Decimal:
        return self.credits * self.credit_usd

    def price(self, options: dict[str, Any], outputs: int = 1) -> Price:
        return Price(units=self.credits * outputs, unit="credit", unit_price=self.credit_usd,
                     currency=self.currency, rule=self.rule, taken=self.taken,
                     source=self.source)


PricingRule = Flat | ByParam | QualitySize | Credits
