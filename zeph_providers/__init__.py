"""zeph-providers: Ollama, Claude, OpenAI (and compatible servers) and local transformers models
behind one provider protocol, declared in TOML.

Importing this package is cheap: SDKs, torch and transformers load only when a provider of that
kind is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zeph_providers._inputs import messages_from
from zeph_providers.base import BaseProvider
from zeph_providers.config import load_config
from zeph_providers.errors import (
    AllProvidersFailedError,
    AuthenticationError,
    BadResponseError,
    BudgetExceededError,
    ConfigError,
    ConfigProblem,
    ContextLengthError,
    InferenceError,
    InvalidRequestError,
    LlmError,
    ProviderClosedError,
    ProviderNotFoundError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    RefusalError,
    StructuredOutputError,
    UnsupportedCapabilityError,
)
from zeph_providers.hooks import Call, Hook, Hooks, add_hook, remove_hook
from zeph_providers.options import Capabilities, ChatKwargs, ChatOptions, ResponseFormat
from zeph_providers.protocol import LlmProvider
from zeph_providers.redaction import RedactingFilter, install_log_redaction
from zeph_providers.registry import Registry
from zeph_providers.stream import ChatStream, ResponseAssembler
from zeph_providers.types import (
    Attempt,
    CachePointPart,
    CacheSettings,
    ChatResponse,
    ContentChunk,
    DocumentPart,
    EndChunk,
    FinishReason,
    ImagePart,
    LogprobsChunk,
    Message,
    MessageInput,
    RedactedThinkingChunk,
    RedactedThinkingPart,
    Role,
    StreamChunk,
    TextChunk,
    TextPart,
    ThinkingChunk,
    ThinkingPart,
    TokenLogprob,
    ToolCall,
    ToolCallChunk,
    ToolCallDeltaChunk,
    ToolCallPart,
    ToolDefinition,
    ToolResultPart,
    ToolUseChunk,
    ToolUsePart,
    Usage,
    UsageChunk,
)

if TYPE_CHECKING:
    from zeph_providers.backends.mock import MockProvider, MockReply
    from zeph_providers.backends.router import RouterProvider
    from zeph_providers.blocking import BlockingChatStream, BlockingProvider, BlockingRegistry
    from zeph_providers.tools import Tool, ToolLoopError, ToolRun, run_tools

__version__ = "0.1.0"

__all__ = [
    "AllProvidersFailedError",
    "Attempt",
    "AuthenticationError",
    "BadResponseError",
    "BaseProvider",
    "BlockingChatStream",
    "BlockingProvider",
    "BlockingRegistry",
    "BudgetExceededError",
    "CachePointPart",
    "CacheSettings",
    "Call",
    "Capabilities",
    "ChatKwargs",
    "ChatOptions",
    "ChatResponse",
    "ChatStream",
    "ConfigError",
    "ConfigProblem",
    "ContentChunk",
    "ContextLengthError",
    "DocumentPart",
    "EndChunk",
    "FinishReason",
    "Hook",
    "Hooks",
    "ImagePart",
    "InferenceError",
    "InvalidRequestError",
    "LlmError",
    "LlmProvider",
    "LogprobsChunk",
    "Message",
    "MessageInput",
    "MockProvider",
    "MockReply",
    "ModelInfo",
    "ProviderClosedError",
    "ProviderNotFoundError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "RateLimitError",
    "RedactedThinkingChunk",
    "RedactedThinkingPart",
    "RedactingFilter",
    "RefusalError",
    "Registry",
    "ResponseAssembler",
    "ResponseFormat",
    "Role",
    "RouterProvider",
    "StreamChunk",
    "StructuredOutputError",
    "TextChunk",
    "TextPart",
    "ThinkingChunk",
    "ThinkingPart",
    "TokenLogprob",
    "ToolCall",
    "ToolCallChunk",
    "ToolCallDeltaChunk",
    "ToolCallPart",
    "Tool",
    "ToolDefinition",
    "ToolLoopError",
    "ToolResultPart",
    "ToolRun",
    "ToolUseChunk",
    "ToolUsePart",
    "UnsupportedCapabilityError",
    "Usage",
    "UsageChunk",
    "__version__",
    "add_hook",
    "install_log_redaction",
    "load_config",
    "messages_from",
    "remove_hook",
    "run_tools",
]


_LAZY = {
    # The blocking twin pulls in threading helpers, the backends their own modules: only when asked for.
    "BlockingChatStream": "zeph_providers.blocking",
    "BlockingRegistry": "zeph_providers.blocking",
    "BlockingProvider": "zeph_providers.blocking",
    "MockProvider": "zeph_providers.backends.mock",
    "MockReply": "zeph_providers.backends.mock",
    "ModelInfo": "zeph_providers.models_info",
    "RouterProvider": "zeph_providers.backends.router",
    "Tool": "zeph_providers.tools",
    "ToolLoopError": "zeph_providers.tools",
    "ToolRun": "zeph_providers.tools",
    "run_tools": "zeph_providers.tools",
}


def __getattr__(name: str) -> object:
    home = _LAZY.get(name)
    if home is not None:
        import importlib

        return getattr(importlib.import_module(home), name)
    raise AttributeError(f"module 'zeph_providers' has no attribute {name!r}")
