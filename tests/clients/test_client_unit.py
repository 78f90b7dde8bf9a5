"""The client's policies, against scripted answers (httpx.MockTransport): what it retries
and how long it waits, that a retried POST keeps its Idempotency-Key, how problems map
to errors, how a stream resumes after a drop. What the real API does is in the live
tests beside this one."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from editq_client import (
    APIConnectionError,
    AsyncClient,
    AuthenticationError,
    BudgetExceeded,
    Client,
    ConfigurationError,
    EditqError,
    JobNotCancelable,
    JobTimeout,
    NotFound,
    PlanLimitExceeded,
    ServiceUnavailable,
    as_json,
)
from editq_client._core import UPLOAD_OVER, SSEDecoder

pytestmark = pytest.mark.timeout(60)
BASE = "http://editq.test"


def job_view(job_id: str = "job_1", status: str = "queued", **extra: Any) -> dict[str, Any]:
    return {"id": job_id, "status": status, "operation": "grayscale", "model": "local-pillow",
            "provider": "local", "prompt": None, "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z", "started_at": None, "finished_at": None,
            "attempts": 0, "outputs": [], "error": None, "options": {}, "metadata": {},
            "cost": {"estimated": "0", "actual": None, "currency": "USD"}, **extra}


def problem(status: int, code: str, **extra: Any) -> dict[str, Any]:
    return {"type": f"https://editq.dev/problems/{code}", "title": code, "status": status,
            "detail": f"a {code}", "code": code, **extra}


class Script:
    """Answers requests in turn; keeps them."""

    def __init__(self, *answers: httpx.Response | Callable[[httpx.Request], httpx.Response]
                 | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer


def client(script: Script, **kwargs: Any) -> Client:
    return Client(BASE, "eq_test", transport=httpx.MockTransport(script), **kwargs)


def test_a_429_with_retry_after_is_waited_for_and_the_post_resent_with_the_same_key() -> None:
    # given an API that answers the first submission 429 with Retry-After: 1, then 202
    script = Script(httpx.Response(429, json=problem(429, "rate_limited"),
                                   headers={"Retry-After": "1"}),
                    httpx.Response(202, json=job_view()))
    with client(script) as editq:
        # when a job is submitted
        started = time.monotonic()
        job = editq.submit(b"\x89PNG fake", operation="grayscale")
        waited = time.monotonic() - started
    # then it was sent twice, a second apart, with one Idempotency-Key the client made
    assert job.id == "job_1"
    assert len(script.requests) == 2
    keys = {r.headers.get("idempotency-key") for r in script.requests}
    assert len(keys) == 1 and None not in keys
    assert waited >= 0.95
    # and the two bodies are the same request
    assert script.requests[0].content == script.requests[1].content


def test_a_dropped_connection_resends_a_post_with_its_idempotency_key() -> None:
    script = Script(httpx.ConnectError("refused"), httpx.ReadError("reset"),
                    httpx.Response(202, json=job_view()))
    with client(script) as editq:
        editq.submit(b"\x89PNG", operation="grayscale", idempotency_key="mine-1")
    assert [r.headers["idempotency-key"] for r in script.requests] == ["mine-1"] * 3


def test_a_post_without_an_idempotency_key_is_never_resent() -> None:
    # given an API that drops the connection of a cancel (a POST the API takes no key for)
    script = Script(httpx.ReadError("reset"), httpx.Response(200, json=job_view()))
    with client(script) as editq, pytest.raises(APIConnectionError):
        editq.cancel("job_1")
    # then it was sent once: it may have canceled the job already
    assert len(script.requests) == 1
    assert "idempotency-key" not in script.requests[0].headers


def test_a_503_is_retried_with_backoff_then_raised_after_max_retries() -> None:
    script = Script(*[httpx.Response(503, json=problem(503, "database_unavailable"))
                      for _ in range(3)])
    with client(script, max_retries=2) as editq, pytest.raises(ServiceUnavailable) as raised:
        editq.get("job_1")
    assert len(script.requests) == 3
    assert raised.value.code == "database_unavailable" and raised.value.status == 503


def test_a_retry_after_longer_than_the_cap_is_not_waited_for() -> None:
    # given a plan whose limit resets in a day
    script = Script(httpx.Response(429, json=problem(429, "plan_limit_exceeded", plan="free"),
                                   headers={"Retry-After": "86400"}))
    with client(script) as editq, pytest.raises(PlanLimitExceeded) as raised:
        editq.submit(b"\x89PNG", operation="grayscale")
    # then the error comes at once, with what the API said
    assert len(script.requests) == 1
    assert raised.value.retry_after == 86400
    assert raised.value.problem["plan"] == "free"


def test_problems_map_to_the_error_hierarchy_by_code_then_status() -> None:
    script = Script(
        httpx.Response(402, json=problem(402, "budget_exceeded", remaining="0.01")),
        httpx.Response(409, json=problem(409, "job_not_cancelable")),
        httpx.Response(401, json=problem(401, "unauthorized")),
        httpx.Response(404, json=problem(404, "not_found")),
        httpx.Response(418, text="teapot"))
    with client(script) as editq:
        with pytest.raises(BudgetExceeded) as budget:
            editq.submit(b"\x89PNG", operation="grayscale")
        assert budget.value.status == 402 and budget.value.problem["remaining"] == "0.01"
        with pytest.raises(JobNotCancelable):
            editq.cancel("job_1")
        with pytest.raises(AuthenticationError):
            editq.get("job_1")
        with pytest.raises(NotFound):
            editq.get("job_2")
        with pytest.raises(EditqError) as other:
            editq.get("job_3")
        assert other.value.code == "http_418" and "teapot" in other.value.detail


def test_images_go_inline_up_to_4_mib_and_by_direct_upload_over_it(tmp_path: Any) -> None:
    small, large = b"\x89PNG" + b"s" * 100, b"\x89PNG" + b"L" * UPLOAD_OVER
    (tmp_path / "large.png").write_bytes(large)
    slot = {"id": "upl_1", "method": "PUT", "url": "http://storage.test/b/upl_1",
            "headers": {"Content-Type": "image/png"}, "content_type": "image/png",
            "size": len(large), "url_expires_at": "x", "expires_at": "y"}
    script = Script(httpx.Response(202, json=job_view()),
                    httpx.Response(201, json=slot), httpx.Response(200),
                    httpx.Response(202, json=job_view()))
    with client(script) as editq:
        editq.submit(small, operation="grayscale")
        editq.submit(tmp_path / "large.png", operation="grayscale")
    inline = json.loads(script.requests[0].content)
    assert base64.b64decode(inline["image"]) == small
    upload, put, submitted = script.requests[1:]
    assert json.loads(upload.content) == {"content_type": "image/png", "size": len(large)}
    # the bytes go to storage without the API key, and the job names the upload
    assert put.method == "PUT" and put.url.host == "storage.test"
    assert put.content == large and "authorization" not in put.headers
    assert json.loads(submitted.content)["image"] == "upl_1"


def test_urls_upload_ids_and_data_uris_are_sent_as_given() -> None:
    script = Script(*[httpx.Response(202, json=job_view()) for _ in range(3)])
    given = ["https://example.com/a.png", "upl_abc", "data:image/png;base64,iVBORw0KGgo="]
    with client(script) as editq:
        for image in given:
            editq.submit(image, operation="grayscale")
    assert [json.loads(r.content)["image"] for r in script.requests] == given


def test_wait_long_polls_and_raises_job_timeout_without_canceling() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        assert request.url.params.get("wait") in (None, "1")
        return httpx.Response(200, json=job_view(status="running"))

    script = Script(*[slow] * 10)
    with client(script) as editq, pytest.raises(JobTimeout) as raised:
        editq.wait("job_1", timeout=0.5)
    assert raised.value.job_id == "job_1" and not raised.value.canceled
    assert all(r.method == "GET" for r in script.requests)


def test_a_missing_api_key_is_said_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDITQ_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="EDITQ_API_KEY"):
        Client(BASE)


def test_the_url_and_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDITQ_API_URL", "http://from-env.test/")
    monkeypatch.setenv("EDITQ_API_KEY", "eq_env")
    script = Script(httpx.Response(200, json=job_view()))
    with Client(transport=httpx.MockTransport(script)) as editq:
        editq.get("job_1")
    assert str(script.requests[0].url) == "http://from-env.test/v1/jobs/job_1"
    assert script.requests[0].headers["authorization"] == "Bearer eq_env"


def test_a_batch_reprocesses_stored_jobs_or_reads_a_source_bucket_by_one_json_post() -> None:
    estimate = {"count": 6, "estimated_cost": "0.12", "currency": "USD", "budget_ok": True,
                "budget": {}, "invalid": [], "invalid_count": 0}
    made = {"id": "bat_1", "kind": "reprocess", "status": "expanding", "total": 6,
            "expanded": 0, "counts": {}, "progress": {"done": 0, "total": 6}, "cost": {},
            "created_at": "x", "finished_at": None}
    script = Script(httpx.Response(200, json=estimate), httpx.Response(202, json=made),
                    httpx.Response(202, json={**made, "kind": "source"}))
    stored = {"filter": {"model": "qwen-edit"}, "override": {"model": "seededit-v3"}}
    with client(script) as editq:
        # a dry run, then the batch, then one from a bucket
        assert editq.batches.estimate(reprocess=stored, on_error="skip").count == 6
        assert editq.batches.create(reprocess=stored, idempotency_key="cli-1").id == "bat_1"
        editq.batches.create(source={"bucket": "photos", "prefix": "2026/", "limit": 10},
                             defaults={"operation": "grayscale"})
        # and giving two kinds at once is refused before anything is sent
        with pytest.raises(ValueError, match="one of"):
            editq.batches.create([{"image": "upl_1"}], reprocess=stored)
    bodies = [json.loads(r.content) for r in script.requests]
    assert bodies[0] == {"reprocess": stored, "on_error": "skip", "dry_run": True}
    assert bodies[1] == {"reprocess": stored}
    assert bodies[2] == {"source": {"bucket": "photos", "prefix": "2026/", "limit": 10},
                         "defaults": {"operation": "grayscale"}}
    assert script.requests[1].headers["idempotency-key"] == "cli-1"
    assert "idempotency-key" in script.requests[2].headers  # one of the client's own


def test_as_json_is_the_answer_as_the_api_sent_it() -> None:
    # given answers that leave optional members out, and one with a null
    sent = job_view(error=None, outputs=[{"url": "http://s3.test/o.png",
                                          "content_type": "image/png", "width": 1,
                                          "height": 1, "bytes": 9}], future_member=[1])
    costs = {"rows": [], "total": "0", "currency": "USD", "group_by": "model",
             "from": "2026-01-01", "to": "2026-02-01"}
    script = Script(httpx.Response(200, json=sent), httpx.Response(200, json=costs))
    with client(script) as editq:
        job, report = editq.get("job_1"), editq.costs()
    # then as_json is each answer as it came: none of the models' defaults (a job's
    # `batch_id`, an output's `content_filtered`), the nulls, the members the models do
    # not know, `from` named as the API names it, and the answer's own order
    assert job.batch_id is None and job.outputs[0].content_filtered is False
    assert json.dumps(as_json(job)) == json.dumps(sent)
    assert json.dumps(as_json(report)) == json.dumps(costs)
    # and a copy to change, never the answer itself
    as_json(job)["status"] = "changed"
    assert as_json(job)["status"] == "queued"
    # and a part of a result is what was set in it, by the API's names
    assert as_json(job.cost) == sent["cost"] and as_json(report)["from"] == "2026-01-01"
    assert as_json(job.outputs[0]) == sent["outputs"][0]


def test_a_comparisons_outputs_read_themselves_and_a_fresh_url_when_theirs_expired(
        tmp_path: Any) -> None:
    result = {"model": "qwen-edit", "served_by": "qwen-edit", "job_id": "job_7",
              "status": "succeeded", "error": None, "queue_seconds": 0.1, "run_seconds": 1.0,
              "cost": {"estimated": "0.02", "actual": "0.02", "currency": "USD"},
              "outputs": [{"url": "http://s3.test/expired.png", "width": 1, "height": 1,
                           "content_type": "image/png"}]}
    comparison = {"id": "cmp_1", "status": "completed", "operation": "general_edit",
                  "prompt": "p", "models": ["qwen-edit"], "metadata": {}, "created_at": "x",
                  "vote": None, "estimated_total": "0.02", "actual_total": "0.02",
                  "results": [result]}
    script = Script(httpx.Response(200, json=comparison),
                    httpx.Response(403, text="<Error>expired</Error>"),
                    httpx.Response(307, headers={"Location": "http://s3.test/fresh.png"}),
                    httpx.Response(200, content=b"\x89PNG fresh"))
    with client(script) as editq:
        [output] = editq.comparisons.get("cmp_1").results[0].outputs
        saved = output.save(tmp_path)
    # then the bytes came by the job's output URL once the presigned one was refused
    assert saved.name == "job_7-0.png" and saved.read_bytes() == b"\x89PNG fresh"
    assert [r.url.path for r in script.requests[1:]] == [
        "/expired.png", "/v1/jobs/job_7/outputs/0", "/fresh.png"]


# --- streams, scripted -----------------------------------------------------------------------

def sse(*events: tuple[int, str, dict[str, Any]], heartbeat: bool = True) -> bytes:
    out = b": heartbeat\n\n" if heartbeat else b""
    for ident, kind, data in events:
        out += f"id: {ident}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()
    return out


def job_event(ident: int, kind: str, status: str, **job: Any) -> tuple[int, str, dict[str, Any]]:
    return ident, kind, {"event": {"id": ident, "at": "2026-01-01T00:00:00Z", "type": kind,
                                   "from_status": None, "to_status": status, "detail": {}},
                         "job": job_view(status=status, **job)}


class Dropping(httpx.SyncByteStream):
    """A body that sends `data`, then fails as a dropped connection does."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data
        raise httpx.RemoteProtocolError("peer closed connection")


