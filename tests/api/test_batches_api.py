"""/v1/batches in-process (TestClient) over a real database and a real S3 server.

No worker runs here: where a test needs a batch's jobs, it expands the batch itself
(shared.batches.expansion.expand, what the worker's editq.expand_batch does), runs a job
through an attempt itself (local-pillow works in-process), and finishes batches
itself (shared.batches.expansion.finish_batches, what beat's editq.feed_bulk does).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from api.app import create_app
from shared.batches import checks, expansion, records
from shared.config import Settings
from shared.db import session_scope, utcnow
from shared.jobs.attempt import run_job
from shared.models import Batch, Job, WebhookDelivery
from shared.services import Services
from shared.storage import Storage, input_key
from shared.tenants import create_api_key, get_or_create_tenant, set_limits
from tests.api.test_jobs_api import assert_problem, auth
from tests.conftest import make_settings, own_database
from tests.helpers import b64, image_bytes, tenant_of

pytestmark = pytest.mark.timeout(60)

HOOK = "https://receiver.test/batches"
MAX_INLINE = 8
IMAGE = b64(image_bytes((64, 48)))
GRAY = {"image": IMAGE, "operation": "grayscale"}
BLUE = {"image": IMAGE, "prompt": "make it blue"}  # qwen-edit, the default: 0.02 each


@pytest.fixture(scope="module")
def batches_database(database_url: str,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of this module's own. The session's live stack (tests/cli,
    tests/integration) runs beat, whose bulk feeder sends every batch's queued jobs to
    its worker: on a shared database it would run, while a test here runs, the jobs the
    test means to run itself (seen: a job "skipped" because that worker had taken it)."""
    with own_database(database_url, tmp_path_factory.mktemp("batches-api-db")) as url:
        yield url


@pytest.fixture
def settings(batches_database: str, s3_url: str, bucket: str) -> Settings:
    return make_settings(database_url=batches_database, s3_endpoint_url=s3_url,
                         s3_bucket=bucket,
                         wavespeed_api_key="unused", webhook_allowed_hosts="receiver.test",
                         batch_max_items=MAX_INLINE)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


_TENANTS: list[str] = []


def key_for(settings: Settings, **limits: Any) -> str:
    """A key of a fresh tenant, with these limits."""
    name = f"batches-{uuid.uuid4().hex[:10]}"
    with session_scope(settings.database_url) as session:
        tenant = get_or_create_tenant(session, name)
        if limits:
            set_limits(session, tenant, **limits)
        _TENANTS.append(tenant.id)
        return create_api_key(session, name)


@pytest.fixture(autouse=True)
def cancel_leftovers(settings: Settings) -> Iterator[None]:
    """Cancel what a test leaves unfinished: a live stack started later on this database
    (tests/cli, tests/integration) would otherwise expand and run it."""
    yield
    with session_scope(settings.database_url) as session:
        for batch in list(session.scalars(select(Batch).where(
                Batch.tenant_id.in_(_TENANTS), Batch.status.in_(("expanding", "running"))))):
            records.cancel(session, batch.tenant_id, batch.id)
    _TENANTS.clear()


def post_batch(client: TestClient, key: str, **body: Any) -> httpx.Response:
    return client.post("/v1/batches", json=body, headers=auth(key))


def upload(client: TestClient, key: str, lines: list[str], **fields: str) -> httpx.Response:
    content = ("\n".join(lines) + "\n").encode()
    return client.post("/v1/batches", headers=auth(key), data=fields,
                       files={"file": ("items.jsonl", content, "application/x-ndjson")})


