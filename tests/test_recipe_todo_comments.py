"""repo-health counts a TODO/FIXME only inside a comment: never in a string, a docstring,
an f-string, a URL or prose. Each case is a file's content and the lines that hold a note.

Decisions: a docstring is a string, not a comment; a marker quoted inside a comment
(``# "TODO"``) is still in a comment; a marker inside a URL is not a note; a file type
without a known comment syntax (``.txt``) has no notes.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from figures import figure
from loopwise.agents.recipes import repo_health
from loopwise.agents.recipes.comments import comment_lines
from loopwise.models.testing import FunctionModel
from recipe_support import commit, make_repo

Q3 = '"""'
CASES: list[tuple[str, str, str, set[int]]] = [
    # (name, file, content, lines with a note)
    ("py comment", "a.py", "x = 1  # TODO: fix\n", {1}),
    ("py string", "a.py", 'x = "TODO: not a note"\n', set()),
    ("py string with hash", "a.py", 'x = "# TODO: not a note"\n', set()),
    ("py f-string", "a.py", 'x = f"{y} TODO {z}"\n', set()),
    ("py f-string with hash", "a.py", 'x = f"# FIXME {y!r}"\n', set()),
    ("py docstring", "a.py", f"def f():\n    {Q3}TODO: a docstring{Q3}\n    return 1\n", set()),
    ("py module docstring", "a.py", f"{Q3}\nFIXME here\n{Q3}\nx = 1  # FIXME there\n", {4}),
    ("py multi-line string", "a.py", f"s = {Q3}\n# TODO inside\n{Q3}  # TODO after\n", {3}),
    ("py quoted in comment", "a.py", 'x = 1  # the "TODO" marker\n', {1}),
    ("py url in comment", "a.py", "# see https://example.com/TODO/list\n", set()),
    ("py url then note", "a.py", "# https://example.com/TODO and TODO: this\n", {1}),
    ("py raw and bytes", "a.py", "a = rb'\\TODO'\nb = r'# FIXME'  # FIXME\n", {2}),
    ("py not a marker", "a.py", "# TODO_LIST MASTODON todo FIXMEPLEASE\n", set()),
    ("py plural", "a.py", "# TODOs: two of them\n", {1}),
    ("py broken file", "a.py", f"x = {Q3}TODO never closed\n# TODO inside\n", set()),
    ("py broken indent", "a.py", "def f(:\n  x = '# TODO'  # TODO: real\n", {2}),
    ("js template", "a.js", "const s = `\n// TODO in template\n`; // TODO: real\n", {3}),
    ("js strings", "a.ts", "f('// TODO', \"/* FIXME */\"); /* TODO\n FIXME */\n", {1, 2}),
    ("js url in string", "a.js", 'fetch("http://h/TODO") // fetch it\n', set()),
    ("c char literal", "a.c", "char q = '\"'; // TODO: after a quote char\n", {1}),
    ("c string", "a.c", 'puts("// TODO"); /* FIXME */\n', {1}),
    ("rust lifetime", "a.rs", "fn f<'a>(x: &'a str) {} // TODO: lifetimes\n", {1}),
    ("rust raw string", "a.rs", 'let s = r#"// TODO "quoted""#; // FIXME\n', {1}),
    ("go raw string", "a.go", "s := `\n// TODO\n`\n// FIXME: real\n", {4}),
    ("shell parameter", "a.sh", 'echo $# ${#TODO} "# FIXME"  # TODO: real\n', {1}),
    ("shell single quotes", "a.sh", "echo '# TODO\n# still a string'\n# FIXME\n", {3}),
    ("yaml url anchor", "a.yaml", "url: http://x/#TODO\nkey: v # FIXME\n", {2}),
    ("sql string", "a.sql", "SELECT '-- TODO' FROM t; -- FIXME\n/* TODO */\n", {1, 2}),
    ("lua block", "a.lua", 'x = "-- TODO"\n--[[ FIXME\n]]\n', {2}),
    ("haskell", "a.hs", 'x = "-- TODO" -- FIXME\n{- TODO -}\n', {1, 2}),
    ("html comment", "a.html", '<a title="TODO">x</a>\n<!-- FIXME -->\n', {2}),
    ("markdown prose", "README.md", "# Plan\nTODO: write docs\n<!-- TODO: hidden -->\n", {3}),
    ("css", "a.css", 'a::after { content: "TODO" } /* FIXME */\n', {1}),
    ("dockerfile", "Dockerfile", 'RUN echo "# TODO"\n# FIXME: pin\n', {2}),
    ("unknown type", "notes.txt", "# TODO: a text file\n", set()),
    ("crlf lines", "a.py", "x = 1\r\n# TODO: windows\r\n", {2}),
    ("form feed line", "a.js", "a();\f// TODO: same line\nb();\n", {1}),
]