def test_stream_resumes_after_a_drop_with_last_event_id_and_no_duplicates() -> None:
    # given a stream that drops after two events, and a server that, resumed, sends the
    # second one again (as a server replaying from its own cursor might) and the rest
    first = sse(job_event(1, "created", "queued", queue_position=2),
                job_event(2, "started", "running"))
    rest = sse(job_event(2, "started", "running"), job_event(3, "submitted", "running"),
               job_event(4, "succeeded", "succeeded"))
    script = Script(httpx.Response(200, stream=Dropping(first),
                                   headers={"content-type": "text/event-stream"}),
                    httpx.Response(200, content=rest,
                                   headers={"content-type": "text/event-stream"}))
    with client(script) as editq:
        events = list(editq.stream("job_1"))
    # then each event came once, in order, and the stream ended at the terminal one
    assert [e.id for e in events] == [1, 2, 3, 4]
    assert [e.type for e in events] == ["created", "started", "submitted", "succeeded"]
    assert events[0].queue_position == 2 and events[-1].job.status == "succeeded"
    # and the second request resumed from the last id seen
    assert "last-event-id" not in script.requests[0].headers
    assert script.requests[1].headers["last-event-id"] == "2"
    assert script.requests[1].headers["accept"] == "text/event-stream"


def test_stream_gives_up_after_max_retries_reopenings_without_an_event() -> None:
    script = Script(*[httpx.Response(200, content=b": heartbeat\n\n") for _ in range(3)])
    with client(script, max_retries=2) as editq, pytest.raises(APIConnectionError):
        list(editq.stream("job_1"))
    assert len(script.requests) == 3


