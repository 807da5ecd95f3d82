"""Storage: SQLAlchemy 2 engine (SQLite WAL or PostgreSQL), tables, Alembic migrations."""

from classifier.store.engine import connect, migrate, utcnow, write

__all__ = ["connect", "migrate", "utcnow", "write"]
