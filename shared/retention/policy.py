"""How long a job's inputs and outputs are kept after it ends: the job's own `retention`,
else its tenant's, else the deployment's (EDITQ_KEEP_INPUTS_DAYS, EDITQ_KEEP_OUTPUTS_DAYS).
Seconds, with FOREVER for "for good"; a job's row keeps the figure it was made with, so a
setting changed later does not reach back (a row from before retention has None: the
deployment's current figure)."""

from __future__ import annotations

from typing import Any

from shared.config import Settings
from shared.errors import InvalidInput

FOREVER = -1
DAY = 86_400
MAX_DAYS = 36_500
FIELDS = {"inputs_days": "inputs", "outputs_days": "outputs"}


def deployment(settings: Settings, which: str) -> int:
    days = getattr(settings, f"keep_{which}_days")
    return FOREVER if days is None else round(days * DAY)


def check_override(retention: dict[str, Any] | None) -> dict[str, float]:
    """A request's `retention` ({"inputs_days": n, "outputs_days": n}, each optional),
    refused unless it says only that, in days from 0 (as soon as the job has ended and its
    events are delivered) to 100 years."""
    if not retention:
        return {}
    unknown = set(retention) - set(FIELDS)
    if unknown:
        raise InvalidInput(f"retention takes {' and '.join(FIELDS)}, not "
                           f"{', '.join(sorted(unknown))}", field="retention")
    for name, value in retention.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                0 <= value <= MAX_DAYS):
            raise InvalidInput(f"retention.{name} must be a number of days, 0 to {MAX_DAYS}",
                               field=f"retention.{name}")
    return {name: float(value) for name, value in retention.items()}


def resolve(settings: Settings, tenant_keep: dict[str, int | None],
            override: dict[str, float]) -> dict[str, int]:
    """{"inputs": seconds, "outputs": seconds} for a new job."""
    kept = {}
    for field, which in FIELDS.items():
        if field in override:
            kept[which] = round(override[field] * DAY)
        elif tenant_keep.get(which) is not None:
            kept[which] = int(tenant_keep[which] or 0)
        else:
            kept[which] = deployment(settings, which)
    return kept


def days(seconds: int | None, settings: Settings, which: str) -> float | None:
    """A kept figure as the API shows it: days, None for good."""
    value = deployment(settings, which) if seconds is None else seconds
    return None if value == FOREVER else round(value / DAY, 6)
