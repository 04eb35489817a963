"""Read-only git for the model: history, status, diffs, blame, without a shell or options.

Every tool takes typed parameters; none accepts free-form git options. Revisions and paths
that start with ``-`` are refused (option injection such as ``--output=/etc/x``), paths must
stay inside the repository, and revisions go after ``--end-of-options`` and paths after
``--``. The repository itself is treated as hostile: git runs with no system or global
config, hooks, fsmonitor, pager, external diff, textconv, filters and network disabled, so a
planted ``.git/config`` cannot run a program. Git reads a private copy of the index, so even
``git diff`` (which refreshes the index it reads) leaves the repository untouched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import ModelRetry, UsageError
from ..tools import Tool, tool
from ._process import minimal_env, run_process

__all__ = ["git"]

MAX_LOG_COUNT = 200
_MIN_VERSION = (2, 31)
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
}
# Drivers a hostile config can name in .gitattributes: each command is blanked per call.
_DRIVER_KEY = re.compile(r"^(filter\..+\.(clean|smudge|process)|diff\..+\.(command|textconv))$")


def git(repo: str | Path, *, max_output_chars: int = 20_000, timeout: float = 30.0) -> list[Tool]:
    """Read-only git tools on ``repo``: log, status, diff, show, blame, shortlog and grep.

    ``timeout`` (seconds) bounds each git command; ``max_output_chars`` caps what it returns.
    Raises ``UsageError`` if git (2.31 or later) is missing or ``repo`` is not a repository.
    """
    tools = _GitTools(_GitRunner(repo, timeout=timeout, max_output_chars=max_output_chars))
    make = tool(max_output_chars=max_output_chars + 500, timeout=timeout + 10.0)
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
        if rev is not None:
            args.append(self.runner.rev(rev))
        return self.runner.run([*args, "--", *self.runner.paths([path])])

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
        lines = self.runner.run(args, no_match=1).splitlines()
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
            raise UsageError("git is not installed (not found on PATH): install git 2.31+.")
        self.executable = executable
        self.timeout = timeout
        self.max_output_chars = max_output_chars
        requested = Path(repo).resolve()
        if not requested.is_dir():
            raise UsageError(f"The git repository {str(repo)!r} is not a directory.")
        self.root = requested
        self.index: Path | None = None
        self._ceiling: dict[str, str] = {}
        self._check_version()
        top = self._run_checked(["rev-parse", "--show-toplevel"], what=str(repo)).strip()
        self.root = Path(top).resolve()
        index = self._run_checked(["rev-parse", "--git-path", "index"], what=str(repo)).strip()
        self.index = self.root / index
        # From now on git must not walk up to a parent repository if this one goes away.
        self._ceiling = {"GIT_CEILING_DIRECTORIES": str(self.root.parent)}

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

    def run(self, args: list[str], *, no_match: int | None = None) -> str:
        """Run ``git <args>``; a failure goes back to the model as git's own message.

        ``no_match`` is an exit code that means "nothing found" (``git grep``: 1)."""
        with tempfile.TemporaryDirectory(prefix="loopwise-git-home-") as home:
            env = self._env(home)
            env.update(self._driver_blanks(env))
            if self.index is not None:
                env["GIT_INDEX_FILE"] = self._index_copy(home)
            result = run_process(
                self._argv(args),
                env=env,
                timeout=self.timeout,
                max_output_chars=self.max_output_chars,
                cwd=self.root,
            )
        if result.timed_out:
            raise ModelRetry(f"git {args[0]} did not finish in {self.timeout:g} s: narrow it down.")
        if result.exit_code == no_match and not result.stderr.strip():
            return ""
        if result.exit_code != 0:
            message = result.stderr.strip() or f"exit code {result.exit_code}"
            raise ModelRetry(f"git {args[0]} failed: {message}")
        return result.stdout

    def _index_copy(self, home: str) -> str:
        """A private copy of the index: ``git diff`` refreshes the index it reads, even with
        ``GIT_OPTIONAL_LOCKS=0``, and the repository must not change under a read-only tool."""
        assert self.index is not None
        copy = os.path.join(home, "index")
        with contextlib.suppress(FileNotFoundError):  # a repository without commits
            shutil.copyfile(self.index, copy)
        return copy

    def _run_checked(self, args: list[str], *, what: str) -> str:
        try:
            return self.run(args)
        except ModelRetry as exc:
            raise UsageError(f"{what!r} is not a usable git repository: {exc.message}") from None

    def _check_version(self) -> None:
        out = self._run_checked(["--version"], what=str(self.root))
        found = re.search(r"(\d+)\.(\d+)", out)
        if found is None or (int(found[1]), int(found[2])) < _MIN_VERSION:
            raise UsageError(
                f"git 2.31 or later is needed for the git toolkit; found {out.strip()!r}."
            )

    def _argv(self, args: list[str]) -> list[str]:
        argv = [self.executable, "--no-pager"]
        for key, value in {**_HARDENING, "safe.directory": str(self.root)}.items():
            argv += ["-c", f"{key}={value}"]
        return [*argv, "-C", str(self.root), *args]

    def _env(self, home: str) -> dict[str, str]:
        return (
            minimal_env(
                {
                    "GIT_CONFIG_NOSYSTEM": "1",
                    "GIT_CONFIG_GLOBAL": "/dev/null",
                    "GIT_ATTR_NOSYSTEM": "1",
                    "GIT_TERMINAL_PROMPT": "0",
                    "GIT_OPTIONAL_LOCKS": "0",
                    "GIT_LITERAL_PATHSPECS": "1",
                    "XDG_CONFIG_HOME": home,
                },
                home=home,
            )
            | self._ceiling
        )

    def _driver_blanks(self, env: dict[str, str]) -> dict[str, str]:
        """Config (as GIT_CONFIG_* variables) blanking every filter and diff driver command."""
        result = run_process(
            self._argv(["config", "--null", "--name-only", "--get-regexp", _DRIVER_KEY.pattern]),
            env=env,
            timeout=self.timeout,
            max_output_chars=1_000_000,
            cwd=self.root,
        )
        if result.timed_out or result.truncated or result.exit_code not in (0, 1):
            # Fail closed: a driver left unblanked could run a program.
            raise ModelRetry(f"Cannot read the repository's configuration safely: {result.stderr}")
        blanks = sorted({k for k in result.stdout.split("\0") if _DRIVER_KEY.match(k)})
        blanks += sorted({k.rsplit(".", 1)[0] + ".required" for k in blanks if k[0] == "f"})
        out = {"GIT_CONFIG_COUNT": str(len(blanks))}
        for i, key in enumerate(blanks):
            value = "false" if key.endswith(".required") else ""
            out |= {f"GIT_CONFIG_KEY_{i}": key, f"GIT_CONFIG_VALUE_{i}": value}
        return out


def _value(name: str, value: str) -> str:
    if "\0" in value or "\n" in value:
        raise ModelRetry(f"Invalid {name} {value!r}: it must be one line of text.")
    return value
