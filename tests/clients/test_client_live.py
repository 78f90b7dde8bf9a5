"""The client as a program uses it, against the live stack over real HTTP: a job run to
its outputs and cost, a timeout that cancels, the async client, a large image by direct
upload, a batch from a JSONL file followed to its results, comparisons and the read calls."""

from __future__ import annotations

import asyncio
import io
import json
import os
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from editq_client import (
    UPLOAD_OVER,
    AsyncClient,
    BudgetExceeded,
    Client,
    InvalidRequest,
    JobTimeout,
    as_json,
)
from PIL import Image
from pydantic import BaseModel

from shared.db import session_scope
from shared.tenants import create_api_key, get_or_create_tenant, set_limits
from tests.conftest import Live
from tests.helpers import b64, image_bytes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
PROMPT = "make it a watercolour"


def test_run_returns_the_succeeded_job_with_its_outputs_and_cost(
        editq: Client, tmp_path: Path) -> None:
    # given a photo on disk
    photo = tmp_path / "photo.png"
    photo.write_bytes(image_bytes((96, 72)))
    # when it is run on a WaveSpeed model (the simulator) by its path
    job = editq.run(photo, model="qwen-edit", prompt=PROMPT, timeout=60)
    # then the job succeeded and says what it cost, as the ledger charged it
    assert job.status == "succeeded" and job.done
    assert job.cost.currency == "USD"
    assert job.cost.actual is not None and Decimal(job.cost.actual) > 0
    # and its output reads as an image, and saves to a file or into a folder
    [output] = job.outputs
    data = output.read()
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (output.width, output.height)
    assert output.save(tmp_path / "out.png").read_bytes() == data
    saved = output.save(tmp_path)
    assert saved.parent == tmp_path and saved.name.startswith(job.id)
    assert saved.read_bytes() == data
    # and the same job reads back the same through get()
    assert editq.get(job.id).cost == job.cost


def test_run_past_its_timeout_cancels_the_job_and_raises_job_timeout(
        editq: Client, slow_wavespeed: None) -> None:
    # given a provider that takes 6 s per task
    # when a job is run with 1.5 s to finish
    with pytest.raises(JobTimeout) as raised:
        editq.run(image_bytes(), model="qwen-edit", prompt=PROMPT, timeout=1.5)
    # then the error carries the job, canceled by the client before it raised
    error = raised.value
    assert error.job_id.startswith("job_") and error.canceled
    assert error.job is not None and error.job.status == "canceled"
    # and the API says the same: canceled, with no output
    job = editq.get(error.job_id)
    assert job.status == "canceled" and job.outputs == []
    assert any(e.type == "canceled" for e in editq.events(job.id).data)


def test_wait_past_its_timeout_leaves_the_job_running(editq: Client,
                                                      slow_wavespeed: None) -> None:
    job = editq.submit(image_bytes(), model="qwen-edit", prompt=PROMPT)
    with pytest.raises(JobTimeout) as raised:
        editq.wait(job.id, timeout=1)
    assert not raised.value.canceled
    assert editq.get(job.id).status in ("queued", "running")
    assert editq.cancel(job.id).status == "canceled"


def test_the_async_client_runs_a_job_to_its_outputs(live: Live, key: str) -> None:
    async def main() -> tuple[str, bytes, int]:
        async with AsyncClient(live.api_url, key, timeout=30) as editq:
            job = await editq.run(image_bytes((80, 60)), operation="grayscale", timeout=60)
            data = await job.outputs[0].aread()
            again = await editq.get(job.id)
            return job.status, data, len(again.outputs)

    status, data, outputs = asyncio.run(main())
    assert status == "succeeded" and outputs == 1
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "L" and image.size == (80, 60)


