"""LLM calls for the data toolkit: one backend interface, a durable call cache.

- `types`: ChatRequest / ChatResult / CallFailed, the Backend protocol.
- `http_backend`: any OpenAI-compatible chat-completions endpoint (several may share the load).
- `jax_backend`: the in-process ditto_jax engine, batching requests.
- `cache`: SQLite (WAL) store of finished calls, keyed by model, prompt, sampling and sample index.
- `runner`: cache lookups, backend calls, stats, progress and the test-only kill hook.
"""
from data_tools.llm.types import Backend, CallFailed, ChatRequest, ChatResult

__all__ = ["Backend", "CallFailed", "ChatRequest", "ChatResult"]
