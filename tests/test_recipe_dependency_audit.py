"""``dependency-audit`` end to end against a local server speaking PyPI's JSON API."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from loopwise.agents.recipes import dependency_audit
from loopwise.messages import Message, ToolDefinition
from loopwise.models.testing import FunctionModel, Turn, call
from recipe_support import first_user_text, last_results, pypi_entry, pypi_server, tool_names

PACKAGES = {
    "requests": pypi_entry("2.32.3", "2.31.0", "2.32.0"),
    "django": pypi_entry("5.1.2", "3.2.0", "4.2.0", "5.0.0"),
    "attrs": pypi_entry("24.2.0"),
    "rich": pypi_entry("13.9.2", "13.0.0"),
}
REQUIREMENTS = """\
# web
requests==2.31.0
Django==3.2.0  # old LTS
attrs==24.2.0
rich>=13
-r other.txt
"""


def driver(messages: list[Message], tools: list[ToolDefinition]) -> Turn:
    if "http_get" in tool_names(tools):
        if last_results(messages):
            return "Django is two major versions behind."
        urls = re.findall(r"^http\S+$", first_user_text(messages), re.M)
        return [call("http_get", url=u) for u in urls]
    return "Django needs a major upgrade.\nNext steps:\n- Upgrade Django to 5.1.2"


def test_dependency_audit_report_has_the_versions(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text(REQUIREMENTS)
    with pypi_server(PACKAGES) as base:
        result = asyncio.run(
            dependency_audit.dependency_audit(
                req,
                model=FunctionModel(driver),
                pypi_url=base,
                allow=["127.0.0.1"],
                out=tmp_path / "audit.md",
                workspace=tmp_path,
            )
        )
    assert result.status == "completed", result
    text = (tmp_path / "audit.md").read_text()
    assert "| requests | 2.31.0 | 2.32.3 | behind |" in text
    assert "| django | 3.2.0 | 5.1.2 | major version behind |" in text
    assert "| attrs | 24.2.0 | 24.2.0 | up to date |" in text
    assert "| rich | - | 13.9.2 | not pinned |" in text
    assert "pip install --upgrade 'django==5.1.2'" in text
    assert "pip install --upgrade 'attrs" not in text
    assert "- django 3.2.0 → 5.1.2" in text
    rows = {r["name"]: r for r in result.facts["packages"]}
    assert rows["django"]["releases_behind"] == 3 and rows["requests"]["major_behind"] is False
    assert result.notes == []


def test_unknown_package_and_refused_address_are_reported(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("requests==2.31.0\nno-such-package==1.0\n")
    lazy = FunctionModel(lambda m, t: "Done.")
    with pypi_server(PACKAGES) as base:
        allowed = asyncio.run(
            dependency_audit.dependency_audit(
                req,
                model=lazy,
                pypi_url=base,
                allow=["127.0.0.1"],
                out=tmp_path / "a.md",
                workspace=tmp_path,
            )
        )
        refused = asyncio.run(  # no allow=: the private address is refused, not fetched
            dependency_audit.dependency_audit(
                req, model=lazy, pypi_url=base, out=tmp_path / "b.md", workspace=tmp_path
            )
        )
    assert allowed.status == refused.status == "completed"
    assert "| no-such-package | 1.0 | ? | not found: HTTP 404" in (tmp_path / "a.md").read_text()
    assert "| requests | 2.31.0 | 2.32.3 | behind |" in (tmp_path / "a.md").read_text()
    assert "| requests | 2.31.0 | ? | not found: ERROR" in (tmp_path / "b.md").read_text()
    assert len(allowed.notes) == 2  # both fetches were made by the recipe
    assert allowed.summary == "Done."
