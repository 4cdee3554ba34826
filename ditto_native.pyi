"""Type stubs for `ditto_native`, the Rust core of the Ditto toolkit."""
from collections.abc import Mapping, Sequence
from typing import Any, final

__version__: str

class DittoError(ValueError):
    """The project's error: a one-line message naming the file, row or field."""

def normalize_text(text: str) -> str:
    """Dedupe key: NFKC, full case folding, punctuation and whitespace folded
    to single spaces (dropped next to CJK characters), trimmed. Idempotent."""

def render_chat_template(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = False,
    bos_token: str | None = None,
    eos_token: str | None = None,
    extra_vars: Mapping[str, Any] | None = None,
) -> str:
    """Compile and render a chat template once (Hugging Face `apply_chat_template`
    semantics). Raises DittoError on a compile or render failure."""

@final
class ChatTemplate:
    """A compiled chat template; compile once, render many conversations."""

    def __init__(self, source: str, bos_token: str | None = None, eos_token: str | None = None) -> None: ...
    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = False,
        extra_vars: Mapping[str, Any] | None = None,
    ) -> str: ...
