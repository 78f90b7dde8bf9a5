"""Database engine, sessions and the column types both SQLite and PostgreSQL agree on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import BigInteger, Dialect, Engine, Numeric, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.types import DateTime, TypeDecorator

from shared.formats import decode_cursor, encode_cursor

MONEY_PLACES = 6


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes; SQLite would otherwise hand back naive ones."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """Exact money to the micro-unit: NUMERIC(18,6) on PostgreSQL, integer micro-units on
    SQLite (whose NUMERIC is a float), so that SUM() is exact on both.

    A value finer than six decimal places is refused rather than rounded silently.
    """

    impl = Numeric(18, 6)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(18, 6, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money must be Decimal, not {type(value).__name__}")
        micros = value.scaleb(MONEY_PLACES)
        if micros != micros.to_integral_value():
            raise ValueError(f"{value} has more than {MONEY_PLACES} decimal places")
        return int(micros) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-MONEY_PLACES)
        return Decimal(str(value))


class Base(DeclarativeBase):
    pass


def make_engine(url: str, pool_size: int = 10, max_overflow: int = 10) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=pool_size, max_overflow=max_overflow)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the API read while a worker writes; foreign keys are off by default.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=10,
                         pool_pre_ping=True)


def _pool_settings() -> tuple[int, int]:
    import os

    # Read from the environment rather than Settings: tests and tools build engines
    # for URLs that no Settings object describes.
    return (int(os.environ.get("EDITQ_DATABASE_POOL_SIZE", "10")),
            int(os.environ.get("EDITQ_DATABASE_MAX_OVERFLOW", "10")))


@lru_cache(maxsize=4)
def get_engine(url: str) -> Engine:
    return make_engine(url, *_pool_settings())


def newest_first(session: Session, query: Any, seq: Any, *, limit: int,
                 cursor: str | None) -> tuple[list[Any], str | None]:
    """One page of `query`'s rows, newest first by `seq`, after `cursor`; and the cursor
    of the next page (None on the last). Keyset paging: stable under concurrent inserts."""
    if cursor:
        query = query.where(seq < decode_cursor(cursor))
    rows = list(session.scalars(query.order_by(seq.desc()).limit(limit + 1)))
    next_cursor = encode_cursor(rows[limit - 1].seq) if len(rows) > limit else None
    return rows[:limit], next_cursor


def written(session: Session, statement: Any, key: Any) -> list[Any]:
    """The `key` of each row a conditional INSERT or UPDATE wrote, read from the statement
    itself (RETURNING), so that "did it write?" never rests on a driver's row count.

    Row counts are the driver's to report and have been wrong: SQLAlchemy 2.1 with psycopg
    answers -1 for an INSERT ... ON CONFLICT DO NOTHING that wrote its row, which made the
    ledger take every first charge for a second one. Both databases editq runs on
    (PostgreSQL, SQLite 3.35+) answer RETURNING for INSERT and UPDATE alike."""
    return list(session.scalars(statement.returning(key)))


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A unit of work: commits on success, rolls back on any error.

    The session is bound to `get_engine(url)` as it is now, not through a second cache of
    session factories: two caches could evict one URL's entry at different times and
    leave two engines (two pools) for one database, one of them unseen by whoever
    listens on `get_engine(url)` (a test's statement counter missed a finish that way)."""
    session = Session(get_engine(url), expire_on_commit=False, info={"editq.url": url})
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
