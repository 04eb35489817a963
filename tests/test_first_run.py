"""A first run without keys tells the truth: one line and exit 2, never a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


def loopwise(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY")
    }
    env["LOOPWISE_DATA_DIR"] = str(tmp_path / "data")
    return subprocess.run(
        [sys.executable, "-m", "loopwise", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        check=False,
    )


@pytest.mark.parametrize(
    ("model", "key"),
    [("anthropic:claude-sonnet-4-6", "ANTHROPIC_API_KEY"), ("openai:gpt-4.1", "OPENAI_API_KEY")],
)
def test_a_hosted_model_without_its_key_is_one_line_and_exit_2(
    tmp_path: Path, model: str, key: str
) -> None:
    done = loopwise(tmp_path, "run", "What is 17*23?", "--model", model)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and key in lines[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("model", "ok"),
    [
        ("local", True),
        ("openai:gpt-4.1", True),
        ("local:/etc/passwd", False),
        ("local:", False),
        ("file:/etc/passwd", False),
    ],
)
def test_the_api_takes_the_embedded_model_but_never_a_path(model: str, ok: bool) -> None:
    from pydantic import ValidationError

    from loopwise.server.schemas import RunCreate

    try:
        RunCreate(agent="a", input="task", model=model)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted is ok
