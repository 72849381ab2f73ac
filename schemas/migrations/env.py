"""Alembic environment: the URL comes from the caller's config, never from a file."""

from alembic import context
from sqlalchemy import create_engine, pool

from herald.schemas.tables import Base

config = context.config
engine = create_engine(config.attributes["database_url"], poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        # One migrator at a time, even when several processes start together.
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7244021)")
        context.run_migrations()
engine.dispose()
