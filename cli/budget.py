"""`editq budget`: set and show a tenant's monthly budgets, straight on the database (as
`editq keys` does), without minting a key."""

from __future__ import annotations

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from cli.database import load_settings, require_database
from shared.models import Tenant


@click.group()
def budget() -> None:
    """A tenant's monthly budgets (USD): the tenant's, and one per model."""


def _tenant(session: Session, name: str) -> Tenant:
    row = session.scalar(select(Tenant).where(Tenant.name == name))
    if row is None:
        raise click.ClickException(f"no tenant {name!r} (`editq keys list` shows the tenants)")
    return row


@budget.command("set")
@click.argument("tenant")
@click.argument("usd")
@click.option("--model", default=None, help="the budget of this one model, not the tenant's")
def budget_set(tenant: str, usd: str, model: str | None) -> None:
    """Set TENANT's monthly budget to USD ("none" removes it). Jobs that would take the
    month's spend plus what is in flight over it are refused (402 budget_exceeded)."""
    from shared.db import session_scope
    from shared.errors import EditqError
    from shared.providers.catalog import load_catalog
    from shared.tenants import parse_usd, set_limits

    settings = load_settings()
    require_database(settings)
    clear = usd.strip().lower() == "none"
    try:
        amount = None if clear else parse_usd(usd, "USD")
        if model is not None:
            model = load_catalog(price_overrides=settings.pricing_overrides()).get(model).id
    except EditqError as exc:
        raise click.BadParameter(exc.message) from None
    with session_scope(settings.database_url) as session:
        row = _tenant(session, tenant)
        if model is None:
            set_limits(session, row, monthly_budget=amount, clear_budget=clear)
        else:
            set_limits(session, row, model_budgets={model: amount})
        session.commit()
    scope = f"{tenant}'s budget for {model}" if model else f"{tenant}'s monthly budget"
    click.echo(f"{scope}: " + ("none" if amount is None else f"{amount.normalize():f} USD"))


@budget.command("show")
@click.argument("tenant")
@click.option("--json", "as_json", is_flag=True, help="print it as JSON (as GET /v1/budget)")
def budget_show(tenant: str, as_json: bool) -> None:
    """TENANT's plan and each budget this month: spent, in flight, remaining."""
    from cli.output import make_console, print_json, say
    from cli.tables import row, table
    from shared.db import session_scope
    from shared.money.budgets import standing

    settings = load_settings()
    require_database(settings)
    with session_scope(settings.database_url) as session:
        view = standing(session, settings, _tenant(session, tenant).id).as_dict()
    if as_json:
        print_json(view)
        return
    console = make_console()
    limit = "unlimited" if view["plan_limit"] is None else view["plan_limit"]
    say(
        console,
        f"{tenant}: plan {view['plan']}, {view['plan_used']} of {limit} edits "
        f"this {view['period']}",
    )
    if not view["budgets"]:
        say(console, "no budget (set one with `editq budget set`)")
        return
    made = table(
        "scope",
        "budget",
        "spent",
        "in flight",
        "remaining",
        right=("budget", "spent", "in flight", "remaining"),
        wrap=("scope",),
    )
    for use in view["budgets"]:
        row(made, use["scope"], use["budget"], use["spent"], use["in_flight"], use["remaining"])
    console.print(made)
