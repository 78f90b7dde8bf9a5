"""shared.db: the engine a session runs on, and how a conditional write says it wrote."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from shared.db import get_engine, session_scope

pytestmark = pytest.mark.timeout(30)


def test_a_session_runs_on_the_engine_get_engine_answers_even_after_evictions(
        tmp_path: Path) -> None:
    # given a session opened on one database, then more databases' engines than the
    # engine cache keeps (what a test session's temporary databases do)
    urls = [f"sqlite:///{tmp_path / f'db{n}.sqlite'}" for n in range(6)]
    with session_scope(urls[0]) as session:
        session.execute(text("select 1"))
    for url in urls[1:]:
        get_engine(url)
    # when the first database's engine is asked for again, and a session opened on it
    engine = get_engine(urls[0])
    with session_scope(urls[0]) as session:
        bound = session.get_bind()
    # then the session runs on that engine: whoever listens on it sees its statements
    assert bound is engine
