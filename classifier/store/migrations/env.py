"""Alembic environment: runs against the engine handed over in `config.attributes`."""

from alembic import context

from classifier.store.tables import metadata

engine = context.config.attributes.get("engine")
if engine is None:  # plain `alembic` CLI use: EVIDENCE_DB or the default
    from classifier.config import load_settings
    from classifier.store.engine import connect

    engine = connect(load_settings().db_url)

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
    if connection.in_transaction():
        connection.commit()
