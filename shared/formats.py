"""How editq writes and reads what crosses its API: instants, amounts, page cursors.

One place for each, so that every endpoint, webhook and report says a time, a
price and a position the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from shared.errors import InvalidInput


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def money(value: Decimal) -> str:
    """Plain decimal text, the same on every database: 0.04, not 0.040000 or 4E-2."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def as_utc(value: datetime) -> datetime:
    """A naive datetime is taken as UTC; an aware one is converted to UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_instant(text: str, *, field: str) -> datetime:
    """An ISO 8601 date (its first instant) or date-time; UTC when no offset is given.

    This is what every date a client sends means (job lists, cost reports, batch
    filters); one that cannot be expressed in UTC (year 9999 with a negative offset,
    year 1 with a positive one) is refused, never a 500."""
    try:
        return as_utc(datetime.fromisoformat(text.strip()))
    except ValueError:
        raise InvalidInput(f"{field} must be an ISO date or date-time, like 2024-05-01 or "
                           f"2024-05-01T12:00:00Z; got {text[:64]!r}", field=field) from None
    except OverflowError:
        raise InvalidInput(f"{field} is outside the dates UTC can express: {text[:64]!r}",
                           field=field) from None


def encode_cursor(seq: int) -> str:
    """A position in a list: the last row's sequence number, as text. Any such number is
    a valid cursor (it only says where to resume), so the schema can say exactly what
    is accepted (`CURSOR_PATTERN`)."""
    return str(seq)


CURSOR_PATTERN = r"^[0-9]{1,18}$"


def decode_cursor(cursor: str) -> int:
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
        raise InvalidInput("cursor is not one this API gave out", field="cursor")
    return int(cursor)
