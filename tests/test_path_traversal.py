"""Security test 1: a path-traversal corpus through every file tool, and a symlink swap race.

A workspace ``ws`` sits next to an outside tree (``outside``, ``ws-evil``, ``home``) holding
canary text and canary names. Links planted in the workspace point out of it. Every payload
goes through every tool with approval granted, so only the path checks can stop it. An
escape is outside content or names in any output, a change to the outside tree (names,
content, modes, mtimes), or a file created where a naive join would have put it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from figures import figure
from loopwise import ModelRetry, Tool, ToolContext
from loopwise.toolkits import _paths
from loopwise.toolkits._paths import READ_FLAGS, Workspace
from loopwise.toolkits.files import files

CANARY = "CANARY-" + "5f0c2e9a-outside-secret"
HIDDEN_NAMES = ("zz-hidden-name-41b7.txt", "zz-evil-name-9c3d.txt")
GREP_PATTERN = "CANAR[Y]-5f0c|roo[t]:x:0:0"
PWNED = "PWNED by the path traversal test\n"
REPLANT_BEFORE = {"append_file", "delete_file", "list_dir"}
"""Each follows an attempt that may change the workspace (write, append, delete)."""


@dataclass
class Layout:
    root: Path
    ws: Path
    outside: Path

    def plant(self) -> None:
        """(Re)build the workspace with its planted links; the outside tree is untouched."""
        ws, out = self.ws, self.outside
        if ws.exists():
            shutil.rmtree(ws)
        (ws / "sub" / "deeper").mkdir(parents=True)
        (ws / "inside.txt").write_text("inside text\n")
        (ws / "sub" / "note.txt").write_text("a note\n")
        os.symlink(out, ws / "link_dir")
        os.symlink(out / "secret.txt", ws / "link_file")
        os.symlink("../../outside/secret.txt", ws / "sub" / "chain1")
        os.symlink("sub/hop2", ws / "hop1")
        os.symlink("../../outside", ws / "sub" / "hop2")
        os.link(out / "secret.txt", ws / "hardlink.txt")
        os.symlink("/etc/passwd", ws / "passwd")
        os.symlink(out / "created-by-escape.txt", ws / "dangling")
        os.symlink("../ws-evil", ws / "evil_link")
        os.symlink("inside.txt", ws / "ok_link")
        os.symlink("loop_b", ws / "loop_a")
        os.symlink("loop_a", ws / "loop_b")
        os.mkfifo(ws / "fifo")


def build(root: Path) -> Layout:
    outside = root / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret.txt").write_text(f"{CANARY} outside\n")
    (outside / "sub" / "deep.txt").write_text(f"{CANARY} deep\n")
    (outside / HIDDEN_NAMES[0]).write_text(f"{CANARY} hidden\n")
    evil = root / "ws-evil"
    evil.mkdir()
    (evil / "secret.txt").write_text(f"{CANARY} evil\n")
    (evil / HIDDEN_NAMES[1]).write_text(f"{CANARY} evil hidden\n")
    home = root / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / "secret.txt").write_text(f"{CANARY} home\n")
    layout = Layout(root, root / "ws", outside)
    layout.plant()
    return layout


def payloads(lay: Layout) -> list[str]:
    ws, out = str(lay.ws), str(lay.outside)
    corpus: list[str] = []
    for depth in range(1, 9):
        up = "../" * depth
        corpus += [up + "outside/secret.txt", up + "etc/passwd", up]
    corpus += [
        # absolute paths, also spelled through the workspace
        f"{out}/secret.txt", out, f"{out}/sub/deep.txt", "/etc/passwd", "/etc", "/",
        "/etc/shadow", "/proc/self/environ", "/dev/zero", "/root", str(lay.root),
        f"{ws}/../outside/secret.txt", f"{ws}/./../outside/secret.txt",
        f"{ws}/link_dir/secret.txt", f"//{out.lstrip('/')}/secret.txt",
        # prefix tricks: ws vs ws-evil
        f"{ws}-evil/secret.txt", f"{ws}-evil", f"{ws}/../ws-evil/secret.txt",
        "../ws-evil/secret.txt", "../ws-evil", "../ws-evil/", "./../ws-evil/secret.txt",
        "evil_link/secret.txt", "evil_link",
        # home directories
        "~", "~/", "~/secret.txt", "~/../outside/secret.txt", "~/.ssh/authorized_keys",
        "~root", "~root/.bashrc", "~root/pwned.txt", "~nobody/x",
        # encoded forms (literal names here; they must not be decoded into an escape)
        "..%2foutside%2fsecret.txt", "%2e%2e/outside/secret.txt",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..%252f..%252foutside", "..%c0%afoutside",
        "%252e%252e/outside", "..%5coutside%5csecret.txt",
        # dot tricks
        "....//outside/secret.txt", "....//....//etc/passwd", "..././outside/secret.txt",
        ".../outside", "..;/outside/secret.txt", ". ./outside", ".. /outside/secret.txt",
        "..//..//etc/passwd", ".//..//outside/secret.txt", "sub/../../outside/secret.txt",
        "sub/deeper/../../../outside/secret.txt", "sub/./../../outside/secret.txt",
        "./sub/../../ws-evil/secret.txt",
        # NUL bytes
        "inside.txt\x00", "../outside/secret.txt\x00", "\x00", "link_file\x00.txt",
        "inside.txt\x00/../../outside/secret.txt",
        # backslashes
        "..\\outside\\secret.txt", "..\\..\\etc\\passwd", "sub\\..\\..\\outside\\secret.txt",
        "\\etc\\passwd", "\\\\server\\share",
        # unicode look-alikes of dots and slashes
        "\u2025/outside/secret.txt", "\uff0e\uff0e/outside/secret.txt",
        "\u2024\u2024/outside/secret.txt", "..\u2215outside\u2215secret.txt",
        "..\u0338/outside/secret.txt",
        # trailing slashes and dots
        "../outside/", "../outside/secret.txt/", "link_dir/", "link_file/", "/etc/passwd/",
        "../outside/.", "../outside/sub/..",
        # through each planted link
        "link_dir", "link_dir/secret.txt", "link_dir/sub/deep.txt", "link_dir/new.txt",
        "link_dir/sub", "link_dir/../outside/secret.txt", "link_dir/../../outside/secret.txt",
        "link_file", "./link_file", "sub/chain1", "hop1", "hop1/secret.txt", "hop1/new.txt",
        "hardlink.txt", "passwd", "passwd/", "dangling", "dangling/x",
        "sub/../link_dir/secret.txt", "ok_link/../../outside/secret.txt", "loop_a",
        "loop_a/x", "fifo",
        # odd shapes
        "", ".", "..", "../.", "  ../outside", "../outside/secret.txt ",
        "\n../outside/secret.txt", "../" * 40 + "etc/passwd",
        "a/" * 50 + "../" * 51 + "outside/secret.txt", "x" * 300, "../" + "x" * 300,
    ]  # fmt: skip
    return corpus


def snapshot(lay: Layout) -> str:
    """Names, modes, sizes, mtimes and content of everything next to the workspace."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(lay.root, followlinks=False):
        if Path(dirpath) == lay.root:
            dirnames[:] = [d for d in dirnames if d != "ws"]
            filenames = [f for f in filenames if f != "ws"]
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            digest.update(f"{path}|{st.st_mode}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            if stat.S_ISLNK(st.st_mode):
                digest.update(os.readlink(path).encode())
            elif stat.S_ISREG(st.st_mode):
                digest.update(Path(path).read_bytes())
    for path in ("/etc/passwd", "/etc/hostname"):
        if os.path.exists(path):
            st = os.stat(path)
            digest.update(f"{path}|{st.st_mtime_ns}|".encode() + Path(path).read_bytes())
    return digest.hexdigest()


def naive_targets(lay: Layout, payload: str) -> set[str]:
    """Outside places a naive join would write to, that do not exist yet."""
    if "\x00" in payload:
        return set()
    joined = os.path.join(lay.ws, os.path.expanduser(payload))
    found = set()
    for candidate in (os.path.normpath(joined), os.path.realpath(joined)):
        inside = os.path.commonpath([lay.ws, candidate]) == str(lay.ws)
        if not inside and not os.path.lexists(candidate):
            found.add(candidate)
    return found


Attempt = Callable[[str], Any]


def attempts(tools: list[Tool]) -> dict[str, Attempt]:
    """Each file tool with the payload in each path-like argument, approval granted."""
    by_name = {t.name: t for t in tools}

    def runner(name: str, **fixed: Any) -> Callable[[str, str], Any]:
        t = by_name[name]

        def attempt(argument: str, payload: str) -> Any:
            args = t.validate({**fixed, argument: payload})
            if t.context_param:
                args[t.context_param] = ToolContext("run", "call", name, 1, None, approved=True)
            return t.function(**args)

        return attempt

    return {
        "read_file": lambda p: runner("read_file")("path", p),
        "write_file": lambda p: runner("write_file", content=PWNED)("path", p),
        "append_file": lambda p: runner("append_file", content=PWNED)("path", p),
        "delete_file": lambda p: runner("delete_file")("path", p),
        "list_dir": lambda p: runner("list_dir")("path", p),
        "find_files(path)": lambda p: runner("find_files", pattern="**/*")("path", p),
        "find_files(pattern)": lambda p: runner("find_files")("pattern", p),
        "grep(path)": lambda p: runner("grep", pattern=GREP_PATTERN)("path", p),
        "grep(glob)": lambda p: runner("grep", pattern=GREP_PATTERN)("glob", p),
    }


def leaked(text: str) -> bool:
    return CANARY in text or any(name in text for name in HIDDEN_NAMES) or "root:x:0:0" in text


def test_path_traversal_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lay = build(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    corpus = payloads(lay)
    assert len(corpus) >= 100 and len(set(corpus)) == len(corpus)
    tools = files(lay.ws)
    runs = attempts(tools)
    assert {name.split("(")[0] for name in runs} == {t.name for t in tools}
    before = snapshot(lay)
    escapes: list[str] = []
    unclear: list[str] = []
    outcomes = {"ok": 0, "refused": 0}
    for payload in corpus:
        lay.plant()
        naive = naive_targets(lay, payload)
        for label, run in runs.items():
            if label in REPLANT_BEFORE:
                lay.plant()  # a write or delete inside must not hide a planted link later
            try:
                output = str(run(payload))
                outcomes["ok"] += 1
            except ModelRetry as exc:
                output = exc.message
                outcomes["refused"] += 1
            except Exception as exc:  # every refusal should be a clear ModelRetry
                output = f"{type(exc).__name__}: {exc}"
                unclear.append(f"{label} {payload!r}: {output}")
            if leaked(output):
                escapes.append(f"{label} {payload!r} leaked: {output[:200]!r}")
        if snapshot(lay) != before:
            escapes.append(f"{payload!r} changed the outside tree")
            before = snapshot(lay)
        escapes += [f"{payload!r} created {p}" for p in naive if os.path.lexists(p)]
    total = len(corpus) * len(runs)
    figure(
        f"path traversal: {len(corpus)} payloads x {len(runs)} tools = {total} attempts, "
        f"escapes: {len(escapes)} ({len(tools)} file tools; find_files and grep take a "
        f"payload in two arguments; {outcomes['refused']} refused, {outcomes['ok']} ran "
        "inside the workspace)"
    )
    assert escapes == []
    assert unclear == []
    assert not (lay.outside / "created-by-escape.txt").exists()
    assert outcomes["ok"] > 0 and outcomes["refused"] > len(corpus)


def test_the_detector_sees_a_hard_link_when_allowed(tmp_path: Path) -> None:
    """Control: with hard links allowed, the planted one reads outside content."""
    lay = build(tmp_path)
    allowed = attempts(files(lay.ws, allow_hardlinks=True))
    assert leaked(allowed["read_file"]("hardlink.txt"))
    with pytest.raises(ModelRetry, match="hard link"):
        attempts(files(lay.ws))["read_file"]("hardlink.txt")


def swap_for_link(directory: Path, target: Path) -> None:
    """Replace ``directory`` by a symbolic link to ``target`` (the attacker's move)."""
    directory.rename(directory.with_name(directory.name + ".orig"))
    os.symlink(target, directory)


def test_symlink_swapped_in_after_the_check_cannot_escape(tmp_path: Path) -> None:
    lay = build(tmp_path)
    (lay.outside / "note.txt").write_text(f"{CANARY} swapped\n")
    ws = Workspace(lay.ws)
    read_target = ws.resolve("sub/note.txt")
    write_target = ws.resolve("sub/new.txt")
    assert read_target.parts == ("sub", "note.txt")
    swap_for_link(lay.ws / "sub", lay.outside)
    # The check passed; the open walks with O_NOFOLLOW and fails on the swapped link.
    assert os.path.realpath(lay.ws / "sub" / "note.txt") == str(lay.outside / "note.txt")
    with pytest.raises(ModelRetry, match=r"symbolic link|not a directory"):
        ws.open_file(read_target, READ_FLAGS)
    with pytest.raises(ModelRetry, match=r"symbolic link|not a directory"):
        ws.open_file(write_target, os.O_WRONLY | os.O_CREAT, create_parents=True)
    assert not (lay.outside / "new.txt").exists()


def test_swap_between_check_and_open_through_the_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lay = build(tmp_path)
    (lay.outside / "note.txt").write_text(f"{CANARY} swapped\n")
    for name in ("d1", "d2", "d3"):
        (lay.ws / name).mkdir()
        (lay.ws / name / "note.txt").write_text("inside note\n")
    for name in ("v1.txt", "v2.txt", "v3.txt"):
        (lay.ws / name).write_text("victim\n")
    before = snapshot(lay)
    swaps: list[Callable[[], None]] = []
    resolve = Workspace.resolve

    def resolve_then_swap(self: Workspace, path: str, **kw: Any) -> _paths.Target:
        target = resolve(self, path, **kw)
        while swaps:
            swaps.pop()()  # right after the check, before the open
        return target

    def file_to_link(name: str) -> None:
        (lay.ws / name).unlink()
        os.symlink(lay.outside / "secret.txt", lay.ws / name)

    monkeypatch.setattr(Workspace, "resolve", resolve_then_swap)
    runs = attempts(files(lay.ws))
    cases: list[tuple[Callable[[], None], str, str]] = [
        (lambda: swap_for_link(lay.ws / "d1", lay.outside), "read_file", "d1/note.txt"),
        (lambda: swap_for_link(lay.ws / "d2", lay.outside), "write_file", "d2/note.txt"),
        (lambda: swap_for_link(lay.ws / "d3", lay.outside), "append_file", "d3/new.txt"),
        (lambda: file_to_link("v1.txt"), "read_file", "v1.txt"),
        (lambda: file_to_link("v2.txt"), "write_file", "v2.txt"),
        (lambda: file_to_link("v3.txt"), "append_file", "v3.txt"),
    ]
    for swap, label, path in cases:
        swaps.append(swap)
        with pytest.raises(ModelRetry, match=r"symbolic link|not a directory") as caught:
            runs[label](path)
        assert not swaps and not leaked(caught.value.message)
    assert snapshot(lay) == before


CANARY_FILES = ("outside/secret.txt", "outside/sub/deep.txt", "ws-evil/secret.txt")


@pytest.mark.parametrize("kind", ["pdf", "image"])
def test_document_tools_refuse_the_corpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """read_pdf and read_image take the same corpus; the outside files are real PDFs or PNGs.

    The canary files keep their names but hold a PDF whose text is the canary, or a PNG of a
    size found nowhere else (1237x17), so reading one through any escape shows in the output.
    """
    pytest.importorskip("pypdf", reason="the vision extra is not installed")
    import asyncio

    from loopwise.toolkits.documents import documents
    from media_files import png, text_pdf

    lay = build(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    content = text_pdf([f"{CANARY} in a pdf"]) if kind == "pdf" else png(1237, 17)
    for name in (*CANARY_FILES, "home/secret.txt"):
        (tmp_path / name).write_bytes(content)
    (lay.ws / "inside.pdf").write_bytes(text_pdf(["inside text"]))
    (lay.ws / "inside.png").write_bytes(png(20, 10))
    by_name = {t.name: t for t in documents(lay.ws)}
    target = by_name["read_pdf" if kind == "pdf" else "read_image"]
    marker = CANARY if kind == "pdf" else "1237x17"
    corpus = [*payloads(lay), "inside.pdf" if kind == "pdf" else "inside.png"]
    before = snapshot(lay)
    escapes: list[str] = []
    unclear: list[str] = []
    outcomes = {"ok": 0, "refused": 0}
    for payload in corpus:
        try:
            output = str(asyncio.run(target.function(**target.validate({"path": payload}))))
            outcomes["ok"] += 1
        except ModelRetry as exc:
            output = exc.message
            outcomes["refused"] += 1
        except Exception as exc:
            output = f"{type(exc).__name__}: {exc}"
            unclear.append(f"{payload!r}: {output}")
        if marker in output or leaked(output):
            escapes.append(f"{payload!r} leaked: {output[:200]!r}")
    figure(
        f"path traversal, {target.name}: {len(corpus)} payloads, escapes: {len(escapes)} "
        f"({outcomes['refused']} refused, {outcomes['ok']} read inside the workspace)"
    )
    assert snapshot(lay) == before
    assert escapes == []
    assert unclear == []
    assert outcomes["ok"] >= 1  # the control file inside the workspace is read