def accepted(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    batch: dict[str, Any] = response.json()
    return batch


def get_batch(client: TestClient, key: str, batch_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/batches/{batch_id}", headers=auth(key))
    assert response.status_code == 200, response.text
    batch: dict[str, Any] = response.json()
    return batch


def jobs_of(settings: Settings, batch_id: str) -> list[Job]:
    with session_scope(settings.database_url) as session:
        return list(session.scalars(select(Job).where(Job.batch_id == batch_id)
                                    .order_by(Job.batch_index)))


def tenant_jobs(settings: Settings, key: str) -> list[Job]:
    from shared.tenants import authenticate

    with session_scope(settings.database_url) as session:
        tenant_id = authenticate(session, key).tenant_id
        return list(session.scalars(select(Job).where(Job.tenant_id == tenant_id)
                                    .order_by(Job.seq)))


def tenant_batches(settings: Settings, key: str) -> list[Batch]:
    from shared.tenants import authenticate

    with session_scope(settings.database_url) as session:
        tenant_id = authenticate(session, key).tenant_id
        return list(session.scalars(select(Batch).where(Batch.tenant_id == tenant_id)))


def make_parents(client: TestClient, key: str, count: int, **body: Any) -> list[dict[str, Any]]:
    """Stored jobs of the tenant, made by POST /v1/jobs (they stay queued)."""
    jobs = []
    for n in range(count):
        image = b64(image_bytes((40 + n, 30), color=(10 * n, 90, 200)))
        response = client.post("/v1/jobs", json={**GRAY, "image": image, **body},
                               headers=auth(key))
        assert response.status_code == 202, response.text
        jobs.append(response.json())
    return jobs


class TestItems:
    def test_inline_items_are_accepted_and_expanded_into_bulk_jobs_in_order(
            self, client: TestClient, settings: Settings, services: Services) -> None:
        key = key_for(settings)
        # given three inline items, two of them taking the defaults
        items = [{"image": IMAGE}, {"image": IMAGE, "metadata": {"n": 2}},
                 {**GRAY, "operation": "rotate", "options": {"angle": 90}}]
        # when they are posted as a batch
        response = post_batch(client, key, items=items, defaults={"operation": "grayscale"},
                              metadata={"source": "test"})
        # then the batch is accepted, still to be expanded, with its total and no job yet
        batch = accepted(response)
        assert response.headers["location"] == f"/v1/batches/{batch['id']}"
        assert (batch["kind"], batch["status"], batch["total"], batch["expanded"]) == (
            "items", "expanding", 3, 0)
        assert batch["invalid"] == [] and batch["metadata"] == {"source": "test"}
        assert batch["cost"] == {"so_far": "0", "estimated_total": "0", "currency": "USD"}
        assert jobs_of(settings, batch["id"]) == []
        # when the worker expands it
        assert expansion.expand(services, batch["id"]) == 3
        # then its jobs are queued on the bulk queue, in the items' order, unsent yet
        jobs = jobs_of(settings, batch["id"])
        assert [(j.batch_index, j.operation, j.status, j.queue) for j in jobs] == [
            (0, "grayscale", "queued", "bulk"), (1, "grayscale", "queued", "bulk"),
            (2, "rotate", "queued", "bulk")]
        assert jobs[1].metadata_ == {"n": 2} and jobs[2].options == {"angle": 90}
        assert all(j.lease_expires_at is None for j in jobs)
        # and the batch shows them
        shown = get_batch(client, key, batch["id"])
        assert (shown["status"], shown["expanded"], shown["counts"]["queued"]) == (
            "running", 3, 3)
        assert shown["progress"] == {"done": 0, "total": 3, "fraction": 0.0}
        assert shown["expanded_at"] is not None and shown["manifest_url"] is None
        # and a second expansion message makes nothing twice
        assert expansion.expand(services, batch["id"]) == 0
        assert len(jobs_of(settings, batch["id"])) == 3

    def test_a_dry_run_of_items_stores_nothing_not_even_their_images(
            self, client: TestClient, settings: Settings, storage: Storage) -> None:
        key = key_for(settings)
        # given an item whose image editq has never seen
        image = image_bytes((57, 31), color=(uuid.uuid4().int % 256, 7, 99))
        stored_as = input_key(tenant_of(settings.database_url, key),
                              hashlib.sha256(image).hexdigest())
        item = {**GRAY, "image": b64(image)}
        # when it is dry-run, then it is counted, and its image is not in S3
        dry = post_batch(client, key, items=[item], dry_run=True)
        assert dry.status_code == 200 and dry.json()["count"] == 1
        assert not storage.exists(stored_as)
        # and when it is sent for real, its image is stored
        accepted(post_batch(client, key, items=[item]))
        assert storage.exists(stored_as)

    def test_a_jsonl_upload_with_invalid_lines_is_refused_whole_by_default(
            self, client: TestClient, settings: Settings) -> None:
        key = key_for(settings)
        # given a JSONL file with two good lines, a blank one and three bad ones
        lines = [json.dumps({"image": IMAGE}), "{not json",
                 json.dumps({"image": b64(b"not an image")}), "",
                 json.dumps({"image": IMAGE, "model": "no-such-model"}),
                 json.dumps({"image": IMAGE, "options": {}})]
        # when it is uploaded without on_error
        response = upload(client, key, lines, defaults=json.dumps({"operation": "grayscale"}))
        # then it is a 422 batch_invalid listing every bad line with its number and code
        problem = assert_problem(response, 422, "batch_invalid")
        assert problem["invalid"] == 3
        assert [(e["line"], e["code"]) for e in problem["errors"]] == [
            (2, "invalid_json"), (3, "invalid_image"), (5, "unknown_model")]
        assert all(e["message"] for e in problem["errors"])
        # and nothing was created
        assert tenant_batches(settings, key) == [] and tenant_jobs(settings, key) == []
        listed = client.get("/v1/batches", headers=auth(key)).json()
        assert listed == {"data": [], "next_cursor": None}

    def test_with_on_error_skip_the_valid_lines_are_accepted_and_the_others_reported(
            self, client: TestClient, settings: Settings, services: Services) -> None:
        key = key_for(settings)
        # given the same kind of file
        lines = [json.dumps({"image": IMAGE, "metadata": {"line": 1}}), "{not json",
                 json.dumps({"image": b64(b"not an image")}),
                 json.dumps({"image": IMAGE, "model": "no-such-model"}),
                 json.dumps({"image": IMAGE, "metadata": {"line": 5}})]
        # when it is uploaded with on_error=skip
        response = upload(client, key, lines, on_error="skip",
                          defaults=json.dumps({"operation": "grayscale"}))
        # then the batch holds the valid lines, and says which lines it left out and why
        batch = accepted(response)
        assert batch["total"] == 2
        assert [(e["line"], e["code"]) for e in batch["invalid"]] == [
            (2, "invalid_json"), (3, "invalid_image"), (4, "unknown_model")]
        # and its jobs are the valid lines, in their order
        expansion.expand(services, batch["id"])
        assert [j.metadata_ for j in jobs_of(settings, batch["id"])] == [{"line": 1},
                                                                        {"line": 5}]

    def test_more_inline_items_than_allowed_are_refused(
            self, client: TestClient, settings: Settings) -> None:
        key = key_for(settings)
        problem = assert_problem(post_batch(client, key, items=[GRAY] * (MAX_INLINE + 1)),
                                 422, "invalid_input")
        assert "JSONL" in problem["detail"]
        assert tenant_batches(settings, key) == []

    @pytest.mark.parametrize("body", [
        {}, {"defaults": {"operation": "grayscale"}},
        {"items": [GRAY], "reprocess": {"filter": {}, "override": {}}},
    ], ids=["empty", "defaults-only", "both"])
    def test_neither_or_both_of_items_and_reprocess_is_refused(
            self, client: TestClient, settings: Settings, body: dict[str, Any]) -> None:
        key = key_for(settings)
        assert_problem(post_batch(client, key, **body), 422, "invalid_input")
        assert tenant_batches(settings, key) == []

    @pytest.mark.parametrize("body", [
        {"items": [GRAY], "on_error": "ignore"}, {"items": "all of them"},
        {"items": [GRAY], "colour": "red"},
    ], ids=["bad-on-error", "items-not-a-list", "unknown-field"])
    def test_a_malformed_body_is_a_422_not_a_500(
            self, client: TestClient, settings: Settings, body: dict[str, Any]) -> None:
        key = key_for(settings)
        assert_problem(post_batch(client, key, **body), 422, "invalid_input")

    def test_a_malformed_multipart_field_is_a_422_not_a_500(
            self, client: TestClient, settings: Settings) -> None:
        key = key_for(settings)
        assert_problem(upload(client, key, [json.dumps(GRAY)], defaults="{oops"), 422,
                       "invalid_json")
        assert_problem(upload(client, key, [json.dumps(GRAY)], on_error="ignore"), 422,
                       "invalid_input")


@pytest.mark.every_database
class TestReprocess:
    def test_a_dry_run_counts_and_prices_exactly_the_children_a_real_batch_makes(
            self, client: TestClient, settings: Settings, services: Services) -> None:
        key = key_for(settings)
        # given three stored local-pillow jobs, and one of another model
        parents = make_parents(client, key, 3)
        make_parents(client, key, 1, operation="general_edit", prompt="make it blue")
        other = [p for p in tenant_jobs(settings, key) if p.model != "local-pillow"]
        assert [p.model for p in other] == ["qwen-edit"]
        spec = {"filter": {"model": "local-pillow", "created_after": "2000-01-01"},
                "override": {"model": "qwen-edit", "operation": "general_edit",
                             "prompt": "make it blue"}}
        # when a reprocessing of the local-pillow ones is dry-run
        dry = post_batch(client, key, reprocess=spec, dry_run=True)
        # then it answers 200 with the count, the estimate and the budget's verdict
        assert dry.status_code == 200, dry.text
        answer = dry.json()
        assert (answer["count"], answer["estimated_cost"], answer["currency"],
                answer["budget_ok"], answer["invalid"]) == (3, "0.06", "USD", True, [])
        # and nothing is created
        assert tenant_batches(settings, key) == []
        # when it is sent for real and expanded
        batch = accepted(post_batch(client, key, reprocess=spec))
        assert (batch["kind"], batch["total"], batch["cost"]["estimated_total"]) == (
            "reprocess", 3, "0.06")
        assert batch["spec"]["filter"]["model"] == "local-pillow"
        assert expansion.expand(services, batch["id"]) == 3
        # then each child reuses its parent's stored inputs under the new model
        children = jobs_of(settings, batch["id"])
        by_parent = {p["id"]: p for p in parents}
        assert sorted(c.parent_job_id for c in children if c.parent_job_id) == sorted(by_parent)
        stored = {p.id: p for p in tenant_jobs(settings, key)}
        for child in children:
            parent = stored[child.parent_job_id or ""]
            assert child.input_keys == parent.input_keys and child.input_keys
            assert (child.model, child.provider, child.operation, child.prompt) == (
                "qwen-edit", "wavespeed", "general_edit", "make it blue")
        # and the dry run's count and estimate are the children's
        assert len(children) == answer["count"]
        assert sum((c.cost_estimated for c in children), Decimal(0)) == Decimal(
            answer["estimated_cost"])
        # and a later reprocessing of the same filter does not take the children as parents
        again = post_batch(client, key, reprocess=spec, dry_run=True).json()
        assert again["count"] == 3

    def test_an_override_the_new_model_refuses_is_reported_per_parent(
            self, client: TestClient, settings: Settings) -> None:
        key = key_for(settings)
        # given two stored grayscale jobs
        parents = make_parents(client, key, 2)
        # when they are reprocessed on a model without grayscale, or with no prompt for one
        # that needs it
        no_op = {"filter": {"model": "local-pillow"}, "override": {"model": "qwen-edit"}}
        no_prompt = {"filter": {"model": "local-pillow"},
                     "override": {"model": "qwen-edit", "operation": "general_edit"}}
        # then the batch is refused, each parent named with the reason
        problem = assert_problem(post_batch(client, key, reprocess=no_op), 422,
                                 "batch_invalid")
        assert [(e["line"], e["job_id"], e["code"]) for e in problem["errors"]] == [
            (1, parents[0]["id"], "unsupported_operation"),
            (2, parents[1]["id"], "unsupported_operation")]
        problem = assert_problem(post_batch(client, key, reprocess=no_prompt), 422,
                                 "batch_invalid")
        assert {e["code"] for e in problem["errors"]} == {"prompt_required"}
        # and a dry run says the same, with nothing to count
        dry = post_batch(client, key, reprocess=no_op, dry_run=True).json()
        assert dry["count"] == 0 and len(dry["invalid"]) == 2
        # and with on_error=skip there is no valid child to make a batch of
        assert_problem(post_batch(client, key, reprocess=no_op, on_error="skip"), 422,
                       "invalid_input")
        assert tenant_batches(settings, key) == []

    def test_an_expansion_makes_exactly_the_children_admitted_in_chunks(
            self, client: TestClient, settings: Settings, storage: Storage) -> None:
        key = key_for(settings)
        # given five stored jobs: three succeeded, one of them without stored inputs,
        # and two still queued
        parents = [p["id"] for p in make_parents(client, key, 5)]
        with session_scope(settings.database_url) as session:
            session.execute(update(Job).where(Job.id.in_(parents[:3]))
                            .values(status="succeeded"))
            session.execute(update(Job).where(Job.id == parents[0]).values(input_keys=[]))
        spec = {"filter": {"status": "succeeded"}, "override": {"operation": "grayscale"}}
        # when the succeeded ones are reprocessed, skipping the invalid parent
        batch = accepted(post_batch(client, key, reprocess=spec, on_error="skip"))
        assert batch["total"] == 2
        # and one of the queued jobs succeeds before the batch expands (it matches now)
        with session_scope(settings.database_url) as session:
            session.execute(update(Job).where(Job.id == parents[3]).values(status="succeeded"))
        # when the batch expands one parent per chunk
        one_per_chunk = settings.model_copy(update={"batch_chunk_size": 1})
        made = expansion.expand(Services(one_per_chunk, storage=storage), batch["id"])
        # then it makes the two children it admitted and paid for, no more, and is done
        children = jobs_of(settings, batch["id"])
        assert made == 2 and [c.parent_job_id for c in children] == parents[1:3]
        after = get_batch(client, key, batch["id"])
        assert (after["status"], after["expanded"], after["total"]) == ("running", 2, 2)
        assert after["expanded_at"] is not None

    def test_a_parent_whose_inputs_went_after_acceptance_is_skipped_in_the_manifest(
            self, client: TestClient, settings: Settings, storage: Storage) -> None:
        from shared.retention.erase import erase_job

        key = key_for(settings)
        # given three ended jobs, reprocessed (all three admitted)
        parents = [p["id"] for p in make_parents(client, key, 3)]
        with session_scope(settings.database_url) as session:
            session.execute(update(Job).where(Job.id.in_(parents)).values(
                status="succeeded", finished_at=utcnow()))
        spec = {"filter": {"status": "succeeded"}, "override": {"operation": "grayscale"}}
        batch = accepted(post_batch(client, key, reprocess=spec))
        assert batch["total"] == 3
        # when one parent's data is deleted before the batch expands
        with session_scope(settings.database_url) as session:
            tenant = session.scalar(select(Job.tenant_id).where(Job.id == parents[1]))
            erase_job(session, settings, storage, tenant or "", parents[1])
        expansion.expand(Services(settings, storage=storage), batch["id"])
        # then the others are redone, and the results say why that one was not
        with session_scope(settings.database_url) as session:
            row = session.scalars(select(Batch).where(Batch.id == batch["id"])).one()
            lines = [json.loads(x) for x in records.result_lines(session, row, storage)]
        assert [x["parent_job_id"] for x in lines if x["status"] != "skipped"] == [
            parents[0], parents[2]]
        assert [(x["parent_job_id"], x["reason"]) for x in lines
                if x["status"] == "skipped"] == [(parents[1], "inputs_deleted")]

    @pytest.mark.parametrize(("spec", "field"), [
        ({"filter": {"colour": "red"}}, "filter"),
        ({"filter": {"created_after": "last tuesday"}}, "filter.created_after"),
        ({"override": {"seed": 1}}, "override"),
    ], ids=["unknown-filter", "bad-date", "unknown-override"])
    def test_a_bad_filter_or_override_is_refused(
            self, client: TestClient, settings: Settings, spec: dict[str, Any],
            field: str) -> None:
        key = key_for(settings)
        make_parents(client, key, 1)
        problem = assert_problem(post_batch(client, key, reprocess=spec), 422, "invalid_input")
        assert problem["field"] == field


@pytest.mark.every_database
class TestBudget:
    def test_a_batch_over_the_monthly_budget_is_refused_whole_and_a_dry_run_says_so(
            self, client: TestClient, settings: Settings, services: Services) -> None:
        # given a tenant with a monthly budget of 0.05
        key = key_for(settings, monthly_budget=Decimal("0.05"))
        # when it dry-runs, then sends, three qwen-edit items (0.06 in all)
        dry = post_batch(client, key, items=[BLUE] * 3, dry_run=True)
        refused = post_batch(client, key, items=[BLUE] * 3)
        # then the dry run says it does not fit, and the batch is refused with 402
        assert dry.status_code == 200, dry.text
        assert (dry.json()["count"], dry.json()["estimated_cost"], dry.json()["budget_ok"]) \
            == (3, "0.06", False)
        problem = assert_problem(refused, 402, "budget_exceeded")
        assert (problem["budget"], problem["estimate"]) == ("0.05", "0.06")
        assert tenant_batches(settings, key) == []
        # and two items fit; their estimate counts against the budget before they are jobs
        batch = accepted(post_batch(client, key, items=[BLUE] * 2))
        assert batch["cost"]["estimated_total"] == "0.04"
        one_more = client.post("/v1/jobs", json=BLUE, headers=auth(key))
        assert assert_problem(one_more, 402, "budget_exceeded")["in_flight"] == "0.04"
        # and as much once they are jobs
        expansion.expand(services, batch["id"])
        one_more = client.post("/v1/jobs", json=BLUE, headers=auth(key))
        assert assert_problem(one_more, 402, "budget_exceeded")["in_flight"] == "0.04"


@pytest.mark.every_database
class TestCancel:
    def test_cancel_cancels_the_queued_jobs_and_a_second_cancel_is_harmless(
            self, client: TestClient, settings: Settings, storage: Storage,
                    services: Services) -> None:
        key = key_for(settings)
        # given an expanded batch of four jobs
        batch = accepted(post_batch(client, key, items=[GRAY] * 4))
        expansion.expand(services, batch["id"])
        # when it is canceled
        response = client.post(f"/v1/batches/{batch['id']}/cancel", headers=auth(key))
        # then the batch and its queued jobs are canceled
        assert response.status_code == 200, response.text
        canceled = response.json()
        assert canceled["status"] == "canceled"
        assert (canceled["counts"]["canceled"], canceled["counts"]["queued"]) == (4, 0)
        assert canceled["progress"]["done"] == 4
        assert {j.status for j in jobs_of(settings, batch["id"])} == {"canceled"}
        job = client.get(f"/v1/jobs/{jobs_of(settings, batch['id'])[0].id}",
                         headers=auth(key)).json()
        assert (job["status"], job["cost"]["actual"]) == ("canceled", "0")
        # when it is canceled again, then it answers the same batch
        again = client.post(f"/v1/batches/{batch['id']}/cancel", headers=auth(key))
        assert again.status_code == 200, again.text
        assert (again.json()["status"], again.json()["counts"]) == ("canceled",
                                                                   canceled["counts"])
        # and once finished it stays canceled, with its manifest
        expansion.finish_batches(settings, storage)
        finished = get_batch(client, key, batch["id"])
        assert finished["status"] == "canceled" and finished["finished_at"] is not None
        assert finished["manifest_url"] is not None

    def test_a_batch_canceled_before_its_expansion_makes_no_job(
            self, client: TestClient, settings: Settings, services: Services) -> None:
        key = key_for(settings)
        batch = accepted(post_batch(client, key, items=[GRAY] * 2))
        assert client.post(f"/v1/batches/{batch['id']}/cancel",
                           headers=auth(key)).status_code == 200
        assert expansion.expand(services, batch["id"]) == 0
        assert jobs_of(settings, batch["id"]) == []


    @pytest.mark.every_database
    def test_one_expander_at_a_time_holds_a_batch(
            self, client: TestClient, settings: Settings) -> None:
        # given a batch waiting for its expansion
        batch = accepted(post_batch(client, key_for(settings), items=[GRAY] * 2))
        # when two workers ask for it, then only the first gets it (each answer comes from
        # the UPDATE's own RETURNING, not from a driver's row count)
        assert expansion.take_expansion(settings, batch["id"]) is True
        assert expansion.take_expansion(settings, batch["id"]) is False
        # and once its lease has run out, another may take it over
        with session_scope(settings.database_url) as session:
            session.execute(update(Batch).where(Batch.id == batch["id"])
                            .values(lease_expires_at=None))
        assert expansion.take_expansion(settings, batch["id"]) is True

    @pytest.mark.every_database
    def test_a_batch_canceled_mid_expansion_finishes_without_waiting_for_its_lease(
            self, client: TestClient, settings: Settings, storage: Storage,
            monkeypatch: pytest.MonkeyPatch) -> None:
        key = key_for(settings)
        # given a batch of four items expanding one per chunk, canceled after its first
        # chunk (the cancel lands between two of the expander's transactions)
        batch = accepted(post_batch(client, key, items=[GRAY] * 4))
        real_scope, scopes = expansion.session_scope, []

        @contextlib.contextmanager
        def scope(url: str) -> Iterator[Any]:
            scopes.append(url)
            if len(scopes) == 4:  # take the lease, read the batch, chunk 1, then chunk 2
                assert client.post(f"/v1/batches/{batch['id']}/cancel",
                                   headers=auth(key)).status_code == 200
            with real_scope(url) as session:
                yield session

        monkeypatch.setattr(expansion, "session_scope", scope)
        one_per_chunk = settings.model_copy(update={"batch_chunk_size": 1})
        # when the expander meets the cancel
        made = expansion.expand(Services(one_per_chunk, storage=storage), batch["id"])
        monkeypatch.undo()
        # then it stopped after one job, which the cancel canceled
        assert made == 1
        assert [j.status for j in jobs_of(settings, batch["id"])] == ["canceled"]
        # and the batch finishes at once, not when the expander's lease runs out (60 s)
        assert batch["id"] in expansion.finish_batches(settings, storage)
        finished = get_batch(client, key, batch["id"])
        assert (finished["status"], finished["total"]) == ("canceled", 4)
        assert finished["finished_at"] is not None


@pytest.mark.every_database
class TestIdempotency:
    def test_a_retried_post_with_the_same_key_answers_the_same_batch(
            self, client: TestClient, settings: Settings) -> None:
        key = key_for(settings)
        headers = {**auth(key), "Idempotency-Key": "batch-1"}
        # when a batch is sent twice with one Idempotency-Key (a retry after a timeout)
        first = client.post("/v1/batches", json={"items": [BLUE] * 3}, headers=headers)
        second = client.post("/v1/batches", json={"items": [BLUE] * 3}, headers=headers)
        # then both answer the one batch; the second says it is a replay
        assert (first.status_code, second.status_code) == (202, 202), second.text
        assert first.json()["id"] == second.json()["id"]
        assert "idempotent-replayed" not in first.headers
        assert second.headers["idempotent-replayed"] == "true"
        assert second.headers["location"] == f"/v1/batches/{first.json()['id']}"
        # and one batch exists, its estimate admitted once
        assert [b.id for b in tenant_batches(settings, key)] == [first.json()["id"]]
        assert second.json()["cost"]["estimated_total"] == "0.06"

    def test_the_same_key_with_another_batch_is_refused(
            self, client: TestClient, settings: Settings) -> None:
        key = key_for(settings)
        headers = {**auth(key), "Idempotency-Key": "batch-2"}
        first = accepted(client.post("/v1/batches", json={"items": [BLUE] * 2},
                                     headers=headers))
        # when the key comes again with other items
        other = client.post("/v1/batches", json={"items": [BLUE] * 3}, headers=headers)
        # then it is refused, naming the batch the key made, and nothing else is made
        problem = assert_problem(other, 422, "idempotency_key_reused")
        assert problem["batch_id"] == first["id"]
        assert len(tenant_batches(settings, key)) == 1

    def test_a_dry_run_neither_uses_nor_replays_the_key(
            self, client: TestClient, settings: Settings) -> None:
        key = key_for(settings)
        headers = {**auth(key), "Idempotency-Key": "batch-3"}
        dry = client.post("/v1/batches", json={"items": [BLUE], "dry_run": True},
                          headers=headers)
        assert dry.status_code == 200 and dry.json()["count"] == 1
        real = accepted(client.post("/v1/batches", json={"items": [BLUE]}, headers=headers))
        assert [b.id for b in tenant_batches(settings, key)] == [real["id"]]

    def test_two_creations_with_one_key_at_once_make_one_batch(
            self, settings: Settings, storage: Storage) -> None:
        from shared.tenants import authenticate

        key = key_for(settings)
        checked = checks.Checked()
        for _ in range(2):
            checked.add({"model": "qwen-edit", "estimate": "0.02"}, keep=False)
        spec = {"filter": {"model": "local-pillow"}, "override": {"model": "qwen-edit"}}

        def create(session: Any) -> tuple[str, bool]:
            batch, created = records.create(
                session, Services(settings, storage=storage), authenticate(session, key),
                kind="reprocess",
                checked=checked, spec=spec, skip_invalid=False, webhook_url=None,
                webhook_events=None, metadata={}, idempotency_key="same", fingerprint="f1")
            return batch.id, created

        # given one creation flushed and not yet committed
        answers: list[tuple[str, bool]] = []
        with session_scope(settings.database_url) as first:
            answers.append(create(first))

            # when another with the same key runs meanwhile (it waits for the first's
            # transaction, whichever database), and the first commits
            def second() -> None:
                with session_scope(settings.database_url) as session:
                    answers.append(create(session))

            thread = threading.Thread(target=second)
            thread.start()
        thread.join(30)
        # then the second answers the first's batch, not a second one
        assert not thread.is_alive()
        assert answers[0][1] is True and answers[1] == (answers[0][0], False)
        assert [b.id for b in tenant_batches(settings, key)] == [answers[0][0]]


class TestTenants:
    def test_another_tenants_batch_is_404_everywhere(
            self, client: TestClient, settings: Settings) -> None:
        key, other = key_for(settings), key_for(settings)
        batch = accepted(post_batch(client, key, items=[GRAY]))
        for method, path in [("GET", f"/v1/batches/{batch['id']}"),
                             ("POST", f"/v1/batches/{batch['id']}/cancel"),
                             ("GET", f"/v1/batches/{batch['id']}/results")]:
            assert_problem(client.request(method, path, headers=auth(other)), 404,
                           "not_found")
        assert client.get("/v1/batches", headers=auth(other)).json()["data"] == []
        # and the owner's batch was not canceled
        assert get_batch(client, key, batch["id"])["status"] == "expanding"

    def test_the_list_is_newest_first_with_a_cursor(
            self, client: TestClient, settings: Settings) -> None:
        key = key_for(settings)
        ids = [accepted(post_batch(client, key, items=[GRAY]))["id"] for _ in range(3)]
        first = client.get("/v1/batches?limit=2", headers=auth(key)).json()
        assert [b["id"] for b in first["data"]] == ids[:0:-1]
        rest = client.get(f"/v1/batches?limit=2&cursor={first['next_cursor']}",
                          headers=auth(key)).json()
        assert ([b["id"] for b in rest["data"]], rest["next_cursor"]) == ([ids[0]], None)


class TestResultsAndCompletion:
    def test_results_stream_one_line_per_job_in_batch_order(
            self, client: TestClient, settings: Settings, services: Services) -> None:
        key = key_for(settings)
        # given an expanded batch of five jobs, one of which has run
        batch = accepted(post_batch(client, key, items=[
            {**GRAY, "metadata": {"n": n}} for n in range(5)]))
        expansion.expand(services, batch["id"])
        jobs = jobs_of(settings, batch["id"])
        assert run_job(jobs[2].id, services).action == "succeeded"
        # when its results are read
        response = client.get(f"/v1/batches/{batch['id']}/results", headers=auth(key))
        # then they are JSONL, one line per job, in batch order, with what each became
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.text.splitlines()]
        assert [(r["index"], r["id"]) for r in lines] == [(n, j.id) for n, j in enumerate(jobs)]
        assert [r["status"] for r in lines] == ["queued", "queued", "succeeded", "queued",
                                                "queued"]
        assert len(lines[2]["outputs"]) == 1 and lines[0]["outputs"] == []
        assert lines[2]["cost"] == {"estimated": "0", "actual": "0"}
        assert lines[0]["error"] is None and lines[0]["parent_job_id"] is None

    def test_once_every_job_is_terminal_the_batch_completes_with_a_manifest_and_a_webhook(
            self, client: TestClient, settings: Settings, storage: Storage,
                    services: Services) -> None:
        key = key_for(settings)
        # given an expanded batch of three jobs with a webhook on an allowed host
        batch = accepted(post_batch(client, key, items=[GRAY] * 3, webhook_url=HOOK))
        expansion.expand(services, batch["id"])
        jobs = jobs_of(settings, batch["id"])
        # when two of its jobs have run, then it is not finished
        for job in jobs[:2]:
            assert run_job(job.id, services).action == "succeeded"
        assert batch["id"] not in expansion.finish_batches(settings, storage)
        assert get_batch(client, key, batch["id"])["status"] == "running"
        # when the last one has run too
        assert run_job(jobs[2].id, services).action == "succeeded"
        # then it is finished, once
        assert batch["id"] in expansion.finish_batches(settings, storage)
        assert batch["id"] not in expansion.finish_batches(settings, storage)
        done = get_batch(client, key, batch["id"])
        assert (done["status"], done["counts"]["succeeded"], done["progress"]["fraction"]) == (
            "completed", 3, 1.0)
        assert done["finished_at"] is not None
        # and its manifest has one line per job, in order
        manifest = httpx.get(done["manifest_url"], timeout=10)
        assert manifest.status_code == 200
        lines = [json.loads(line) for line in manifest.text.splitlines()]
        assert [(r["id"], r["status"]) for r in lines] == [(j.id, "succeeded") for j in jobs]
        assert all(len(r["outputs"]) == 1 for r in lines)
        # and one batch.completed webhook waits in the outbox, with the batch as data
        with session_scope(settings.database_url) as session:
            [delivery] = session.scalars(select(WebhookDelivery).where(
                WebhookDelivery.batch_id == batch["id"])).all()
            assert (delivery.event_type, delivery.url, delivery.status, delivery.job_id) == (
                "batch.completed", HOOK, "pending", None)
            data = delivery.payload["data"]
        assert (data["id"], data["status"], data["counts"]["succeeded"]) == (
            batch["id"], "completed", 3)
        assert data["manifest_key"].endswith("manifest.jsonl")

    def test_a_finished_batch_is_not_starved_by_older_unfinished_ones(
            self, client: TestClient, settings: Settings, storage: Storage,
                    services: Services) -> None:
        key = key_for(settings)
        # given an older batch whose jobs are still queued, and a newer one all done
        waiting = accepted(post_batch(client, key, items=[GRAY]))
        expansion.expand(services, waiting["id"])
        done = accepted(post_batch(client, key, items=[GRAY]))
        expansion.expand(services, done["id"])
        [job] = jobs_of(settings, done["id"])
        assert run_job(job.id, services).action == "succeeded"
        # when batches are finished a few at a time (here one), until none is left to finish
        while expansion.finish_batches(settings, storage, limit=1):
            pass
        # then the done one is completed, whatever the unfinished ones ahead of it
        assert get_batch(client, key, done["id"])["status"] == "completed"
        assert get_batch(client, key, waiting["id"])["status"] == "running"

    def test_a_webhook_url_that_is_not_allowed_is_refused(
            self, client: TestClient, settings: Settings) -> None:
        key = key_for(settings)
        assert_problem(post_batch(client, key, items=[GRAY],
                                  webhook_url="http://169.254.169.254/latest"), 422,
                       "webhook_url_not_allowed")
        assert_problem(post_batch(client, key, items=[GRAY], webhook_url=HOOK,
                                  webhook_events=["batch.done"]), 422, "invalid_input")
        assert tenant_batches(settings, key) == []
