"""Hostile bodies, round two (issue 23): batch bodies that amplify memory, JSON nested
too deep to store or to parse, blank Idempotency-Keys and unreadable multipart bodies.
Each is a 422 with a stable code, never a 500, and costs the API what its bytes do.

A real API process (`editq api`, tests/api/conftest.py) on each database, measured
from outside."""

from __future__ import annotations

import base64
import contextlib
import json
import select
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared.errors import InvalidInput
from shared.idempotency import checked_key
from tests.api.conftest import ApiProcess
from tests.api.test_jobs_api import assert_problem
from tests.api.test_memory import MB, PER_REQUEST, measure
from tests.helpers import image_bytes

pytestmark = [pytest.mark.timeout(120), pytest.mark.every_database]

IMAGE = base64.b64encode(image_bytes((40, 30))).decode()
GRAY = {"image": IMAGE, "operation": "grayscale"}


@pytest.fixture
def http(api: ApiProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=60,
                      headers={"Authorization": f"Bearer {api.key}"}) as client:
        yield client


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


def jsonl(http: httpx.Client, data: bytes, **fields: str) -> httpx.Response:
    return http.post("/v1/batches", data=fields,
                     files={"file": ("items.jsonl", data, "application/x-ndjson")})


class TestBatchBodies:
    def test_a_jsonl_of_millions_of_lines_is_refused_at_the_item_cap_as_it_is_read(
            self, api: ApiProcess, http: httpx.Client) -> None:
        # given 4,000,000 lines that are not items (8 MB; issue 23: +989 MB and 12 s)
        data = b"1\n" * 4_000_000
        # when it is sent as a dry run
        measured = measure(api, lambda: jsonl(http, data, dry_run="true"))
        # then it is refused at the item cap, which counts every line as it is read
        [answer] = measured.answers
        problem = assert_problem(answer, 422, "invalid_input")
        assert "at most 100000 items" in problem["detail"]
        # and the API's memory barely moved (the upload is spooled to disk as it arrives)
        assert measured.rise <= PER_REQUEST, f"+{measured.rise / MB:.1f} MB"

    def test_a_json_body_of_millions_of_items_is_refused_before_it_is_parsed(
            self, api: ApiProcess, http: httpx.Client) -> None:
        # given a 12 MB JSON body of 4,000,000 empty items (issue 23: +426 MB)
        body = b'{"dry_run": true, "items": [' + b"{}," * 3_999_999 + b"{}]}"
        measured = measure(api, lambda: http.post(
            "/v1/batches", content=body, headers={"Content-Type": "application/json"}))
        # then it is refused by its count of values, unparsed
        [answer] = measured.answers
        problem = assert_problem(answer, 422, "invalid_input")
        assert "JSON values" in problem["detail"]
        # and costs the API little more than the body it read
        assert measured.rise <= PER_REQUEST + 2 * len(body), f"+{measured.rise / MB:.1f} MB"

    def test_errors_are_counted_whole_and_reported_in_part(self, http: httpx.Client) -> None:
        # given 3,000 lines that are not objects, and one good item
        data = b"1\n" * 3000 + json.dumps(GRAY).encode() + b"\n"
        # when they are dry-run with on_error=skip
        answer = jsonl(http, data, dry_run="true", on_error="skip")
        # then the good item is counted, every bad line too, and the first 1,000 reported
        assert answer.status_code == 200, answer.text
        dry = answer.json()
        assert (dry["count"], dry["invalid_count"], len(dry["invalid"])) == (1, 3000, 1000)
        assert dry["invalid"][0] == {"line": 1, "code": "invalid_json",
                                     "message": "each line must be a JSON object"}


