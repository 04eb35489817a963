"""The git toolkit on a real repository: right facts, no option injection, hostile config inert."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from figures import figure
from loopwise import Agent, ModelRetry, Tool, ToolResultPart, UsageError
from loopwise.models.testing import ScriptedModel, call
from loopwise.toolkits.git import git

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

AUTHORS = {
    "alice": ("Alice Liddell", "alice@example.com"),
    "bob": ("Bob Builder", "bob@example.com"),
    "carol": ("Carol Danvers", "carol@example.com"),
}


def sh_git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(repo.parent),
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def commit(repo: Path, who: str, date: str, message: str, files: dict[str, str]) -> None:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
        sh_git(repo, "add", name)
    name, email = AUTHORS[who]
    when = f"{date}T12:00:00+00:00"
    env = {"GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
    sh_git(
        repo,
        "-c",
        f"user.name={name}",
        "-c",
        f"user.email={email}",
        "commit",
        "-qm",
        message,
        env=env,
    )


def make_repo(repo: Path) -> Path:
    repo.mkdir()
    sh_git(repo, "init", "-q", "-b", "main")
    commit(
        repo,
        "alice",
        "2024-01-10",
        "Initial commit",
        {
            "README.md": "# Demo\n",
            "app.py": "def main():\n    return 1\n\nmain()\n",
        },
    )
    commit(
        repo,
        "bob",
        "2024-02-15",
        "Fix empty input handling",
        {
            "app.py": "def main():\n    return 2  # fixed by bob\n\nmain()\n",
        },
    )
    commit(repo, "alice", "2024-03-20", "Add the user guide", {"docs/guide.md": "Guide\n"})
    sh_git(repo, "tag", "v1.0")
    commit(repo, "carol", "2024-04-05", "Add usage section", {"README.md": "# Demo\n\n## Usage\n"})
    (repo / "app.py").write_text("def main():\n    return 2  # fixed by bob\n\nmain()\nextra()\n")
    (repo / "notes.txt").write_text("staged note\n")
    sh_git(repo, "add", "notes.txt")
    (repo / "scratch.txt").write_text("untracked\n")
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("git") / "repo")


@pytest.fixture(scope="module")
def tools(repo: Path) -> dict[str, Tool]:
    return {t.name: t for t in git(repo)}


Run = Callable[..., str]


@pytest.fixture(scope="module")
def run(tools: dict[str, Tool]) -> Run:
    def run(name: str, **args: Any) -> str:
        t = tools[name]
        result: str = asyncio.run(t.call(t.validate(args), None))
        return result

    return run


def test_tools_and_their_policy(tools: dict[str, Tool]) -> None:
    assert list(tools) == [
        "git_log",
        "git_status",
        "git_diff",
        "git_show",
        "git_blame",
        "git_shortlog",
        "git_grep",
    ]
    assert all(t.idempotent and not t.requires_approval for t in tools.values())
    assert "self" not in tools["git_log"].parameters["properties"]
    assert "1 to 200" in tools["git_log"].parameters["properties"]["max_count"]["description"]


def test_log(run: Run) -> None:
    lines = run("git_log", oneline=True).splitlines()
    assert lines[0].endswith("2024-04-05 Carol Danvers: Add usage section")
    assert [line.split(": ", 1)[1] for line in lines] == [
        "Add usage section",
        "Add the user guide",
        "Fix empty input handling",
        "Initial commit",
    ]
    assert run("git_log", oneline=True, author="Bob").count("\n") == 1
    assert run("git_log", oneline=True, since="2024-03-01").count("\n") == 2
    assert run("git_log", oneline=True, until="2024-01-31").count("\n") == 1
    assert "Add the user guide" in run("git_log", oneline=True, path="docs")
    assert run("git_log", oneline=True, max_count=2).count("\n") == 2
    assert run("git_log", oneline=True, max_count=0).count("\n") == 1  # clamped
    assert "Add usage section" in run("git_log", oneline=True, grep="usage")
    assert run("git_log", oneline=True, rev="v1.0..HEAD").count("\n") == 1
    assert run("git_log", author="nobody") == "(no commits match)"
    full = run("git_log", max_count=1, stat=True)
    assert "Author: Carol Danvers <carol@example.com>" in full and "README.md | 2 ++" in full
    assert "+## Usage" in run("git_log", max_count=1, patch=True)


def test_status(run: Run) -> None:
    lines = run("git_status").splitlines()
    assert lines[0] == "## main"
    assert set(lines[1:]) == {" M app.py", "A  notes.txt", "?? scratch.txt"}


def test_diff(run: Run) -> None:
    unstaged = run("git_diff")
    assert "+extra()" in unstaged and "notes.txt" not in unstaged
    staged = run("git_diff", staged=True)
    assert "+staged note" in staged and "app.py" not in staged
    stat = run("git_diff", rev="v1.0..HEAD", stat=True)
    assert "README.md | 2 ++" in stat and "1 file changed" in stat
    assert run("git_diff", rev="HEAD~3", paths=["docs"]).count("diff --git") == 1
    assert run("git_diff", paths=["README.md"]) == "(no differences)"


def test_show(run: Run) -> None:
    head = run("git_show")
    assert "Add usage section" in head and "+## Usage" in head
    assert run("git_show", rev="v1.0", path="README.md") == "# Demo\n"
    assert "1 file changed" in run("git_show", rev="HEAD~2", stat=True)


def test_blame(run: Run) -> None:
    line2 = run("git_blame", path="app.py", start_line=2, end_line=2)
    assert "Bob Builder" in line2 and "2024-02-15" in line2 and line2.count("\n") == 1
    whole = run("git_blame", path="app.py")
    assert "Not Committed Yet" in whole and "Alice Liddell" in whole
    assert "Not Committed" not in run("git_blame", path="app.py", rev="HEAD")
    with pytest.raises(ModelRetry, match="Line numbers"):
        run("git_blame", path="app.py", start_line=3, end_line=1)


def test_shortlog(run: Run) -> None:
    counts = [line.split("\t") for line in run("git_shortlog").splitlines()]
    assert [(int(n), who) for n, who in counts] == [
        (2, "Alice Liddell <alice@example.com>"),
        (1, "Bob Builder <bob@example.com>"),
        (1, "Carol Danvers <carol@example.com>"),
    ]
    assert "Alice" not in run("git_shortlog", since="2024-04-01")


def test_grep_searches_tracked_files_only(run: Run) -> None:
    assert run("git_grep", pattern="fixed by") == "app.py:2:    return 2  # fixed by bob"
    assert run("git_grep", pattern="untracked") == (
        "No matches for 'untracked' in the tracked files."  # scratch.txt is not tracked
    )
    assert run("git_grep", pattern="staged note") == "notes.txt:1:staged note"  # in the index
    assert run("git_grep", pattern="^Guide", path="docs") == "docs/guide.md:1:Guide"
    assert run("git_grep", pattern="usage", ignore_case=True) == "README.md:3:## Usage"
    assert "Usage" not in run("git_grep", pattern="Usage|Demo", rev="v1.0")  # before carol's
    assert run("git_grep", pattern="Demo", rev="v1.0") == "README.md:1:# Demo"
    assert run("git_grep", pattern=".", max_matches=2).endswith("more matches not shown]")
    # The pattern goes after -e: one that looks like an option is a pattern.
    assert "No matches" in run("git_grep", pattern="--output=/tmp/x")
    with pytest.raises(ModelRetry, match="git grep failed"):
        run("git_grep", pattern="(unclosed")
    with pytest.raises(ModelRetry, match="one-line"):
        run("git_grep", pattern="a\nb")


def test_git_errors_go_back_to_the_model(run: Run) -> None:
    with pytest.raises(ModelRetry, match=r"git log failed: .*no-such-branch"):
        run("git_log", rev="no-such-branch")


def test_option_injection_is_refused_and_creates_nothing(run: Run, tmp_path: Path) -> None:
    probe = tmp_path / "pwned"
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("git_log", {"rev": f"--output={probe}"}),
        ("git_log", {"rev": "-c"}),
        ("git_log", {"rev": f"HEAD --exec=touch {probe}"}),
        ("git_log", {"rev": f"HEAD\n--output={probe}"}),
        ("git_show", {"rev": ""}),
        ("git_log", {"path": "--ext-diff"}),
        ("git_log", {"path": "../outside"}),
        ("git_log", {"path": "/etc"}),
        ("git_log", {"path": "docs/../../outside"}),
        ("git_log", {"author": "x\0y"}),
        ("git_diff", {"rev": f"--output={probe}"}),
        ("git_diff", {"paths": ["README.md", f"--output={probe}"]}),
        ("git_diff", {"rev": "--ext-diff"}),
        ("git_show", {"rev": f"--upload-pack=touch {probe}"}),
        ("git_show", {"rev": "HEAD", "path": "../../etc/passwd"}),
        ("git_show", {"rev": "-p"}),
        ("git_blame", {"path": "app.py", "rev": "--contents=/etc/passwd"}),
        ("git_blame", {"path": "-S/etc/passwd"}),
        ("git_blame", {"path": str(tmp_path / "outside.txt")}),
        ("git_shortlog", {"rev": f"--output={probe}"}),
        ("git_shortlog", {"path": "-e"}),
        ("git_grep", {"pattern": "x", "rev": f"--output={probe}"}),
        ("git_grep", {"pattern": "x", "rev": "-O"}),
        ("git_grep", {"pattern": "x", "path": f"--open-files-in-pager=touch {probe}"}),
        ("git_grep", {"pattern": "x", "path": "../outside"}),
    ]
    refused = 0
    for name, args in attempts:
        with pytest.raises(ModelRetry, match=r"Invalid|outside the repository"):
            run(name, **args)
        refused += 1
    # Values of typed options go inside one argv entry ("--since=..."): inert, not refused.
    run("git_log", since=f"--output={probe}", author=f"--exec=touch {probe}")
    assert not probe.exists() and list(tmp_path.iterdir()) == []
    figure(f"git injection attempts: {len(attempts)}, refused: {refused}, files created: 0")


def hostile_repo(root: Path) -> tuple[Path, Path, int]:
    """A repository whose config names a marker-writing script for every hook git offers."""
    repo = make_repo(root / "hostile")
    marker = root / "marker"
    evil = root / "evil.sh"
    evil.write_text(f'#!/bin/sh\necho "$0 $*" >> {marker}\ncat\n')
    evil.chmod(0o755)
    hooks = repo / ".git" / "evil-hooks"
    hooks.mkdir()
    for hook in ("post-checkout", "pre-commit", "post-index-change", "fsmonitor-watchman"):
        shutil.copy(evil, hooks / hook)
    settings = {
        "core.fsmonitor": str(evil),
        "core.pager": str(evil),
        "core.hooksPath": str(hooks),
        "core.sshCommand": str(evil),
        "diff.external": str(evil),
        "pager.log": str(evil),
        "pager.diff": str(evil),
        "filter.x.clean": str(evil),
        "filter.x.smudge": str(evil),
        "filter.x.process": str(evil),
        "filter.x.required": "true",
        "filter.odd name.v2.clean": str(evil),
        "diff.x.command": str(evil),
        "diff.x.textconv": str(evil),
        "log.showSignature": "true",
        "gpg.program": str(evil),
        "status.submoduleSummary": "true",
    }
    for key, value in settings.items():
        sh_git(repo, "config", key, value)
    (repo / ".gitattributes").write_text("* filter=x diff=x\n*.md filter=odd\\ name.v2\n")
    return repo, marker, len(settings)


def test_hostile_repository_config_never_runs(tmp_path: Path) -> None:
    repo, marker, planted = hostile_repo(tmp_path)
    # The trap is real: plain git runs it.
    subprocess.run(
        ["git", "-C", str(repo), "diff"],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        check=False,
    )
    assert marker.exists()
    marker.unlink()
    tools = {t.name: t for t in git(repo)}
    calls: list[tuple[str, dict[str, Any]]] = [
        ("git_status", {}),
        ("git_diff", {}),
        ("git_diff", {"staged": True}),
        ("git_diff", {"rev": "HEAD~2", "stat": True}),
        ("git_log", {"patch": True, "stat": True}),
        ("git_show", {}),
        ("git_show", {"rev": "HEAD", "path": "README.md"}),
        ("git_blame", {"path": "README.md"}),
        ("git_blame", {"path": "app.py", "rev": "HEAD"}),
        ("git_shortlog", {}),
        ("git_grep", {"pattern": "Demo"}),
        ("git_grep", {"pattern": "Demo", "rev": "HEAD"}),
    ]
    for name, args in calls:
        for path in ("README.md", "app.py"):
            os.utime(repo / path)  # a dirty stat makes git re-read (and filter) the file
        t = tools[name]
        asyncio.run(t.call(t.validate(args), None))
        assert not marker.exists(), f"{name}({args}) ran the hostile config"
    print(f"\nhostile config entries: {planted}, tool calls: {len(calls)}, executions: 0")


def test_status_and_diff_do_not_write_the_index(repo: Path, run: Run) -> None:
    index = repo / ".git" / "index"
    # Same content, another mtime (whole seconds: git may ignore nanoseconds): `git diff`
    # then refreshes the index it read, GIT_OPTIONAL_LOCKS=0 or not.
    os.utime(repo / "README.md", (1e9, 1e9))
    before = index.read_bytes(), index.stat().st_mtime_ns
    run("git_status")
    run("git_diff")
    assert (index.read_bytes(), index.stat().st_mtime_ns) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the repository away")
def test_repository_owned_by_another_user(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "theirs")
    for here, dirs, files in os.walk(repo):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(here, name), 4321, 4321)
    os.chown(repo, 4321, 4321)
    plain = subprocess.run(
        ["git", "-C", str(repo), "log"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        check=False,
    )
    assert "dubious ownership" in plain.stderr
    [log] = [t for t in git(repo) if t.name == "git_log"]
    assert "Initial commit" in log.function(oneline=True)


def test_bad_repositories_and_missing_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="not a usable git repository"):
        git(tmp_path)
    with pytest.raises(UsageError, match="is not a directory"):
        git(tmp_path / "missing")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(UsageError, match="git is not installed"):
        git(tmp_path)


def test_agent_corrects_bad_arguments(repo: Path) -> None:
    model = ScriptedModel(
        [
            call("git_log", max_count="many", oneline=True),
            call("git_log", count=2),
            call("git_log", max_count=2, oneline=True, rev="--output=/tmp/x"),
            call("git_log", max_count=2, oneline=True),
            "The last two commits: usage section and user guide.",
        ]
    )
    result = Agent(model, tools=git(repo)).run_sync("what changed lately?")
    assert result.status == "completed"
    seen = [parts[0] for parts in observations(model)]
    assert seen[0].is_error and "field 'max_count'" in seen[0].content
    assert "valid integer" in seen[0].content
    assert seen[1].is_error and "field 'count': unknown field" in seen[1].content
    assert seen[2].is_error and "Invalid revision '--output=/tmp/x'" in seen[2].content
    assert not seen[3].is_error
    assert len(seen[3].content.splitlines()) == 2 and "Add usage section" in seen[3].content
    assert "Add the user guide" in seen[3].content
    assert {t.name for t in model.requests[0].tools} >= {"git_log", "git_blame"}


def observations(model: ScriptedModel) -> list[list[ToolResultPart]]:
    """The tool results the model received at each request after the first."""
    return [
        [p for p in getattr(req.messages[-1], "parts", ()) if isinstance(p, ToolResultPart)]
        for req in model.requests[1:]
    ]
