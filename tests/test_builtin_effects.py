"""Every built-in tool declares its effects and trust, and they agree with the policy's
table of built-in names."""

import subprocess
from pathlib import Path

import pytest

from loopwise.policy import BUILTIN_EFFECTS, BUILTIN_TRUSTED
from loopwise.toolkits import files, git, http, python, shell, system
from loopwise.tools import Tool


def builtins(tmp_path: Path) -> list[Tool]:
    (tmp_path / "logs").mkdir()
    found = [*files(tmp_path), *http(), *system(log_dirs=[tmp_path / "logs"])]
    found += [*python(workspace=tmp_path), *shell(workspace=tmp_path)]
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    found += git(repo)
    return found


def test_builtin_tools_declare_what_the_policy_expects(tmp_path: Path) -> None:
    tools = builtins(tmp_path)
    assert len(tools) >= 20
    for t in tools:
        assert t.effects, f"{t.name} declares no effects"
        if t.name in BUILTIN_EFFECTS:
            assert t.effects == BUILTIN_EFFECTS[t.name], t.name
        assert t.trusted == (t.name in BUILTIN_TRUSTED), t.name


@pytest.mark.parametrize("name", ["delete_file"])
def test_irreversible_tools_say_so(tmp_path: Path, name: str) -> None:
    [t] = [t for t in builtins(tmp_path) if t.name == name]
    assert "irreversible" in t.effects
