"""What git may read of a hostile repository: a private git directory built for each call.

Anything in the workspace can be rewritten by the model or by sandboxed code, ``.git``
included, yet git runs on the host as the host user. So git never reads the repository's
own git directory as such. Each call gets a fresh one (``GIT_DIR``) holding:

- ``config``: only settings on an allow-list (file modes, line endings, object format,
  upstream branches...), copied from the repository's config read without includes;
  ``core.worktree``, ``include``/``includeIf``, hooks, fsmonitor, pagers, drivers,
  ``mailmap.file``, ``core.excludesFile`` and everything else are left out;
- copies of ``HEAD``, ``packed-refs``, ``shallow``, ``info/exclude``, ``info/attributes``
  (opened without following links); the index is copied by the caller;
- a link to ``.git/refs`` (and ``.git/reftable``), which must hold no symlinks;
- no ``commondir``, ``gitdir``, grafts, logs or hooks.

Objects come from ``.git/objects`` (``GIT_OBJECT_DIRECTORY``), which must hold no
symlinks and no ``info/alternates``; the work tree is pinned (``GIT_WORK_TREE``). ``.git``
must be a directory inside the repository, not a file (``gitdir:``) or a link. These checks
hold while the call runs because sandboxed runs on the tree wait for it (``sandbox.guard``).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from ..errors import ModelRetry, UsageError
from ..sandbox.workspace import scan

__all__ = ["RepoView", "find_top", "read_worktree_file", "sanitised_config"]

_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_DIR = _NOFOLLOW | os.O_DIRECTORY
MAX_CONFIG_BYTES = 1 << 20
MAX_COPY_BYTES = 256 << 20  # packed-refs, index
MAX_GITDIR_ENTRIES = 500_000
MAX_GITDIR_DEPTH = 32
_COPIED = ("HEAD", "packed-refs", "shallow", "info/exclude", "info/attributes")
_LINKED = ("refs", "reftable")

# Settings a read-only view may keep: none names a file or a program.
_ALLOWED = re.compile(
    r"core\.(repositoryformatversion|filemode|symlinks|ignorecase|precomposeunicode"
    r"|autocrlf|eol|safecrlf|checkstat|trustctime|abbrev|bigfilethreshold)"
    r"|extensions\.(objectformat|refstorage|compatobjectformat)"
    r"|i18n\.(commitencoding|logoutputencoding)"
    r"|diff\.(renames|renamelimit|algorithm)"
    r"|status\.showuntrackedfiles"
    r"|branch\.[^\n\0]+\.(remote|merge)"
    r"|remote\.[^\n\0]+\.fetch",
    re.IGNORECASE,
)


class Refused(ModelRetry):
    """The repository's layout lets git read outside it: the call is refused."""


def find_top(start: Path) -> Path:
    """The nearest directory at or above ``start`` with a ``.git`` directory (not a link
    or a ``gitdir:`` file). Raises ``UsageError`` otherwise."""
    for folder in (start, *start.parents):
        try:
            info = os.lstat(folder / ".git")
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise UsageError(f"Cannot inspect {str(folder / '.git')!r}: {exc.strerror}.") from None
        if stat.S_ISDIR(info.st_mode):
            return folder
        raise UsageError(
            f"{str(folder / '.git')!r} is a {'link' if stat.S_ISLNK(info.st_mode) else 'file'}"
            " pointing elsewhere (a linked worktree, a submodule or a symlink); the git tools "
            "need a repository whose .git directory lies inside it: give the main checkout."
        )
    raise UsageError(f"{str(start)!r} is not a usable git repository: no .git directory.")


def sanitised_config(listing: str) -> str:
    """A config file keeping the allowed entries of ``git config --null --list`` output."""
    sections: dict[tuple[str, str | None], list[tuple[str, str]]] = {}
    for item in listing.split("\0"):
        key, _, value = item.partition("\n")
        if not key or not _ALLOWED.fullmatch(key):
            continue
        section, rest = key.split(".", 1)
        middle, _, name = rest.rpartition(".")
        sections.setdefault((section.lower(), middle or None), []).append((name.lower(), value))
    sections.setdefault(("core", None), []).append(("bare", "false"))
    lines = []
    for (section, sub), entries in sections.items():
        lines.append(f"[{section}]" if sub is None else f'[{section} "{_quote(sub)}"]')
        lines += [f'\t{name} = "{_quote(value)}"' for name, value in entries]
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    table = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\b": "\\b"}
    return "".join(table.get(c, c) for c in text)


