"""A model's chat template: where its source and special tokens come from.

Rendering itself is `ditto_native.ChatTemplate` (minijinja, Hugging Face
`apply_chat_template` semantics), shared by training, inference and cleaning.
This module only finds the template the way transformers does:

- a Hugging Face folder: `chat_template.jinja` if present, else
  `tokenizer_config.json`'s `chat_template` (a string, or a list of named
  templates of which "default" is used); `bos_token`/`eos_token` from the same
  config (strings or AddedToken dicts with "content");
- a GGUF file: the `tokenizer.chat_template` metadata key, with the BOS/EOS
  token strings looked up from their ids (read by `tokenizer.tokenizer_from_gguf`,
  which parses the metadata once for the vocabulary and the template).

Example:
    >>> t = ChatTemplate.from_folder("shared/tokenizers/qwen3")  # doctest: +SKIP
    >>> t.render([{"role": "user", "content": "Hi"}], add_generation_prompt=True)  # doctest: +SKIP
    '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import ditto_native
from ditto_native import DittoError


class ChatTemplate:
    """A compiled chat template plus the special-token strings it is rendered with."""

    def __init__(self, source: str, *, bos_token: str | None = None, eos_token: str | None = None) -> None:
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._compiled = ditto_native.ChatTemplate(source, bos_token, eos_token)

    @property
    def sha256(self) -> str:
        """Hex digest of the template source (recorded in shard manifests)."""
        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()

    @classmethod
    def from_folder(cls, folder: str | Path) -> ChatTemplate:
        """Load from a Hugging Face model or tokenizer folder."""
        folder = Path(folder)
        config_path = folder / "tokenizer_config.json"
        try:
            config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        except (OSError, ValueError) as e:
            raise DittoError(f"{config_path}: cannot read tokenizer config: {e}") from None
        jinja_path = folder / "chat_template.jinja"
        if jinja_path.is_file():
            source = jinja_path.read_text(encoding="utf-8")
        else:
            source = _config_template(config.get("chat_template"), config_path)
        return cls(source, bos_token=_token_text(config.get("bos_token")), eos_token=_token_text(config.get("eos_token")))

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False, **extra_vars: Any) -> str:
        """Render one conversation; `extra_vars` are template variables such as
        `tools`, `date_string` or `enable_thinking`. Raises DittoError."""
        return self._compiled.render(messages, add_generation_prompt, extra_vars or None)


def _config_template(value: Any, config_path: Path) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        if isinstance(named.get("default"), str):
            return named["default"]
        raise DittoError(f"{config_path}: chat_template lists {sorted(map(str, named))} but no 'default'")
    raise DittoError(f"{config_path}: no chat_template (and no chat_template.jinja beside it)")


def _token_text(value: Any) -> str | None:
    """tokenizer_config stores a special token as a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None
