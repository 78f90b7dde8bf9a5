"""`editq keys`: create, list and revoke API keys, straight on the database.

A key is shown once, when it is created; afterwards it is known by its id and its
first characters (`prefix`), never in full: only its SHA-256 is stored.
"""

from __future__ import annotations

from datetime import datetime

import click
from sqlalchemy import select

from cli.database import load_settings, require_database
from shared.models import ApiKey, Tenant

SHOWN_ID = 12


@click.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--tenant", required=True, help="tenant name; created if new")
@click.option("--admin", is_flag=True, help="the key may see every tenant")
@click.option("--monthly-budget", "budget", metavar="USD",
              help="the tenant's monthly budget (\"none\" removes it)")
@click.option("--model-budget", "model_budgets", multiple=True, metavar="MODEL=USD",
              help="a monthly budget for one model, repeatable")
@click.option("--plan", default=None, help="the tenant's plan (a name in EDITQ_PLAN_LIMITS)")
@click.option("--webhook-url", default=None,
              help="where the tenant's job events go by default (\"none\" removes it)")
@click.option("--keep-inputs-days", "keep_inputs", metavar="DAYS", default=None,
              help="how long the tenant's inputs are kept after their job ends, in place of "
                   "EDITQ_KEEP_INPUTS_DAYS (\"forever\"; \"default\" removes it)")
@click.option("--keep-outputs-days", "keep_outputs", metavar="DAYS", default=None,
              help="the same for outputs (EDITQ_KEEP_OUTPUTS_DAYS)")
@click.option("--bulk-weight", "bulk_weight", type=click.IntRange(1, 1000), default=None,
              help="the tenant's weight when tenants share bulk's part of a provider's limits "
                   "(default 1: equal parts)")
@click.option("--existing", is_flag=True,
              help="a new key for a tenant that exists; refuse to create one")
def keys_create(tenant: str, admin: bool, budget: str | None, model_budgets: tuple[str, ...],
                plan: str | None, webhook_url: str | None, keep_inputs: str | None,
                keep_outputs: str | None, existing: bool, bulk_weight: int | None) -> None:
    """Create an API key, and set the tenant's limits. The key is shown once, as the last
    word of the output."""
    from shared.db import session_scope
    from shared.errors import EditqError
    from shared.providers.catalog import load_catalog
    from shared.tenants import create_api_key, get_or_create_tenant, parse_usd, set_limits

    settings = load_settings()
    require_database(settings)
    if plan is not None and plan not in settings.plan_limits:
        raise click.BadParameter(f"{plan!r} is not one of {', '.join(settings.plan_limits)}",
                                 param_hint="--plan")
    try:
        clear = budget is not None and budget.strip().lower() == "none"
        monthly = parse_usd(budget, "--monthly-budget") if budget and not clear else None
        per_model = {}
        catalog = load_catalog(price_overrides=settings.pricing_overrides())
        for pair in model_budgets:
            model, sep, amount = pair.partition("=")
            if not sep:
                raise click.BadParameter(f"{pair!r} is not MODEL=USD", param_hint="--model-budget")
            per_model[catalog.get(model.strip()).id] = parse_usd(amount, f"budget of {model}")
        if webhook_url and webhook_url.lower() != "none":
            from shared.address_guard import check_webhook_url

            check_webhook_url(webhook_url, settings.webhook_allowed_host_set)
    except EditqError as exc:
        raise click.BadParameter(exc.message) from None
    with session_scope(settings.database_url) as session:
        if existing and session.scalar(select(Tenant.id).where(Tenant.name == tenant)) is None:
            raise click.ClickException(f"no tenant {tenant!r} (without --existing it would "
                                       "be created)")
        row = get_or_create_tenant(session, tenant)
        set_limits(session, row, monthly_budget=monthly, clear_budget=clear,
                   model_budgets=per_model, plan=plan)
        if webhook_url is not None:
            row.webhook_url = None if webhook_url.lower() == "none" else webhook_url
        for which, given in (("inputs", keep_inputs), ("outputs", keep_outputs)):
            if given is not None:
                setattr(row, f"keep_{which}_seconds", _keep_seconds(given, which))
        if bulk_weight is not None:
            row.bulk_weight = bulk_weight
        key = create_api_key(session, tenant, admin=admin)
        limits = [f"plan {row.plan or settings.default_plan}"]
        if (row.bulk_weight or 1) != 1:
            limits.append(f"bulk weight {row.bulk_weight}")
        if row.monthly_budget is not None:
            limits.append(f"monthly budget {row.monthly_budget.normalize():f} USD")
        limits += [f"{m} {v.normalize():f} USD/month" for m, v in per_model.items()]
        if row.webhook_url:
            limits.append(f"webhooks to {row.webhook_url.split('?')[0]}")
        for which in ("inputs", "outputs"):
            kept = getattr(row, f"keep_{which}_seconds")
            if kept is not None:
                limits.append(f"{which} kept " + ("for good" if kept < 0 else
                                                  f"{kept / 86_400:g} day(s)"))
    click.echo(f"tenant {tenant}: {', '.join(limits)}")
    click.echo(f"API key for tenant {tenant} (shown once, store it now): {key}")


