"""Alembic environment: run by `fovea.platform.store.upgrade(engine)` (which hands over its
connection) or by the alembic CLI from the repository root (alembic.ini), where the
database is Fovea's own: `-x url=...`, else FOVEA_DATABASE_URL / FOVEA_HOME (Settings)."""

from alembic import context

from fovea.platform.store.job_tables import Base

OPTIONS = {"target_metadata": Base.metadata, "render_as_batch": True, "compare_type": True}


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if url:
        return url
    from fovea.config import Settings

    return Settings().db_url


def _run(connection: object) -> None:
    context.configure(connection=connection, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
elif context.is_offline_mode():  # alembic upgrade head --sql: print the SQL
    context.configure(url=_url(), literal_binds=True, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()
else:
    from logging.config import fileConfig

    from fovea.platform.store.db import make_engine, migration_connection

    if context.config.config_file_name:  # the CLI: log "Running upgrade ..." lines
        fileConfig(context.config.config_file_name, disable_existing_loggers=False)

    engine = make_engine(_url())
    try:
        with migration_connection(engine) as conn:
            _run(conn)
    finally:
        engine.dispose()
