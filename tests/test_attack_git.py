"""Attacks on the git tools through the repository itself (security test 15).

The model (``append_file``) or sandboxed code can rewrite anything in the workspace,
``.git`` included, and the git tools run on the host as the host user. Each attack below
plants something that steers plain git outside the repository (to a canary file, another
tenant's repository) or makes it run a program (which would touch a marker file). An attack
holds when no tool output or error contains a canary, no marker appears, and nothing but a
clear refusal comes back. Tools are made both before the attack (the usual case: the
workspace changes under a running agent) and after it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from figures import figure
from loopwise import ModelRetry, Tool, UsageError
from loopwise.toolkits.git import git
from test_toolkit_git import commit, make_repo, sh_git

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

CANARY = f"LWCANARY{uuid.uuid4().hex[:10]}"
TENANT_CANARY = f"LWTENANT{uuid.uuid4().hex[:10]}"


@dataclass
class Scene:
    """A repository under attack and what lies outside it."""

    tmp: Path
    repo: Path
    outside: Path  # a directory with a canary file (secret.txt) and a mailmap
    tenant: Path  # another tenant's repository, its canary committed
    tenant_sha: str
    marker: Path

    def git(self, *args: str) -> str:
        return sh_git(self.repo, *args)

    def config(self, text: str) -> None:
        with open(self.repo / ".git" / "config", "a") as f:
            f.write(text)

    def run_marker(self) -> str:
        return f"touch {self.marker}"

    def track_outside_name(self, name: str) -> None:
        """Put ``name`` in the index (as attacker-run git in the sandbox would)."""
        blob = subprocess.run(
            ["git", "hash-object", "-w", "--stdin"],
            cwd=self.repo,
            input="placeholder\n",
            capture_output=True,
            text=True,
            check=True,
            env={"PATH": os.environ["PATH"], "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(self.tmp)},
        ).stdout.strip()
        self.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{name}")


def make_scene(tmp: Path) -> Scene:
    tmp.mkdir(exist_ok=True)
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(f"{CANARY} private key\n")
    (outside / "mailmap").write_text(f"{CANARY} <alice@example.com>\n")
    (outside / "ignorerevs").write_text(f"{CANARY}\n")
    tenant = tmp / "tenant"
    tenant.mkdir()
    sh_git(tenant, "init", "-q", "-b", "main")
    commit(tenant, "carol", "2024-05-01", f"tenant {TENANT_CANARY}", {"t.txt": TENANT_CANARY})
    sha = sh_git(tenant, "rev-parse", "HEAD").strip()
    (tmp / "ws").mkdir()
    repo = make_repo(tmp / "ws" / "repo")
    return Scene(tmp, repo, outside, tenant, sha, tmp / "marker")


# --- the attacks: each plants something in the repository ------------------------------


def worktree_abs(s: Scene) -> None:
    s.config(f"[core]\n\tworktree = {s.outside}\n")
    s.track_outside_name("secret.txt")


def worktree_etc(s: Scene) -> None:
    s.config("[core]\n\tworktree = /etc\n")
    s.track_outside_name("hostname")
    s.track_outside_name("passwd")


def worktree_relative(s: Scene) -> None:
    s.config("[core]\n\tworktree = ../../../outside\n")
    s.track_outside_name("secret.txt")


def include_path(s: Scene) -> None:
    (s.outside / "evil.cfg").write_text(f"[core]\n\tworktree = {s.outside}\n")
    s.config(f"[include]\n\tpath = {s.outside / 'evil.cfg'}\n")
    s.track_outside_name("secret.txt")


def include_if_gitdir(s: Scene) -> None:
    (s.outside / "evil.cfg").write_text(
        f"[core]\n\tworktree = {s.outside}\n\tfsmonitor = {s.run_marker()}\n"
    )
    s.config(f'[includeIf "gitdir:/"]\n\tpath = {s.outside / "evil.cfg"}\n')
    s.config(f'[includeIf "onbranch:main"]\n\tpath = {s.outside / "evil.cfg"}\n')
    s.track_outside_name("secret.txt")


def include_secret_file(s: Scene) -> None:
    s.config(f"[include]\n\tpath = {s.outside / 'secret.txt'}\n")  # errors may quote it


def alternates(s: Scene) -> None:
    info = s.repo / ".git" / "objects" / "info"
    info.mkdir(exist_ok=True)
    (info / "alternates").write_text(f"{s.tenant / '.git' / 'objects'}\n")
    s.git("update-ref", "refs/heads/stolen", s.tenant_sha)  # the object is found through them


def alternates_env(s: Scene) -> None:
    os.environ["GIT_ALTERNATE_OBJECT_DIRECTORIES"] = str(s.tenant / ".git" / "objects")
    os.environ["GIT_DIR"] = str(s.tenant / ".git")
    os.environ["GIT_WORK_TREE"] = str(s.outside)


def gitdir_file(s: Scene) -> None:
    shutil.rmtree(s.repo / ".git")
    (s.repo / ".git").write_text("gitdir: ../../tenant/.git\n")


def gitdir_symlink(s: Scene) -> None:
    shutil.rmtree(s.repo / ".git")
    (s.repo / ".git").symlink_to(s.tenant / ".git")


def commondir(s: Scene) -> None:
    (s.repo / ".git" / "commondir").write_text(f"{s.tenant / '.git'}\n")


def objects_symlink(s: Scene) -> None:
    objects = s.repo / ".git" / "objects"
    shutil.rmtree(objects)
    objects.symlink_to(s.tenant / ".git" / "objects")
    s.git("update-ref", "refs/heads/stolen", s.tenant_sha)


def loose_object_symlink(s: Scene) -> None:
    name = s.tenant_sha
    target = s.tenant / ".git" / "objects" / name[:2] / name[2:]
    folder = s.repo / ".git" / "objects" / name[:2]
    folder.mkdir(exist_ok=True)
    (folder / name[2:]).symlink_to(target)
    s.git("update-ref", "refs/heads/stolen", name)


def refs_symlink(s: Scene) -> None:
    heads = s.repo / ".git" / "refs" / "heads"
    (heads / "stolen").symlink_to(s.tenant / ".git" / "refs" / "heads" / "main")
    info = s.repo / ".git" / "objects" / "info"
    (info / "alternates").write_text(f"{s.tenant / '.git' / 'objects'}\n")


def config_symlink(s: Scene) -> None:
    (s.outside / "evil.cfg").write_text(f"[core]\n\tworktree = {s.outside}\n")
    (s.repo / ".git" / "config").unlink()
    (s.repo / ".git" / "config").symlink_to(s.outside / "evil.cfg")


def head_symlink(s: Scene) -> None:
    (s.repo / ".git" / "packed-refs").symlink_to(s.tenant / ".git" / "packed-refs")
    (s.repo / ".git" / "HEAD").unlink()
    (s.repo / ".git" / "HEAD").symlink_to(s.outside / "secret.txt")


def info_symlink(s: Scene) -> None:
    (s.outside / "attrs").write_text("* diff=evil\n")
    info = s.repo / ".git" / "info"
    info.mkdir(exist_ok=True)
    (info / "attributes").symlink_to(s.outside / "attrs")
    s.config(f'[diff "evil"]\n\ttextconv = {s.run_marker()} && cat\n')


def fsmonitor(s: Scene) -> None:
    s.config(f"[core]\n\tfsmonitor = {s.run_marker()}\n\tuntrackedCache = true\n")


def textconv(s: Scene) -> None:
    (s.repo / ".gitattributes").write_text("* diff=evil\n")
    s.config(f'[diff "evil"]\n\ttextconv = {s.run_marker()}; cat\n\tcommand = {s.run_marker()}\n')


def filters(s: Scene) -> None:
    (s.repo / ".gitattributes").write_text("* filter=evil\n")
    s.config(
        f'[filter "evil"]\n\tclean = {s.run_marker()}; cat\n\tsmudge = {s.run_marker()}; cat\n'
        f"\tprocess = {s.run_marker()}\n\trequired = true\n"
    )


def programs(s: Scene) -> None:
    s.config(
        f"[core]\n\tpager = {s.run_marker()}\n\tsshCommand = {s.run_marker()}\n"
        f"\thooksPath = {s.outside}\n\teditor = {s.run_marker()}\n\taskPass = {s.run_marker()}\n"
        f"[diff]\n\texternal = {s.run_marker()}\n[gpg]\n\tprogram = {s.run_marker()}\n"
        "[log]\n\tshowSignature = true\n[pager]\n\tlog = " + s.run_marker() + "\n"
    )
    hook = s.outside / "post-index-change"
    hook.write_text(f"#!/bin/sh\n{s.run_marker()}\n")
    hook.chmod(0o755)


def mailmap_file(s: Scene) -> None:
    s.config(f"[mailmap]\n\tfile = {s.outside / 'mailmap'}\n")


def mailmap_symlink(s: Scene) -> None:
    (s.repo / ".mailmap").symlink_to(s.outside / "mailmap")


def ignore_revs(s: Scene) -> None:
    s.config(f"[blame]\n\tignoreRevsFile = {s.outside / 'ignorerevs'}\n")
    s.config(f"[core]\n\tattributesFile = {s.outside / 'attrs'}\n")
    s.config(f"[core]\n\texcludesFile = {s.outside / 'secret.txt'}\n")


def tracked_dir_symlink(s: Scene) -> None:
    (s.repo / "d").mkdir()
    (s.repo / "d" / "secret.txt").write_text("committed\n")
    s.git("add", "d")
    s.git("-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qm", "d")
    shutil.rmtree(s.repo / "d")
    (s.repo / "d").symlink_to(s.outside)


def tracked_file_symlink(s: Scene) -> None:
    (s.repo / "README.md").unlink()
    (s.repo / "README.md").symlink_to(s.outside / "secret.txt")


def repo_swapped(s: Scene) -> None:
    s.repo.rename(s.repo.with_name("moved"))
    s.repo.symlink_to(s.tenant)


def submodule_dir(s: Scene) -> None:
    modules = s.repo / ".git" / "modules"
    modules.mkdir()
    (modules / "sub").symlink_to(s.tenant / ".git")
    (s.repo / "sub").mkdir()
    (s.repo / "sub" / ".git").write_text("gitdir: ../.git/modules/sub\n")
    s.git("update-index", "--add", "--cacheinfo", f"160000,{s.tenant_sha},sub")
    (s.repo / ".gitmodules").write_text('[submodule "sub"]\n\tpath = sub\n\turl = ./x\n')
    s.config("[submodule]\n\trecurse = true\n[status]\n\tsubmoduleSummary = true\n")


ATTACKS: dict[str, Callable[[Scene], None]] = {
    f.__name__: f
    for f in (
        worktree_abs, worktree_etc, worktree_relative, include_path, include_if_gitdir,
        include_secret_file, alternates, alternates_env, gitdir_file, gitdir_symlink, commondir,
        objects_symlink, loose_object_symlink, refs_symlink, config_symlink, head_symlink,
        info_symlink, fsmonitor, textconv, filters, programs, mailmap_file, mailmap_symlink,
        ignore_revs, tracked_dir_symlink, tracked_file_symlink, repo_swapped, submodule_dir,
    )
}  # fmt: skip


def calls(s: Scene) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("git_status", {}),
        ("git_diff", {}),
        ("git_diff", {"staged": True}),
        ("git_diff", {"rev": "HEAD~1", "stat": True}),
        ("git_log", {"patch": True, "max_count": 3}),
        ("git_log", {"rev": "stolen", "patch": True}),
        ("git_show", {}),
        ("git_show", {"rev": s.tenant_sha}),
        ("git_show", {"rev": "HEAD", "path": "README.md"}),
        ("git_blame", {"path": "README.md"}),
        ("git_blame", {"path": "secret.txt"}),
        ("git_blame", {"path": "d/secret.txt"}),
        ("git_blame", {"path": "app.py", "rev": "HEAD"}),
        ("git_shortlog", {}),
        ("git_grep", {"pattern": "LWCANARY|LWTENANT|root:"}),
        ("git_grep", {"pattern": "LWCANARY|LWTENANT", "rev": "HEAD"}),
    ]


def outputs(tools: dict[str, Tool], s: Scene) -> Iterator[str]:
    """Every output or error message of every call (each touching the dirty files first)."""
    for name, args in calls(s):
        for path in ("README.md", "app.py"):
            if os.path.lexists(s.repo / path) and not os.path.islink(s.repo / path):
                os.utime(s.repo / path)  # a dirty stat makes git re-read (and filter) a file
        t = tools[name]
        try:
            yield f"{name}: " + str(asyncio.run(t.call(t.validate(args), None)))
        except (ModelRetry, UsageError) as exc:
            yield f"{name} refused: {exc}"


RESULTS: dict[str, bool] = {}


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    if RESULTS:
        held = sum(RESULTS.values())
        figure(f"git hostile repository attacks: {len(RESULTS)}, held: {held}")


@pytest.fixture
def clean_env() -> Iterator[None]:
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def leaks(text: str) -> list[str]:
    found = [c for c in (CANARY, TENANT_CANARY) if c in text]
    return found + ["/etc/passwd"] * ("root:x:0:0" in text)


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_repository_content_never_steers_git(attack: str, tmp_path: Path, clean_env: None) -> None:
    scene = make_scene(tmp_path)
    before = {t.name: t for t in git(scene.repo)}
    ATTACKS[attack](scene)
    scene.marker.unlink(missing_ok=True)  # the attacker's own git may have run it
    seen = list(outputs(before, scene))
    try:
        after = {t.name: t for t in git(scene.repo)}
    except UsageError as exc:
        seen.append(f"construction refused: {exc}")
    else:
        seen += outputs(after, scene)
    found = [line[:300] for line in seen if leaks(line)]
    ran = scene.marker.exists()
    RESULTS[attack] = not found and not ran
    assert not found, f"{attack}: canary in git tool output: {found}"
    assert not ran, f"{attack}: the repository made git run a program"


def test_the_attacks_are_real(tmp_path: Path) -> None:
    """Plain git (system defaults) falls for a sample of the attacks: they test something."""
    scene = make_scene(tmp_path)
    worktree_abs(scene)
    assert CANARY in sh_git(scene.repo, "diff")
    scene = make_scene(tmp_path / "2")
    alternates(scene)
    assert TENANT_CANARY in sh_git(scene.repo, "show", scene.tenant_sha)
    scene = make_scene(tmp_path / "3")
    mailmap_file(scene)
    assert CANARY in sh_git(scene.repo, "shortlog", "-sne", "HEAD")
    scene = make_scene(tmp_path / "4")
    tracked_dir_symlink(scene)
    assert CANARY in sh_git(scene.repo, "grep", "-e", "LWCANARY")
    scene = make_scene(tmp_path / "5")
    fsmonitor(scene)
    sh_git(scene.repo, "status")
    assert scene.marker.exists()


def test_legitimate_settings_still_apply(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    sh_git(repo, "config", "branch.main.remote", ".")
    sh_git(repo, "config", "branch.main.merge", "refs/heads/main")
    sh_git(repo, "config", "core.abbrev", "12")
    tools = {t.name: t for t in git(repo)}
    status = asyncio.run(tools["git_status"].call(tools["git_status"].validate({}), None))
    assert status.startswith("## main...main"), status
    args = tools["git_log"].validate({"max_count": 1, "oneline": True})
    log = asyncio.run(tools["git_log"].call(args, None))
    assert len(log.split()[0]) == 12, log


def test_git_waits_for_a_sandboxed_run_on_its_tree(tmp_path: Path) -> None:
    """A sandboxed run holds its workspace; a git call on a repository inside it waits."""
    from loopwise.sandbox.guard import SANDBOX, hold

    (tmp_path / "ws").mkdir()
    repo = make_repo(tmp_path / "ws" / "repo")
    [log] = [t for t in git(repo, timeout=1.0) if t.name == "git_log"]
    with hold(SANDBOX, tmp_path / "ws", timeout=1):
        started = time.monotonic()
        with pytest.raises(ModelRetry, match="in use by a sandboxed run"):
            asyncio.run(log.call(log.validate({"max_count": 1}), None))
        assert time.monotonic() - started >= 0.9
    assert "Add usage section" in asyncio.run(log.call(log.validate({"max_count": 1}), None))
