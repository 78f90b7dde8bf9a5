"""Tables the CLI prints, shaped to fit 80 columns: a long cell wraps (`fold`) rather than
losing its end, so a path or an id is always there whole to copy."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text


def table(
    *columns: str, title: str | None = None, right: tuple[str, ...] = (), wrap: tuple[str, ...] = ()
) -> Table:
    """A borderless table; `right` columns are right-aligned, `wrap` ones fold when long
    (the others are short, and never wrap)."""
    made = Table(box=box.SIMPLE, title=title, title_justify="left", show_edge=False)
    for column in columns:
        made.add_column(
            column,
            justify="right" if column in right else "left",
            overflow="fold",
            no_wrap=column not in wrap,
        )
    return made


def row(made: Table, *cells: Any) -> None:
    """Cells shown as they are: never read as rich markup."""
    made.add_row(*(cell if isinstance(cell, Text) else Text(str(cell)) for cell in cells))


def models_table(models: list[dict[str, Any]], ranked: bool = False) -> Table:
    """The catalog by tier, in the order tiers first appear (a ranking: in its order, each
    with its tier)."""
    if ranked:
        made = table("#", "model", "tier", "USD", "operations", right=("#",), wrap=("operations",))
        for model in models:
            row(
                made,
                model["rank"],
                model["id"],
                model["tier"],
                _price(model),
                " ".join(model["operations"]),
            )
        return made
    made = table("model", "USD", "operations", wrap=("operations",))
    tiers: dict[str, list[dict[str, Any]]] = {}
    for model in models:
        tiers.setdefault(model["tier"], []).append(model)
    for tier, members in tiers.items():
        made.add_row(Text(f"{tier}:", style="bold"), "", "")
        for model in members:
            row(made, "  " + model["id"], _price(model), " ".join(model["operations"]))
    return made


def _price(model: dict[str, Any]) -> str:
    """USD per image: one price, or the range its options span."""
    spread = model.get("price_range") or {}
    if spread.get("min") != spread.get("max"):
        return f"{spread['min']}-{spread['max']}"
    return str(model["price_usd"])
