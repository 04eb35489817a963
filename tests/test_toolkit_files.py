"""The files toolkit: paging, binary refusal, approval of overwrites and deletes, search."""

from __future__ import annotations

import asyncio
import importlib
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from loopwise import (
    Agent,
    Approve,
    ModelRetry,
    Reject,
    Tool,
    ToolContext,
    ToolResultPart,
    UsageError,
)
from loopwise.models.testing import ScriptedModel, call
from loopwise.toolkits.files import files

# The module, even if the package exports the function ``files`` under the same name.
files_module = importlib.import_module("loopwise.toolkits.files")


def by_name(tools: list[Tool]) -> dict[str, Tool]:
    return {t.name: t for t in tools}


def run(tools: list[Tool], name: str, *, approved: bool = False, **args: Any) -> Any:
    """Call a tool's function as the loop would: validated arguments, an injected context."""
    t = by_name(tools)[name]
    kwargs = t.validate(args)
    if t.context_param:
        kwargs[t.context_param] = ToolContext("run", "call", name, 1, None, approved=approved)
    return t.function(**kwargs)


def results(model: ScriptedModel, request: int = -1) -> list[ToolResultPart]:
    parts = model.requests[request].messages[-1].parts  # type: ignore[union-attr]
    return [p for p in parts if isinstance(p, ToolResultPart)]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "README.md").write_text("# Demo\nTODO: write docs\n")
    (root / "src" / "app.py").write_text("def main():\n    return 1  # TODO\n")
    (root / "src" / "pkg" / "util.py").write_text("def helper():\n    pass\n")
    (root / "data.bin").write_bytes(b"\x89PNG\x00\x01\x02TODO")
    return root


# --- reading -----------------------------------------------------------------------------


def test_paging_with_a_truncation_marker(ws: Path) -> None:
    text = "".join(f"line {i} é\n" for i in range(5000))  # multi-byte characters
    (ws / "big.txt").write_text(text)
    tools = files(ws, max_read_chars=1000)
    page = run(tools, "read_file", path="big.txt")
    body, marker = page.rsplit("\n", 1)
    assert body + "\n" == text[:1000] or body == text[:1000].rstrip("\n")
    assert page.startswith(text[:1000])
    more = len(text) - 1000
    assert marker == (
        f"[truncated: {more} more characters; call read_file with offset=1000 to continue]"
    )
    second = run(tools, "read_file", path="big.txt", offset=1000, limit=300)
    assert second.startswith(text[1000:1300]) and "offset=1300" in second
    assert run(tools, "read_file", path="big.txt", offset=len(text) - 20) == text[-20:]
    # The limit is capped by the toolkit's page size.
    assert run(tools, "read_file", path="big.txt", limit=10**6).startswith(text[:1000] + "\n[")
    with pytest.raises(ModelRetry, match="past the end"):
        run(tools, "read_file", path="big.txt", offset=len(text))
    with pytest.raises(ModelRetry, match="offset must be 0 or more"):
        run(tools, "read_file", path="big.txt", offset=-1)


