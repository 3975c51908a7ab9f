"""Engines for the store, and migrating a database to the current schema."""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from alembic import command
from alembic.config import Config
import sqlalchemy as sa
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

MIGRATIONS = Path(__file__).parent / "migrations"


# A server on the other side of a network: a connection fails within 5 s, and one that is
# open when the network goes (a cut cable, a partition) fails once what it sent has gone
# unacknowledged for 10 s, or an idle one after 20 s of unanswered keepalives. Without
# these a commit on a dead link waits for the kernel's retransmissions, about 15 minutes,
# and every prediction waiting on it with it. A commit whose answer was lost may have
# landed: the spool's replay skips ids already stored.
_POSTGRES_TCP = {"connect_timeout": 5, "tcp_user_timeout": 10_000, "keepalives": 1,
                 "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 2}


class OutageLog:
    """The log of a loop that polls the store: a store error is one warning line when the
    store goes away and one line when it is back, not a traceback every poll; any other
    error keeps its traceback."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger, self.what, self.away = logger, what, False

    def failed(self, error: BaseException) -> None:
        if not isinstance(error, DBAPIError):
            self.logger.error("%s failed", self.what, exc_info=error)
        elif not self.away:
            self.away = True
            reason = str(error.orig or error).strip().splitlines()[0][:300]
            self.logger.warning("%s: the store is away (%s); trying again", self.what, reason)

    def ok(self) -> None:
        if self.away:
            self.away = False
            self.logger.info("%s: the store is back", self.what)


def create_store_engine(url: str) -> Engine:
    """An engine for ``url``. A server fails fast when unreachable or cut off (the writer
    then spools); SQLite files get WAL mode with a sync on every commit (a commit is what acknowledges a
    prediction), a busy timeout and foreign keys."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        connect_args = _POSTGRES_TCP if parsed.get_backend_name() == "postgresql" else {}
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5,
                             connect_args=connect_args)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


_MIGRATION_LOCK = 0x7669646D6F6E  # "vidmon": PostgreSQL advisory lock key


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """An exclusive lock on a file beside a SQLite database (none for an in-memory one)."""
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade_database(engine: Engine, revision: str = "head") -> None:
    """Run the Alembic migrations up to ``revision``: the only way the schema is made.
    Processes starting together (API replicas, monitors) migrate one at a time: the others
    wait, then find the schema current."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    sqlite = engine.dialect.name == "sqlite"
    with _sqlite_file_lock(engine) if sqlite else nullcontext(), engine.begin() as connection:
        if not sqlite:  # held until this transaction ends
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def insert_ignoring_duplicates(engine: Engine, table: sa.Table, key: list[str]) -> sa.Insert:
    """An INSERT that skips rows whose ``key`` is already stored (no error, no change)."""
    dialect = engine.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=key)
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=key)
    raise ValueError(f"the store supports SQLite and PostgreSQL, not {dialect}")
