"""What CLI commands that touch the database need: safe settings, and a database that is
there and migrated, said in one line when it is not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from shared.config import Settings


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment; a bad value ends the command with a readable reason."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        reasons = "\n".join(f"  - {'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                            for e in exc.errors())
        raise click.ClickException(
            f"refusing to start, the settings are not safe:\n{reasons}") from None


def require_database(settings: Settings) -> None:
    """End the command in one line unless the database exists and is at the head revision.

    Checked before anything connects: SQLite would create a missing file on connect,
    leaving an empty database behind."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from shared.migrate import current_head

    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(url.database)
        if not path.exists():
            raise click.ClickException(f"no database at {path}: run `editq db upgrade` "
                                       "to create it (EDITQ_DATABASE_URL)")
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            try:
                at = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except SQLAlchemyError:
                at = None
    except SQLAlchemyError as exc:
        raise click.ClickException(f"cannot reach the database ({type(exc).__name__}): "
                                   "check EDITQ_DATABASE_URL") from None
    finally:
        engine.dispose()
    head = current_head()
    if at != head:
        raise click.ClickException(
            f"the database is not migrated (at {at or 'no revision'}, head is {head}): "
            "run `editq db upgrade`")
