"""zeph-providers: Ollama, Claude, OpenAI (and compatible servers) and local transformers models
behind one provider protocol, declared in TOML.

Importing this package is cheap: SDKs, torch and transformers load only when a provider of that
kind is built.
"""

from __future__ import annotations

from zeph_providers.errors import (
    AllProvidersFailedError,
    AuthenticationError,
    BadResponseError,
    ConfigError,
    ContextLengthError,
    InferenceError,
    InvalidRequestError,
    LlmError,
    ProviderNotFoundError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    UnsupportedCapabilityError,
)
from zeph_providers.protocol import BaseProvider, Capabilities, ChatOptions, ChatStream, LlmProvider
from zeph_providers.registry import Registry
from zeph_providers.types import (
    ChatResponse,
    ContentChunk,
    EndChunk,
    ImagePart,
    Message,
    Role,
    StreamChunk,
    TextPart,
    ThinkingChunk,
    ThinkingPart,
    ToolCall,
    ToolDefinition,
    ToolResultPart,
    ToolUseChunk,
    ToolUsePart,
    Usage,
    UsageChunk,
)

__version__ = "0.1.0"

__all__ = [
    "AllProvidersFailedError",
    "AuthenticationError",
    "BadResponseError",
    "BaseProvider",
    "BlockingProvider",
    "BlockingRegistry",
    "Capabilities",
    "ChatOptions",
    "ChatResponse",
    "ChatStream",
    "ConfigError",
    "ContentChunk",
    "ContextLengthError",
    "EndChunk",
    "ImagePart",
    "InferenceError",
    "InvalidRequestError",
    "LlmError",
    "LlmProvider",
    "Message",
    "ProviderNotFoundError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "RateLimitError",
    "Registry",
    "Role",
    "StreamChunk",
    "TextPart",
    "ThinkingChunk",
    "ThinkingPart",
    "ToolCall",
    "ToolDefinition",
    "ToolResultPart",
    "ToolUseChunk",
    "ToolUsePart",
    "UnsupportedCapabilityError",
    "Usage",
    "UsageChunk",
    "__version__",
]


def __getattr__(name: str) -> object:
    # The blocking twin pulls in threading helpers only when asked for.
    if name in ("BlockingRegistry", "BlockingProvider"):
        from zeph_providers import blocking

        return getattr(blocking, name)
    raise AttributeError(f"module 'zeph_providers' has no attribute {name!r}")
