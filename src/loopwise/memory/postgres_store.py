"""The PostgreSQL store: pgvector when the server has the ``vector`` extension, otherwise
float32 vectors in a ``bytea`` column ranked exactly in this process with numpy.

Without pgvector, a search loads its namespace's vectors once (about 1.5 MB per 1,000
memories at 384 dimensions) and keeps them until the namespace changes; it suits up to
about 100k memories per namespace. Keywords use a ``tsvector`` column with a GIN index.
"""

from __future__ import annotations

import builtins
import hashlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import UsageError
from .records import MemoryRecord, Namespace
from .store import COLUMNS, Candidate, record_from_row, row_of

__all__ = ["PostgresStore"]

_TABLE = "loopwise_memories"
_SELECT = ", ".join(f'"{c}"' for c in COLUMNS)


class PostgresStore:
    """Memories in one table of a PostgreSQL database (shared by every worker)."""

    def __init__(self, url: str, *, use_pgvector: bool | None = None):
        self.url = url
        self.use_pgvector = use_pgvector
        self.backend = "postgresql"
        self._conn: Any = None
        self._lock = threading.RLock()
        self._cache: dict[str, tuple[tuple[int, int], builtins.list[str], Any]] = {}
        self._dims = 0

    # -- set-up -------------------------------------------------------------------------

    def open(self, embedder_name: str, dimensions: int) -> None:
        with self._lock:
            if self._conn is not None:
                return
            import psycopg

            try:
                conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
            except psycopg.OperationalError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise UsageError(f"The memory database cannot be reached: {first}") from None
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(774411)")
                mode = self._create(conn, dimensions)
                self._check(conn, embedder_name, dimensions, mode)
            self._conn = conn
            self._dims = dimensions
            self.backend = f"postgresql+{mode}"

    def _vector_mode(self, conn: Any) -> str:
        saved = conn.execute(
            "SELECT to_regclass('loopwise_memory_settings') IS NOT NULL"
        ).fetchone()[0]
        if saved:
            row = conn.execute(
                "SELECT value FROM loopwise_memory_settings WHERE name = 'vectors'"
            ).fetchone()
            if row:
                return str(row[0])
        if self.use_pgvector is False:
            return "exact"
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone()
        if available:
            try:
                with conn.transaction():
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                return "pgvector"
            except Exception:  # no privilege to create it: fall back
                pass
        if self.use_pgvector:
            raise UsageError(
                "use_pgvector=True, but this PostgreSQL server has no usable 'vector' extension."
            )
        return "exact"

    def _create(self, conn: Any, dimensions: int) -> str:
        mode = self._vector_mode(conn)
        column = f"vector({int(dimensions)})" if mode == "pgvector" else "bytea"
        conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {_TABLE} (
                seq BIGSERIAL, id TEXT PRIMARY KEY, namespace TEXT NOT NULL,
                agent TEXT NOT NULL, "key" TEXT NOT NULL, kind TEXT NOT NULL,
                text TEXT NOT NULL, source TEXT NOT NULL, untrusted INTEGER NOT NULL,
                created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
                run_id TEXT, task TEXT, status TEXT, run_ids TEXT NOT NULL,
                merged INTEGER NOT NULL, meta TEXT NOT NULL, embedding {column} NOT NULL,
                tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED)"""
        )
        # a database from before provenance: its rows keep NULL and read as legacy
        conn.execute(f"ALTER TABLE {_TABLE} ADD COLUMN IF NOT EXISTS provenance TEXT")
        conn.execute(f"CREATE INDEX IF NOT EXISTS {_TABLE}_ns ON {_TABLE} (namespace, updated_at)")
        conn.execute(f"CREATE INDEX IF NOT EXISTS {_TABLE}_tsv ON {_TABLE} USING gin (tsv)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS loopwise_memory_settings "
            "(name TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        return mode

    def _check(self, conn: Any, embedder_name: str, dimensions: int, mode: str) -> None:
        conn.execute(
            "INSERT INTO loopwise_memory_settings VALUES ('embedder', %s), ('dimensions', %s), "
            "('vectors', %s) ON CONFLICT (name) DO NOTHING",
            (embedder_name, str(dimensions), mode),
        )
        saved = dict(conn.execute("SELECT name, value FROM loopwise_memory_settings").fetchall())
        if saved["dimensions"] != str(dimensions) or saved["embedder"] != embedder_name:
            raise UsageError(
                f"The memory database was made with embedder {saved['embedder']} "
                f"({saved['dimensions']} dimensions), not {embedder_name} ({dimensions}); "
                "use that embedder or another database."
            )

    def _db(self) -> Any:
        if self._conn is None:
            raise UsageError("The memory store is not open; call open() first.")
        return self._conn

    @property
    def _pgvector(self) -> bool:
        return self.backend.endswith("pgvector")

    def _vector_param(self, vector: Sequence[float]) -> Any:
        if self._pgvector:
            return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"
        import numpy as np

        return np.asarray(vector, dtype=np.float32).tobytes()

    @contextmanager
    def namespace_lock(self, namespace: Namespace) -> Iterator[None]:
        """A session advisory lock keyed by the namespace, across processes and machines."""
        digest = hashlib.sha256(("loopwise-memory:" + namespace.id).encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        with self._lock:
            self._db().execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            yield
        finally:
            with self._lock:
                self._db().execute("SELECT pg_advisory_unlock(%s)", (key,))

    # -- writes -------------------------------------------------------------------------

    def add(self, record: MemoryRecord, vector: Sequence[float]) -> None:
        row = row_of(record)
        names = ", ".join(f'"{c}"' for c in COLUMNS)
        marks = ", ".join("%s" for _ in COLUMNS)
        cast = "::vector" if self._pgvector else ""
        with self._lock:
            self._db().execute(
                f"INSERT INTO {_TABLE} ({names}, embedding) VALUES ({marks}, %s{cast})",
                (*row.values(), self._vector_param(vector)),
            )

    def update(self, record: MemoryRecord, vector: Sequence[float] | None) -> None:
        row = row_of(record)
        sets = [f'"{c}" = %s' for c in COLUMNS if c != "id"]
        values: builtins.list[Any] = [v for c, v in row.items() if c != "id"]
        if vector is not None:
            sets.append("embedding = %s" + ("::vector" if self._pgvector else ""))
            values.append(self._vector_param(vector))
        sets.append(f"seq = nextval(pg_get_serial_sequence('{_TABLE}', 'seq'))")
        with self._lock:
            done = self._db().execute(
                f"UPDATE {_TABLE} SET {', '.join(sets)} WHERE id = %s", (*values, record.id)
            )
            if done.rowcount == 0:
                raise UsageError(f"No memory has the id {record.id!r}.")

    def delete(self, memory_id: str, namespace: Namespace | None) -> bool:
        where, args = _scope("id = %s", (memory_id,), namespace)
        with self._lock:
            done = self._db().execute(f"DELETE FROM {_TABLE} WHERE {where}", args)
            return bool(done.rowcount)

    def prune(self, namespace: Namespace | None, *, before: float | None, keep: int | None) -> int:
        gone = 0
        with self._lock, self._db().transaction():
            db = self._db()
            if before is not None:
                where, args = _scope("updated_at < %s", (before,), namespace)
                gone += db.execute(f"DELETE FROM {_TABLE} WHERE {where}", args).rowcount
            if keep is not None:
                where, args = _scope("TRUE", (), namespace)
                gone += db.execute(
                    f"DELETE FROM {_TABLE} WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() "
                    "OVER (PARTITION BY namespace ORDER BY updated_at DESC) AS n "
                    f"FROM {_TABLE} WHERE {where}) ranked WHERE n > %s)",
                    (*args, keep),
                ).rowcount
        return int(gone)

    # -- reads --------------------------------------------------------------------------

    def _records(self, sql: str, args: Sequence[Any]) -> builtins.list[MemoryRecord]:
        with self._lock:
            rows = self._db().execute(sql, tuple(args)).fetchall()
        return [record_from_row(dict(zip(COLUMNS, r, strict=True))) for r in rows]

    def get(self, memory_id: str, namespace: Namespace | None) -> MemoryRecord | None:
        where, args = _scope("id = %s", (memory_id,), namespace)
        found = self._records(f"SELECT {_SELECT} FROM {_TABLE} WHERE {where}", args)
        return found[0] if found else None

    def find_run(self, namespace: Namespace, run_id: str) -> MemoryRecord | None:
        where, args = _scope("run_id = %s AND kind = 'run'", (run_id,), namespace)
        found = self._records(f"SELECT {_SELECT} FROM {_TABLE} WHERE {where} LIMIT 1", args)
        return found[0] if found else None

    def list(
        self, namespace: Namespace | None, *, limit: int, offset: int = 0
    ) -> builtins.list[MemoryRecord]:
        where, args = _scope("TRUE", (), namespace)
        sql = (
            f"SELECT {_SELECT} FROM {_TABLE} WHERE {where} "
            "ORDER BY updated_at DESC, seq DESC LIMIT %s OFFSET %s"
        )
        return self._records(sql, (*args, limit, offset))

    def count(self, namespace: Namespace | None) -> int:
        where, args = _scope("TRUE", (), namespace)
        with self._lock:
            return int(
                self._db()
                .execute(f"SELECT count(*) FROM {_TABLE} WHERE {where}", args)
                .fetchone()[0]
            )

    def search(
        self, namespace: Namespace, vector: Sequence[float], terms: Sequence[str], n: int
    ) -> builtins.list[Candidate]:
        with self._lock:
            if self._pgvector:
                cosines = self._nearest_pgvector(namespace, vector, n)
            else:
                cosines = self._nearest_exact(namespace, vector, n)
            if terms:
                query = " | ".join(f"'{t}':*" for t in terms)
                rows = (
                    self._db()
                    .execute(
                        f"SELECT id FROM {_TABLE} WHERE namespace = %s AND tsv @@ "
                        "to_tsquery('simple', %s) ORDER BY ts_rank(tsv, to_tsquery('simple', %s)) "
                        "DESC LIMIT %s",
                        (namespace.id, query, query, n),
                    )
                    .fetchall()
                )
                missing = [r[0] for r in rows if r[0] not in cosines]
                if missing:
                    cosines.update(self._cosines(namespace, vector, missing))
            if not cosines:
                return []
            found = self._records(
                f"SELECT {_SELECT} FROM {_TABLE} WHERE namespace = %s AND id = ANY(%s)",
                (namespace.id, list(cosines)),
            )
        return [Candidate(r, cosines[r.id]) for r in found]

    def _nearest_pgvector(
        self, namespace: Namespace, vector: Sequence[float], n: int
    ) -> dict[str, float]:
        param = self._vector_param(vector)
        rows = (
            self._db()
            .execute(
                f"SELECT id, 1 - (embedding <=> %s::vector) FROM {_TABLE} WHERE namespace = %s "
                "ORDER BY embedding <=> %s::vector LIMIT %s",
                (param, namespace.id, param, n),
            )
            .fetchall()
        )
        return {str(i): float(c) for i, c in rows}

    def _matrix(self, namespace: Namespace) -> tuple[builtins.list[str], Any]:
        import numpy as np

        db = self._db()
        version = db.execute(
            f"SELECT count(*), coalesce(max(seq), 0) FROM {_TABLE} WHERE namespace = %s",
            (namespace.id,),
        ).fetchone()
        cached = self._cache.get(namespace.id)
        if cached is not None and cached[0] == tuple(version):
            return cached[1], cached[2]
        rows = db.execute(
            f"SELECT id, embedding FROM {_TABLE} WHERE namespace = %s", (namespace.id,)
        ).fetchall()
        ids = [str(r[0]) for r in rows]
        matrix = np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype=np.float32)
        matrix = matrix.reshape(len(ids), self._dims)
        self._cache[namespace.id] = ((int(version[0]), int(version[1])), ids, matrix)
        return ids, matrix

    def _nearest_exact(
        self, namespace: Namespace, vector: Sequence[float], n: int
    ) -> dict[str, float]:
        import numpy as np

        ids, matrix = self._matrix(namespace)
        if not ids:
            return {}
        scores = matrix @ np.asarray(vector, dtype=np.float32)
        top = np.argpartition(-scores, min(n, len(ids)) - 1)[:n]
        return {ids[i]: float(scores[i]) for i in top}

    def _cosines(
        self, namespace: Namespace, vector: Sequence[float], ids: Sequence[str]
    ) -> dict[str, float]:
        if self._pgvector:
            rows = (
                self._db()
                .execute(
                    f"SELECT id, 1 - (embedding <=> %s::vector) FROM {_TABLE} "
                    "WHERE namespace = %s AND id = ANY(%s)",
                    (self._vector_param(vector), namespace.id, list(ids)),
                )
                .fetchall()
            )
            return {str(i): float(c) for i, c in rows}
        import numpy as np

        known, matrix = self._matrix(namespace)
        index = {m: i for i, m in enumerate(known)}
        q = np.asarray(vector, dtype=np.float32)
        return {m: float(matrix[index[m]] @ q) for m in ids if m in index}

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._cache.clear()


def _scope(
    where: str, args: tuple[Any, ...], namespace: Namespace | None
) -> tuple[str, tuple[Any, ...]]:
    if namespace is None:
        return where, args
    return f"({where}) AND namespace = %s", (*args, namespace.id)
