"""The engine's tables (prefixed ``loopwise_``) beside DBOS's, and how to reach the database.

One database holds both: a SQLite file in WAL mode (the embedded default) or PostgreSQL.
Every value is plain JSON (SQLAlchemy's JSON type, ``json.dumps``); nothing is pickled.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..datadir import data_dir
from ..errors import UsageError

__all__ = [
    "attempts",
    "child_steps",
    "create_engine",
    "decisions",
    "events",
    "executors",
    "metadata",
    "resolve_database",
    "runs",
    "states",
    "upgrade",
]

metadata = sa.MetaData()
_JSON = sa.JSON(none_as_null=True)

runs = sa.Table(
    "loopwise_runs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("agent", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("input", sa.Text, nullable=False),
    sa.Column("model", sa.String(200)),
    sa.Column("spec", _JSON, nullable=False),
    sa.Column("output", _JSON),
    sa.Column("stop_reason", sa.String(64)),
    sa.Column("detail", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("usage", _JSON),
    sa.Column("cost", sa.Float, nullable=False, default=0.0),
    sa.Column("steps", sa.Integer, nullable=False, default=0),
    sa.Column("tool_calls", sa.Integer, nullable=False, default=0),
    sa.Column("pending", _JSON),
    # The run's current segment: 0, then +1 after each set of approval decisions; the
    # segment's workflow id is the run id, then "<run id>.<segment>".
    sa.Column("segment", sa.Integer, nullable=False, default=0),
    sa.Column("metadata", _JSON),
    sa.Column("idempotency_key", sa.String(255), unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    # Added later (see ``upgrade``): who started the run, and the SHA-256 of the request
    # that came with its idempotency key.
    sa.Column("principal", sa.String(200)),
    sa.Column("request_hash", sa.String(64)),
    sa.Index("loopwise_runs_created", "created_at", "id"),
    sa.Index("loopwise_runs_status", "status", "finished_at"),
    sa.Index("loopwise_runs_principal", "principal", "created_at", "id"),
)

_ADDED_COLUMNS = {"principal": "VARCHAR(200)", "request_hash": "VARCHAR(64)"}
"""Columns of ``runs`` that databases made by earlier versions lack (``upgrade`` adds them)."""

events = sa.Table(
    "loopwise_events",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("data", _JSON, nullable=False),
)

# The transcript and counters where a segment ended (paused or finished): what the next
# segment resumes from. Written once per segment, never changed.
states = sa.Table(
    "loopwise_states",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("segment", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("state", _JSON, nullable=False),
)

decisions = sa.Table(
    "loopwise_decisions",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("segment", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("call_id", sa.String(200), primary_key=True),
    sa.Column("decision", _JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Non-idempotent tool calls: "started" before the tool runs, "finished" with its result.
attempts = sa.Table(
    "loopwise_tool_attempts",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("call_id", sa.String(200), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("step_id", sa.Integer, nullable=False),
    sa.Column("result", _JSON),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# Child runs' calls (agents used as tools), keyed per child: "<child run id>:model:<n>" for
# its n-th model request, "<child run id>:tool:<call id>" for a tool call. ``run_id`` is the
# top-level run. A non-idempotent tool call's row has no output while the call runs.
child_steps = sa.Table(
    "loopwise_child_steps",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("output", _JSON),
    sa.Column("updated_at", sa.Float, nullable=False),
)

executors = sa.Table(
    "loopwise_executors",
    metadata,
    sa.Column("executor_id", sa.String(200), primary_key=True),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("claimed_by", sa.String(200)),
    sa.Column("claimed_at", sa.Float),
)


def upgrade(engine: sa.Engine) -> None:
    """Bring tables made by an earlier version up to date, additively: add the columns
    they lack (NULL in existing rows) and their index. Safe when many processes start at
    once (a column another process just added is not added twice)."""
    names = {c["name"] for c in sa.inspect(engine).get_columns(runs.name)}
    for column, kind in _ADDED_COLUMNS.items():
        if column not in names:
            _quietly(engine, f"ALTER TABLE {runs.name} ADD COLUMN {column} {kind}")
    fresh = {c["name"] for c in sa.inspect(engine).get_columns(runs.name)}
    if missing := set(_ADDED_COLUMNS) - fresh:
        raise UsageError(f"The database lacks the column(s) {sorted(missing)} of {runs.name}.")
    _quietly(
        engine,
        f"CREATE INDEX IF NOT EXISTS loopwise_runs_principal ON {runs.name} "
        "(principal, created_at, id)",
    )


def _quietly(engine: sa.Engine, statement: str) -> None:
    """Run DDL that another process may be running at the same moment (its error, when
    that process won, is ignored; ``upgrade`` checks the outcome)."""
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(statement))
    except sa.exc.DBAPIError:
        pass


def resolve_database(database: str | None) -> str:
    """The database URL for DBOS: ``None`` → ``<data dir>/loopwise.sqlite``; SQLite files are
    created in WAL mode here, before DBOS first opens them (it does not set WAL itself)."""
    if database is None:
        path = data_dir(create=True) / "loopwise.sqlite"
    elif database.startswith("sqlite:///"):
        path = Path(database.removeprefix("sqlite:///")).expanduser()
    elif database.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        url = sa.make_url(database)
        return url.set(drivername="postgresql").render_as_string(hide_password=False)
    else:
        raise UsageError(
            f"Database {database!r} is not supported; use 'sqlite:///path/to/file.sqlite' or "
            "'postgresql://user@host:5432/dbname'."
        )
    if not path.name or path.name == ":memory:":
        raise UsageError(f"Database {database!r} must name a file: 'sqlite:///path/run.sqlite'.")
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()
    return f"sqlite:///{path}"


def create_engine(url: str) -> sa.Engine:
    """A SQLAlchemy engine for the engine's own tables, on the DBOS database ``url``."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, pool_size=8, max_overflow=8)

        @sa.event.listens_for(engine, "connect")
        def _configure(dbapi_conn: Any, _record: Any) -> None:
            # Writers take the lock at their first write and wait for it (as DBOS does).
            dbapi_conn.isolation_level = "IMMEDIATE"
            dbapi_conn.execute("PRAGMA busy_timeout=30000")

        return engine
    pg = sa.make_url(url).set(drivername="postgresql+psycopg")
    # A worker paused inside a transaction (SIGSTOP, a partition) must not hold its rows, and
    # so a takeover, forever: PostgreSQL ends such a session after 15 s.
    options = {"options": "-c idle_in_transaction_session_timeout=15000"}
    return sa.create_engine(
        pg, pool_size=8, max_overflow=8, pool_pre_ping=True, connect_args=options
    )
