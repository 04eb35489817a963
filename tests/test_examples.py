"""The examples in examples/ run as documented and print what the README says."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


def run(name: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_quickstart_finds_the_largest_module(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "small.py").write_text("a = 1\n")
    (tmp_path / "pkg" / "big.py").write_text("x = 1\n" * 40)
    (tmp_path / "top.py").write_text("y = 2\n" * 3)
    out = run("quickstart.py", str(tmp_path))
    assert "status=completed" in out
    assert "The largest module is pkg/big.py with 40 lines (44 lines in all)." in out


def test_structured_output_example() -> None:
    out = run("structured_output.py")
    assert 'completed {"deleted":["cache.tmp"],"bytes_freed":4096}' in out
    assert "files left: ['notes.md', 'report.txt']" in out


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_every_example_is_tested(path: Path) -> None:
    tested = {"quickstart.py", "structured_output.py", "repo_report.py"}
    assert path.name in tested, f"add a test for examples/{path.name}"


def test_repo_report_example(tmp_path: Path) -> None:
    repo, workspace = tmp_path / "repo", tmp_path / "ws"
    workspace.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for i, author in enumerate(["Ada", "Ada", "Linus"]):
        (repo / f"f{i}.txt").write_text(str(i))
        env = {"GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": f"{author}@example.com"}
        git = ["git", "-C", str(repo), "-c", "user.name=x", "-c", "user.email=x@example.com"]
        subprocess.run([*git, "add", "."], check=True)
        subprocess.run(
            [*git, "commit", "-q", "-m", f"change {i}"], check=True, env={**os.environ, **env}
        )
    out = run("repo_report.py", str(repo), str(workspace))
    assert out.startswith("completed Wrote reports/report.md")
    assert "- Ada: 2 commits\n- Linus: 1 commits" in out
    assert "change 2" in out
