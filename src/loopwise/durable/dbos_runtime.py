"""DBOS set up the way loopwise needs it: JSON only, an explicit version, its own executor id.

DBOS is one instance per process, so at most one worker engine runs in a process.
Stored data is read with DBOS's portable JSON serializer; reading a pickled value (a row
written by another application, or tampered with) is refused instead of unpickled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from dbos import DBOS, DBOSClient
from dbos import _serialization as dbos_serialization
from dbos._error import DBOSAwaitedWorkflowCancelledError, DBOSWorkflowCancelledError

from ..agent import Agent
from ..errors import UsageError
from . import notify
from .fencing import create_tables
from .store import Store
from .workflow import APP_VERSION, QUEUE_NAME, Runtime, install

__all__ = ["client", "destroy", "launch", "migrate", "register_queue"]

APP_NAME = "loopwise"


def _json() -> dbos_serialization.Serializer:
    return dbos_serialization.DBOSPortableJSONSerializer()


def _refuse_pickle() -> None:
    """Make DBOS's pickle reader raise: every value loopwise stores is JSON."""

    def refuse(_data: str) -> Any:
        raise TypeError("refusing to unpickle a stored value: loopwise stores JSON only")

    setattr(dbos_serialization.DBOSDefaultSerializer, "deserialize", refuse)  # noqa: B010


class _QuietCancellations(logging.Filter):
    """DBOS logs a cancelled workflow's end as an error with a traceback; it is expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        cancelled = (DBOSAwaitedWorkflowCancelledError, DBOSWorkflowCancelledError)
        return not isinstance(exc, cancelled)


def launch(
    store: Store,
    agents: Mapping[str, Agent[Any, Any]],
    *,
    executor_id: str,
    poll_seconds: float,
) -> None:
    """Launch DBOS on the store's database (workflows run on DBOS's own event loop)."""
    if _launched():
        raise UsageError("A durable worker engine is already running in this process.")
    _refuse_pickle()
    dbos_logger = logging.getLogger("dbos")
    if not any(isinstance(f, _QuietCancellations) for f in dbos_logger.filters):
        dbos_logger.addFilter(_QuietCancellations())
    create_tables(store)  # the leases that fence stale executions
    notify.instrument(store)  # this process's writes wake its event streams at once
    install(Runtime(agents=agents, store=store))
    DBOS(
        config={
            "name": APP_NAME,
            "system_database_url": store.url,
            "executor_id": executor_id,
            "application_version": APP_VERSION,
            "serializer": _json(),
            "log_level": "WARNING",
            "notification_listener_polling_interval_sec": poll_seconds,
            "scheduler_polling_interval_sec": 3600.0,
        }
    )
    try:
        DBOS.launch()
    except BaseException:
        destroy()
        raise


def _launched() -> bool:
    from dbos import _dbos

    instance = _dbos._dbos_global_instance
    return instance is not None and bool(getattr(instance, "_launched", False))


def register_queue(dbos_client: DBOSClient, concurrency: int, poll_seconds: float) -> None:
    """Register (or update) the runs queue before launch, so workers poll it at once."""
    dbos_client.register_queue(
        QUEUE_NAME,
        worker_concurrency=concurrency,
        polling_interval_sec=poll_seconds,
        on_conflict="always_update",
    )


def destroy() -> None:
    DBOS.destroy(workflow_completion_timeout_sec=0)
    install(None)


def migrate(url: str) -> None:
    """Create or upgrade DBOS's tables without launching (for API-only processes)."""
    _refuse_pickle()
    DBOS.migrate(url)


def client(url: str) -> DBOSClient:
    return DBOSClient(system_database_url=url, serializer=_json(), application_name=APP_NAME)
