"""Body caps hold as bytes arrive: a real uvicorn API, spoken to over a raw socket so the
test controls exactly what is sent (chunked, no Content-Length) and counts it."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from cli.stack import Stack
from shared.config import MiB
from tests.api.conftest import ApiProcess, api_process

pytestmark = pytest.mark.timeout(60)

IMAGE_BYTES = 64 * 1024
# What the API computes for these settings (api/body_caps.edit_body_limit).
EDIT_CAP = (IMAGE_BYTES * 4 // 3 + 4) * 2 + MiB


@pytest.fixture(scope="module")
def api(stack: Stack, database_url: str, redis_base: str, s3_url: str, bucket: str
        ) -> Iterator[ApiProcess]:
    with api_process(stack, database_url, redis_base, s3_url, bucket, {
            "EDITQ_MAX_IMAGE_BYTES": str(IMAGE_BYTES), "EDITQ_MAX_IMAGES_PER_JOB": "2"}) as api:
        yield api


@dataclass
class Sent:
    status: int
    body: bytes
    sent: int


def stream(api: ApiProcess, path: str, content_type: str, total: int,
           declared: int | None = None, prefix: bytes = b"") -> Sent:
    """POST `total` bytes in 64 KiB chunks (chunked unless `declared`), stopping as soon as
    the server answers or closes; count what was sent."""
    sock = socket.create_connection((api.host, api.port), timeout=20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    framing = (f"Content-Length: {declared}" if declared is not None
               else "Transfer-Encoding: chunked")
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {api.host}\r\nAuthorization: Bearer {api.key}\r\n"
                 f"Content-Type: {content_type}\r\n{framing}\r\n\r\n".encode())
    chunk, sent = b"0" * 65536, 0
    if prefix:
        sock.sendall(b"%x\r\n%s\r\n" % (len(prefix), prefix))
    try:
        while sent < total and not select.select([sock], [], [], 0)[0]:
            sock.sendall(chunk if declared is not None
                         else b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
    except OSError:
        pass  # the server closed the connection on us: what it answered is below
    answer = b""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except OSError:
            break
        if not data:
            break
        answer += data
        if b"\r\n\r\n" in answer and answer.endswith(b"}"):
            break
    sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return Sent(int(head.split()[1]), body, sent)


MULTIPART_FILE = (b'--xyz\r\nContent-Disposition: form-data; name="image"; '
                  b'filename="a.png"\r\nContent-Type: image/png\r\n\r\n')


@pytest.mark.parametrize("content_type,prefix", [
    ("application/json", b'{"image": "'),
    ("multipart/form-data; boundary=xyz", MULTIPART_FILE)], ids=["json", "multipart"])
def test_a_chunked_edit_over_its_cap_is_refused_having_read_about_the_cap(
        api: ApiProcess, content_type: str, prefix: bytes) -> None:
    # when 64 MiB are streamed without a Content-Length (a JSON string, or one file part)
    answer = stream(api, "/v1/jobs", content_type, 64 * MiB, prefix=prefix)
    # then the answer is a 413 problem, and the client got to send about the cap only
    assert answer.status == 413, answer
    assert b'"code": "request_too_large"' in answer.body
    assert answer.sent < EDIT_CAP + 8 * MiB  # (what the sockets' buffers hold, at most)


def test_a_declared_length_over_the_cap_is_refused_before_the_body(api: ApiProcess) -> None:
    answer = stream(api, "/v1/quotes", "application/json", 0, declared=10**9)
    assert answer.status == 413 and answer.sent == 0


def test_small_routes_have_a_small_cap(api: ApiProcess) -> None:
    # a vote is a few bytes: 8 MiB of one is refused after about 1 MiB
    answer = stream(api, "/v1/comparisons/cmp_x/vote", "application/json", 8 * MiB)
    assert answer.status == 413
    assert answer.sent < MiB + 8 * MiB
    # and the API is still well
    assert httpx.get(f"{api.url}/healthz", timeout=5).status_code == 200


def test_a_body_under_the_cap_goes_through(api: ApiProcess) -> None:
    # (not an image: the route itself answers, not the cap)
    response = httpx.post(f"{api.url}/v1/jobs", json={"image": "x" * 1000}, timeout=10,
                          headers={"Authorization": f"Bearer {api.key}"})
    assert response.status_code == 422 and response.json()["code"] == "invalid_image"