def test_a_batch_stream_falls_back_to_polling_where_the_api_has_none() -> None:
    def batch(status: str, done: int) -> dict[str, Any]:
        return {"id": "bat_1", "kind": "items", "status": status, "total": 2, "expanded": 2,
                "counts": {"succeeded": done}, "progress": {"done": done, "total": 2},
                "cost": {}, "created_at": "x", "finished_at": None}

    script = Script(httpx.Response(404, json=problem(404, "not_found")),
                    httpx.Response(200, json=batch("running", 0)),
                    httpx.Response(200, json=batch("running", 0)),
                    httpx.Response(200, json=batch("running", 1)),
                    httpx.Response(200, json=batch("completed", 2)))
    with client(script, poll_interval=0.01) as editq:
        updates = list(editq.batches.stream("bat_1"))
    # then each change shows once, the last one completed, none with a stream id
    assert [u.batch.progress["done"] for u in updates] == [0, 1, 2]
    assert updates[-1].batch.status == "completed" and {u.id for u in updates} == {None}
    assert script.requests[0].url.path == "/v1/batches/bat_1/stream"


def test_async_stream_and_retries_run_the_same_flows() -> None:
    script = Script(httpx.Response(503, json=problem(503, "database_unavailable"),
                                   headers={"Retry-After": "0"}),
                    httpx.Response(200, content=sse(job_event(7, "succeeded", "succeeded"))))

    async def handler(request: httpx.Request) -> httpx.Response:
        return script(request)

    async def main() -> list[Any]:
        async with AsyncClient(BASE, "eq_test",
                               transport=httpx.MockTransport(handler)) as editq:
            return [event async for event in editq.stream("job_1", last_event_id=6)]

    events = asyncio.run(main())
    assert [e.id for e in events] == [7]
    assert [r.headers["last-event-id"] for r in script.requests] == ["6", "6"]


def test_the_sse_decoder_reads_the_format_as_the_spec_does() -> None:
    decoder = SSEDecoder()
    lines = [": heartbeat", "", "id: 5", "event: progress", "data: {\"a\":", "data: 1}",
             "retry: 2500", ""]
    found = [e for e in map(decoder.feed, lines) if e is not None]
    assert len(found) == 1
    event = found[0]
    assert (event.id, event.event, event.data, event.retry) == ("5", "progress",
                                                                "{\"a\":\n1}", 2500)
