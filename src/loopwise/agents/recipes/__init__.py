"""Ready recipes for the seed's tasks; each a small module built only on the public API.

``dependency_audit``, ``repo_health``, ``incident_report`` and ``research_write`` each
write a Markdown report and return a :class:`RecipeResult` (``status, summary,
artifacts, next_steps``). Import a module (``from loopwise.agents.recipes import
repo_health``) or run ``loopwise recipe NAME``.
"""

from .base import RecipeResult, ReportNotWritten, write_report

__all__ = ["RecipeResult", "ReportNotWritten", "write_report"]
