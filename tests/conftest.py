"""Shared fixtures. The database is SQLite in a temp dir, or PostgreSQL when EVIDENCE_TEST_DB is
set (`.ci/run` runs the whole suite both ways); each test gets a fresh, migrated database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from classifier.store import connect, migrate

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
CORPORA = SHARED / "corpora"


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, empty database for one test (SQLite file, or a new PostgreSQL database)."""
    base = os.environ.get("EVIDENCE_TEST_DB")
    if not base:
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated engine on a fresh database."""
    eng = connect(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def corpora() -> Path:
    """../shared/corpora, skipping the test only if the checkout has no shared/ beside it."""
    if not CORPORA.exists():
        pytest.fail(f"shared corpora not found at {CORPORA}")
    return CORPORA
