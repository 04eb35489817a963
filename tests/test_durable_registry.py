"""Agents registered by import path: module attributes, an ``agents`` dict, ``module:attr``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loopwise import UsageError
from loopwise.durable import load_agents

MODULE = """
from loopwise import Agent
from loopwise.models.testing import ScriptedModel

alpha = Agent(ScriptedModel(["a"]), name="alpha")
beta = Agent(ScriptedModel(["b"]))
one = Agent(ScriptedModel(["c"]), name="solo")
table = {"x": alpha}
not_agents = [1, 2]
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "proj_agents.py").write_text(MODULE)
    (tmp_path / "proj_table.py").write_text(
        MODULE + "\nagents = {'first': alpha, 'second': beta}\n"
    )
    (tmp_path / "proj_empty.py").write_text("x = 1\n")
    (tmp_path / "proj_bad.py").write_text("agents = {'a': 1}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    return tmp_path


def test_module_level_agents_by_attribute_name(project: Path) -> None:
    assert sorted(load_agents("proj_agents")) == ["alpha", "beta", "one"]


def test_an_agents_dict_wins(project: Path) -> None:
    assert sorted(load_agents("proj_table")) == ["first", "second"]


def test_module_attribute_naming_a_dict_or_one_agent(project: Path) -> None:
    assert list(load_agents("proj_agents:table")) == ["x"]
    assert list(load_agents("proj_agents:one")) == ["solo"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("no_such_module_xyz", "Cannot import"),
        ("proj_empty", "No agents found"),
        ("proj_bad", "not 'name: Agent'"),
        ("proj_agents:missing", "no attribute"),
        ("proj_agents:not_agents", "must be an Agent"),
    ],
)
def test_clear_errors(project: Path, spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_agents(spec)
