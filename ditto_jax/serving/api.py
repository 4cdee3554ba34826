"""The OpenAI chat-completions surface: request checking and response bodies.

Bad requests become `ApiError`s: an HTTP status and an OpenAI-style error body
naming the field (`param`). The HTTP layer (`serving.app`) and the engine stay
out of here.
"""
from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any, Sequence

from ditto_native import DittoError

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_N = 16
_ROLES = frozenset({"system", "user", "assistant", "developer", "tool"})


class ApiError(Exception):
    """An error that becomes an HTTP status and an OpenAI-style error body."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


# ---- request parsing -------------------------------------------------------------------------


def _number(body: dict, name: str, default: float, *, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, f"'{name}' must be a number", param=name)
    if value < low or value > high or (low_open and value == low):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ApiError(400, f"'{name}' must be in {interval} (got {value})", param=name)
    return float(value)


def _integer(body: dict, name: str, default: int | None, *, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"'{name}' must be an integer", param=name)
    if not low <= value <= high:
        raise ApiError(400, f"'{name}' must be in [{low}, {high}] (got {value})", param=name)
    return value


def _messages(body: dict) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ApiError(400, f"'{where}' must be an object", param=where)
        role = message.get("role")
        if role not in _ROLES:
            raise ApiError(400, f"'{where}.role' must be one of {', '.join(sorted(_ROLES))}", param=f"{where}.role")
        content = message.get("content")
        if isinstance(content, list):  # content parts: only text ones can be used
            texts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ApiError(400, f"'{where}.content[{j}]' must be a text part; this server reads text only", param=f"{where}.content")
                texts.append(part["text"])
            content = "".join(texts)
        elif content is None and role == "assistant":
            content = ""
        if not isinstance(content, str):
            raise ApiError(400, f"'{where}.content' must be a string or a list of text parts", param=f"{where}.content")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


def _response_format(body: dict) -> dict | None:
    """The JSON schema to constrain decoding to, or None for free text."""
    fmt = body.get("response_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise ApiError(400, "'response_format' must be an object", param="response_format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise ApiError(400, "'response_format.json_schema.schema' must be a JSON schema object", param="response_format.json_schema.schema")
        return spec["schema"]
    raise ApiError(400, "'response_format.type' must be text, json_object or json_schema", param="response_format.type")


def check_body(body: Any) -> dict:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def pick_model(body: dict, names: Sequence[str]) -> str:
    """The served model a request names; the first one when it names none."""
    model = body.get("model")
    if model is None:
        return names[0]
    if model not in names:
        have = ", ".join(f"'{n}'" for n in names)
        raise ApiError(404, f"model '{model}' is not served here; this server has {have}", param="model", code="model_not_found")
    return model


def parse_chat_request(body: dict, *, default_max_tokens: int, max_context: int):
    """(GenerationRequest, stream, include_usage) from a chat-completions body; ApiError when it is bad."""
    from llguidance import LLMatcher

    from ditto_jax.generation import GenerationRequest
    from ditto_jax.generation.constraints import grammar_for

    for unsupported in ("tools", "functions", "logprobs", "top_logprobs", "logit_bias"):
        if body.get(unsupported):
            raise ApiError(400, f"'{unsupported}' is not supported by this server", param=unsupported)
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or any(not isinstance(s, str) or not s for s in stop):
        raise ApiError(400, "'stop' must be a non-empty string or a list of them", param="stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object", param="stream_options")
    # Bounded by the context length: the engine allocates cache slots for every token asked for.
    max_tokens = _integer(body, "max_completion_tokens", None, low=1, high=max_context)
    max_tokens = _integer(body, "max_tokens", max_tokens or min(default_max_tokens, max_context), low=1, high=max_context)
    schema = _response_format(body)
    if schema is not None:
        # Reject a schema llguidance cannot compile here, before it reaches a batch.
        try:
            problem = LLMatcher.validate_grammar(grammar_for(json_schema=schema))
        except DittoError as exc:
            problem = str(exc)
        if problem:
            raise ApiError(400, f"response_format: unusable JSON schema: {' '.join(problem.split())[:200]}", param="response_format")
    request = GenerationRequest(
        messages=_messages(body),
        max_new_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, low=0.0, high=2.0),
        top_p=_number(body, "top_p", 1.0, low=0.0, high=1.0, low_open=True),
        top_k=max(0, _integer(body, "top_k", 0, low=-1, high=1 << 20)),  # vLLM's -1 and 0 both mean off
        repetition_penalty=_number(body, "repetition_penalty", 1.0, low=0.0, high=10.0, low_open=True),
        stop=tuple(stop),
        seed=_integer(body, "seed", None, low=-(1 << 63), high=(1 << 64) - 1),
        json_schema=schema,
        n=_integer(body, "n", 1, low=1, high=MAX_N),
        min_new_tokens=_integer(body, "min_tokens", 0, low=0, high=max_tokens),  # vLLM's extra: EOS masked until then
    )
    if request.seed is not None and request.seed < 0:  # OpenAI allows negative seeds; the engine wants [0, 2**64)
        request = dataclasses.replace(request, seed=request.seed % (1 << 64))
    try:
        request.check("request")
    except DittoError as exc:
        raise ApiError(400, str(exc)) from None
    return request, stream, bool(options.get("include_usage"))


# ---- response bodies -----------------------------------------------------------------------------


def usage(completions) -> dict:
    prompt = completions[0].prompt_tokens if completions else 0
    completion = sum(c.completion_tokens for c in completions)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(model: str, completions) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason, "logprobs": None}
            for i, c in enumerate(completions)
        ],
        "usage": usage(completions),
    }


class ChunkWriter:
    """`chat.completion.chunk` bodies of one stream (same id and timestamp throughout)."""

    def __init__(self, model: str, include_usage: bool):
        self.model = model
        self.include_usage = include_usage
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def chunk(self, choices: list, usage_body: dict | None = None) -> dict:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model, "choices": choices}
        if self.include_usage:  # OpenAI: null on every chunk but the last
            body["usage"] = usage_body
        return body

    def role(self, index: int) -> dict:
        return self.chunk([{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])

    def text(self, index: int, text: str) -> dict:
        return self.chunk([{"index": index, "delta": {"content": text}, "finish_reason": None}])

    def finish(self, index: int, reason: str) -> dict:
        return self.chunk([{"index": index, "delta": {}, "finish_reason": reason}])

    def usage(self, completions) -> dict:
        return self.chunk([], usage(completions))