class TestNesting:
    def test_metadata_nested_past_the_limit_is_refused_wherever_it_is_given(
            self, http: httpx.Client) -> None:
        deep = nested(17)
        # given metadata nested 17 deep (256 deep was stored, then every list of the
        # tenant's jobs answered 500), sent in each way a user can
        answers = {
            "job (multipart)": http.post("/v1/jobs", data={
                "operation": "grayscale", "metadata": json.dumps(nested(256))},
                files={"image": ("a.png", image_bytes((40, 30)), "image/png")}),
            "job (JSON)": http.post("/v1/jobs", json={**GRAY, "metadata": deep}),
            "quote": http.post("/v1/quotes", json={**GRAY, "options": deep}),
            "comparison": http.post("/v1/comparisons", json={
                **GRAY, "models": ["local-pillow", "qwen-edit"], "metadata": deep}),
            "batch": http.post("/v1/batches", json={"items": [GRAY], "metadata": deep}),
            "batch defaults": http.post("/v1/batches", json={
                "items": [GRAY], "defaults": {"metadata": deep}}),
        }
        # then each is a 422 that names the field
        for how, answer in answers.items():
            problem = assert_problem(answer, 422, "invalid_input")
            assert problem["field"] in ("metadata", "options", "defaults"), (how, problem)
            assert "deeper than 16 levels" in problem["detail"], (how, problem)
        # and a JSONL item with it is an invalid line
        line = jsonl(http, json.dumps({**GRAY, "metadata": deep}).encode())
        problem = assert_problem(line, 422, "batch_invalid")
        assert problem["errors"][0]["line"] == 1
        assert "deeper than 16 levels" in problem["errors"][0]["message"]

    def test_metadata_at_the_limit_is_stored_and_read_back_everywhere(
            self, http: httpx.Client) -> None:
        # given a job, a comparison and a batch whose metadata nests 16 deep (the limit)
        deep = nested(15)  # (an object holding 15 more levels: 16)
        job = http.post("/v1/jobs", json={**GRAY, "metadata": deep})
        assert job.status_code == 202, job.text
        comparison = http.post("/v1/comparisons", json={
            "image": IMAGE, "prompt": "make it blue", "models": ["qwen-edit", "seededit-v3"],
            "metadata": deep})
        assert comparison.status_code == 202, comparison.text
        batch = http.post("/v1/batches", json={"items": [GRAY], "metadata": deep})
        # then everything that lists or shows them answers, with the metadata as given
        assert http.get(f"/v1/jobs/{job.json()['id']}").json()["metadata"] == deep
        for path in ("/v1/jobs", "/v1/comparisons", "/v1/batches"):
            assert http.get(path).status_code == 200, path
        assert http.get(f"/v1/comparisons/{comparison.json()['id']}").json()["metadata"] == deep
        assert batch.status_code == 202, batch.text
        assert http.get(f"/v1/batches/{batch.json()['id']}").json()["metadata"] == deep

    def test_json_nested_100000_deep_is_a_422_never_a_500(self, http: httpx.Client) -> None:
        deep = "[" * 100_000 + "]" * 100_000
        answers = {
            "JSONL line": jsonl(http, deep.encode()),
            "batch defaults (multipart)": jsonl(http, json.dumps(GRAY).encode(), defaults=deep),
            "batch metadata (multipart)": jsonl(http, json.dumps(GRAY).encode(), metadata=deep),
            "job metadata (multipart)": http.post(
                "/v1/jobs", data={"operation": "grayscale", "metadata": deep},
                files={"image": ("a.png", image_bytes((40, 30)), "image/png")}),
            "job body": http.post("/v1/jobs", content=deep,
                                  headers={"Content-Type": "application/json"}),
            "comparison body": http.post("/v1/comparisons", content=deep,
                                         headers={"Content-Type": "application/json"}),
        }
        for how, answer in answers.items():
            assert answer.status_code == 422, (how, answer.text[:300])
            assert answer.json()["code"] in ("invalid_input", "invalid_json", "batch_invalid")


class TestIdempotencyKeys:
    def test_an_empty_key_is_a_422_on_every_try(self, http: httpx.Client) -> None:
        posts = {"/v1/jobs": GRAY, "/v1/batches": {"items": [GRAY]},
                 "/v1/comparisons": {**GRAY, "models": ["local-pillow", "local-pillow"]}}
        for path, body in posts.items():
            # (issue 23: the first was accepted and stored the key as '', the second a 500)
            for _ in range(2):
                answer = http.post(path, json=body, headers={"Idempotency-Key": ""})
                problem = assert_problem(answer, 422, "invalid_input")
                assert problem["field"] == "Idempotency-Key", (path, problem)

    @pytest.mark.parametrize("key", ["", "   ", "\t"])
    def test_the_domain_refuses_a_blank_key_too(self, key: str) -> None:
        # (over HTTP a blank value arrives empty: servers strip a header's spaces)
        with pytest.raises(InvalidInput, match="must not be empty"):
            checked_key(key)
        assert checked_key(None) is None and checked_key("k-1") == "k-1"


