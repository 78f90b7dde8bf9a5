"""A job's statuses, by name.

A basic module rather than part of shared.jobs.states (which re-exports them) so that
the neighbourhoods below jobs, such as money's reports, can name a status without
importing the state machine that uses them.
"""

from __future__ import annotations

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED = (
    "queued", "running", "succeeded", "failed", "canceled")
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED})
