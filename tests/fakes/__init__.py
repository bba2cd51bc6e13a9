"""One set of wire fakes for every test suite and the bench loopback server.

- `tests.fakes.openai`: Chat Completions SSE chunks (`chat.completion.chunk`, `data: [DONE]`) and bodies;
- `tests.fakes.anthropic`: Messages API server-sent events (`message_start` ... `message_stop`) and bodies;
- `tests.fakes.ollama`: Ollama `/api/chat` NDJSON lines (deltas and the final `"done": true` line);
- `tests.fakes.embeddings`: deterministic unit-length embeddings;
- `tests.fakes.fault_server`: the scripted-fault HTTP server speaking all three protocols;
- `tests.fakes.ollama_server`: the Ollama-protocol server with scripted replies.

The builders only use the standard library, so `bench/loopback_server.py` can import them too.
"""
