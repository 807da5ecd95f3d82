"""Engine, transactions and migrations, the same on SQLite and PostgreSQL.

SQLite: WAL, a busy timeout, foreign keys on, and `BEGIN IMMEDIATE` for write transactions so
that two writers queue on the lock instead of failing half-way with "database is locked".
PostgreSQL: `postgresql+psycopg://...`, pre-ping so a restarted server is reconnected.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def utcnow() -> datetime:
    """Now, timezone-aware UTC (the only clock the store uses)."""
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """A datetime read back from either database → timezone-aware UTC (SQLite drops the zone)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def connect(url: str) -> Engine:
    """Database URL → Engine with our SQLite pragmas or PostgreSQL pre-ping set up."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                                                  "check_same_thread": False})
        _sqlite_setup(engine, in_memory=parsed.database in (None, "", ":memory:"))
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def _sqlite_setup(engine: Engine, *, in_memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        if not in_memory:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A write transaction: BEGIN IMMEDIATE on SQLite, an ordinary transaction on PostgreSQL."""
    with engine.connect() as conn:
        conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


def alembic_config(engine: Engine) -> Config:
    """Engine → Alembic config that runs our packaged migrations against it."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the database to `revision` (default: the newest) through Alembic."""
    command.upgrade(alembic_config(engine), revision)