def test_an_image_over_4_mib_goes_by_direct_upload(editq: Client, tmp_path: Path) -> None:
    # given a PNG of noise larger than 4 MiB (it does not compress)
    noise = Image.frombytes("RGB", (1200, 1200), os.urandom(1200 * 1200 * 3))
    photo = tmp_path / "large.png"
    noise.save(photo, "PNG")
    assert photo.stat().st_size > UPLOAD_OVER
    # when it is run
    job = editq.run(photo, operation="grayscale", timeout=90)
    # then it went to storage and the job used it
    assert job.status == "succeeded"
    assert (job.outputs[0].width, job.outputs[0].height) == (1200, 1200)
    # and an upload made by hand is an image argument too
    upload_id = editq.uploads.create(image_bytes((50, 40)))
    assert upload_id.startswith("upl_")
    assert editq.run(upload_id, operation="grayscale", timeout=60).outputs[0].width == 50


def test_a_batch_from_a_jsonl_file_is_followed_to_its_results(editq: Client,
                                                              tmp_path: Path) -> None:
    # given a JSONL file of three items
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text("".join(json.dumps({"image": b64(image_bytes((40 + n, 30))),
                                         "metadata": {"n": n}}) + "\n" for n in range(3)))
    # when it is sent as a batch, with defaults
    batch = editq.batches.create(jsonl=jsonl, defaults={"operation": "grayscale"})
    assert batch.total == 3 and batch.kind == "items"
    # then its progress shows until it has completed
    updates = list(editq.batches.stream(batch.id))
    assert updates and updates[-1].batch.status == "completed"
    assert updates[-1].batch.progress["done"] == 3
    done = [u.batch.progress["done"] for u in updates]
    assert done == sorted(done)
    # and its results are one per job, in batch order, each output readable
    results = list(editq.batches.results(batch.id))
    assert [r.index for r in results] == [0, 1, 2]
    assert {r.status for r in results} == {"succeeded"}
    with Image.open(io.BytesIO(results[2].read())) as image:
        assert image.size == (42, 30)
    # and the finished batch has its manifest
    assert editq.batches.get(batch.id).model_extra.get("manifest_url")  # type: ignore[union-attr]


def test_a_batch_of_inline_items_takes_images_in_any_form(editq: Client,
                                                          tmp_path: Path) -> None:
    photo = tmp_path / "p.png"
    photo.write_bytes(image_bytes((33, 22)))
    estimate = editq.batches.estimate([{"image": photo}, {"image": image_bytes()}],
                                      defaults={"operation": "grayscale"})
    assert estimate.count == 2 and estimate.budget_ok
    batch = editq.batches.create([{"image": photo}, {"image": image_bytes((20, 10))}],
                                 defaults={"operation": "grayscale"})
    finished = editq.batches.wait(batch.id, timeout=60)
    assert finished.counts.get("succeeded") == 2


def test_priority_reaches_jobs_and_batches_and_usage_shows_the_limits(
        editq: Client) -> None:
    # when a job is run at low priority, and batches are made with and without one
    job = editq.run(image_bytes((31, 21)), operation="grayscale", priority="low", timeout=60)
    item = [{"image": image_bytes((30, 20)), "operation": "grayscale"}]
    normal = editq.batches.create(item, priority="normal")
    unsaid = editq.batches.create(item)
    # then each says its priority as the API stored it: a batch is low unless it says so
    assert (job.priority, editq.get(job.id).priority) == ("low", "low")
    assert (normal.priority, editq.batches.get(normal.id).priority) == ("normal", "normal")
    assert unsaid.priority == "low"
    # and the usage of the providers' limits is answered, typed
    usage = editq.usage()
    assert 0 < usage.bulk_share <= 1 and usage.bulk_weight >= 1
    assert isinstance(usage.providers, dict)


