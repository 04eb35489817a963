"""Recipes and teams on hostile or odd inputs: real files, git repositories and local HTTP
servers; each case once crashed or gave a wrong result."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from loopwise import Agent
from loopwise.agents import Pipeline, ReviewLoop, Stage
from loopwise.agents.recipes import dependency_audit, incident_report, repo_health, research_write
from loopwise.agents.recipes.base import write_report
from loopwise.errors import UsageError
from loopwise.models.testing import FunctionModel, ScriptedModel
from recipe_support import make_repo, pypi_entry, pypi_server

LAZY = FunctionModel(lambda m, t: "Done.")


def audit(tmp_path: Path, requirements: str | bytes, packages: dict[str, Any]) -> str:
    req = tmp_path / "requirements.txt"
    if isinstance(requirements, bytes):
        req.write_bytes(requirements)
    else:
        req.write_text(requirements)
    with pypi_server(packages) as base:
        result = asyncio.run(
            dependency_audit.dependency_audit(
                req,
                model=LAZY,
                pypi_url=base,
                allow=["127.0.0.1"],
                out=tmp_path / "audit.md",
                workspace=tmp_path,
            )
        )
    assert result.status == "completed", result
    return (tmp_path / "audit.md").read_text()


def test_a_package_named_twice_with_markers_is_audited_on_both_lines(tmp_path: Path) -> None:
    text = audit(
        tmp_path,
        'requests==2.31.0; python_version>="3.8"\nrequests==2.0.0; python_version<"3.8"\n',
        {"requests": pypi_entry("2.32.3", "2.31.0", "2.0.0")},
    )
    assert "| requests | 2.31.0 | 2.32.3 | behind |" in text
    assert "| requests | 2.0.0 | 2.32.3 | behind |" in text
    assert text.count("pip install --upgrade 'requests==2.32.3'") == 1


def test_a_real_sized_pypi_answer_is_read_in_full(tmp_path: Path) -> None:
    files = [{"filename": f"big-{i}.tar.gz", "digests": {"sha256": "a" * 64}} for i in range(2)]
    big = {
        "info": {"description": "A long README. " * 3000, "name": "big", "version": "2.0.0"},
        "releases": {f"1.{i}.0": files for i in range(300)} | {"2.0.0": files},
    }
    text = audit(tmp_path, "big==1.0.0\n", {"big": big})
    assert "| big | 1.0.0 | 2.0.0 | major version behind |" in text


def test_odd_pypi_answers_become_error_rows(tmp_path: Path) -> None:
    text = audit(
        tmp_path,
        "nullinfo==1.0\nlistinfo==1.0\nnumber==1.0\nevil==1.0\nlatest==1.0\n",
        {
            "nullinfo": {"info": None},
            "listinfo": {"info": [1]},
            "number": {"info": {"version": 3}},
            "evil": pypi_entry("1.0'; rm -rf ~; echo '"),
            "latest": pypi_entry("latest"),
        },
    )
    for name in ("nullinfo", "listinfo", "number", "evil", "latest"):
        assert f"| {name} | 1.0 | ? | not found:" in text
    assert "rm -rf" not in text.split("## Upgrade commands")[1]
    assert "pip install" not in text


def test_versions_compare_as_pep_440(tmp_path: Path) -> None:
    text = audit(
        tmp_path,
        "pre==3.0.0b1\nsame==1.0\nbeta==1.0-beta\n",
        {
            "pre": pypi_entry("2.0.0", "3.0.0b1"),
            "same": pypi_entry("1.0.0"),
            "beta": pypi_entry("1.0", "1.0b0"),
        },
    )
    assert "| pre | 3.0.0b1 | 2.0.0 | newer than the latest release |" in text
    assert "| same | 1.0 | 1.0.0 | up to date |" in text
    assert "| beta | 1.0-beta | 1.0 | behind |" in text
    assert "'pre==" not in text and "'same==" not in text
    assert "pip install --upgrade 'beta==1.0'" in text


def test_next_steps_never_claim_nothing_to_do_when_something_is(tmp_path: Path) -> None:
    text = audit(tmp_path, "requests==2.31.0\nmissing==1.0\n", {"requests": pypi_entry("2.32.3")})
    steps = text.split("## Next steps")[1]
    assert "Nothing to do" not in steps
    assert "requests" in steps and "missing" in steps


def test_requirement_lines_pip_accepts(tmp_path: Path) -> None:
    parsed = dependency_audit.parse_requirements(
        "-e .\n./local/dir\n/abs/path\nhttps://example.com/pkg.whl\n"
        "git+https://github.com/a/b.git#egg=b\nfoo===1.2\nbar==1.*\r\n\r\n"
        "baz[extra] @ https://x/baz.whl\n"
    )
    assert [(p["name"], p["pinned"]) for p in parsed] == [
        ("foo", "1.2"),
        ("bar", None),
        ("baz", None),
    ]


def test_a_requirements_file_that_is_not_utf8_is_read(tmp_path: Path) -> None:
    text = audit(tmp_path, b"requests==2.31.0  # caf\xe9\n", {"requests": pypi_entry("2.32.3")})
    assert "| requests | 2.31.0 | 2.32.3 | behind |" in text


def test_two_incident_reports_in_the_same_second_both_get_written(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("2024-05-01 10:00:00 ERROR boom\n")

    async def twice() -> list[Any]:
        return [
            await incident_report.incident_report(
                logs, model=LAZY, out_dir=tmp_path / "out", workspace=tmp_path
            )
            for _ in range(2)
        ]

    first, second = asyncio.run(twice())
    assert first.status == second.status == "completed", second
    assert first.artifacts != second.artifacts
    assert all(Path(p).is_file() for p in first.artifacts + second.artifacts)


def test_repo_health_with_more_days_than_since_1970_counts_every_commit(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    result = asyncio.run(
        repo_health.repo_health(
            repo, model=LAZY, days=10**12, out=tmp_path / "h.md", workspace=tmp_path
        )
    )
    authors = {a["author"]: a["commits"] for a in result.facts["commits_by_author"]}
    assert authors == {"Alice Smith": 3, "Bob Jones": 2, "Carol White": 1, "Dave Old": 1}


def test_research_write_refuses_rounds_below_one_before_any_model_call(tmp_path: Path) -> None:
    calls: list[int] = []

    def counting(m: Any, t: Any) -> str:
        calls.append(1)
        return "notes"

    (tmp_path / "n.txt").write_text("facts\n")
    with pytest.raises(UsageError, match="rounds"):
        asyncio.run(
            research_write.research_write(
                "t",
                tmp_path / "d.md",
                sources=["n.txt"],
                model=FunctionModel(counting),
                rounds=0,
                workspace=tmp_path,
            )
        )
    assert calls == []


def test_research_write_without_any_readable_source_writes_nothing(tmp_path: Path) -> None:
    result = asyncio.run(
        research_write.research_write(
            "t",
            tmp_path / "d.md",
            sources=["missing.txt", "/etc/passwd"],
            model=FunctionModel(lambda m, t: "APPROVED"),
            workspace=tmp_path,
        )
    )
    assert result.status == "failed"
    assert "missing.txt" in result.summary and not (tmp_path / "d.md").exists()


@pytest.mark.parametrize("out", ["dir.md", ".", "file.txt/d.md"])
def test_a_report_path_that_cannot_be_a_file_is_a_clear_error(tmp_path: Path, out: str) -> None:
    (tmp_path / "dir.md").mkdir()
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UsageError, match="report"):
        asyncio.run(
            repo_health.repo_health(
                make_repo(tmp_path),
                model=LAZY,
                out=tmp_path / out,
                workspace=tmp_path,
                approve=lambda r: True,
            )
        )


def test_write_report_turns_a_refused_write_into_report_not_written(tmp_path: Path) -> None:
    from loopwise.agents.recipes.base import ReportNotWritten

    (tmp_path / "dir.md").mkdir()
    with pytest.raises(ReportNotWritten, match="directory"):
        asyncio.run(write_report(tmp_path / "dir.md", "x", workspace=tmp_path))


def test_a_broken_stage_template_is_refused_when_the_pipeline_is_made() -> None:
    agent = Agent(ScriptedModel(["ok"]))
    for template in ('JSON: {"a": 1}', "a } b", "{0}", "{later}"):
        with pytest.raises(UsageError, match="Stage 's'"):
            Pipeline(Stage("first", agent), Stage("s", agent, template))


def test_a_review_loop_made_directly_still_needs_a_round() -> None:
    agent = Agent(ScriptedModel(["ok"]))
    with pytest.raises(UsageError, match="rounds"):
        ReviewLoop("d", agent, agent, "{input}", 0)


def test_cli_refuses_negative_budgets(tmp_path: Path) -> None:
    import sys

    for flag, value in (("--budget-tokens", "-5"), ("--budget-usd", "-1")):
        proc = subprocess.run(
            [sys.executable, "-m", "loopwise", "recipe", "repo-health", flag, value],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc
        assert flag in proc.stderr and "Traceback" not in proc.stderr