@pytest.mark.parametrize(("name", "path", "text", "lines"), CASES, ids=[c[0] for c in CASES])
def test_markers_count_only_in_comments(name: str, path: str, text: str, lines: set[int]) -> None:
    assert comment_lines(path, text) == lines


def test_comment_scanner_figures() -> None:
    held = sum(comment_lines(p, t) == lines for _, p, t, lines in CASES)
    figure(f"TODO scan, comments vs strings: {len(CASES)} tricky inputs, {held} held")
    assert held == len(CASES)


def test_a_large_file_is_scanned_quickly() -> None:
    text = ('s = "TODO"  # TODO: note\n' + "x = 'a' + \"b\"  # plain\n" * 20) * 2000
    started = time.perf_counter()
    found = comment_lines("big.js", text.replace("#", "//"))
    seconds = time.perf_counter() - started
    assert len(found) == 2000
    figure(f"TODO scan: {len(text) // 1000} kB of JavaScript in {seconds:.2f} s")
    assert seconds < 5


def writer(messages: object, tools: object) -> str:
    return "Summary."


def test_repo_health_leaves_out_markers_in_strings(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)  # two real notes: src/app.py:2 and src/db.py:1
    commit(repo, "Bob Jones", "src/strings.py", f'{Q3}TODO in a docstring{Q3}\nP = "TODO|FIXME"\n')
    commit(repo, "Bob Jones", "web/app.js", "const s = `// TODO`;\n// FIXME: real note\n")
    commit(repo, "Bob Jones", "notes.txt", "TODO: prose\n")
    out = tmp_path / "h.md"
    result = asyncio.run(
        repo_health.repo_health(repo, model=FunctionModel(writer), out=out, workspace=tmp_path)
    )
    found = [(t["file"], t["line"]) for t in result.facts["todos"]]
    assert sorted(found) == [("src/app.py", 2), ("src/db.py", 1), ("web/app.js", 2)]
    assert result.facts["todo_matches_left_out"] == 4
    text = out.read_text()
    assert "4 TODO/FIXME matches were left out" in text
    assert "src/strings.py" not in text.split("## TODO / FIXME")[1].split("##")[0]


def test_a_link_or_a_missing_file_is_left_out_not_followed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    outside = tmp_path / "outside.py"
    outside.write_text("# TODO: outside the repository\n")
    (repo / "linked.py").symlink_to(outside)
    rows = [
        {"file": "linked.py", "line": 1, "text": "# TODO"},
        {"file": "../outside.py", "line": 1, "text": "# TODO"},
        {"file": "/etc/passwd", "line": 1, "text": "# TODO"},
        {"file": "gone.py", "line": 1, "text": "# TODO"},
        {"file": "src/db.py", "line": 1, "text": "# FIXME: connection leak"},
    ]
    kept, left_out = repo_health.in_comments(repo, rows)
    assert [r["file"] for r in kept] == ["src/db.py"] and left_out == 4


def test_on_a_clone_of_this_repository_no_string_is_a_note(tmp_path: Path) -> None:
    """The report that found 33 "notes" in this repository's own string literals."""
    here = Path(__file__).resolve().parent.parent
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-local", str(here), str(clone)], check=True)
    started = time.perf_counter()
    result = asyncio.run(
        repo_health.repo_health(
            clone, model=FunctionModel(writer), out=tmp_path / "h.md", workspace=tmp_path
        )
    )
    seconds = time.perf_counter() - started
    files = {t["file"] for t in result.facts["todos"]}
    literals = {
        "src/loopwise/agents/recipes/repo_health.py",
        "src/loopwise/toolkits/git.py",
        "tests/recipe_support.py",
        "tests/test_recipe_repo_health.py",
        "tests/test_recipe_todo_comments.py",
    }
    assert not files & literals, files
    assert result.facts["todo_matches_left_out"] >= 20
    figure(
        f"repo-health on a clone of this repository: {len(result.facts['todos'])} notes, "
        f"{result.facts['todo_matches_left_out']} matches in strings left out, {seconds:.1f} s"
    )


def test_files_over_the_size_limits_are_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path)
    commit(repo, "Bob Jones", "big.py", "# TODO: in a big file\n" + "x = 1\n" * 100)
    rows = [
        {"file": "big.py", "line": 1, "text": "# TODO"},
        {"file": "src/db.py", "line": 1, "text": "# FIXME: connection leak"},
    ]
    monkeypatch.setattr(repo_health, "MAX_SCANNED", 200)
    assert repo_health.in_comments(repo, rows) == ([rows[1]], 1)
    monkeypatch.setattr(repo_health, "MAX_SCANNED", 10_000)
    monkeypatch.setattr(repo_health, "MAX_SCANNED_TOTAL", 630)  # big.py (622 bytes) takes it all
    assert repo_health.in_comments(repo, rows) == ([rows[0]], 1)
