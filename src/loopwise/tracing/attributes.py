"""The attribute, span and event names loopwise writes, in one place.

OpenTelemetry's GenAI semantic conventions are still "Development" (a breaking change of
the token metrics is pending), so every name the tracing capability uses is here and
nowhere else. The spec has no cost attribute: ours is under ``loopwise.``.
"""

from __future__ import annotations

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"  # includes cached input, as the spec says
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
CACHE_CREATION_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
AGENT_NAME = "gen_ai.agent.name"
CONVERSATION_ID = "gen_ai.conversation.id"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_TYPE = "gen_ai.tool.type"
TOOL_DESCRIPTION = "gen_ai.tool.description"
TOOL_ARGUMENTS = "gen_ai.tool.call.arguments"
TOOL_RESULT = "gen_ai.tool.call.result"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
ERROR_TYPE = "error.type"

COST_USD = "loopwise.cost_usd"
RUN_ID = "loopwise.run_id"
PARENT_RUN_ID = "loopwise.parent_run_id"
STATUS = "loopwise.status"
STOP_REASON = "loopwise.stop_reason"
STEPS = "loopwise.steps"
TOOL_CALLS = "loopwise.tool_calls"

OP_AGENT = "invoke_agent"
OP_CHAT = "chat"
OP_TOOL = "execute_tool"

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

# Provider names as the spec spells them (others pass through as we name them).
PROVIDERS = {
    "anthropic": "anthropic",
    "openai": "openai",
    "ollama": "ollama",
    "vllm": "vllm",
    "llamacpp": "llama_cpp",
    "local": "llama_cpp",
    "openai-compatible": "openai",
}
