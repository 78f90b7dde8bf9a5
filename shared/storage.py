"""S3-compatible object storage through boto3: the only place image bytes live.

Everything a tenant stored is under its own prefix (`tenants/<id>/`), so erasing a
tenant is one prefix and no object is ever shared between two tenants. Inputs are
content-addressed within it (`tenants/<id>/inputs/<sha256>`), so resubmitting or
reprocessing an image never stores it twice; outputs live under their job
(`tenants/<id>/outputs/<job_id>/<n>.<ext>`), so a job's results are easy to find and
delete. (`shared.retention.layout` moves a store written before this layout.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.config import Settings
from shared.errors import ObjectTooLarge, StorageObjectMissing, StorageUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef


def tenant_prefix(tenant_id: str) -> str:
    return f"tenants/{tenant_id}/"


def input_key(tenant_id: str, sha256: str) -> str:
    return f"tenants/{tenant_id}/inputs/{sha256[:2]}/{sha256}"


def output_key(tenant_id: str, job_id: str, index: int, extension: str) -> str:
    return f"tenants/{tenant_id}/outputs/{job_id}/{index}.{extension}"


def outputs_prefix(tenant_id: str, job_id: str) -> str:
    return f"tenants/{tenant_id}/outputs/{job_id}/"


def upload_key(tenant_id: str, upload_id: str) -> str:
    return f"tenants/{tenant_id}/uploads/{upload_id}"


def batch_key(tenant_id: str, batch_id: str, name: str) -> str:
    """A batch's own files: its checked items, its manifest."""
    return f"tenants/{tenant_id}/batches/{batch_id}/{name}"


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


def _client(settings: Settings, endpoint_url: str | None,
            overrides: dict[str, str] | None = None) -> S3Client:
    """A client of the deployment's S3, or (`overrides`: a source bucket's own endpoint,
    region and credentials, EDITQ_SOURCE_BUCKETS) of another."""
    over = overrides or {}
    secret = settings.s3_secret_access_key
    client: S3Client = boto3.client(
        "s3",
        endpoint_url=over.get("endpoint_url", endpoint_url),
        region_name=over.get("region", settings.s3_region),
        aws_access_key_id=over.get("access_key_id", settings.s3_access_key_id),
        aws_secret_access_key=over.get("secret_access_key",
                                       secret.get_secret_value() if secret else None),
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
    """A bucket, with the few operations editq needs: editq's own, or (`source`) one of
    the buckets a batch may read its images from (EDITQ_SOURCE_BUCKETS)."""

    def __init__(self, settings: Settings, source: str | None = None) -> None:
        overrides = settings.source_buckets[source] if source is not None else None
        self.bucket = source if source is not None else settings.s3_bucket
        self.cors_origins = [o.strip() for o in settings.s3_cors_origins.split(",")
                             if o.strip()] if source is None else []
        self.presign_expiry = settings.presign_expiry_seconds
        self.client = _client(settings, settings.s3_endpoint_url, overrides)
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
            if self.cors_origins:  # (the console's direct uploads, EDITQ_S3_CORS_ORIGINS)
                self.client.put_bucket_cors(Bucket=self.bucket, CORSConfiguration={
                    "CORSRules": [{"AllowedOrigins": self.cors_origins,
                                   "AllowedMethods": ["PUT", "GET"],
                                   "AllowedHeaders": ["*"], "MaxAgeSeconds": 3600}]})

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

    def get_capped(self, key: str, max_bytes: int) -> bytes:
        """The object's bytes, refused (ObjectTooLarge) rather than read past `max_bytes`."""
        with _unavailable_on_failure("get"):
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _error_code(exc) in _MISSING:
                    raise StorageObjectMissing(f"no object {key} in {self.bucket}",
                                               key=key) from exc
                raise
            size = answer["ContentLength"]
            if size > max_bytes:
                answer["Body"].close()
                raise ObjectTooLarge(f"{key} is {size} bytes, over the limit of {max_bytes}",
                                     key=key, bytes=size, limit=max_bytes)
            data: bytes = answer["Body"].read(max_bytes + 1)
        return data

    def list_page(self, prefix: str, after: str, limit: int) -> list[str]:
        """Up to `limit` keys under `prefix` that sort after `after`, in order."""
        with _unavailable_on_failure("list"):
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix,
                                               StartAfter=after, MaxKeys=limit)
        return [obj["Key"] for obj in page.get("Contents", [])]

    def delete(self, keys: list[str]) -> None:
        with _unavailable_on_failure("delete"):
            for start in range(0, len(keys), 1000):
                chunk: list[ObjectIdentifierTypeDef] = [{"Key": k}
                                                        for k in keys[start:start + 1000]]
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk})

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

    def presigned_put(self, key: str, content_type: str, size: int,
                      expires_in: int) -> str:
        """A URL that PUTs exactly `size` bytes of `content_type` to `key` (both are
        signed: S3 refuses another type or length)."""
        url: str = self._presigner.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key, "ContentType": content_type,
                    "ContentLength": size},
            ExpiresIn=expires_in)
        return url

    def ping(self) -> None:
        with _unavailable_on_failure("head bucket"):
            self.client.head_bucket(Bucket=self.bucket)
