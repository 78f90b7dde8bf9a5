"""Direct uploads: a presigned request that puts an image straight into editq's storage,
so the API never holds its bytes; a job then names it by id (`upl_...`).

The size and type asked for are signed into the request (S3 refuses others), and the
image is checked when a job first uses it (shared.inputs.resolve), as any input is. An
upload is its tenant's alone; once it expires (EDITQ_UPLOAD_EXPIRY_SECONDS after it
was made) beat deletes it, used or not: the jobs that used it keep their own copy.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db import session_scope, utcnow
from shared.errors import InputRefused, InvalidInput
from shared.formats import iso
from shared.images import ALLOWED_FORMATS
from shared.models import Upload
from shared.storage import Storage, upload_key

CONTENT_TYPES = frozenset(ALLOWED_FORMATS.values())


def create(session: Session, settings: Settings, storage: Storage, tenant_id: str,
           content_type: str, size: int) -> dict[str, Any]:
    """Record an upload and answer the presigned request that sends its bytes."""
    if content_type not in CONTENT_TYPES:
        raise InvalidInput(f"content_type must be one of {', '.join(sorted(CONTENT_TYPES))}",
                           field="content_type")
    if not 1 <= size <= settings.max_image_bytes:
        raise InvalidInput(f"size must be 1 to {settings.max_image_bytes} bytes",
                           field="size", limit=settings.max_image_bytes)
    now = utcnow()
    upload = Upload(id=f"upl_{secrets.token_hex(12)}", tenant_id=tenant_id,
                    content_type=content_type, size=size, created_at=now,
                    expires_at=now + timedelta(seconds=settings.upload_expiry_seconds))
    upload.key = upload_key(tenant_id, upload.id)
    session.add(upload)
    url_expires = now + timedelta(seconds=min(settings.upload_url_seconds,
                                              settings.upload_expiry_seconds))
    url = storage.presigned_put(upload.key, content_type, size,
                                int((url_expires - now).total_seconds()))
    return {"id": upload.id, "method": "PUT", "url": url,
            "headers": {"Content-Type": content_type, "Content-Length": str(size)},
            "content_type": content_type, "size": size, "url_expires_at": iso(url_expires),
            "expires_at": iso(upload.expires_at)}


def usable(session: Session, tenant_id: str, upload_id: str, *, field: str,
           now: datetime | None = None) -> Upload:
    """The tenant's upload, if it has not expired; InputRefused otherwise (another
    tenant's upload is no different from one that does not exist)."""
    upload = session.scalar(select(Upload).where(Upload.id == upload_id,
                                                 Upload.tenant_id == tenant_id))
    if upload is None:
        raise InputRefused(f"{field}: no upload {upload_id}", field=field)
    if upload.expires_at <= (now or utcnow()):
        raise InputRefused(f"{field}: upload {upload_id} has expired; upload the image "
                           "again", field=field)
    return upload


def delete_expired(settings: Settings, storage: Storage, limit: int = 1000) -> int:
    """Delete up to `limit` expired uploads, objects first; answer how many (beat's
    reaper calls it at each pass)."""
    with session_scope(settings.database_url) as session:
        expired = list(session.scalars(select(Upload).where(Upload.expires_at <= utcnow())
                                       .order_by(Upload.expires_at).limit(limit)))
        if expired:
            storage.delete([u.key for u in expired])
            session.execute(delete(Upload).where(Upload.id.in_([u.id for u in expired])))
    return len(expired)
