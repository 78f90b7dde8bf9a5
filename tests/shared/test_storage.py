"""shared.storage against a real moto S3 server, spoken to over HTTP by boto3."""

from __future__ import annotations

import hashlib
import uuid
from urllib.parse import urlsplit

import httpx
import pytest
from botocore.exceptions import ClientError

from shared.config import Settings
from shared.images import inspect_image
from shared.storage import Storage, input_key, output_key, outputs_prefix
from tests.helpers import image_bytes

pytestmark = pytest.mark.timeout(60)


def new_key() -> str:
    return f"tests/{uuid.uuid4().hex}"


def with_changes(settings: Settings, **changes: object) -> Settings:
    return Settings(**{**settings.model_dump(), **changes})


class TestObjects:
    def test_put_then_get_returns_the_same_bytes(self, storage: Storage) -> None:
        # given an image stored under a key
        key, data = new_key(), image_bytes()
        storage.put(key, data, "image/png")
        # when it is read back
        # then the bytes are identical
        assert storage.get(key) == data

    def test_put_records_content_type_and_metadata(self, storage: Storage) -> None:
        # given an object stored with a content type and metadata
        key = new_key()
        storage.put(key, b"abc", "image/webp", metadata={"job": "j-1"})
        # when its head is read
        head = storage.client.head_object(Bucket=storage.bucket, Key=key)
        # then both were recorded
        assert head["ContentType"] == "image/webp"
        assert head["Metadata"] == {"job": "j-1"}

    def test_exists_is_true_for_a_stored_key(self, storage: Storage) -> None:
        # given a stored object
        key = new_key()
        storage.put(key, b"x", "application/octet-stream")
        # when its existence is asked
        # then it exists
        assert storage.exists(key) is True

    def test_exists_is_false_for_a_missing_key(self, storage: Storage) -> None:
        # given a key never written
        # when its existence is asked
        # then it does not exist
        assert storage.exists(new_key()) is False

    def test_put_if_absent_stores_a_new_key(self, storage: Storage) -> None:
        # given a key never written
        key = new_key()
        # when it is put if absent
        storage.put_if_absent(key, b"first", "image/png")
        # then it is stored
        assert storage.get(key) == b"first"

    def test_put_if_absent_does_not_overwrite(self, storage: Storage) -> None:
        # given an object already stored
        key = new_key()
        storage.put(key, b"first", "image/png")
        etag = storage.client.head_object(Bucket=storage.bucket, Key=key)["ETag"]
        # when other bytes are put if absent under the same key
        storage.put_if_absent(key, b"second", "image/jpeg")
        # then the original object is untouched: same bytes, same ETag, same type
        head = storage.client.head_object(Bucket=storage.bucket, Key=key)
        assert storage.get(key) == b"first"
        assert head["ETag"] == etag
        assert head["ContentType"] == "image/png"


class TestPresigning:
    def test_presigned_url_downloads_the_same_bytes(self, storage: Storage) -> None:
        # given a stored image
        key, data = new_key(), image_bytes((30, 20))
        storage.put(key, data, "image/png")
        # when its presigned URL is fetched with no credentials
        response = httpx.get(storage.presigned_get_url(key), timeout=10)
        # then the same bytes come back, with their type
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["content-type"] == "image/png"

    def test_presigned_url_carries_the_expiry(self, storage: Storage) -> None:
        # given a stored object
        key = new_key()
        storage.put(key, b"x", "image/png")
        # when a URL is presigned for 120 seconds
        url = storage.presigned_get_url(key, expires_in=120)
        # then the signature says 120 seconds
        assert "X-Amz-Expires=120" in url

    def test_public_endpoint_names_the_public_host(self, settings: Settings) -> None:
        # given settings where clients reach S3 by another address than the workers do
        public = with_changes(settings, s3_public_endpoint_url="http://files.example.com:9000")
        storage = Storage(public)
        # when a URL is presigned
        url = urlsplit(storage.presigned_get_url("outputs/j/0.png"))
        # then it names the public host, path-style, with the bucket and key
        assert url.netloc == "files.example.com:9000"
        assert url.path == f"/{settings.s3_bucket}/outputs/j/0.png"

    def test_without_public_endpoint_the_url_names_the_endpoint(
            self, storage: Storage, s3_url: str) -> None:
        # given settings with one S3 endpoint only
        # when a URL is presigned
        url = urlsplit(storage.presigned_get_url("outputs/j/0.png"))
        # then it names that endpoint
        assert url.netloc == urlsplit(s3_url).netloc


