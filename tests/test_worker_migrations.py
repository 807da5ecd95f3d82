"""Migrations from empty and from every earlier revision reach the schema in tables.py, on SQLite
and PostgreSQL, keeping rows written before the upgrade; 0004 (workers) and 0005 (two opinions)
also go down and up."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import select, text

from classifier.store import connect, migrate, utcnow
from classifier.store.engine import alembic_config
from classifier.store.tables import entries, metadata, pairs, workers


def revisions() -> list[str]:
    """→ every revision id, oldest first."""
    script = ScriptDirectory.from_config(alembic_config(connect("sqlite://")))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def _diff(engine) -> list:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), metadata)


def _seed_0001(engine) -> None:  # type: ignore[no-untyped-def]
    """Rows as a 0001-era desk would have them (plain SQL: today's tables have more columns)."""
    now = utcnow()
    with engine.begin() as c:
        c.execute(text("INSERT INTO feeds (id, name, url, tags, poll_minutes, enabled, "
                       "consecutive_errors, error_count, created_at) VALUES "
                       "(1, 'f', 'https://f.example/rss', '[]', 60, :t, 0, 0, :now)"),
                  {"now": now, "t": True})
        c.execute(text("INSERT INTO entries (id, feed_id, guid, title, summary, state, created_at)"
                       " VALUES (1, 1, 'g1', 'a title', '', 'pending', :now)"), {"now": now})
        c.execute(text("INSERT INTO articles (id, url, canonical_url, title, text, text_sha256, "
                       "extracted_from, created_at) VALUES (1, 'https://a.example/1', "
                       "'https://a.example/1', 't', 'body', :h, 'page', :now)"),
                  {"now": now, "h": "0" * 64})
        c.execute(text("INSERT INTO pairs (id, article_id, thesis_id, state, created_at, "
                       "updated_at) VALUES (1, 1, 'th', 'pending', :now, :now)"), {"now": now})


def test_the_chain_is_linear_and_ends_with_the_queue_disagreement_migration():
    assert revisions() == ["0001", "0002", "0003", "0004", "0005", "0006"]


@pytest.mark.parametrize("start", [None, "0001", "0002", "0003", "0004", "0005"])
def test_upgrade_from_every_earlier_revision_reaches_tables_py(db_url, start):
    engine = connect(db_url)
    try:
        if start is not None:
            migrate(engine, start)
            _seed_0001(engine)
        migrate(engine)
        assert _diff(engine) == []
        if start is not None:  # rows written before the upgrade are still there, unclaimed
            with engine.connect() as c:
                e = c.execute(select(entries)).mappings().one()
                p = c.execute(select(pairs)).mappings().one()
            assert (e["state"], e["claimed_by"], e["lease_until"], e["claims"]) == (
                "pending", None, None, 0)
            assert (p["state"], p["claimed_by"], p["claims"]) == ("pending", None, 0)
    finally:
        engine.dispose()


def test_workers_migration_goes_down_and_up_again(db_url):
    engine = connect(db_url)
    try:
        migrate(engine)
        cfg = alembic_config(engine)
        command.downgrade(cfg, "0003")
        with engine.connect() as c:
            names = set(c.dialect.get_table_names(c))
            cols = {col["name"] for col in c.dialect.get_columns(c, "entries")}
        assert "workers" not in names and "claims" not in cols and "lease_until" not in cols
        migrate(engine)
        assert _diff(engine) == []
        with engine.connect() as c:
            assert c.execute(select(workers)).all() == []
    finally:
        engine.dispose()


def test_two_opinions_migration_goes_down_and_up_again(db_url):
    engine = connect(db_url)
    try:
        migrate(engine)
        cfg = alembic_config(engine)
        command.downgrade(cfg, "0004")
        with engine.connect() as c:
            names = set(c.dialect.get_table_names(c))
            cols = {col["name"] for col in c.dialect.get_columns(c, "labels")}
        assert "model_versions" not in names
        assert not {"proposals", "disagreement", "encoder_version"} & cols
        migrate(engine)
        assert _diff(engine) == []
    finally:
        engine.dispose()
