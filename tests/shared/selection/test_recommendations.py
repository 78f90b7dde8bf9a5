"""Recommendations computed from seeded job history, over real databases.

Each test measures a window of its own far in the future (`now=`), so the jobs
other modules leave in the session's database never count.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db import session_scope
from shared.models import Comparison, Job, Tenant
from shared.providers.catalog import load_catalog
from shared.selection.comparisons import new_comparison_id
from shared.selection.recommendations import recommend
from shared.tenants import get_or_create_tenant

CATALOG = load_catalog()
pytestmark = [pytest.mark.timeout(60), pytest.mark.every_database]
_windows = itertools.count()


def fresh_now() -> datetime:
    """An instant 30 days after the previous caller's: its 7-day window is its own."""
    return datetime(2091, 1, 1, tzinfo=UTC) + timedelta(days=30 * next(_windows))


def tenant(session: Session) -> Tenant:
    return get_or_create_tenant(session, f"rec-{uuid.uuid4().hex[:10]}")


def seed(session: Session, owner: Tenant, model: str, now: datetime, *, run_seconds: float,
         succeeded: int, failed: int = 0, days_ago: float = 1.0) -> None:
    spec = CATALOG.get(model)
    for n in range(succeeded + failed):
        finished = now - timedelta(days=days_ago, seconds=n)
        session.add(Job(id=f"job_{uuid.uuid4().hex[:24]}", tenant_id=owner.id,
                        status="succeeded" if n < succeeded else "failed",
                        operation="general_edit", model=model, provider=spec.provider,
                        created_at=finished - timedelta(seconds=run_seconds + 1),
                        started_at=finished - timedelta(seconds=run_seconds),
                        finished_at=finished, updated_at=finished))
    session.flush()


def vote(session: Session, owner: Tenant, model: str, times: int = 1) -> None:
    for _ in range(times):
        session.add(Comparison(id=new_comparison_id(), tenant_id=owner.id,
                               operation="general_edit", models=[model, "qwen-edit"],
                               metadata_={}, vote_model=model))
    session.flush()