@keys.command("list")
@click.option("--tenant", default=None, help="only this tenant's keys")
@click.option("--all", "show_all", is_flag=True, help="revoked keys too")
def keys_list(tenant: str | None, show_all: bool) -> None:
    """Every key: id, prefix, tenant, admin, created, last used, revoked; never the key."""
    from cli.output import make_console
    from cli.tables import row, table
    from shared.db import session_scope

    settings = load_settings()
    require_database(settings)
    with session_scope(settings.database_url) as session:
        query = (select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
                 .order_by(Tenant.name, ApiKey.created_at))
        if tenant is not None:
            query = query.where(Tenant.name == tenant)
        if not show_all:
            query = query.where(ApiKey.revoked_at.is_(None))
        rows = session.execute(query).all()
    # An id's first 12 characters name it (`keys revoke` takes any unique start of one).
    made = table("id", "prefix", "tenant", "admin", "created", "last used",
                 *(["revoked"] if show_all else []), wrap=("tenant", "last used", "revoked"))
    for key, name in rows:
        row(made, key.id[:SHOWN_ID], key.prefix + "...", name, "yes" if key.is_admin else "",
            _day(key.created_at), _day(key.last_used_at) or "never",
            *([_day(key.revoked_at)] if show_all else []))
    make_console().print(made)
    click.echo(f"{len(rows)} key(s)")


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke the key whose id is or starts with KEY_ID (from `editq keys list`): it is
    refused from now on."""
    from shared.db import session_scope, utcnow

    if len(key_id) < 8:
        raise click.BadParameter("give at least the first 8 characters of the id",
                                 param_hint="KEY_ID")
    settings = load_settings()
    require_database(settings)
    with session_scope(settings.database_url) as session:
        found = session.scalars(select(ApiKey).where(
            ApiKey.id.startswith(key_id, autoescape=True)).limit(2)).all()
        if len(found) != 1:
            raise click.ClickException(
                f"{'no key' if not found else 'more than one key'} with an id starting "
                f"{key_id!r} (see `editq keys list`)")
        key = found[0]
        key_id = key.id
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            session.commit()
            click.echo(f"revoked key {key_id} ({key.prefix}...)")
        else:
            click.echo(f"key {key_id} was already revoked")


def _keep_seconds(given: str, which: str) -> int | None:
    """--keep-*-days: days, "forever" (-1) or "default" (None: the deployment's)."""
    from shared.retention.policy import DAY, FOREVER, MAX_DAYS

    text = given.strip().lower()
    if text == "default":
        return None
    if text == "forever":
        return FOREVER
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not 0 <= days <= MAX_DAYS:
        raise click.BadParameter(f"{given!r} is not a number of days (0 to {MAX_DAYS}), "
                                 "\"forever\" or \"default\"", param_hint=f"--keep-{which}-days")
    return round(days * DAY)


def _day(value: datetime | None) -> str:
    """A time to the minute, UTC: enough to tell keys apart, short enough for 80 columns."""
    return value.strftime("%Y-%m-%d %H:%M") if value else ""
