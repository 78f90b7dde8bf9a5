"""The ledger: which provider calls are charged, at what price, and never twice.

A real database and S3 server; providers are scripted stand-ins (the real
clients against the simulators are in tests/integration/test_costs.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from shared.config import Settings
from shared.db import session_scope
from shared.errors import ProviderError, ProviderOutcomeUnknown, StorageUnavailable
from shared.jobs import attempt, lookup
from shared.jobs.finish import adopt
from shared.models import Charge, Job, JobEvent
from shared.money.ledger import charge, charges_for
from shared.providers.base import (
    ImageEditOptions,
    Submitted,
)
from shared.providers.catalog import ModelSpec
from shared.services import Services
from shared.storage import Storage
from shared.tenants import Principal
from tests.conftest import make_settings
from tests.helpers import image_bytes, output_key_of
from tests.shared.scripted import Harness, Scripted

pytestmark = [pytest.mark.timeout(60), pytest.mark.every_database]

D = Decimal
@pytest.fixture
def settings(database_url: str, s3_url: str, bucket: str) -> Settings:
    # Remote models validate that their provider is configured; nothing is sent to it.
    # The engine looks again within 50 ms (tests wait less), and retries come at once.
    return make_settings(database_url=database_url, s3_endpoint_url=s3_url, s3_bucket=bucket,
                         wavespeed_api_key="unused", stability_api_key="unused",
                         follow_initial_seconds=0.05, follow_max_seconds=0.2,
                         retry_backoff_base_seconds=0.01, retry_backoff_max_seconds=0.1)


def ledger(settings: Settings, job_id: str) -> list[Charge]:
    with session_scope(settings.database_url) as session:
        return charges_for(session, job_id)


def job_row(settings: Settings, job_id: str) -> Job:
    with session_scope(settings.database_url) as session:
        return session.scalars(select(Job).where(Job.id == job_id)).one()


def events(settings: Settings, job_id: str) -> list[str]:
    with session_scope(settings.database_url) as session:
        return list(session.scalars(select(JobEvent.type).where(JobEvent.job_id == job_id)
                                    .order_by(JobEvent.seq)))


def cancel(settings: Settings, principal: Principal, job_id: str) -> Job:
    with session_scope(settings.database_url) as session:
        return lookup.cancel(session, principal.tenant_id, job_id)


def test_success_is_charged_once_at_the_catalog_price_it_used(
        settings: Settings, storage: Storage, submit: Any, use: Any, services: Services,
        harness: Harness) -> None:
    # given a qwen-edit job (0.02 USD per image) and a provider that succeeds
    job_id = submit("qwen-edit")
    use(Scripted([image_bytes()]))
    # when it runs
    assert harness.run(job_id).action == "succeeded"
    # then one ledger row itemizes the call, with the price and the date it was taken
    [row] = ledger(settings, job_id)
    assert (row.units, row.unit, row.unit_price, row.amount) == (D(1), "image", D("0.02"),
                                                                 D("0.02"))
    assert (row.provider, row.model, row.operation, row.attempt, row.reason) == (
        "wavespeed", "qwen-edit", "general_edit", 1, "succeeded")
    assert (row.price_rule, row.price_taken, row.currency) == ("flat", date(2026, 11, 26),
                                                               "USD")
    assert row.charged_on == row.charged_at.date()
    # and the job's actual cost is what the ledger holds
    assert job_row(settings, job_id).cost_actual == D("0.02")


def test_a_price_by_option_is_charged_as_the_options_say(
        settings: Settings, storage: Storage, submit: Any, use: Any, services: Services,
        harness: Harness) -> None:
    job_id = submit("gpt-image-1-edit", options={"quality": "high", "size": "1024*1536"})
    use(Scripted([image_bytes()]))
    harness.run(job_id)
    [row] = ledger(settings, job_id)
    assert (row.price_rule, row.unit_price, row.amount) == ("quality_size", D("0.25"), D("0.25"))
    assert job_row(settings, job_id).cost_estimated == D("0.25")


def test_stability_calls_are_itemized_in_credits(
        settings: Settings, storage: Storage, submit: Any, use: Any, services: Services,
        harness: Harness) -> None:
    # given a conservative upscale (40 credits at 0.01 USD)
    job_id = submit("stability-upscale-conservative", operation="upscale_conservative")
    use(Scripted([image_bytes()]))
    harness.run(job_id)
    [row] = ledger(settings, job_id)
    assert (row.units, row.unit, row.unit_price, row.amount) == (D(40), "credit", D("0.01"),
                                                                 D("0.40"))


def test_two_failed_attempts_then_success_is_charged_once(
        settings: Settings, storage: Storage, submit: Any, use: Any, services: Services,
        harness: Harness) -> None:
    # given a provider that is unavailable twice (nothing billed), then succeeds
    job_id = submit("flux-kontext-pro")
    use(Scripted([ProviderError("503", code="provider_unavailable", retryable=True),
                  ProviderError("task 5003", code="provider_unavailable", retryable=True,
                                task_failed=True),
                  image_bytes()]))
    # when the job runs, and runs again each time it is requeued
    outcomes = [harness.run(job_id).action for _ in range(3)]
    # then it took three attempts and one charge, for the third call
    assert outcomes == ["retry", "retry", "succeeded"]
    [row] = ledger(settings, job_id)
    assert (row.attempt, row.amount) == (3, D("0.04"))
    job = job_row(settings, job_id)
    assert (job.attempts, job.cost_actual) == (3, D("0.04"))


def test_a_charge_says_whether_it_wrote_and_only_a_second_one_logs_an_error(
        settings: Settings, submit: Any, services: Services,
        caplog: pytest.LogCaptureFixture) -> None:
    # given a job on its first attempt (claimed: attempts is 1)
    job_id = submit("qwen-edit")
    price = services.catalog.get("qwen-edit").price()
    with session_scope(settings.database_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(attempts=1))
    caplog.set_level(logging.INFO, logger="shared.money.ledger")
    # when its call is charged: the answer comes from the INSERT itself (RETURNING), not
    # from a driver's row count (SQLAlchemy 2.1 with psycopg answers -1 here)
    with session_scope(settings.database_url) as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
        first = charge(session, job, price, reason="succeeded")
    # then the first charge says it charged, wrote one row and logged nothing
    assert first is True
    assert [(r.attempt, r.amount) for r in ledger(settings, job_id)] == [(1, D("0.02"))]
    assert caplog.records == []
    # when the same call is charged again
    with session_scope(settings.database_url) as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
        second = charge(session, job, price, reason="succeeded")
    # then it says it did not, wrote nothing, and one ERROR line says why
    assert second is False
    assert len(ledger(settings, job_id)) == 1
    assert job_row(settings, job_id).cost_actual == D("0.02")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", f"job {job_id}: attempt 1 is charged already; not charging it again")]


def test_a_redelivered_run_or_a_second_charge_writes_nothing(
        settings: Settings, storage: Storage, submit: Any, use: Any, services: Services,
        harness: Harness) -> None:
    # given a job that has succeeded and been charged
    job_id = submit("qwen-edit")
    use(Scripted([image_bytes()]))
    harness.run(job_id)
    # when its run message is delivered again, and someone tries to charge the call again
    assert harness.run(job_id).action == "skipped"
    spec_price = services.catalog.get("qwen-edit").price()
    with session_scope(settings.database_url) as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
        assert charge(session, job, spec_price, reason="succeeded") is False
    # then the ledger still holds one row, and the database itself refuses a duplicate
    assert len(ledger(settings, job_id)) == 1
    with pytest.raises(IntegrityError), session_scope(settings.database_url) as session:
        row = ledger(settings, job_id)[0]
        session.add(Charge(**{c: getattr(row, c) for c in (
            "job_id", "attempt", "tenant_id", "provider", "model", "operation", "units",
            "unit", "unit_price", "amount", "currency", "price_rule", "price_taken",
            "price_source", "reason", "charged_at", "charged_on")}))
        session.flush()


def test_a_billed_failure_is_charged_and_an_unbilled_one_is_not(
        settings: Settings, storage: Storage, submit: Any, use: Any, services: Services,
        harness: Harness) -> None:
    # given one call that Stability filtered (billed) and one that was moderated (not billed)
    filtered = submit("stability-erase", operation="erase", prompt=None,
                      mask=image_bytes((96, 96)))
    moderated = submit("stability-erase", operation="erase", prompt=None,
                       mask=image_bytes((96, 96)))
    use(Scripted([ProviderError("filtered", code="content_filtered", task_failed=True,
                                billed=True),
                  ProviderError("moderated", code="content_moderated")]))
    # when both run
    harness.run(filtered)
    harness.run(moderated)
    # then both failed; only the billed call is charged, and both costs are known
    [row] = ledger(settings, filtered)
    assert (row.reason, row.amount) == ("content_filtered", D("0.05"))
    assert job_row(settings, filtered).cost_actual == D("0.05")
    assert ledger(settings, moderated) == []
    assert job_row(settings, moderated).cost_actual == D(0)


def test_an_unusable_output_was_billed_and_is_charged(
        settings: Settings, storage: Storage, submit: Any, use: Any, services: Services,
        harness: Harness) -> None:
    job_id = submit("qwen-edit")
    use(Scripted([b"<html>not an image</html>"]))
    assert harness.run(job_id).action == "failed"
    [row] = ledger(settings, job_id)
    assert (row.reason, row.amount) == ("provider_bad_output", D("0.02"))


def test_an_unknown_outcome_leaves_the_cost_unknown(
        settings: Settings, storage: Storage, submit: Any, use: Any, services: Services,
        harness: Harness) -> None:
    # given a submit that timed out after it was sent
    job_id = submit("qwen-edit")
    use(Scripted([ProviderOutcomeUnknown("timed out", code="provider_outcome_unknown")]))
    harness.run(job_id)
    # then nothing is charged, and the cost is not claimed to be zero: it is unknown
    job = job_row(settings, job_id)
    assert (job.status, job.error_code, job.cost_actual) == ("failed",
                                                             "provider_outcome_unknown", None)
    assert ledger(settings, job_id) == []


def test_a_job_canceled_while_queued_costs_nothing(
        settings: Settings, principal: Principal, submit: Any) -> None:
    job_id = submit("qwen-edit")
    assert cancel(settings, principal, job_id).cost_actual == D(0)


def test_a_job_canceled_before_its_submit_never_reaches_the_provider(
        settings: Settings, storage: Storage, principal: Principal, submit: Any, use: Any,
        monkeypatch: pytest.MonkeyPatch, services: Services,
        harness: Harness) -> None:
    # given a job canceled after the worker claimed it, before it submitted
    job_id = submit("qwen-edit")
    provider = use(Scripted([image_bytes()]))
    load = attempt._load_inputs

    def load_then_cancel(storage: Storage, job: Job) -> Any:
        cancel(settings, principal, job_id)
        return load(storage, job)

    monkeypatch.setattr(attempt, "_load_inputs", load_then_cancel)
    # when the worker goes on
    assert harness.run(job_id).action == "discarded"
    # then nothing was sent and nothing is owed
    assert provider.submits == 0
    assert job_row(settings, job_id).cost_actual == D(0)


def test_a_call_out_when_canceled_is_followed_and_charged_once_it_completes(
        settings: Settings, storage: Storage, principal: Principal, submit: Any,
        use: Any, services: Services,
        harness: Harness) -> None:
    # given an asynchronous call in flight, then the job canceled
    job_id = submit("ideogram-character", operation="character",
                    options={"rendering_speed": "Quality"})
    canceled: list[Job] = []
    provider = use(Scripted([lambda: canceled.append(cancel(settings, principal, job_id)),
                             image_bytes()], asynchronous=True))
    assert harness.run(job_id).action == "submitted"
    # when the engine keeps looking until the call ends (the cancel lands at its first look)
    assert harness.ended(job_id).action == "discarded"
    assert canceled[0].cost_actual is None  # not known when canceled
    assert provider.seen == ["req-1", "req-1"]
    # then the completed call is charged, its outputs are not kept, and it is settled
    [row] = ledger(settings, job_id)
    assert (row.reason, row.amount, row.provider_request_id) == ("canceled", D("0.20"),
                                                                 "req-1")
    job = job_row(settings, job_id)
    assert (job.status, job.outputs, job.cost_actual, job.provider_state) == (
        "canceled", [], D("0.20"), "settled")
    assert not storage.exists(output_key_of(settings.database_url, job_id))
    assert events(settings, job_id)[-1] == "call_settled"
    # and a worker that would take the job up again finds nothing to follow
    assert adopt(job_id, settings) is None


def test_a_call_out_when_canceled_that_fails_settles_at_zero(
        settings: Settings, storage: Storage, principal: Principal, submit: Any,
        use: Any, services: Services,
        harness: Harness) -> None:
    job_id = submit("qwen-edit")
    use(Scripted([lambda: cancel(settings, principal, job_id) and ProviderError(
        "task 1403", code="provider_task_failed", task_failed=True)], asynchronous=True))
    harness.run(job_id)
    assert harness.ended(job_id).action == "discarded"
    job = job_row(settings, job_id)
    assert (job.status, job.cost_actual, job.provider_state) == ("canceled", D(0), "settled")
    assert ledger(settings, job_id) == []


def test_a_submit_answered_after_cancel_is_kept_to_settle(
        settings: Settings, storage: Storage, principal: Principal, submit: Any,
        use: Any, services: Services,
        harness: Harness) -> None:
    # given a job canceled while its POST is out
    job_id = submit("qwen-edit")
    provider = use(Scripted([image_bytes()], asynchronous=True))
    provider.on_submit = lambda: cancel(settings, principal, job_id)
    # when the POST answers with a request id
    harness.run(job_id)
    # then the request is followed to its end and charged: the provider will bill it
    assert harness.follows == [job_id]
    assert harness.ended(job_id).action == "discarded"
    [row] = ledger(settings, job_id)
    assert (row.reason, row.amount) == ("canceled", D("0.02"))
    assert "submitted_after_cancel" in events(settings, job_id)


@pytest.fixture
def s3_fails_once(monkeypatch: pytest.MonkeyPatch) -> Callable[[Storage], None]:
    """The next output written to S3 meets an outage; later ones go through."""
    def install(storage: Storage) -> None:
        put, outage = storage.put, [True]

        def flaky_put(*args: Any, **kwargs: Any) -> None:
            if outage and outage.pop():
                raise StorageUnavailable("S3 put failed")
            put(*args, **kwargs)

        monkeypatch.setattr(storage, "put", flaky_put)
    return install


def test_a_sync_result_that_cannot_be_stored_was_billed_and_the_retry_is_a_new_call(
        settings: Settings, storage: Storage, submit: Any, use: Any,
        s3_fails_once: Any, services: Services,
        harness: Harness) -> None:
    # given a synchronous provider whose first result meets an S3 outage
    job_id = submit("stability-upscale-fast", operation="upscale_fast", prompt=None)
    use(Scripted([image_bytes(), image_bytes()]))
    s3_fails_once(storage)
    # when it runs, is requeued, and runs again
    assert harness.run(job_id).action == "retry"
    assert harness.run(job_id).action == "succeeded"
    # then both calls were billed by the provider, and both are in the ledger, once each
    rows = ledger(settings, job_id)
    assert [(r.attempt, r.reason, r.amount) for r in rows] == [
        (1, "storage_unavailable", D("0.02")), (2, "succeeded", D("0.02"))]
    assert job_row(settings, job_id).cost_actual == D("0.04")


def test_an_async_result_that_cannot_be_stored_is_fetched_again_not_bought_again(
        settings: Settings, storage: Storage, submit: Any, use: Any,
        s3_fails_once: Any, services: Services,
        harness: Harness) -> None:
    job_id = submit("qwen-edit")
    provider = use(Scripted([image_bytes(), image_bytes()], asynchronous=True))
    s3_fails_once(storage)
    harness.run(job_id)
    assert harness.ended(job_id).action == "succeeded"
    assert "store_retry" in events(settings, job_id)
    assert provider.submits == 1 and provider.seen == ["req-1", "req-1"]
    [row] = ledger(settings, job_id)
    assert (row.attempt, row.amount) == (1, D("0.02"))


def test_a_canceled_call_whose_outcome_is_unknown_stays_unknown(
        settings: Settings, storage: Storage, principal: Principal, submit: Any,
        use: Any, services: Services,
        harness: Harness) -> None:
    # given a job canceled while its POST is out, and the POST then times out
    job_id = submit("qwen-edit")
    provider = use(Scripted([], asynchronous=False))

    def timeout(spec: ModelSpec, options: ImageEditOptions,
                webhook_url: str | None = None) -> Submitted:
        cancel(settings, principal, job_id)
        raise ProviderOutcomeUnknown("timed out", code="provider_outcome_unknown")

    provider.submit = timeout  # type: ignore[method-assign]
    harness.run(job_id)
    # then the call is settled (no more looking), uncharged, and its cost is not claimed
    job = job_row(settings, job_id)
    assert (job.status, job.provider_state, job.cost_actual) == ("canceled", "settled", None)
    assert ledger(settings, job_id) == []


def test_a_result_gone_before_it_was_read_leaves_the_cost_unknown(
        settings: Settings, storage: Storage, submit: Any, use: Any, services: Services,
        harness: Harness) -> None:
    job_id = submit("stability-upscale-creative", operation="upscale_creative")
    use(Scripted([ProviderError("gone", code="provider_result_expired", task_failed=True,
                                billing_unknown=True)], asynchronous=True))
    harness.run(job_id)
    assert harness.ended(job_id).action == "failed"
    job = job_row(settings, job_id)
    assert (job.status, job.error_code, job.cost_actual) == ("failed",
                                                             "provider_result_expired", None)


def test_outputs_stored_just_before_a_cancel_are_not_kept(
        settings: Settings, storage: Storage, principal: Principal, submit: Any, use: Any,
        monkeypatch: pytest.MonkeyPatch, services: Services,
        harness: Harness) -> None:
    # given a cancel that lands after the output was written, before success is recorded
    job_id = submit("qwen-edit")
    use(Scripted([image_bytes()]))
    put = storage.put

    def put_then_cancel(*args: Any, **kwargs: Any) -> None:
        put(*args, **kwargs)
        cancel(settings, principal, job_id)

    monkeypatch.setattr(storage, "put", put_then_cancel)
    # when the worker tries to finish
    assert harness.run(job_id).action == "discarded"
    # then the call is charged (it completed), and the output it wrote is gone
    assert job_row(settings, job_id).cost_actual == D("0.02")
    assert not storage.exists(output_key_of(settings.database_url, job_id))
