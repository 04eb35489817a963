"""Built-in toolkits: each function returns a list of :class:`~loopwise.Tool` for an Agent.

``Agent(model, tools=[*files(workspace), *http(), *git(repo), *python(workspace=ws)])``.
Every tool returns bounded, clean text and treats its arguments as hostile: paths stay in
the workspace, fetches stay off private addresses, git stays read-only, and generated code
runs only in the OS sandbox (:mod:`loopwise.sandbox`).
"""

from .browser import browser
from .code import python, shell
from .documents import documents
from .files import files
from .git import git
from .http import http
from .scripts import scripts
from .system import system

__all__ = ["browser", "documents", "files", "git", "http", "python", "scripts", "shell", "system"]
