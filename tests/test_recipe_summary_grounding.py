"""A recipe uses the model's summary only when what it claims is in the report's facts:
every number, file name, error code and service name, and mostly words that relate to them.
A number is checked for being in the facts, not for what it counts there ("three log
files" passes when 3 is the count of something else).
Otherwise the recipe's own summary is used, and the result and the report say which.

The incident facts are those of tests/test_recipe_incident_report.py's logs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from figures import figure
from loopwise.agents.recipes import incident_report, repo_health
from loopwise.agents.recipes.grounding import ungrounded
from loopwise.messages import Message, ToolDefinition
from loopwise.models.testing import FunctionModel, Turn
from recipe_support import make_repo, tool_names
from test_recipe_incident_report import driver as investigator
from test_recipe_incident_report import make_logs

FACTS = """\
5 error lines in 2 log files, from 2024-05-01 10:00:59 to 2024-05-01 10:03:30.
Error patterns: 3 x ERROR db: connection to <n>:<n> refused (attempt <n>); 1 x CRITICAL \
worker <n> out of memory; 1 x ERROR disk quota exceeded on /var/lib/app.
Memory: 41.3 % used. Disk: 93.4 % used.
{"logs": ["/srv/logs/app.log", "/srv/logs/nginx/error.log"], "message": \
"2024-05-01 10:01:05 ERROR db: connection to 10.0.0.5:5432 refused (attempt 1)"}"""

INVENTED = [
    "The incident was caused by the COVID-19 pandemic, which disrupted supply chains.",
    "7 error lines were found in the logs.",  # a number the facts do not hold
    "Four log files had errors.",  # a number word
    "Errors were logged in payments.log and app.log.",  # a file that was not read
    "The database failed with ORA-12541 at 10:01:05.",  # an error code
    "ECONNREFUSED from the database at 10:01:05.",
    "The checkout-service could not reach the database.",  # a service name
    "The OrderWorker ran out of memory.",
    "The payment_gateway timed out.",
    "Disk usage reached 97 % on /var/lib/app.",  # a percentage
    "Memory was 55% used.",
    "The errors started at 09:45 and stopped at 10:03.",  # a time
    "See /etc/app/config.yaml for the failing setting.",  # a path
    "A solar flare disrupted satellite communications across northern hemisphere regions.",
    "Customers complained because shipping prices rose sharply after holidays.",
    "Errors in v2.7.1 of the release.",
    "1. Restart 8 workers\n2. Check the database",  # in a numbered list
    "A twelve-minute outage hit the database.",  # a number word in a compound
    "The errors came in **7** bursts.",  # Markdown emphasis
    "Disk at \uff19\uff13 % with \uff17 errors.",  # full-width digits
    "Memory: 41.3 % used; the COVID-19 lockdown caused it.",  # a true fact, then a lie
    "payments.log showed 5 errors.",  # a true number, an unread file
]
FAITHFUL = [
    "Database connections failed three times.\nNext steps:\n- Check the database host",
    "5 error lines between 10:00:59 and 10:03:30; the disk is 93% full.",
    "Memory is at 41 % and the disk at 93.4 %; the disk quota was exceeded on /var/lib/app.",
    "The database at 10.0.0.5:5432 refused connections 3 times, starting at 10:01.",
    "A worker ran out of memory at 10:03:30 on 2024-05-01.",
    "Errors were found in app.log and error.log; see the timeline, e.g. the CRITICAL one.",
    "Looks fine.",
    "Done.",
    "1. Check the database\n2. Free disk space",
    "Five error lines; three of them were refused database connections.",
    "The disk is 93.4 % full and memory 41.3 % used (as of 2024-05-01).",
]


@pytest.mark.parametrize("summary", INVENTED)
def test_an_invented_claim_is_caught(summary: str) -> None:
    assert ungrounded(summary, FACTS), summary


@pytest.mark.parametrize("summary", FAITHFUL)
def test_a_faithful_summary_passes(summary: str) -> None:
    assert ungrounded(summary, FACTS) == []


def test_grounding_figures() -> None:
    caught = sum(bool(ungrounded(s, FACTS)) for s in INVENTED)
    passed = sum(not ungrounded(s, FACTS) for s in FAITHFUL)
    figure(
        f"recipe summaries checked against the facts: {caught}/{len(INVENTED)} invented "
        f"caught, {passed}/{len(FAITHFUL)} faithful kept"
    )
    assert (caught, passed) == (len(INVENTED), len(FAITHFUL))


def with_writer(summary: str) -> FunctionModel:
    """The incident investigator of the recipe's own test, and a writer saying ``summary``."""

    def turn(messages: list[Message], tools: list[ToolDefinition]) -> Turn:
        if "grep_log" in tool_names(tools):
            return investigator(messages, tools)
        return summary

    return FunctionModel(turn)


COVID = "The incident was caused by the COVID-19 pandemic, which led to staff shortages."


def test_incident_report_replaces_an_invented_summary(tmp_path: Path) -> None:
    logs = make_logs(tmp_path)
    result = asyncio.run(
        incident_report.incident_report(
            logs, model=with_writer(COVID), out_dir=tmp_path / "r", workspace=tmp_path
        )
    )
    assert result.status == "completed"
    assert result.summary_source == "recipe"
    assert result.summary == (
        "5 error lines in the logs; the most frequent: "
        "ERROR db: connection to <n>:<n> refused (attempt <n>)."
    )
    assert "COVID" not in result.summary
    [note] = [n for n in result.notes if "summary" in n]
    assert "'COVID-19'" in note and "the recipe's own summary is used" in note
    text = Path(result.artifacts[0]).read_text()
    assert "COVID" not in text.split("## How this report was made")[0]
    assert "_The recipe's own summary, from the facts alone._" in text
    assert result.to_dict()["summary_source"] == "recipe"


def test_incident_report_keeps_a_faithful_summary(tmp_path: Path) -> None:
    logs = make_logs(tmp_path)
    said = "The database at 10.0.0.5:5432 refused connections 3 times from 10:01:05."
    result = asyncio.run(
        incident_report.incident_report(
            logs, model=with_writer(said), out_dir=tmp_path / "r", workspace=tmp_path
        )
    )
    assert (result.summary, result.summary_source) == (said, "model")
    text = Path(result.artifacts[0]).read_text()
    assert "_Written by the model; its numbers and names are in the facts._" in text


@pytest.mark.parametrize(
    "said",
    [
        "Zed Shaw made 40 commits; see src/payments.py.",
        "Alice Smith made 12 commits in the last 30 days.",
        "The repository is healthy, with 9 TODO notes.",
    ],
)
def test_repo_health_replaces_an_invented_summary(tmp_path: Path, said: str) -> None:
    repo = make_repo(tmp_path)
    model = FunctionModel(lambda m, t: "Done." if "git_log" in tool_names(t) else said)
    result = asyncio.run(
        repo_health.repo_health(repo, model=model, out=tmp_path / "h.md", workspace=tmp_path)
    )
    assert result.summary_source == "recipe"
    assert result.summary.startswith("6 commits by 3 authors in the last 30 days")
