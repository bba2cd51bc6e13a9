"""The CLI's conversation log: `chat` records each exchange; `chat -c` continues; `logs` lists them.

One SQLite file, `logs.db`, in the data folder (`zeph_providers._paths.user_data_dir()`;
`$ZEPH_PROVIDERS_DATA_DIR` overrides it). Two tables:

- `conversations`: id, provider, model, created/updated (UTC ISO 8601);
- `exchanges`: one row per prompt and reply, with the messages the turn added (JSON, the
  `Message` model's own shape) so `-c` can rebuild the history, plus token counts.

Decisions:
- Nothing secret is stored: no config, no keys, no headers; every text written goes through
  `zeph_providers.errors.redact` first (a key pasted into a prompt is stored as `[REDACTED]`, and
  a continued conversation sends that placeholder back, never the key).
- Attachments are stored as they were sent (base64 in the message JSON), so a continued
  conversation still shows the model the image; `logs` prints only their kind and size.
- `ZEPH_PROVIDERS_NO_LOG=1` or `chat --no-log` records nothing.
- Standard library only (sqlite3); a broken or locked store warns on stderr and never fails a chat.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zeph_providers.types import Message

__all__ = ["Conversation", "Exchange", "Store", "logging_disabled"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS exchanges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    created TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    response TEXT NOT NULL,
    messages TEXT NOT NULL,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS exchanges_by_conversation ON exchanges(conversation_id, id);
"""


def logging_disabled() -> bool:
    return os.environ.get("ZEPH_PROVIDERS_NO_LOG", "").strip().lower() in {"1", "true", "yes", "on"}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Exchange:
    id: int
    conversation_id: str
    created: str
    provider: str
    model: str
    prompt: str
    response: str
    input_tokens: int
    output_tokens: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Conversation:
    id: str
    provider: str
    model: str
    created: str
    updated: str
    turns: int


def _clean(message: Message) -> dict[str, Any]:
    """The message as JSON data, every text scrubbed of registered secrets."""
    from zeph_providers.errors import redact

    data: dict[str, Any] = message.model_dump(mode="json")
    for part in data.get("parts", ()):
        for key in ("text", "content"):
            if isinstance(part.get(key), str):
                part[key] = redact(part[key])
    return data


class Store:
    """The log at `path` (default: `logs.db` in the data folder); opened per operation."""

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            from zeph_providers._paths import user_data_dir

            path = user_data_dir() / "logs.db"
        self.path = path

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=10)) as db:
            db.executescript(_SCHEMA)
            with db:  # one transaction
                yield db

    # ----- writing ------------------------------------------------------------------------

    def new_conversation(self, provider: str, model: str) -> str:
        conversation_id = uuid.uuid4().hex[:12]
        now = _now()
        with self._connect() as db:
            db.execute(
                "INSERT INTO conversations (id, provider, model, created, updated) VALUES (?, ?, ?, ?, ?)",
                (conversation_id, provider, model, now, now),
            )
        return conversation_id

    def record(
        self,
        conversation_id: str,
        *,
        provider: str,
        model: str,
        prompt: str,
        response: str,
        messages: Sequence[Message],
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None:
        """Append one exchange: `messages` are what the turn added (system, user, assistant)."""
        from zeph_providers.errors import redact

        now = _now()
        payload = json.dumps([_clean(m) for m in messages])
        with self._connect() as db:
            db.execute(
                "INSERT INTO exchanges (conversation_id, created, provider, model, prompt, response, messages,"
                " input_tokens, output_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation_id,
                    now,
                    provider,
                    model,
                    redact(prompt),
                    redact(response),
                    payload,
                    input_tokens,
                    output_tokens,
                ),
            )
            db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))

    # ----- reading ------------------------------------------------------------------------

    def last_conversation(self) -> Conversation | None:
        found = self.conversations(limit=1)
        return found[0] if found else None

    def conversation(self, conversation_id: str) -> Conversation | None:
        found = self._conversations("WHERE c.id = ?", [conversation_id], 1)
        return found[0] if found else None

    def conversations(self, limit: int | None = 20) -> list[Conversation]:
        """Conversations with at least one exchange, the most recently used first."""
        return self._conversations("", [], limit)

    def _conversations(self, where: str, params: list[Any], limit: int | None) -> list[Conversation]:
        if not self.path.is_file():
            return []
        query = (
            "SELECT c.id, c.provider, c.model, c.created, c.updated, COUNT(e.id) FROM conversations c"
            f" JOIN exchanges e ON e.conversation_id = c.id {where} GROUP BY c.id ORDER BY MAX(e.id) DESC"
        )
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        with self._connect() as db:
            rows = db.execute(query, params).fetchall()
        return [Conversation(*row) for row in rows]

    def exchanges(self, *, limit: int = 10, conversation_id: str | None = None) -> list[Exchange]:
        """The most recent exchanges, oldest first."""
        if not self.path.is_file():
            return []
        where, params = ("WHERE conversation_id = ?", [conversation_id]) if conversation_id else ("", [])
        with self._connect() as db:
            rows = db.execute(
                "SELECT id, conversation_id, created, provider, model, prompt, response, input_tokens,"
                f" output_tokens FROM exchanges {where} ORDER BY id DESC LIMIT ?",
                [*params, int(limit)],
            ).fetchall()
        return [Exchange(*row) for row in reversed(rows)]

    def history(self, conversation_id: str) -> list[Message]:
        """Every message of the conversation, in order, as `chat -c` sends them again."""
        from zeph_providers.types import Message

        with self._connect() as db:
            rows = db.execute(
                "SELECT messages FROM exchanges WHERE conversation_id = ? ORDER BY id", (conversation_id,)
            ).fetchall()
        messages: list[Message] = []
        for (payload,) in rows:
            messages.extend(Message.model_validate(item) for item in json.loads(payload))
        return messages
