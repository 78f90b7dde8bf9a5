"""Recommendations: which model to use for a request, from figures this deployment measured.

Each pick (cheapest, best tier within a price, fastest, most reliable, the
tenant's own pick) comes with the figures behind it and a one-line reason.
Speed and reliability are read from this deployment's own finished jobs of the
last `recommendation_window_days`; a model with fewer than
`recommendation_min_jobs` of them says so rather than showing a figure that
means nothing. A model whose provider's circuit breaker is open is shown as
unavailable and never picked. The offline demo model is never recommended for
an edit a prompt drives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from statistics import median
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db import utcnow
from shared.errors import UnsupportedOperation
from shared.formats import money
from shared.jobs.states import FAILED, SUCCEEDED
from shared.models import Job
from shared.providers.catalog import Catalog, ModelSpec
from shared.selection.comparisons import votes_by_model

# Quality order for "best tier": a priced-by-quality model ranks with mid at its default
# quality; a specialized model is made for one task, above budget general models.
TIER_RANK = {"premium": 4, "mid": 3, "variable": 3, "specialized": 2, "budget": 1}
# Run times are the median of at most this many of a model's latest succeeded jobs.
RUN_TIME_SAMPLE = 500


@dataclass(frozen=True)
class Measured:
    succeeded: int
    failed: int
    p50_run_seconds: float | None

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.finished if self.finished else None


def measure(session: Session, models: list[str], since: datetime) -> dict[str, Measured]:
    """Each model's succeeded and failed jobs since `since`, and its p50 run time."""
    counts: dict[str, dict[str, int]] = {m: {} for m in models}
    for model, status, count in session.execute(
            select(Job.model, Job.status, func.count())
            .where(Job.model.in_(models), Job.status.in_((SUCCEEDED, FAILED)),
                   Job.finished_at >= since)
            .group_by(Job.model, Job.status)):
        counts[model][status] = count
    out = {}
    for model in models:
        runs = [(end - start).total_seconds() for start, end in session.execute(
            select(Job.started_at, Job.finished_at)
            .where(Job.model == model, Job.status == SUCCEEDED, Job.finished_at >= since,
                   Job.started_at.is_not(None))
            .order_by(Job.finished_at.desc()).limit(RUN_TIME_SAMPLE)) if start and end]
        out[model] = Measured(counts[model].get(SUCCEEDED, 0), counts[model].get(FAILED, 0),
                              round(median(runs), 3) if runs else None)
    return out


def _pick(model: ModelSpec | None, reason: str, figures: dict[str, Any]) -> dict[str, Any]:
    return {"model": model.id if model else None, "reason": reason, "figures": figures}


