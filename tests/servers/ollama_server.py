"""Moved to `tests.fakes.ollama_server`; this path re-exports it so old imports keep working."""

from tests.fakes.ollama_server import *  # noqa: F403
from tests.fakes.ollama_server import (
    DEFAULT_MODELS,
    VERSION,
    BrokenReply,
    ChatReply,
    EmbedReply,
    ErrorReply,
    HangReply,
    OllamaServer,
    RawReply,
    RecordedRequest,
    Reply,
    fake_embedding,
    ollama_server,
)

__all__ = [
    "DEFAULT_MODELS",
    "VERSION",
    "BrokenReply",
    "ChatReply",
    "EmbedReply",
    "ErrorReply",
    "HangReply",
    "OllamaServer",
    "RawReply",
    "RecordedRequest",
    "Reply",
    "fake_embedding",
    "ollama_server",
]