class TestMultipart:
    def test_a_multipart_body_that_cannot_be_read_is_invalid_multipart(
            self, http: httpx.Client) -> None:
        parts = "".join(f'--b\r\nContent-Disposition: form-data; name="f{n}"\r\n\r\nx\r\n'
                        for n in range(10_000)) + "--b--\r\n"
        big_field = ('--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n'
                     + "p" * (2 << 20) + "\r\n--b--\r\n")
        long_name = ('--b\r\nContent-Disposition: form-data; name="image"; filename="'
                     + "f" * (1 << 20) + '"\r\nContent-Type: image/png\r\n\r\nx\r\n--b--\r\n')
        bodies = {
            "10,000 parts": ("multipart/form-data; boundary=b", parts),
            "a 2 MB text field": ("multipart/form-data; boundary=b", big_field),
            "a 1 MB filename": ("multipart/form-data; boundary=b", long_name),
            "no boundary": ("multipart/form-data", "--b--\r\n"),
        }
        for how, (content_type, body) in bodies.items():
            answer = http.post("/v1/jobs", content=body.encode(),
                               headers={"Content-Type": content_type})
            problem = assert_problem(answer, 422, "invalid_multipart")
            assert "could not be read" in problem["detail"], (how, problem)


_CHUNK = b"%x\r\n%s\r\n" % (1 << 20, b"a" * (1 << 20))  # one chunk of a chunked body


def stream_body(api: ApiProcess, path: str, key: str | None, total: int) -> int:
    """POST `total` bytes of a JSON string, chunked, as fast as the server takes them and
    until it answers; the status it answered (0 if it closed without one)."""
    sock = socket.create_connection((api.host, api.port), timeout=30)
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json"
                 "\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    sock.sendall(b'7\r\n{"x": "\r\n')
    chunk = memoryview(_CHUNK)
    with contextlib.suppress(OSError):  # closed on us: its answer was written first
        for _ in range(total >> 20):
            at = 0
            while at < len(chunk):
                readable, writable, _ = select.select([sock], [sock], [], 30)
                if readable:  # it answered (a server that refuses does not read on)
                    break
                if writable:
                    at += sock.send(chunk[at:])
            if at < len(chunk):
                break
    sock.settimeout(30)
    head = b""
    with contextlib.suppress(OSError):
        while b"\r\n" not in head and (more := sock.recv(4096)):
            head += more
    sock.close()
    return int(head.split()[1]) if head.startswith(b"HTTP/") else 0


def post_paths(api: ApiProcess) -> list[str]:
    """Every operation that takes a body, from the API's own OpenAPI document."""
    spec = httpx.get(f"{api.url}/openapi.json", timeout=10).json()
    return sorted(path.replace("{comparison_id}", "cmp_x").replace("{job_id}", "job_x")
                  .replace("{batch_id}", "bat_x").replace("{delivery_id}", "whd_x")
                  for path, ops in spec["paths"].items() if "post" in ops)


class TestBodiesBeforeTheKey:
    def test_bodies_without_a_valid_key_cost_almost_nothing_on_every_route(
            self, api: ApiProcess) -> None:
        # given a revoked key, and every route that takes a body (uploads included)
        revoked = revoke(api)
        paths = post_paths(api)
        assert "/v1/uploads" in paths and "/v1/jobs" in paths
        for key in (None, revoked):
            for path in paths:
                # when 180 MB bodies are sent to it, 8 at once, without a valid key
                measured = measure(api, lambda path=path, key=key: stream_body(
                    api, path, key, 180 << 20), times=8)
                # then each is refused unread (401), or at its small cap (413), and the
                # API's memory rises by at most 16 MB for all eight
                assert set(measured.answers) <= {401, 413}, (path, key, measured.answers)
                assert measured.rise <= PER_REQUEST, (path, f"+{measured.rise / MB:.1f} MB")

    def test_a_300_mb_inline_body_with_a_valid_key_costs_at_most_48_mb(
            self, api: ApiProcess) -> None:
        # (issue 24: 169 MB before the inline cap; 32 MiB now, larger images go by URL)
        measured = measure(api, lambda: stream_body(api, "/v1/jobs", api.key, 300 << 20))
        assert measured.answers == [413]
        assert measured.rise <= 48 * MB, f"+{measured.rise / MB:.1f} MB"


def revoke(api: ApiProcess) -> str:
    from sqlalchemy import update

    from shared.db import session_scope, utcnow
    from shared.models import ApiKey
    from shared.tenants import create_api_key, hash_key

    with session_scope(api.database_url) as session:
        key = create_api_key(session, f"revoked-{uuid.uuid4().hex[:8]}")
        session.execute(update(ApiKey).where(ApiKey.key_hash == hash_key(key))
                        .values(revoked_at=utcnow()))
    return key