def recommend(session: Session, settings: Settings, catalog: Catalog, tenant_id: str, *,
              operation: str, width: int | None = None, height: int | None = None,
              max_cost: Decimal | None = None,
              breaker_open: Callable[[str], bool] = lambda provider: False,
              now: datetime | None = None) -> dict[str, Any]:
    """The picks for `operation` at `width` x `height`, each with its figures and reason."""
    candidates = catalog.for_operation(operation)
    if not candidates:
        raise UnsupportedOperation(f"no model serves operation {operation!r}",
                                   operation=operation, field="operation")
    window = settings.recommendation_window_days
    least = settings.recommendation_min_jobs
    since = (now or utcnow()) - timedelta(days=window)
    measured = measure(session, [m.id for m in candidates], since)
    votes = votes_by_model(session, tenant_id)

    excluded: list[dict[str, str]] = []
    rows: list[dict[str, Any]] = []
    usable: list[ModelSpec] = []
    for spec in candidates:
        stats = measured[spec.id]
        why_not = None
        if not spec.fits(width, height):
            why_not = f"takes images up to {spec.max_resolution[0]}x{spec.max_resolution[1]}"
        elif spec.demo and operation in spec.prompt_required:
            why_not = ("the offline demo model: it reads a few words of the prompt, it "
                       "does not edit by it")
        elif breaker_open(spec.provider):
            why_not = f"unavailable: {spec.provider}'s circuit breaker is open"
        rows.append({
            "id": spec.id, "provider": spec.provider, "tier": spec.tier, "demo": spec.demo,
            "price_usd": money(spec.estimate()), "price_range": spec.price_range()["text"],
            "within_max_cost": max_cost is None or spec.estimate() <= max_cost,
            "available": why_not is None, "unavailable_reason": why_not,
            "measured": _figures(stats, least), "votes": votes.get(spec.id, 0)})
        if why_not is None:
            usable.append(spec)
        else:
            excluded.append({"id": spec.id, "reason": why_not})

    def price(spec: ModelSpec) -> Decimal:
        return spec.estimate()

    def figures(spec: ModelSpec) -> dict[str, Any]:
        return {"price_usd": money(price(spec)), "tier": spec.tier,
                **_figures(measured[spec.id], least), "votes": votes.get(spec.id, 0)}

    picks: dict[str, dict[str, Any]] = {}
    if not usable:
        none = _pick(None, "no model can take this request now", {})
        picks = {k: none for k in ("cheapest", "best_tier", "fastest", "most_reliable",
                                   "tenant_pick")}
    else:
        cheap = min(usable, key=lambda s: (price(s), -TIER_RANK[s.tier], s.id))
        picks["cheapest"] = _pick(cheap, f"the lowest price for {operation}: "
                                         f"{money(price(cheap))} USD per image", figures(cheap))
        affordable = [s for s in usable if max_cost is None or price(s) <= max_cost]
        if affordable:
            best = max(affordable, key=lambda s: (TIER_RANK[s.tier], -price(s), s.id))
            within = f" within {money(max_cost)} USD" if max_cost is not None else ""
            picks["best_tier"] = _pick(best, f"the highest tier{within}: {best.tier}, "
                                             f"{money(price(best))} USD per image", figures(best))
        else:
            picks["best_tier"] = _pick(None, f"no available model costs at most "
                                             f"{money(max_cost or Decimal(0))} USD", {})
        picks["fastest"] = _measured_pick(
            usable, measured, least, window, figures,
            enough=lambda s: measured[s.id].succeeded >= least, counted="succeeded",
            key=lambda s: measured[s.id].p50_run_seconds or 0.0,
            say=lambda s: f"the shortest median run: {measured[s.id].p50_run_seconds} s over "
                          f"{measured[s.id].succeeded} succeeded jobs in {window} days")
        picks["most_reliable"] = _measured_pick(
            usable, measured, least, window, figures,
            enough=lambda s: measured[s.id].finished >= least, counted="finished",
            key=lambda s: -(measured[s.id].success_rate or 0.0),
            say=lambda s: f"the highest share succeeded: {measured[s.id].succeeded} of "
                          f"{measured[s.id].finished} finished jobs in {window} days")
        voted = [s for s in usable if votes.get(s.id)]
        if voted:
            pick = max(voted, key=lambda s: (votes[s.id], -price(s), s.id))
            picks["tenant_pick"] = _pick(pick, f"your most preferred in comparisons: "
                                               f"{votes[pick.id]} vote(s)", figures(pick))
        else:
            picks["tenant_pick"] = _pick(None, "no comparison votes yet: vote for an output "
                                               "in a comparison to make one", {})
    return {"operation": operation, "width": width, "height": height,
            "max_cost": money(max_cost) if max_cost is not None else None,
            "window_days": window, "min_jobs": least, "picks": picks,
            "default": _default(catalog, operation, usable, figures),
            "models": rows, "excluded": excluded}


def _figures(stats: Measured, least: int) -> dict[str, Any]:
    enough = stats.finished >= least
    return {"succeeded": stats.succeeded, "failed": stats.failed, "too_few_jobs": not enough,
            "p50_run_seconds": stats.p50_run_seconds if stats.succeeded >= least else None,
            "success_rate": round(stats.success_rate, 4)
            if enough and stats.success_rate is not None else None}


def _measured_pick(usable: list[ModelSpec], measured: dict[str, Measured], least: int,
                   window: int, figures: Callable[[ModelSpec], dict[str, Any]], *,
                   enough: Callable[[ModelSpec], bool], counted: str,
                   key: Callable[[ModelSpec], float],
                   say: Callable[[ModelSpec], str]) -> dict[str, Any]:
    """The best by `key` among the models measured well enough to be compared."""
    known = [s for s in usable if enough(s)]
    if not known:
        counts = ", ".join(f"{s.id} {getattr(measured[s.id], counted)}" for s in usable[:6])
        return _pick(None, f"too few jobs to measure: a model needs {least} {counted} jobs "
                           f"in {window} days (have: {counts})", {})
    best = min(known, key=lambda s: (key(s), s.estimate(), s.id))
    return _pick(best, say(best), figures(best))


def _default(catalog: Catalog, operation: str, usable: list[ModelSpec],
             figures: Callable[[ModelSpec], dict[str, Any]]) -> dict[str, Any]:
    """Why a job that names no model gets the one it gets."""
    model_id = catalog.defaults.get(operation)
    if model_id is None:
        return _pick(None, f"a job for {operation} must name its model", {})
    spec = catalog.get(model_id)
    state = "" if spec in usable else "; it cannot take this request now (see `excluded`)"
    return _pick(spec, f"a job for {operation} that names no model gets {spec.id}: the "
                       f"catalog's default, {spec.tier} tier at {money(spec.estimate())} USD"
                       f"{state}", figures(spec))