class RepoView:
    """Builds the private git directory for one call (see the module docstring)."""

    def __init__(self, root: Path, parse_config: Callable[[Path], str]) -> None:
        self.root = root
        self.parse_config = parse_config
        self._config: tuple[bytes, str] | None = None  # the last config read, sanitised

    def build(self, home: str) -> dict[str, str]:
        """Check the repository, fill ``home/gitdir``; returns the variables that pin git."""
        if os.path.realpath(self.root) != str(self.root):
            raise Refused(f"The repository {str(self.root)!r} was moved or replaced by a link.")
        view = Path(home, "gitdir")
        (view / "info").mkdir(parents=True)
        top = _open_dir(None, str(self.root), "the repository")
        try:
            git = _open_dir(top, ".git", ".git")
            try:
                self._fill(git, view, home)
            finally:
                os.close(git)
        finally:
            os.close(top)
        return {
            "GIT_DIR": str(view),
            "GIT_WORK_TREE": str(self.root),
            "GIT_OBJECT_DIRECTORY": str(self.root / ".git" / "objects"),
            "GIT_INDEX_FILE": str(Path(home, "index")),
        }

    def _fill(self, git: int, view: Path, home: str) -> None:
        raw = _read_at(git, "config", MAX_CONFIG_BYTES, missing=b"") or b""
        if self._config is None or self._config[0] != raw:
            Path(home, "repo-config").write_bytes(raw)
            listing = self.parse_config(Path(home, "repo-config"))
            self._config = (raw, sanitised_config(listing))
        (view / "config").write_text(self._config[1])
        for name in _COPIED:
            data = _read_at(git, name, MAX_COPY_BYTES, missing=None)
            if data is not None:
                (view / name).write_bytes(data)
        # A private index: `git diff` refreshes the index it reads, even with
        # GIT_OPTIONAL_LOCKS=0, and the repository must not change under a read-only tool.
        Path(home, "index").write_bytes(_read_at(git, "index", MAX_COPY_BYTES, missing=b"") or b"")
        if not Path(home, "index").stat().st_size:
            Path(home, "index").unlink()  # a repository without commits has none
        _check_objects(git, self.root)
        for name in _LINKED:
            if _no_links_below(git, self.root, name, required=name == "refs"):
                (view / name).symlink_to(self.root / ".git" / name)


def _open_dir(parent: int | None, name: str, what: str) -> int:
    try:
        return os.open(name, _DIR, dir_fd=parent)
    except FileNotFoundError:
        raise Refused(f"{what} is missing from the repository.") from None
    except OSError:
        raise Refused(f"{what} in the repository is a link or not a directory: refused.") from None


def _read_at(git: int, rel: str, limit: int, *, missing: bytes | None) -> bytes | None:
    """Read ``rel`` below the git directory without following links anywhere on the way."""
    *parents, name = rel.split("/")
    fds = [git]
    try:
        for part in parents:
            try:
                fds.append(os.open(part, _DIR, dir_fd=fds[-1]))
            except FileNotFoundError:
                return missing
        try:
            fd = os.open(name, _NOFOLLOW | os.O_NONBLOCK, dir_fd=fds[-1])
        except FileNotFoundError:
            return missing
        except OSError:
            raise Refused(f".git/{rel} is a link or unreadable: refused.") from None
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
                raise Refused(f".git/{rel} is not a regular file of at most {limit} bytes.")
            return f.read(limit + 1)[:limit]
    finally:
        for fd in fds[1:]:
            os.close(fd)


def _check_objects(git: int, root: Path) -> None:
    _no_links_below(git, root, "objects", required=True)
    alternates = _read_at(git, "objects/info/alternates", 1 << 16, missing=None)
    if alternates is not None:
        raise Refused(
            "The repository borrows objects from another one (objects/info/alternates): "
            "the git tools refuse it; run `git repack -a -d` and remove the file."
        )


def _no_links_below(git: int, root: Path, name: str, *, required: bool) -> bool:
    """True when ``.git/name`` is a directory with no symlink (or special file) below it."""
    try:
        info = os.stat(name, dir_fd=git, follow_symlinks=False)
    except FileNotFoundError:
        if required:
            raise Refused(f".git/{name} is missing from the repository.") from None
        return False
    if not stat.S_ISDIR(info.st_mode):
        raise Refused(f".git/{name} is a link or not a directory: refused.")
    found = scan(
        root / ".git" / name,  # the same directory as ``git``: sandboxed runs are held off
        max_entries=MAX_GITDIR_ENTRIES,
        max_depth=MAX_GITDIR_DEPTH,
        record=0,
    )
    if found.specials:
        raise Refused(
            f".git/{name}/{found.specials[0]} is a link or a special file: refused (it could "
            "lead git outside the repository)."
        )
    if not found.complete:
        raise Refused(f".git/{name} is too large or too deep to check: refused.")
    return True


def read_worktree_file(root: Path, rel: str, limit: int) -> bytes:
    """The working-tree content git would blame: a file's bytes, or a link's target; never
    through a link on the way (raises ``Refused``) and at most ``limit`` bytes."""
    *parents, name = rel.split("/")
    fds = [os.open(root, _DIR)]
    try:
        for i, part in enumerate(parents):
            try:
                fds.append(os.open(part, _DIR, dir_fd=fds[-1]))
            except OSError:
                where = "/".join(parents[: i + 1])
                raise Refused(
                    f"{rel!r} is not in the working tree as a plain path ({where!r} is a "
                    "link or missing); give rev='HEAD' to use the committed version."
                ) from None
        try:
            info = os.stat(name, dir_fd=fds[-1], follow_symlinks=False)
        except FileNotFoundError:
            raise Refused(f"{rel!r} is not in the working tree; give rev='HEAD'.") from None
        if stat.S_ISLNK(info.st_mode):
            return os.fsencode(os.readlink(name, dir_fd=fds[-1]))
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            raise Refused(f"{rel!r} is not a regular file of at most {limit} bytes.")
        fd = os.open(name, _NOFOLLOW | os.O_NONBLOCK, dir_fd=fds[-1])
        with os.fdopen(fd, "rb") as f:
            return f.read(limit + 1)[:limit]
    finally:
        for fd in fds:
            os.close(fd)
