"""The suite's raw API helper (tests/api_client.py): its own rules, over an httpx mock
transport (one function each)."""

from __future__ import annotations

import httpx
import pytest

from tests.api_client import ApiClient

pytestmark = pytest.mark.timeout(30)


def client_answering(*answers: httpx.Response | Exception) -> tuple[ApiClient,
                                                                    list[httpx.Request]]:
    """A client whose requests get `answers` in turn; it records what it sent."""
    seen: list[httpx.Request] = []
    pending = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = pending.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = ApiClient("http://api.test", "eq_key")
    client.http = httpx.Client(base_url="http://api.test",
                               transport=httpx.MockTransport(handle))
    return client, seen


def test_a_batch_post_whose_answer_is_lost_is_sent_again_with_the_same_key() -> None:
    # given an API whose first answer never arrives, and whose second is the batch
    client, seen = client_answering(httpx.ReadTimeout("lost"),
                                    httpx.Response(202, json={"id": "bat_1"}))
    # when a batch is created with an Idempotency-Key
    answer = client.create_batch({"items": [{}]}, idempotency_key="cli-1")
    # then it was sent twice with that key, and the batch is the answer
    assert answer == {"id": "bat_1"}
    assert [r.headers.get("idempotency-key") for r in seen] == ["cli-1", "cli-1"]


def test_without_a_key_a_lost_answer_is_not_sent_again() -> None:
    # given the same API, when a batch is created without a key
    client, seen = client_answering(httpx.ReadTimeout("lost"),
                                    httpx.Response(202, json={"id": "bat_2"}))
    # then the error is raised: sending again could make a second batch
    with pytest.raises(httpx.ReadTimeout):
        client.create_batch({"items": [{}]})
    assert len(seen) == 1
