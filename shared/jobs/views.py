"""The public shape of a job, as GET /v1/jobs/{id} and its stream show it.

The shape itself (a snapshot with storage keys, and their presigning) is
shared.job_shape's, which webhook bodies use too.
"""

from __future__ import annotations

from typing import Any

from shared.formats import iso
from shared.job_shape import job_snapshot, presign_outputs
from shared.models import Job, JobEvent
from shared.storage import Storage


def job_view(job: Job, storage: Storage) -> dict[str, Any]:
    """A job as clients see it: output URLs are presigned at read time, never stored."""
    return presign_outputs(job_snapshot(job), storage)


def event_view(event: JobEvent) -> dict[str, Any]:
    return {
        "id": event.seq,
        "at": iso(event.at),
        "type": event.type,
        "from_status": event.from_status,
        "to_status": event.to_status,
        "detail": event.detail,
    }
