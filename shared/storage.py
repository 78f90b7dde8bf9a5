"""S3-compatible object storage through boto3: the only place image bytes live.

Inputs are content-addressed (`inputs/<sha256>`), so resubmitting or
reprocessing an image never stores it twice; outputs live under their job
(`outputs/<job_id>/<n>.<ext>`), so a job's results are easy to find and delete.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.config import Settings
from shared.errors import StorageObjectMissing, StorageUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef


def input_key(sha256: str) -> str:
    return f"inputs/{sha256[:2]}/{sha256}"


def output_key(job_id: str, index: int, extension: str) -> str:
    return f"outputs/{job_id}/{index}.{extension}"


def outputs_prefix(job_id: str) -> str:
    return f"outputs/{job_id}/"


_MISSING = ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def _unavailable_on_failure(action: str) -> Iterator[None]:
    """Turn transport and server failures into one retryable domain error."""
    try:
        yield
    except ClientError as exc:
        raise StorageUnavailable(f"S3 {action} failed: {_error_code(exc)}") from exc
    except BotoCoreError as exc:
        raise StorageUnavailable(f"S3 {action} failed: {type(exc).__name__}") from exc


def _client(settings: Settings, endpoint_url: str | None) -> S3Client:
    secret = settings.s3_secret_access_key
    client: S3Client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        config=Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            retries={"max_attempts": 4, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            max_pool_connections=64,
        ),
    )
    return client


class Storage:
    """A bucket, with the few operations editq needs."""

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.s3_bucket
        self.presign_expiry = settings.presign_expiry_seconds
        self.client = _client(settings, settings.s3_endpoint_url)
        # Presigning is local computation; a second client signs for the public host.
        self._presigner = (
            _client(settings, settings.s3_public_endpoint_url)
            if settings.s3_public_endpoint_url
            else self.client
        )

    def ensure_bucket(self) -> None:
        with _unavailable_on_failure("create bucket"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if _error_code(exc) not in _MISSING:
                    raise
                try:
                    self.client.create_bucket(Bucket=self.bucket)
                except ClientError as create_exc:
                    if _error_code(create_exc) not in ("BucketAlreadyOwnedByYou",
                                                       "BucketAlreadyExists"):
                        raise

    def put(self, key: str, data: bytes, content_type: str,
            metadata: dict[str, str] | None = None) -> None:
        extra: dict[str, Any] = {"Metadata": metadata} if metadata else {}
        with _unavailable_on_failure("put"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                   ContentType=content_type, **extra)

    def get(self, key: str) -> bytes:
        with _unavailable_on_failure("get"):
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            except ClientError as exc:
                if _error_code(exc) in _MISSING:
                    raise StorageObjectMissing(f"no object {key} in {self.bucket}",
                                               key=key) from exc
                raise
            data: bytes = body.read()
        return data

    def exists(self, key: str) -> bool:
        with _unavailable_on_failure("head"):
            try:
                self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _error_code(exc) in _MISSING:
                    return False
                raise
        return True

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix`; answer how many there were."""
        deleted = 0
        with _unavailable_on_failure("delete"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                keys: list[ObjectIdentifierTypeDef] = [
                    {"Key": obj["Key"]} for obj in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
                    deleted += len(keys)
        return deleted

    def put_if_absent(self, key: str, data: bytes, content_type: str) -> None:
        """Content-addressed keys hold the same bytes forever, so one upload suffices.

        One conditional PUT (`If-None-Match: *`), not a HEAD then a PUT: one round trip
        for a new input, the API's common case. A store that ignores the condition
        overwrites the key with the same bytes, which changes nothing."""
        with _unavailable_on_failure("put"):
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                       ContentType=content_type, IfNoneMatch="*")
            except ClientError as exc:
                if _error_code(exc) not in ("PreconditionFailed", "ConditionalRequestConflict"):
                    raise

    def presigned_get_url(self, key: str, expires_in: int | None = None) -> str:
        url: str = self._presigner.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=expires_in or self.presign_expiry,
        )
        return url

    def ping(self) -> None:
        with _unavailable_on_failure("head bucket"):
            self.client.head_bucket(Bucket=self.bucket)
