"""The client's Server-Sent-Events streams against the live API: GET /v1/jobs/{id}/stream,
/v1/batches/{id}/stream and /v1/comparisons/{id}/stream. Every test's name says
`stream`; they need the API's stream endpoints (no polling fallback is allowed here)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from editq_client import AsyncClient, Client, JobEvent

from tests.conftest import Live
from tests.helpers import image_bytes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
PROMPT = "make it a watercolour"


def test_stream_follows_a_job_from_created_to_succeeded(editq: Client) -> None:
    # given a job on a WaveSpeed model (the simulator takes a moment)
    job = editq.submit(image_bytes(), model="qwen-edit", prompt=PROMPT)
    # when its stream is read to its end
    events = list(editq.stream(job.id))
    # then it ends with the event at which the job succeeded, the job's view with it
    assert events[-1].job.status == "succeeded" and events[-1].type == "succeeded"
    assert events[-1].job.outputs and events[-1].job.cost.actual is not None
    # and the events with an id are the job's timeline, in order, each once
    ids = [e.id for e in events if e.id is not None]
    assert ids == sorted(set(ids))
    assert [e.type for e in events if e.id is not None] == [
        e.type for e in editq.events(job.id).data]
    assert events[0].job.id == job.id


def test_stream_resumed_from_a_last_event_id_sends_only_what_came_after(editq: Client) -> None:
    job = editq.run(image_bytes(), operation="grayscale", timeout=60)
    timeline = [e for e in editq.stream(job.id) if e.id is not None]
    assert len(timeline) >= 2
    # when the stream is opened again after its first event
    resumed = [e for e in editq.stream(job.id, last_event_id=timeline[0].id)
               if e.id is not None]
    # then it sends the rest, and ends at the terminal event again
    assert [e.id for e in resumed] == [e.id for e in timeline[1:]]
    assert resumed[-1].job.status == "succeeded"


def test_stream_updates_reach_run_s_on_queue_update_while_queued_or_running(
        editq: Client) -> None:
    seen: list[JobEvent] = []
    job = editq.run(image_bytes(), model="qwen-edit", prompt=PROMPT, timeout=60,
                    on_queue_update=seen.append)
    assert job.status == "succeeded"
    # the callback saw the job queued or running, never its end
    assert seen and {e.job.status for e in seen} <= {"queued", "running"}
    assert any(e.type == "created" for e in seen)
    assert seen[0].job.id == job.id


def test_stream_of_a_batch_shows_its_progress_to_completed(editq: Client) -> None:
    batch = editq.batches.create([{"image": image_bytes((30 + n, 20))} for n in range(3)],
                                 defaults={"operation": "grayscale"})
    updates = list(editq.batches.stream(batch.id, poll_fallback=False))
    assert updates[-1].batch.status == "completed"
    assert updates[-1].batch.progress["done"] == 3
    ids = [u.id for u in updates]
    assert None not in ids and ids == sorted(set(ids))  # type: ignore[type-var]


def test_stream_of_a_comparison_ends_when_it_has_completed(editq: Client) -> None:
    comparison = editq.comparisons.create(image_bytes(), ["qwen-edit", "seededit-v3"],
                                          prompt=PROMPT)
    updates = list(editq.comparisons.stream(comparison.id, poll_fallback=False))
    assert updates[-1].comparison.status == "completed"
    assert {r.status for r in updates[-1].comparison.results} == {"succeeded"}


def test_async_stream_and_an_async_on_queue_update(live: Live, key: str) -> None:
    async def main() -> tuple[list[Any], list[Any], str]:
        seen: list[JobEvent] = []

        async def on_update(event: JobEvent) -> None:
            seen.append(event)

        async with AsyncClient(live.api_url, key) as editq:
            job = await editq.run(image_bytes(), model="qwen-edit", prompt=PROMPT,
                                  timeout=60, on_queue_update=on_update)
            events = [e async for e in editq.stream(job.id)]
            return seen, events, job.status

    seen, events, status = asyncio.run(main())
    assert status == "succeeded" and seen
    assert events[-1].job.status == "succeeded"