def ask(session: Session, settings: Settings, owner: Tenant, now: datetime,
        **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("operation", "general_edit")
    return recommend(session, settings, CATALOG, owner.id, now=now, **kwargs)


def test_fastest_and_most_reliable_come_from_the_window_of_finished_jobs(
        settings: Settings) -> None:
    now = fresh_now()
    with session_scope(settings.database_url) as session:
        owner = tenant(session)
        # given flux-kontext-pro fast but flaky, seededit-v3 slower and always right
        seed(session, owner, "flux-kontext-pro", now, run_seconds=2.0, succeeded=6, failed=4)
        seed(session, owner, "seededit-v3", now, run_seconds=5.0, succeeded=8)
        # and qwen-edit faster still, but its jobs finished before the 7-day window
        seed(session, owner, "qwen-edit", now, run_seconds=0.5, succeeded=9, days_ago=8)
        # when recommendations are asked for a general edit
        answer = ask(session, settings, owner, now)
    picks = answer["picks"]
    # then the fastest is the shortest median run in the window, with its figures
    assert picks["fastest"]["model"] == "flux-kontext-pro"
    assert picks["fastest"]["figures"]["p50_run_seconds"] == 2.0
    assert "2.0 s over 6 succeeded jobs in 7 days" in picks["fastest"]["reason"]
    # and the most reliable is the highest share succeeded
    assert picks["most_reliable"]["model"] == "seededit-v3"
    assert picks["most_reliable"]["figures"]["success_rate"] == 1.0
    flux = next(m for m in answer["models"] if m["id"] == "flux-kontext-pro")
    assert flux["measured"] == {"succeeded": 6, "failed": 4, "too_few_jobs": False,
                                "p50_run_seconds": 2.0, "success_rate": 0.6}
    # and qwen-edit, measured outside the window, has too few jobs to show a figure
    qwen = next(m for m in answer["models"] if m["id"] == "qwen-edit")
    assert qwen["measured"]["too_few_jobs"] is True
    assert qwen["measured"]["p50_run_seconds"] is None


def test_reliability_compares_every_model_with_enough_finished_jobs(
        settings: Settings) -> None:
    now = fresh_now()
    with session_scope(settings.database_url) as session:
        owner = tenant(session)
        # given one model that succeeded 4 of 5 times and one that succeeded 5 of 25
        seed(session, owner, "step1x-edit", now, run_seconds=1.0, succeeded=4, failed=1)
        seed(session, owner, "hidream-e1-full", now, run_seconds=1.0, succeeded=5, failed=20)
        answer = ask(session, settings, owner, now)
    # then the more reliable one wins, though it has fewer than 5 successes
    assert answer["picks"]["most_reliable"]["model"] == "step1x-edit"
    assert answer["picks"]["most_reliable"]["figures"]["success_rate"] == 0.8
    # but its median run time needs 5 successes to be shown
    assert answer["picks"]["fastest"]["model"] == "hidream-e1-full"


def test_models_with_too_few_jobs_say_so_instead_of_a_figure(settings: Settings) -> None:
    now = fresh_now()
    with session_scope(settings.database_url) as session:
        owner = tenant(session)
        # given 4 jobs of one model, one short of the 5 needed
        seed(session, owner, "qwen-edit", now, run_seconds=1.0, succeeded=4)
        answer = ask(session, settings, owner, now)
    for pick in ("fastest", "most_reliable"):
        assert answer["picks"][pick]["model"] is None
        assert answer["picks"][pick]["reason"].startswith("too few jobs to measure")
        assert "qwen-edit 4" in answer["picks"][pick]["reason"]
    assert all(m["measured"]["too_few_jobs"] for m in answer["models"])


def test_cheapest_best_tier_within_max_cost_and_the_tenants_pick(settings: Settings) -> None:
    now = fresh_now()
    with session_scope(settings.database_url) as session:
        owner, other = tenant(session), tenant(session)
        # given the tenant voted twice for flux-kontext-pro and once for seededit-v3,
        # and another tenant voted thrice for qwen-edit
        vote(session, owner, "flux-kontext-pro", 2)
        vote(session, owner, "seededit-v3")
        vote(session, other, "qwen-edit", 3)
        answer = ask(session, settings, owner, now, max_cost=Decimal("0.05"))
    picks = answer["picks"]
    # then the cheapest is the lowest price (the demo model is not offered for a prompt)
    assert picks["cheapest"]["model"] in ("qwen-edit", "qwen-edit-plus")
    assert picks["cheapest"]["figures"]["price_usd"] == "0.02"
    # and the best tier within 0.05 USD is the cheapest mid-tier model, not a premium
    # one over that price
    assert picks["best_tier"]["model"] == "wan-2.5-edit"
    assert picks["best_tier"]["figures"]["tier"] == "mid"
    assert "within 0.05 USD" in picks["best_tier"]["reason"]
    # and the tenant's pick is its own most voted model, not another tenant's
    assert picks["tenant_pick"]["model"] == "flux-kontext-pro"
    assert picks["tenant_pick"]["figures"]["votes"] == 2
    # and the demo model is labelled and excluded for a prompt-driven edit
    pillow = next(m for m in answer["models"] if m["id"] == "local-pillow")
    assert pillow["demo"] is True and pillow["available"] is False
    assert "demo" in pillow["unavailable_reason"]
    assert all(p["model"] != "local-pillow" for p in picks.values())
    # and the default is explained by the same answer
    assert answer["default"]["model"] == "qwen-edit"
    assert "names no model gets qwen-edit" in answer["default"]["reason"]


def test_a_model_whose_breaker_is_open_is_unavailable_and_never_picked(
        settings: Settings) -> None:
    now = fresh_now()
    with session_scope(settings.database_url) as session:
        owner = tenant(session)
        seed(session, owner, "qwen-edit", now, run_seconds=0.5, succeeded=9)
        answer = ask(session, settings, owner, now, operation="inpaint",
                     breaker_open=lambda provider: provider == "wavespeed")
    by_id = {m["id"]: m for m in answer["models"]}
    assert by_id["gpt-image-1-edit"]["available"] is False
    assert "circuit breaker is open" in by_id["gpt-image-1-edit"]["unavailable_reason"]
    assert by_id["stability-inpaint"]["available"] is True
    assert {p["model"] for p in answer["picks"].values()} <= {
        m for m, row in by_id.items() if row["available"]} | {None}


def test_the_demo_model_is_recommended_where_no_prompt_drives_the_edit(
        settings: Settings) -> None:
    with session_scope(settings.database_url) as session:
        answer = ask(session, settings, tenant(session), fresh_now(), operation="grayscale")
    assert answer["picks"]["cheapest"]["model"] == "local-pillow"
    assert answer["default"]["model"] == "local-pillow"


def test_a_size_over_a_models_limit_excludes_it(settings: Settings) -> None:
    with session_scope(settings.database_url) as session:
        answer = ask(session, settings, tenant(session), fresh_now(), width=3000, height=2000)
    excluded = {e["id"]: e["reason"] for e in answer["excluded"]}
    assert "takes images up to 2048x2048" in excluded["qwen-edit"]
    assert answer["picks"]["cheapest"]["model"] not in excluded
