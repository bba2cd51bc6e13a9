"""The gateway in front of a `claude` provider: the request's `thinking` reaches the upstream Messages
API as sent, and signed thinking streams through (thinking_delta, signature_delta) and goes back
upstream, signature intact, on the next turn. The upstream is a loopback HTTP server answering with
the Messages API's real event stream (tests/fakes/anthropic) and recording every request body."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import anthropic
import pytest

from tests.fakes import anthropic as wire
from tests.gateway.anthropic_support import NEVER_HANGS, running_gateway
from zeph_providers import Registry

SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"


class _Upstream(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).bodies.append(body)
        if body.get("stream"):
            events = [wire.message_start(input_tokens=5)]
            events += wire.thinking_block(0, ["Two plus ", "two."], signature=SIGNATURE)
            events += wire.text_block(1, ["4"])
            events += [wire.message_delta("end_turn", 7), wire.message_stop()]
            payload, kind = b"".join(events), "text/event-stream"
        else:
            message = wire.message("4", input_tokens=5, output_tokens=7)
            message["content"].insert(0, {"type": "thinking", "thinking": "Two plus two.", "signature": SIGNATURE})
            payload, kind = json.dumps(message).encode(), "application/json"
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def gateway(upstream: str) -> Iterator[str]:
    registry = Registry.from_dict(
        {
            "llm": {
                "telemetry": False,
                "providers": [
                    {
                        "name": "claude",
                        "type": "claude",
                        "model": "claude-x",
                        "base_url": upstream,
                        "api_key": "sk-ant-test",
                    }
                ],
            }
        }
    )
    with running_gateway(registry) as url:
        yield url


@pytest.mark.parametrize("stream", [True, False])
def test_thinking_passes_through_to_claude_and_round_trips(gateway: str, stream: bool) -> None:
    thinking = {"type": "enabled", "budget_tokens": 2048}
    ask: dict[str, Any] = {"model": "claude", "max_tokens": 4096, "thinking": thinking}
    first: list[Any] = [{"role": "user", "content": "2+2?"}]
    with anthropic.Anthropic(base_url=gateway, api_key="unused", max_retries=0, timeout=NEVER_HANGS) as client:
        if stream:
            with client.messages.stream(**ask, messages=first) as events:
                kinds = [event.type for event in events]
                reply = events.get_final_message()
            assert "thinking" in kinds and "signature" in kinds
        else:
            reply = client.messages.create(**ask, messages=first)
        assert [b.type for b in reply.content] == ["thinking", "text"]
        block = reply.content[0]
        assert block.type == "thinking" and (block.thinking, block.signature) == ("Two plus two.", SIGNATURE)
        assert _Upstream.bodies[-1]["thinking"] == thinking  # the request's own object, as sent

        history: list[Any] = [*first, {"role": "assistant", "content": [b.model_dump() for b in reply.content]}]
        client.messages.create(**ask, messages=[*history, {"role": "user", "content": "and 3+3?"}])
    sent_back = _Upstream.bodies[-1]["messages"][1]["content"][0]
    assert sent_back == {"type": "thinking", "thinking": "Two plus two.", "signature": SIGNATURE}