def test_comparisons_quotes_models_costs_and_budgets(editq: Client, live: Live) -> None:
    # a comparison of two models, followed to its end, then a vote
    comparison = editq.comparisons.create(image_bytes(), ["qwen-edit", "seededit-v3"],
                                          prompt=PROMPT)
    finished = editq.comparisons.wait(comparison.id, timeout=60)
    assert finished.status == "completed"
    assert {r.status for r in finished.results} == {"succeeded"}
    voted = editq.comparisons.vote(comparison.id, "seededit-v3")
    assert voted.vote is not None and voted.vote.model == "seededit-v3"
    # a quote, the catalog ranked for an operation, the costs so far, the budget
    quote = editq.quote(image_bytes(), model="qwen-edit", prompt=PROMPT)
    assert Decimal(quote.estimated) > 0 and quote.pricing.model == "qwen-edit"
    ranked = editq.models("grayscale")
    assert ranked.data[0].rank == 1
    report = editq.costs(group_by="model")
    assert {row.model_extra.get("model") for row in report.rows} >= {  # type: ignore[union-attr]
        "qwen-edit", "seededit-v3"}
    assert editq.budget().ok


def test_the_apis_refusals_are_typed_errors(live: Live) -> None:
    # given a tenant whose monthly budget is one cent
    with session_scope(live.settings.database_url) as session:
        name = f"client-budget-{os.urandom(4).hex()}"
        set_limits(session, get_or_create_tenant(session, name), monthly_budget=Decimal("0.01"))
        key = create_api_key(session, name)
    with Client(live.api_url, key) as editq:
        # then a job over it is BudgetExceeded, naming the figures
        with pytest.raises(BudgetExceeded) as budget:
            editq.run(image_bytes(), model="qwen-edit", prompt=PROMPT, timeout=30)
        assert budget.value.status == 402 and "remaining" in budget.value.problem
        # and a request the model cannot take is an InvalidRequest with the API's code
        with pytest.raises(InvalidRequest) as invalid:
            editq.submit(image_bytes(), model="qwen-edit")
        assert invalid.value.code == "prompt_required"


class Recording(httpx.HTTPTransport):
    """A real transport that keeps each answer's body, as the API sent it."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.bodies.append(response.read())
        return response


def test_as_json_prints_the_apis_own_answers_byte_for_byte(live: Live, key: str) -> None:
    # given a client whose every answer is recorded as it arrived
    recorded = Recording()

    def same(result: object) -> None:
        """`result` dumps to exactly the last answer: members, nulls, order, values."""
        assert isinstance(result, BaseModel)
        raw = json.loads(recorded.bodies[-1])
        assert json.dumps(as_json(result), indent=2) == json.dumps(raw, indent=2)

    with Client(live.api_url, key, timeout=30, transport=recorded) as editq:
        # then what the CLI prints with --json is what the API answered: a job queued and
        # done (its outputs), the catalog plain and ranked (rank and excluded only then)
        same(job := editq.submit(image_bytes((40, 30)), operation="flip"))
        same(editq.wait(job.id, timeout=60))
        same(editq.models())
        same(editq.models("grayscale"))
        # a batch's dry run, the batch as accepted and as it ends
        items = [{"image": image_bytes((30 + n, 20))} for n in range(2)]
        same(editq.batches.estimate(items, defaults={"operation": "grayscale"}))
        same(batch := editq.batches.create(items, defaults={"operation": "grayscale"}))
        same(editq.batches.wait(batch.id, timeout=60))
        # and a comparison, accepted and completed
        same(comparison := editq.comparisons.create(image_bytes(), ["qwen-edit",
                                                                    "seededit-v3"],
                                                    prompt=PROMPT))
        same(editq.comparisons.wait(comparison.id, timeout=60))


def test_a_comparisons_outputs_read_and_save_themselves(editq: Client, tmp_path: Path) -> None:
    comparison = editq.comparisons.create(image_bytes((64, 48)), ["qwen-edit", "seededit-v3"],
                                          prompt=PROMPT)
    finished = editq.comparisons.wait(comparison.id, timeout=60)
    for result in finished.results:
        [output] = result.outputs
        data = output.read()
        assert data == httpx.get(output.url, timeout=10).content
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == (output.width, output.height)
        saved = output.save(tmp_path)
        assert saved.name == f"{result.job_id}-0{output.extension}"
        assert saved.read_bytes() == data
    # and the same through a stream's last update
    [*_, last] = editq.comparisons.stream(comparison.id, poll_fallback=False)
    assert last.comparison.results[0].outputs[0].read() == finished.results[0].outputs[0].read()
