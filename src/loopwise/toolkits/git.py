"""Read-only git for the model: history, status, diffs, blame, without a shell or options.

Every tool takes typed parameters; none accepts free-form git options. Revisions and paths
that start with ``-`` are refused (option injection such as ``--output=/etc/x``), paths must
stay inside the repository, and revisions go after ``--end-of-options`` and paths after
``--``. The repository itself is treated as hostile, since the model (file tools) or
sandboxed code may have rewritten any of it, ``.git`` included: git runs on a private git
directory built for each call (``_gitview``) with an allow-listed copy of the config, so
``core.worktree``, includes, hooks, fsmonitor, pagers, external diff, textconv and filters
are never read, with the git directory, work tree and object directory pinned, and with no
system or global config. A ``.git`` file or link, alternates, or a link inside the object
or ref store is refused; a work-tree file is never read through a symlinked directory. Git
reads a private copy of the index, so even ``git diff`` leaves the repository untouched.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import ModelRetry, UsageError
from ..sandbox.guard import READER, TreeBusy, hold
from ..tools import Tool, tool
from ._gitview import RepoView, find_top, read_worktree_file
from ._process import minimal_env, run_process

__all__ = ["git"]

MAX_LOG_COUNT = 200
_MIN_VERSION = (2, 32)  # in-tree .gitattributes, .gitignore, .mailmap links not followed
MAX_CONTENTS = 64 << 20  # bytes of a working-tree file given to git blame
MAX_LISTING = 64 << 20  # bytes of `git ls-files -z` output checked before a work-tree grep
_DIFF_SAFETY = ("--no-color", "--no-ext-diff", "--no-textconv")
_HARDENING = {
    "core.fsmonitor": "false",
    "core.hooksPath": "/dev/null",
    "diff.external": "",
    "core.pager": "cat",
    "protocol.allow": "never",
    "core.quotePath": "false",
    "core.attributesFile": "/dev/null",
    "log.showSignature": "false",
    "blame.ignoreRevsFile": "",
    "submodule.recurse": "false",
    "status.submoduleSummary": "false",
    "safe.directory": "*",  # the git directory is our own private view (see _gitview)
    "core.excludesFile": "/dev/null",
}


def git(repo: str | Path, *, max_output_chars: int = 20_000, timeout: float = 30.0) -> list[Tool]:
    """Read-only git tools on ``repo``: log, status, diff, show, blame, shortlog and grep.

    ``timeout`` (seconds) bounds each git command; ``max_output_chars`` caps what it returns.
    Raises ``UsageError`` if git (2.32 or later) is missing, ``repo`` is not a repository,
    its path passes through a symlink, or its ``.git`` is a file or a link.
    """
    tools = _GitTools(_GitRunner(repo, timeout=timeout, max_output_chars=max_output_chars))
    make = tool(max_output_chars=max_output_chars + 500, timeout=timeout + 10.0, effects=["read"])
    names = (
        "git_log",
        "git_status",
        "git_diff",
        "git_show",
        "git_blame",
        "git_shortlog",
        "git_grep",
    )
    return [make(getattr(tools, name)) for name in names]


class _GitTools:
    """The tools, as methods: each builds a git command line from typed, checked arguments."""

    def __init__(self, runner: _GitRunner):
        self.runner = runner

    def git_log(
        self,
        max_count: int = 20,
        rev: str | None = None,
        path: str | None = None,
        author: str | None = None,
        since: str | None = None,
        until: str | None = None,
        grep: str | None = None,
        oneline: bool = False,
        stat: bool = False,
        patch: bool = False,
    ) -> str:
        """Show commit history, newest first.

        Args:
            max_count: How many commits at most (1 to 200).
            rev: A revision or range, e.g. "main", "v1.0..HEAD", "HEAD~5" (default: HEAD).
            path: Only commits touching this file or directory (relative to the repository,
                taken literally: no globs).
            author: Only commits whose author name or email matches this pattern.
            since: Only commits after this date, e.g. "2024-01-31" or "2 weeks ago".
            until: Only commits before this date.
            grep: Only commits whose message matches this pattern.
            oneline: One line per commit: short hash, date, author, subject.
            stat: Add the files changed and line counts.
            patch: Add the full diff of each commit (large: use with a small max_count).
        """
        count = min(max(max_count, 1), MAX_LOG_COUNT)
        args = ["log", *_DIFF_SAFETY, "--no-show-signature", f"--max-count={count}"]
        for flag, value in (("author", author), ("since", since), ("until", until), ("grep", grep)):
            if value is not None:
                args.append(f"--{flag}={_value(flag, value)}")
        if oneline:
            args += ["--date=short", "--format=%h %ad %an: %s"]
        else:
            args += ["--date=iso", "--format=medium"]
        args += ["--stat"] * stat + ["--patch"] * patch
        args += [
            "--end-of-options",
            self.runner.rev(rev or "HEAD"),
            "--",
            *self.runner.paths([path]),
        ]
        return self.runner.run(args) or "(no commits match)"

    def git_status(self) -> str:
        """Show the current branch and changed, staged and untracked files (short format)."""
        out = self.runner.run(["status", "--short", "--branch", "--ignore-submodules=all"])
        if len(out.strip().splitlines()) <= 1:
            out += "\n(nothing to commit, working tree clean)"
        return out

    def git_diff(
        self,
        rev: str | None = None,
        paths: Sequence[str] = (),
        staged: bool = False,
        stat: bool = False,
    ) -> str:
        """Show changes: unstaged by default, staged ones, or against a revision or range.

        Args:
            rev: Compare with this revision, or between two: "HEAD~3", "main..feature".
            paths: Only these files or directories (relative to the repository, no globs).
            staged: Show what is staged for the next commit (index against HEAD or rev).
            stat: Show only the files changed and line counts.
        """
        args = ["diff", *_DIFF_SAFETY, "--ignore-submodules=all"]
        args += ["--cached"] * staged + ["--stat"] * stat + ["--end-of-options"]
        if rev is not None:
            args.append(self.runner.rev(rev))
        args += ["--", *self.runner.paths(paths)]
        return self.runner.run(args) or "(no differences)"

    def git_show(self, rev: str = "HEAD", path: str | None = None, stat: bool = False) -> str:
        """Show a commit (message and diff), or a file's content at a revision.

        Args:
            rev: A commit, tag or branch (default HEAD).
            path: If given, show this file as it was at rev instead of the commit.
            stat: Show only the files changed, not the full diff.
        """
        target = self.runner.rev(rev)
        if path is not None:
            [rel] = self.runner.paths([path])
            return self.runner.run(["show", "--no-textconv", "--end-of-options", f"{target}:{rel}"])
        args = ["show", *_DIFF_SAFETY, "--no-show-signature", "--date=iso", "--format=medium"]
        args += ["--stat"] * stat + ["--end-of-options", target]
        return self.runner.run(args)

    def git_blame(
        self,
        path: str,
        start_line: int | None = None,
        end_line: int | None = None,
        rev: str | None = None,
    ) -> str:
        """Show who last changed each line of a file, and in which commit.

        Args:
            path: The file, relative to the repository.
            start_line: First line to show (1-based; default: the first).
            end_line: Last line to show (default: the last).
            rev: Blame the file as of this revision (default: the working tree).
        """
        args = ["blame", "--no-textconv", "--date=short"]
        if start_line is not None or end_line is not None:
            start, end = start_line or 1, end_line
            if start < 1 or (end is not None and end < start):
                raise ModelRetry("Line numbers start at 1 and end_line must be >= start_line.")
            args.append(f"-L{start},{end or ''}")
        # blame has no --end-of-options: the revision is validated, the path follows "--".
        [rel] = self.runner.paths([path])
        if rev is not None:
            args.append(self.runner.rev(rev))
        # The working-tree version is read here, never through a link, and given to git.
        contents = rel if rev is None else None
        return self.runner.run([*args, "--", rel], contents=contents)

    def git_shortlog(
        self,
        since: str | None = None,
        until: str | None = None,
        rev: str = "HEAD",
        path: str | None = None,
    ) -> str:
        """Count commits per author (most first), with their emails.

        Args:
            since: Only commits after this date, e.g. "2024-01-01" or "1 month ago".
            until: Only commits before this date.
            rev: Revision or range to count (default HEAD).
            path: Only commits touching this file or directory.
        """
        args = ["shortlog", "--summary", "--numbered", "--email"]
        for flag, value in (("since", since), ("until", until)):
            if value is not None:
                args.append(f"--{flag}={_value(flag, value)}")
        args += ["--end-of-options", self.runner.rev(rev), "--", *self.runner.paths([path])]
        return self.runner.run(args) or "(no commits match)"

    def git_grep(
        self,
        pattern: str,
        path: str | None = None,
        rev: str | None = None,
        ignore_case: bool = False,
        max_matches: int = 200,
    ) -> str:
        """Search the repository's tracked files for a regular expression; prints
        "file:line:text" per match. Untracked, ignored and binary files are not searched.

        Args:
            pattern: Extended regular expression (POSIX ERE), e.g. "TODO|FIXME".
            path: Only search this file or directory.
            rev: Search this commit, branch or tag instead of the working tree.
            ignore_case: Match letters regardless of case.
            max_matches: Stop after this many matching lines (at most 1000).
        """
        if not pattern or any(c in pattern for c in "\0\n\r"):
            raise ModelRetry("Give a one-line, non-empty pattern such as 'TODO|FIXME'.")
        args = ["grep", "-n", "-I", "-E", "--no-color", "--full-name"]
        args += ["-i"] if ignore_case else []
        args += ["-e", pattern]
        # git grep takes no --end-of-options: rev() refuses anything that starts with '-'.
        args += [self.runner.rev(rev)] if rev is not None else []
        args += ["--", *self.runner.paths([path])]
        lines = self.runner.run(args, no_match=1, worktree=rev is None).splitlines()
        if rev is not None:
            lines = [line.removeprefix(f"{rev}:") for line in lines]
        if not lines:
            return f"No matches for {pattern!r} in the tracked files."
        limit = min(max(max_matches, 1), 1000)
        more = len(lines) - limit
        shown = lines[:limit] + ([f"[{more} more matches not shown]"] if more > 0 else [])
        return "\n".join(shown)


class _GitRunner:
    """Runs hardened git commands in one repository and validates what the model passes."""

    def __init__(self, repo: str | Path, *, timeout: float, max_output_chars: int):
        executable = shutil.which("git")
        if executable is None:
            raise UsageError("git is not installed (not found on PATH): install git 2.32+.")
        self.executable = executable
        self.timeout = timeout
        self.max_output_chars = max_output_chars
        requested = Path(os.path.abspath(repo))
        if not requested.is_dir():
            raise UsageError(f"The git repository {str(repo)!r} is not a directory.")
        if str(requested.resolve()) != str(requested):
            # Code with access to a workspace can swap a folder for a link to elsewhere.
            raise UsageError(
                f"The git repository path {str(repo)!r} passes through a symbolic link; "
                f"give its real path, {str(requested.resolve())!r}."
            )
        self._check_version()
        self.root = find_top(requested)
        self.view = RepoView(self.root, self._parse_config)
        try:
            self.run(["rev-parse", "--git-dir"])
        except ModelRetry as exc:
            raise UsageError(
                f"{str(repo)!r} is not a usable git repository: {exc.message}"
            ) from None

    def rev(self, rev: str) -> str:
        if not rev or rev[0] == "-" or any(c.isspace() or ord(c) < 32 for c in rev):
            raise ModelRetry(
                f"Invalid revision {rev!r}: give a commit, branch, tag or range such as "
                "'HEAD~2' or 'main..feature', without spaces and not starting with '-'."
            )
        return rev

    def paths(self, paths: Sequence[str | None]) -> list[str]:
        """Repository-relative forms of ``paths`` (None entries are skipped)."""
        out = []
        for path in paths:
            if path is None:
                continue
            if not path or path[0] == "-" or "\0" in path or "\n" in path:
                raise ModelRetry(
                    f"Invalid path {path!r}: give a file or directory in the repository."
                )
            full = os.path.normpath(os.path.join(self.root, path))
            if os.path.commonpath([full, self.root]) != str(self.root):
                raise ModelRetry(
                    f"Path {path!r} is outside the repository {str(self.root)!r}: "
                    "give a path relative to the repository."
                )
            out.append(Path(full).relative_to(self.root).as_posix())
        return out

    def run(
        self,
        args: list[str],
        *,
        no_match: int | None = None,
        worktree: bool = False,
        contents: str | None = None,
    ) -> str:
        """Run ``git <args>`` on a private view of the repository (see ``_gitview``); a
        failure goes back to the model as git's own message.

        ``no_match`` is an exit code that means "nothing found" (``git grep``: 1);
        ``worktree`` first checks that no tracked path lies under a symlink (the command
        reads tracked files from the work tree); ``contents`` is a work-tree file to read
        here, without following links, and give git as ``--contents``.
        """
        try:
            with hold(READER, self.root, timeout=self.timeout):
                with tempfile.TemporaryDirectory(prefix="loopwise-git-") as home:
                    env = self._env(home) | self.view.build(home)
                    if worktree:
                        self._check_tracked_dirs(env, home)
                    if contents is not None:
                        data = read_worktree_file(self.root, contents, MAX_CONTENTS)
                        Path(home, "contents").write_bytes(data)
                        args = [args[0], "--contents", str(Path(home, "contents")), *args[1:]]
                    return self._exec(args, env, no_match=no_match)
        except TreeBusy:
            raise ModelRetry(
                "The repository is in use by a sandboxed run; try again once it has finished."
            ) from None

    def _exec(self, args: list[str], env: dict[str, str], *, no_match: int | None = None) -> str:
        result = run_process(
            self._argv(args),
            env=env,
            timeout=self.timeout,
            max_output_chars=self.max_output_chars,
            cwd=self.root if "GIT_DIR" in env else env["HOME"],
        )
        if result.timed_out:
            raise ModelRetry(f"git {args[0]} did not finish in {self.timeout:g} s: narrow it down.")
        if result.exit_code == no_match and not result.stderr.strip():
            return ""
        if result.exit_code != 0:
            message = result.stderr.strip() or f"exit code {result.exit_code}"
            raise ModelRetry(f"git {args[0]} failed: {message}")
        return result.stdout

    def _check_tracked_dirs(self, env: dict[str, str], home: str) -> None:
        """Refuse when a tracked path's directory is a symlink in the work tree: git would
        read the file behind it (``git grep``), which may lie outside the repository."""
        result = run_process(
            self._argv(["ls-files", "-z"]),
            env=env,
            timeout=self.timeout,
            max_output_chars=MAX_LISTING,
            cwd=self.root,
        )
        if result.timed_out or result.truncated or result.exit_code != 0:
            raise ModelRetry("Cannot list the tracked files to check them; give a revision.")
        dirs = {p.rpartition("/")[0] for p in result.stdout.split("\0") if "/" in p}
        checked: set[str] = set()
        for folder in sorted(dirs):
            parts = folder.split("/")
            for i in range(len(parts)):
                part = "/".join(parts[: i + 1])
                if part in checked:
                    continue
                try:
                    mode = os.lstat(self.root / part).st_mode
                except FileNotFoundError:
                    break  # deleted: git skips what is not there
                if not stat.S_ISDIR(mode):
                    raise ModelRetry(
                        f"The working tree has {part!r} as a symbolic link or file where the "
                        "repository tracks a directory; search a revision (rev='HEAD') instead."
                    )
                checked.add(part)

    def _parse_config(self, path: Path) -> str:
        """``git config --list`` of one file, without includes, outside any repository."""
        home = str(path.parent)
        env = self._env(home) | {"GIT_CEILING_DIRECTORIES": home}
        args = ["config", "--file", str(path), "--no-includes", "--null", "--list"]
        return self._exec(args, env)

    def _check_version(self) -> None:
        with tempfile.TemporaryDirectory(prefix="loopwise-git-") as home:
            env = self._env(home) | {"GIT_CEILING_DIRECTORIES": home}
            out = self._exec(["--version"], env)
        found = re.search(r"(\d+)\.(\d+)", out)
        if found is None or (int(found[1]), int(found[2])) < _MIN_VERSION:
            raise UsageError(
                f"git 2.32 or later is needed for the git toolkit; found {out.strip()!r}."
            )

    def _argv(self, args: list[str]) -> list[str]:
        argv = [self.executable, "--no-pager"]
        for key, value in _HARDENING.items():
            argv += ["-c", f"{key}={value}"]
        return [*argv, *args]

    def _env(self, home: str) -> dict[str, str]:
        return minimal_env(
            {
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": "/dev/null",
                "GIT_ATTR_NOSYSTEM": "1",
                "GIT_TERMINAL_PROMPT": "0",
                "GIT_OPTIONAL_LOCKS": "0",
                "GIT_LITERAL_PATHSPECS": "1",
                "GIT_NO_REPLACE_OBJECTS": "1",
                "GIT_NO_LAZY_FETCH": "1",
                "XDG_CONFIG_HOME": home,
            },
            home=home,
        )


def _value(name: str, value: str) -> str:
    if "\0" in value or "\n" in value:
        raise ModelRetry(f"Invalid {name} {value!r}: it must be one line of text.")
    return value