def test_read_is_bounded_in_memory(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (ws / "huge.txt").write_bytes(b"abcdefghij\n" * 2_000_000)  # 22 MB
    tools = files(ws, max_read_chars=100)
    tracemalloc.start()
    page = run(tools, "read_file", path="huge.txt")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2_000_000
    assert page.endswith(
        "[truncated: 21999900 more characters; call read_file with offset=100 to continue]"
    )
    # Past a cap the rest is not decoded to count it: the marker gives an estimate.
    monkeypatch.setattr(files_module, "_COUNT_CAP_BYTES", 1000)
    assert "[truncated: about " in run(tools, "read_file", path="huge.txt")


def test_bad_utf8_is_replaced_and_binary_refused(ws: Path) -> None:
    (ws / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    tools = files(ws)
    assert run(tools, "read_file", path="latin1.txt") == "caf\ufffd\n"
    with pytest.raises(ModelRetry, match=r"'data\.bin' looks like a binary file"):
        run(tools, "read_file", path="data.bin")
    (ws / "empty.txt").write_text("")
    assert "is empty" in run(tools, "read_file", path="empty.txt")


def test_clear_errors(ws: Path) -> None:
    tools = files(ws)
    with pytest.raises(ModelRetry, match=r"'nope\.txt' does not exist in the workspace"):
        run(tools, "read_file", path="nope.txt")
    with pytest.raises(ModelRetry, match="'src' is a directory; use list_dir"):
        run(tools, "read_file", path="src")
    with pytest.raises(ModelRetry, match="outside the workspace"):
        run(tools, "read_file", path="../secret.txt")
    for approved in (False, True):  # a directory is refused, never sent for approval
        with pytest.raises(ModelRetry, match="'src' is a directory"):
            run(tools, "write_file", path="src", content="x", approved=approved)
    os.mkfifo(ws / "pipe")
    with pytest.raises(ModelRetry, match="not a regular file"):
        run(tools, "read_file", path="pipe")  # refused without blocking on the FIFO
    with pytest.raises(UsageError, match="not a directory"):
        files(ws / "README.md")


def test_links_inside_the_workspace_work(ws: Path) -> None:
    os.symlink("src/app.py", ws / "app_link.py")
    tools = files(ws, approve_delete=False)
    assert run(tools, "read_file", path="app_link.py").startswith("def main")
    assert run(tools, "read_file", path=str(ws / "src" / "app.py")).startswith("def main")
    # Deleting a link removes the link, not its target.
    assert run(tools, "delete_file", path="app_link.py") == "Deleted app_link.py."
    assert (ws / "src" / "app.py").exists() and not os.path.lexists(ws / "app_link.py")


def test_hard_links_refused_unless_allowed(ws: Path, tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("outside\n")
    os.link(tmp_path / "outside.txt", ws / "hard.txt")
    with pytest.raises(ModelRetry, match="hard link"):
        run(files(ws), "read_file", path="hard.txt")
    assert run(files(ws, allow_hardlinks=True), "read_file", path="hard.txt") == "outside\n"


# --- writing -----------------------------------------------------------------------------


def test_write_creates_parents_append_and_replace(ws: Path) -> None:
    tools = files(ws)
    assert run(tools, "write_file", path="a/b/c.txt", content="one\n") == (
        "Created a/b/c.txt (4 bytes)."
    )
    with pytest.raises(ModelRetry, match="adding to it needs approval"):
        run(tools, "append_file", path="a/b/c.txt", content="two\n")
    assert run(tools, "append_file", path="a/b/c.txt", content="two\n", approved=True) == (
        "Appended 4 bytes to a/b/c.txt (now 8 bytes)."
    )
    assert (ws / "a" / "b" / "c.txt").read_text() == "one\ntwo\n"
    assert run(tools, "append_file", path="new/log.txt", content="x").startswith("Created")
    (ws / "a" / "b" / "c.txt").chmod(0o600)
    assert run(tools, "write_file", path="a/b/c.txt", content="3", approved=True) == (
        "Replaced a/b/c.txt (1 bytes)."
    )
    assert (ws / "a" / "b" / "c.txt").read_text() == "3"
    assert (ws / "a" / "b" / "c.txt").stat().st_mode & 0o777 == 0o600
    assert sorted(os.listdir(ws / "a" / "b")) == ["c.txt"]  # no temporary file left
    with pytest.raises(ModelRetry, match="over the limit of 10"):
        run(files(ws, max_write_bytes=10), "write_file", path="big.txt", content="x" * 11)


def test_unapproved_write_never_replaces(ws: Path) -> None:
    """The race: absent at the approval check, present at the write: refused, not replaced."""
    tools = files(ws)
    with pytest.raises(ModelRetry, match="already exists and replacing it needs approval"):
        run(tools, "write_file", path="README.md", content="gone", approved=False)
    assert (ws / "README.md").read_text().startswith("# Demo")


def test_overwrite_rule_checks_the_resolved_target(ws: Path) -> None:
    os.symlink("README.md", ws / "readme_link")
    write = by_name(files(ws))["write_file"]
    assert write.needs_approval({"path": "README.md"}) is True
    assert write.needs_approval({"path": "./src/../readme_link"}) is True
    assert write.needs_approval({"path": "new.txt"}) is False
    assert write.needs_approval({"path": "src"}) is False  # refused by the tool anyway
    assert write.needs_approval({"path": "../outside.txt"}) is False
    assert by_name(files(ws, approve_overwrite=False))["write_file"].requires_approval is False


def test_overwrite_pauses_then_approve(ws: Path) -> None:
    model = ScriptedModel(
        [
            [
                call("write_file", path="new.txt", content="n"),
                call("write_file", path="README.md", content="new"),
            ],
            "Done.",
        ]
    )
    agent = Agent(model, tools=files(ws))
    paused = agent.run_sync("write both")
    assert paused.status == "input_required" and paused.stop_reason == "approval_required"
    [pending] = paused.pending_approvals
    assert (pending.tool_name, pending.args["path"]) == ("write_file", "README.md")
    assert (ws / "new.txt").read_text() == "n"  # creating needed no approval
    assert (ws / "README.md").read_text().startswith("# Demo")
    done = asyncio.run(agent.resume(paused, {pending.call_id: Approve()}))
    assert done.status == "completed" and (ws / "README.md").read_text() == "new"
    assert [r.content for r in results(model)] == [
        "Created new.txt (1 bytes).",
        "Replaced README.md (3 bytes).",
    ]


def test_overwrite_rejected_leaves_the_file(ws: Path) -> None:
    model = ScriptedModel([call("write_file", path="README.md", content="new"), "Kept."])
    agent = Agent(model, tools=files(ws))
    paused = agent.run_sync("overwrite")
    done = asyncio.run(agent.resume(paused, {paused.pending_approvals[0].call_id: Reject("no")}))
    assert done.output == "Kept." and (ws / "README.md").read_text().startswith("# Demo")
    assert "rejected by the user: no" in results(model)[0].content


def test_overwrite_without_approval_when_configured(ws: Path) -> None:
    model = ScriptedModel([call("write_file", path="README.md", content="new"), "Done."])
    result = Agent(model, tools=files(ws, approve_overwrite=False)).run_sync("go")
    assert result.status == "completed" and (ws / "README.md").read_text() == "new"


def test_delete_needs_approval(ws: Path) -> None:
    model = ScriptedModel([call("delete_file", path="src/app.py"), "Deleted."])
    agent = Agent(model, tools=files(ws))
    paused = agent.run_sync("delete it")
    assert paused.status == "input_required" and (ws / "src" / "app.py").exists()
    done = asyncio.run(agent.resume(paused, {paused.pending_approvals[0].call_id: Approve()}))
    assert done.status == "completed" and not (ws / "src" / "app.py").exists()
    # Called directly without an approval, the tool refuses too.
    with pytest.raises(ModelRetry, match="needs a human approval"):
        run(files(ws), "delete_file", path="README.md")
    tools = files(ws, approve_delete=False)
    with pytest.raises(ModelRetry, match="not empty"):
        run(tools, "delete_file", path="src")
    (ws / "empty").mkdir()
    assert run(tools, "delete_file", path="empty") == "Deleted the empty directory empty."


def test_read_only(ws: Path) -> None:
    names = [t.name for t in files(ws, read_only=True)]
    assert names == ["read_file", "list_dir", "find_files", "grep"]
    assert [t.name for t in files(ws)] == [
        "read_file", "write_file", "append_file", "delete_file", "list_dir", "find_files", "grep"
    ]  # fmt: skip


# --- listing and searching -----------------------------------------------------------------


def test_list_dir(ws: Path) -> None:
    os.symlink("/etc", ws / "etc_link")
    tools = files(ws)
    assert run(tools, "list_dir") == "\n".join(
        [
            "./ (4 entries)",
            "README.md  (file, 24 bytes)",
            "data.bin  (file, 11 bytes)",
            "etc_link  (link)",
            "src/  (dir)",
        ]
    )
    assert run(tools, "list_dir", path="src") == (
        "src/ (2 entries)\napp.py  (file, 33 bytes)\npkg/  (dir)"
    )
    for i in range(510):
        (ws / "src" / "pkg" / f"f{i:03}.txt").touch()
    listing = run(tools, "list_dir", path="src/pkg").splitlines()
    assert len(listing) == 502 and listing[-1].startswith("[11 more entries not shown")


def test_find_files(ws: Path) -> None:
    os.symlink(ws / "src", ws / "src_link")  # listed, never descended into
    tools = files(ws)
    assert run(tools, "find_files", pattern="**/*.py") == "src/app.py\nsrc/pkg/util.py"
    assert run(tools, "find_files", pattern="*.py", path="src") == "src/app.py"
    assert run(tools, "find_files", pattern="src*") == "src/\nsrc_link"
    assert run(tools, "find_files", pattern="**/[au]*.py") == "src/app.py\nsrc/pkg/util.py"
    assert "No paths match" in run(tools, "find_files", pattern="*.rs")
    with pytest.raises(ModelRetry, match="relative to the search directory"):
        run(tools, "find_files", pattern="../*")


def test_searches_skip_dependency_and_vcs_directories_and_say_so(ws: Path) -> None:
    for junk in (".venv/lib/site", "node_modules/pkg", ".git/hooks", "src/__pycache__"):
        (ws / junk).mkdir(parents=True)
        (ws / junk / "vendored.py").write_text("# TODO: not ours\n")
    tools = files(ws)
    found = run(tools, "grep", pattern="TODO")
    assert "not ours" not in found and "src/app.py:2:" in found
    assert found.endswith(
        "[not searched: 4 dependency, cache or version-control directories (.git, "
        ".venv, node_modules, src/__pycache__); name one in path to search it]"
    )
    assert "vendored" not in run(tools, "find_files", pattern="**/*.py")
    # Named in the path or the pattern, they are searched.
    assert run(tools, "grep", pattern="TODO", path=".venv").startswith(
        ".venv/lib/site/vendored.py:1:"
    )
    named = run(tools, "find_files", pattern="node_modules/**/*.py")
    assert named.startswith("node_modules/pkg/vendored.py\n[not searched: 3 ")
    everything = files(ws, skip_dirs=())
    assert run(everything, "grep", pattern="not ours").count("vendored.py") == 4


def test_grep(ws: Path) -> None:
    tools = files(ws)
    assert run(tools, "grep", pattern="TODO") == (
        "README.md:2: TODO: write docs\nsrc/app.py:2:     return 1  # TODO\n"
        "[skipped files: 1 binary]"
    )
    assert run(tools, "grep", pattern="def \\w+", glob="*.py") == (
        "src/app.py:1: def main():\nsrc/pkg/util.py:1: def helper():"
    )
    assert run(tools, "grep", pattern="todo", path="README.md", ignore_case=True) == (
        "README.md:2: TODO: write docs"
    )
    assert run(tools, "grep", pattern="def", max_matches=1).splitlines() == [
        "src/app.py:1: def main():",
        "[stopped after 1 matches; narrow the search]",
        "[skipped files: 1 binary]",
    ]
    assert "No matches for 'nothing'" in run(tools, "grep", pattern="nothing", path="src")
    with pytest.raises(ModelRetry, match="is invalid"):
        run(tools, "grep", pattern="(unclosed")
    assert run(tools, "grep", pattern="(T+)+$").startswith("No matches")  # linear time (RE2)
    with pytest.raises(ModelRetry, match="uses a backreference"):
        run(tools, "grep", pattern="(a)\\1")
    with pytest.raises(ModelRetry, match="binary"):
        run(tools, "grep", pattern="TODO", path="data.bin")


def test_grep_skips_huge_files_and_bounds_long_lines(ws: Path) -> None:
    (ws / "huge.log").write_bytes(b"x" * 5_000_001)
    (ws / "long.txt").write_text("a" * 3000 + "NEEDLE\n")
    tools = files(ws)
    out = run(tools, "grep", pattern="NEEDLE|TODO")
    assert "huge.log" not in out and "long.txt" not in out  # past the searched prefix
    assert "1 too large" in out


# --- an agent end to end ---------------------------------------------------------------------


def test_model_corrects_bad_arguments(ws: Path) -> None:
    model = ScriptedModel(
        [
            call("read_file", file="README.md"),
            call("read_file", path="README.md", offset="ten"),
            call("read_file", path="README.md", offset=2, limit=4),
            "The title is Demo.",
        ]
    )
    result = Agent(model, tools=files(ws, read_only=True)).run_sync("What is the title?")
    assert result.status == "completed" and result.output == "The title is Demo."
    [wrong_field] = results(model, 1)
    assert wrong_field.is_error
    assert "- field 'file': unknown field" in wrong_field.content
    assert "- field 'path': Field required" in wrong_field.content
    [wrong_type] = results(model, 2)
    assert "- field 'offset': Input should be a valid integer" in wrong_type.content
    [page] = results(model, 3)
    assert not page.is_error and page.content.startswith("Demo\n[truncated: 18 more characters")
    tool_defs = {d.name: d for d in model.requests[0].tools}
    assert set(tool_defs["read_file"].parameters["properties"]) == {"path", "offset", "limit"}
