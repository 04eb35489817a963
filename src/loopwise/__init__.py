"""loopwise: autonomous, tool-using LLM agents that actually work.

The public API is what ``__all__`` lists; everything else is private or lives in a
sub-package (``loopwise.models``, ``loopwise.models.testing``, ``loopwise.events``).
"""

from .agent import DEFAULT_SYSTEM_PROMPT, Agent, AgentStream
from .approval import ApprovalRequest, Approve, Reject
from .capabilities import Allow, Ask, Capability, Deny, ModelRequest, Rewrite, ToolCall
from .context import ContextPolicy
from .errors import LoopwiseError, ModelError, ModelRetry, UsageError
from .limits import Budget
from .media import Document, Image
from .messages import (
    AssistantMessage,
    DocumentPart,
    ImagePart,
    Message,
    SystemMessage,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    Usage,
    UserMessage,
    dump_messages,
    load_messages,
)
from .models import ModelSettings
from .models.pricing import ModelPrice
from .repetition import LoopPolicy
from .result import RunResult
from .run import RunContext
from .state import PendingCall, RunState
from .tools import Tool, ToolContext, tool

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "Agent",
    "AgentStream",
    "Allow",
    "ApprovalRequest",
    "Approve",
    "Ask",
    "AssistantMessage",
    "Budget",
    "Capability",
    "ContextPolicy",
    "Deny",
    "Document",
    "DocumentPart",
    "Image",
    "ImagePart",
    "LoopPolicy",
    "LoopwiseError",
    "Message",
    "ModelError",
    "ModelPrice",
    "ModelRequest",
    "ModelRetry",
    "ModelSettings",
    "PendingCall",
    "Reject",
    "Rewrite",
    "RunContext",
    "RunResult",
    "RunState",
    "SystemMessage",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolCallPart",
    "ToolContext",
    "ToolResultPart",
    "Usage",
    "UsageError",
    "UserMessage",
    "__version__",
    "dump_messages",
    "load_messages",
    "tool",
]
