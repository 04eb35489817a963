"""``incident-report`` end to end on real log files."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from loopwise.agents.recipes import incident_report
from loopwise.messages import Message, ToolDefinition
from loopwise.models.testing import FunctionModel, Turn, call
from recipe_support import first_user_text, last_results, tool_names

APP_LOG = """\
2024-05-01 10:00:00 INFO service started
2024-05-01 10:01:05 ERROR db: connection to 10.0.0.5:5432 refused (attempt 1)
2024-05-01 10:01:10 ERROR db: connection to 10.0.0.5:5432 refused (attempt 2)
2024-05-01 10:01:15 ERROR db: connection to 10.0.0.5:5432 refused (attempt 3)
2024-05-01 10:02:00 WARNING slow request /api/orders 2300 ms
2024-05-01 10:03:30 CRITICAL worker 17 out of memory
"""
NGINX_LOG = """\
2024-05-01 10:01:20 [error] upstream timed out while reading /api/orders
2024-05-01 10:00:59 ERROR disk quota exceeded on /var/lib/app
"""


def make_logs(root: Path) -> Path:
    logs = root / "logs"
    (logs / "nginx").mkdir(parents=True)
    (logs / "app.log").write_text(APP_LOG)
    (logs / "nginx" / "error.log").write_text(NGINX_LOG)
    return logs


def driver(messages: list[Message], tools: list[ToolDefinition]) -> Turn:
    if "grep_log" in tool_names(tools):
        if last_results(messages):
            return "The database refused connections, then a worker ran out of memory."
        task = first_user_text(messages)
        paths = re.findall(r'grep_log\(path="([^"]+)"', task)
        disk = re.search(r'disk_usage\(path="([^"]+)"', task)
        assert disk is not None
        return [
            *(call("grep_log", path=p, pattern=incident_report.ERROR_PATTERN) for p in paths),
            call("memory"),
            call("disk_usage", path=disk[1]),
        ]
    return "Database connections failed three times.\nNext steps:\n- Check the database host"


def test_incident_report_has_the_errors_patterns_and_timeline(tmp_path: Path) -> None:
    logs = make_logs(tmp_path)
    out_dir = tmp_path / "reports"
    result = asyncio.run(
        incident_report.incident_report(
            logs, model=FunctionModel(driver), out_dir=out_dir, workspace=tmp_path
        )
    )
    assert result.status == "completed", result
    [path] = result.artifacts
    assert re.fullmatch(r"incident-\d{8}-\d{6}\.md", Path(path).name)
    text = Path(path).read_text()
    assert result.facts["errors"] == 5  # 3 refused + CRITICAL + disk quota; [error] is lowercase
    top = result.facts["patterns"][0]
    assert top["count"] == 3 and "connection to" in top["pattern"]
    assert "| 3 | `ERROR db: connection to <n>:<n> refused (attempt <n>)` |" in text
    # The timeline is in time order across files.
    order = [text.index(s) for s in ("10:00:59", "10:01:05", "10:01:15", "10:03:30")]
    assert order == sorted(order)
    assert "Memory:" in text and "MB used of" in text and "GB free" in text
    assert "Database connections failed three times." in text
    assert result.next_steps == ["Check the database host"]
    assert result.notes == []


def test_missing_log_directory_is_a_clear_error(tmp_path: Path) -> None:
    from loopwise.errors import UsageError

    try:
        asyncio.run(incident_report.incident_report(tmp_path / "nope", model=FunctionModel(driver)))
    except UsageError as exc:
        assert "does not exist" in str(exc)
    else:
        raise AssertionError("no error")
