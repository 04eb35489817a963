"""The default store: one SQLite file with sqlite-vec (vectors) and FTS5 (keywords).

This Python's ``sqlite3`` cannot load extensions, so the file is opened with ``apsw``.
Vectors live in a ``vec0`` table partitioned by namespace, so a k-nearest query scans only
its own namespace (exact search: about 40 ms for 100k x 384 here).
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .records import MemoryRecord, Namespace
from .store import COLUMNS, Candidate, record_from_row, row_of

__all__ = ["SqliteStore"]

_SELECT = ", ".join(f'm."{c}"' for c in COLUMNS)
_MISSING = "The SQLite memory store needs apsw and sqlite-vec: pip install 'loopwise[memory]'."
_MAX_K = 4096  # sqlite-vec refuses a larger k in a knn query


class SqliteStore:
    """sqlite-vec + FTS5 in one file (WAL mode); thread-safe through one lock."""

    backend = "sqlite-vec"

    def __init__(self, path: Path):
        self.path = path
        self._conn: Any = None
        self._lock = threading.RLock()
        self._serialize: Any = None

    # -- set-up -------------------------------------------------------------------------

    def open(self, embedder_name: str, dimensions: int) -> None:
        with self._lock:
            if self._conn is not None:
                return
            try:
                import apsw
                import sqlite_vec  # type: ignore[import-untyped]
            except ImportError:
                raise UsageError(_MISSING) from None
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            conn = apsw.Connection(str(self.path))
            conn.enable_load_extension(True)
            conn.load_extension(sqlite_vec.loadable_path())
            conn.enable_load_extension(False)
            conn.setbusytimeout(10_000)
            conn.execute("PRAGMA journal_mode=WAL")
            self._serialize = sqlite_vec.serialize_float32
            self._conn = conn
            try:
                with self._transaction() as db:
                    self._create(db, dimensions)
                    self._check(db, embedder_name, dimensions)
            except BaseException:
                self._conn = None
                conn.close()
                raise

    def _create(self, conn: Any, dimensions: int) -> None:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS memories (
                rowid INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, namespace TEXT NOT NULL,
                agent TEXT NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL, text TEXT NOT NULL,
                source TEXT NOT NULL, untrusted INTEGER NOT NULL, created_at REAL NOT NULL,
                updated_at REAL NOT NULL, run_id TEXT, task TEXT, status TEXT,
                run_ids TEXT NOT NULL, merged INTEGER NOT NULL, meta TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS memories_ns ON memories (namespace, updated_at);
            CREATE INDEX IF NOT EXISTS memories_run ON memories (namespace, run_id);
            CREATE TABLE IF NOT EXISTS memory_settings (name TEXT PRIMARY KEY, value TEXT);
            CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(text);"""
        )
        conn.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS memories_vec USING vec0("
            f"namespace TEXT PARTITION KEY, embedding float[{int(dimensions)}] "
            "distance_metric=cosine)"
        )
        columns = {row[1] for row in conn.execute("PRAGMA table_info(memories)")}
        if "provenance" not in columns:  # a database from before provenance: NULL = legacy
            conn.execute("ALTER TABLE memories ADD COLUMN provenance TEXT")

    def _check(self, conn: Any, embedder_name: str, dimensions: int) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO memory_settings VALUES ('embedder', ?), ('dimensions', ?)",
            (embedder_name, str(dimensions)),
        )
        saved = dict(conn.execute("SELECT name, value FROM memory_settings").fetchall())
        if saved["dimensions"] != str(dimensions) or saved["embedder"] != embedder_name:
            raise UsageError(
                f"The memory database {self.path} was made with embedder {saved['embedder']} "
                f"({saved['dimensions']} dimensions), not {embedder_name} ({dimensions}); "
                "use that embedder or another database."
            )

    def _db(self) -> Any:
        if self._conn is None:
            raise UsageError("The memory store is not open; call open() first.")
        return self._conn

    @contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[Any]:
        """One transaction under the lock. Writes take the write lock first (IMMEDIATE):
        a read that upgrades to a write gets SQLITE_BUSY at once when another process
        wrote meanwhile, whatever the busy timeout. Reads see one snapshot (DEFERRED)."""
        with self._lock:
            db = self._db()
            db.execute(f"BEGIN {mode}")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextmanager
    def namespace_lock(self, namespace: Namespace) -> Iterator[None]:
        """An exclusive ``flock`` on a file beside the database, across processes (one
        file for all namespaces: writes to one SQLite file are serial anyway)."""
        import fcntl

        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- writes -------------------------------------------------------------------------

    def add(self, record: MemoryRecord, vector: Sequence[float]) -> None:
        row = row_of(record)
        names = ", ".join(f'"{c}"' for c in COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        with self._transaction() as db:
            db.execute(f"INSERT INTO memories ({names}) VALUES ({marks})", tuple(row.values()))
            rowid = db.last_insert_rowid()
            db.execute("INSERT INTO memories_fts (rowid, text) VALUES (?, ?)", (rowid, record.text))
            db.execute(
                "INSERT INTO memories_vec (rowid, namespace, embedding) VALUES (?, ?, ?)",
                (rowid, record.namespace.id, self._serialize(list(vector))),
            )

    def update(self, record: MemoryRecord, vector: Sequence[float] | None) -> None:
        row = row_of(record)
        sets = ", ".join(f'"{c}" = ?' for c in COLUMNS if c != "id")
        values = tuple(v for c, v in row.items() if c != "id")
        with self._transaction() as db:
            found = db.execute("SELECT rowid FROM memories WHERE id = ?", (record.id,)).fetchone()
            if found is None:
                raise UsageError(f"No memory has the id {record.id!r}.")
            rowid = found[0]
            db.execute(f"UPDATE memories SET {sets} WHERE rowid = ?", (*values, rowid))
            db.execute("UPDATE memories_fts SET text = ? WHERE rowid = ?", (record.text, rowid))
            if vector is not None:
                db.execute("DELETE FROM memories_vec WHERE rowid = ?", (rowid,))
                db.execute(
                    "INSERT INTO memories_vec (rowid, namespace, embedding) VALUES (?, ?, ?)",
                    (rowid, record.namespace.id, self._serialize(list(vector))),
                )

    def delete(self, memory_id: str, namespace: Namespace | None) -> bool:
        where, args = _scope("m.id = ?", (memory_id,), namespace)
        with self._transaction() as db:
            rowids = [
                r[0] for r in db.execute(f"SELECT m.rowid FROM memories m WHERE {where}", args)
            ]
            self._delete_rows(db, rowids)
        return bool(rowids)

    def prune(self, namespace: Namespace | None, *, before: float | None, keep: int | None) -> int:
        gone: set[int] = set()
        with self._transaction() as db:
            if before is not None:
                where, args = _scope("m.updated_at < ?", (before,), namespace)
                gone.update(
                    r[0] for r in db.execute(f"SELECT rowid FROM memories m WHERE {where}", args)
                )
            if keep is not None:
                where, args = _scope("1", (), namespace)
                sql = (
                    "SELECT rowid FROM (SELECT m.rowid, ROW_NUMBER() OVER (PARTITION BY "
                    "m.namespace ORDER BY m.updated_at DESC) AS n FROM memories m "
                    f"WHERE {where}) WHERE n > ?"
                )
                gone.update(r[0] for r in db.execute(sql, (*args, keep)))
            self._delete_rows(db, sorted(gone))
        return len(gone)

    def _delete_rows(self, db: Any, rowids: Sequence[int]) -> None:
        for rowid in rowids:
            db.execute("DELETE FROM memories WHERE rowid = ?", (rowid,))
            db.execute("DELETE FROM memories_fts WHERE rowid = ?", (rowid,))
            db.execute("DELETE FROM memories_vec WHERE rowid = ?", (rowid,))

    # -- reads --------------------------------------------------------------------------

    def _records(self, sql: str, args: Sequence[Any]) -> builtins.list[MemoryRecord]:
        with self._lock:
            rows = self._db().execute(sql, tuple(args)).fetchall()
        return [record_from_row(dict(zip(COLUMNS, r, strict=True))) for r in rows]

    def get(self, memory_id: str, namespace: Namespace | None) -> MemoryRecord | None:
        where, args = _scope("m.id = ?", (memory_id,), namespace)
        found = self._records(f"SELECT {_SELECT} FROM memories m WHERE {where}", args)
        return found[0] if found else None

    def find_run(self, namespace: Namespace, run_id: str) -> MemoryRecord | None:
        where, args = _scope("m.run_id = ? AND m.kind = 'run'", (run_id,), namespace)
        found = self._records(f"SELECT {_SELECT} FROM memories m WHERE {where} LIMIT 1", args)
        return found[0] if found else None

    def list(
        self, namespace: Namespace | None, *, limit: int, offset: int = 0
    ) -> builtins.list[MemoryRecord]:
        where, args = _scope("1", (), namespace)
        sql = (
            f"SELECT {_SELECT} FROM memories m WHERE {where} "
            "ORDER BY m.updated_at DESC, m.rowid DESC LIMIT ? OFFSET ?"
        )
        return self._records(sql, (*args, limit, offset))

    def count(self, namespace: Namespace | None) -> int:
        where, args = _scope("1", (), namespace)
        with self._lock:
            row = self._db().execute(f"SELECT count(*) FROM memories m WHERE {where}", args)
            return int(row.fetchone()[0])

    def search(
        self, namespace: Namespace, vector: Sequence[float], terms: Sequence[str], n: int
    ) -> builtins.list[Candidate]:
        blob = self._serialize(list(vector))
        with self._transaction("DEFERRED") as db:
            near = db.execute(
                "SELECT rowid, distance FROM memories_vec "
                "WHERE embedding MATCH ? AND k = ? AND namespace = ?",
                (blob, min(n, _MAX_K), namespace.id),
            ).fetchall()
            cosines = {int(r): _cosine(d) for r, d in near}
            if terms:
                query = " OR ".join(f'"{t}"*' for t in terms)
                more = db.execute(
                    "SELECT f.rowid FROM memories_fts f JOIN memories m ON m.rowid = f.rowid "
                    "WHERE memories_fts MATCH ? AND m.namespace = ? "
                    "ORDER BY bm25(memories_fts) LIMIT ?",
                    (query, namespace.id, n),
                ).fetchall()
                for (rowid,) in more:
                    if rowid not in cosines:
                        d = db.execute(
                            "SELECT vec_distance_cosine(embedding, ?) FROM memories_vec "
                            "WHERE rowid = ?",
                            (blob, rowid),
                        ).fetchone()
                        cosines[int(rowid)] = _cosine(d[0] if d else None)
            if not cosines:
                return []
            marks = ", ".join("?" for _ in cosines)
            rows = db.execute(
                f"SELECT m.rowid, {_SELECT} FROM memories m "
                f"WHERE m.rowid IN ({marks}) AND m.namespace = ?",
                (*cosines, namespace.id),
            ).fetchall()
        return [
            Candidate(record_from_row(dict(zip(COLUMNS, r[1:], strict=True))), cosines[r[0]])
            for r in rows
        ]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _cosine(distance: float | None) -> float:
    """Cosine similarity from sqlite-vec's distance, which is NULL for a zero vector."""
    return 0.0 if distance is None else 1.0 - float(distance)


def _scope(
    where: str, args: tuple[Any, ...], namespace: Namespace | None
) -> tuple[str, tuple[Any, ...]]:
    if namespace is None:
        return where, args
    return f"({where}) AND m.namespace = ?", (*args, namespace.id)
