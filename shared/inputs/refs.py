"""The three forms of an image field, and what the API checks of a reference without
fetching it.

An image field (`image`, `images[]`, `mask`) holds inline bytes (base64 or a data URI),
an `https://` URL, or an upload id (`upl_...`); a batch's bucket source makes references
to its objects. The API checks a reference's form only (scheme, host, no credentials,
no private literal address, an upload's id): resolving names and fetching are the
worker's, through the address guard, so that accepting 100,000 of them costs no DNS
and no bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from shared.address_guard import UnsafeWebhookUrl, address_category, parse_url
from shared.errors import InputRefused
from shared.images import decode_base64_image

UPLOAD_ID = re.compile(r"upl_[0-9a-f]{24}")


@dataclass(frozen=True)
class InputRef:
    """An image given by reference: a URL, an upload id, or a source bucket's object
    (`value` is then "bucket/key")."""

    kind: Literal["url", "upload", "source"]
    value: str

    def as_json(self) -> dict[str, Any]:
        if self.kind == "source":
            bucket, _, key = self.value.partition("/")
            return {"source": {"bucket": bucket, "key": key}}
        return {self.kind: self.value}

    @staticmethod
    def of_json(data: dict[str, Any]) -> InputRef:
        if "source" in data:
            return InputRef("source", f"{data['source']['bucket']}/{data['source']['key']}")
        if "url" in data:
            return InputRef("url", str(data["url"]))
        return InputRef("upload", str(data["upload"]))

    def shown(self) -> str:
        """What a message may say of it: a URL's scheme and host, never its path or query
        (a presigned URL carries its signature there)."""
        if self.kind == "url":
            parts = urlsplit(self.value)
            return f"{parts.scheme}://{parts.hostname or '?'}/..."
        return self.value if self.kind == "upload" else f"s3://{self.value}"


def is_reference(value: str) -> bool:
    """Whether an image field's text is a reference rather than inline bytes."""
    head = value[:8].lower()
    return head.startswith(("https://", "http://")) or value.startswith("upl_")


def reference(value: str, *, field: str, allowed_hosts: frozenset[str]) -> InputRef:
    """An image field's text as a reference, its form checked; InputRefused otherwise."""
    if value.startswith("upl_"):
        if not UPLOAD_ID.fullmatch(value):
            raise InputRefused(f"{field}: {value[:40]!r} is not an upload id", field=field)
        return InputRef("upload", value)
    check_url(value, field=field, allowed_hosts=allowed_hosts)
    return InputRef("url", value)


def check_url(url: str, *, field: str, allowed_hosts: frozenset[str]) -> None:
    """https to a public host, or any http(s) to a host (or host:port) listed in
    `allowed_hosts`; no credentials, no private literal address. Names are resolved and
    checked again by the worker, just before it connects."""
    try:
        scheme, host, port, literal = parse_url(url)
    except UnsafeWebhookUrl as exc:
        raise InputRefused(exc.message.replace("webhook_url refused", f"{field} refused"),
                           field=field) from None
    if host_allowed(host, port, allowed_hosts):
        return
    if scheme != "https":
        raise InputRefused(f"{field} refused: an image URL must be https", field=field)
    if literal is not None:
        category = address_category(literal)
        if category is not None:
            raise InputRefused(f"{field} refused: {literal} is not a public address "
                               f"({category})", field=field)


def host_allowed(host: str, port: int, allowed_hosts: frozenset[str]) -> bool:
    return host in allowed_hosts or f"{host}:{port}" in allowed_hosts


def image_value(value: str, *, field: str, max_bytes: int,
                allowed_hosts: frozenset[str]) -> bytes | InputRef:
    """An image field's text in any of its forms: a reference, or inline bytes."""
    if is_reference(value):
        return reference(value, field=field, allowed_hosts=allowed_hosts)
    return decode_base64_image(value, field=field, max_bytes=max_bytes)