class TestBucket:
    def test_ensure_bucket_creates_a_missing_bucket(self, settings: Settings) -> None:
        # given a bucket that does not exist yet
        storage = Storage(with_changes(settings, s3_bucket=f"editq-new-{uuid.uuid4().hex[:8]}"))
        with pytest.raises(ClientError):
            storage.client.head_bucket(Bucket=storage.bucket)
        # when it is ensured
        storage.ensure_bucket()
        # then it exists and takes objects
        storage.client.head_bucket(Bucket=storage.bucket)
        storage.put("k", b"v", "text/plain")
        assert storage.get("k") == b"v"

    def test_ensure_bucket_is_idempotent(self, settings: Settings) -> None:
        # given a bucket already ensured, holding an object
        storage = Storage(with_changes(settings, s3_bucket=f"editq-new-{uuid.uuid4().hex[:8]}"))
        storage.ensure_bucket()
        storage.put("k", b"kept", "text/plain")
        # when it is ensured again
        storage.ensure_bucket()
        # then nothing fails and nothing is lost
        assert storage.get("k") == b"kept"


class TestKeys:
    def test_input_key_is_content_addressed(self) -> None:
        # given two images, one of them twice
        a, b = image_bytes(color=(1, 2, 3)), image_bytes(color=(4, 5, 6))
        sha = hashlib.sha256(a).hexdigest()
        # when their input keys are made from their hashes
        info_a = inspect_image(a, field="image", max_bytes=10**6, max_pixels=10**6)
        info_b = inspect_image(b, field="image", max_bytes=10**6, max_pixels=10**6)
        # then the key is the hash under its tenant, fanned out by its first two characters
        assert input_key("ten_a", info_a.sha256) == f"tenants/ten_a/inputs/{sha[:2]}/{sha}"
        assert input_key("ten_a", info_a.sha256) == input_key("ten_a", sha)
        assert input_key("ten_a", info_a.sha256) != input_key("ten_a", info_b.sha256)
        # and two tenants' same image are two objects, each its tenant's
        assert input_key("ten_a", sha) != input_key("ten_b", sha)

    def test_output_key_is_under_its_job(self) -> None:
        # given a job id
        job_id = str(uuid.uuid4())
        # when the key of its second output is made
        key = output_key("ten_a", job_id, 1, "webp")
        # then it lives under the tenant and the job, numbered and with the extension
        assert key == f"tenants/ten_a/outputs/{job_id}/1.webp"
        assert key.startswith(outputs_prefix("ten_a", job_id))
        assert output_key("ten_a", job_id, 0, "webp") != key


def test_delete_prefix_removes_exactly_the_objects_under_it(storage: Storage) -> None:
    import uuid

    job = f"job_{uuid.uuid4().hex[:8]}"
    for name in ("0.png", "1.png"):
        storage.put(f"outputs/{job}/{name}", b"x", "image/png")
    storage.put(f"outputs/{job}x/0.png", b"y", "image/png")  # a neighbour, not under it
    assert storage.delete_prefix(f"outputs/{job}/") == 2
    assert not storage.exists(f"outputs/{job}/0.png")
    assert storage.exists(f"outputs/{job}x/0.png")
    assert storage.delete_prefix(f"outputs/{job}/") == 0
