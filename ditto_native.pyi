"""Type stubs for `ditto_native`, the Rust core of the Ditto toolkit."""
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from typing import Any, Literal, final

import pyarrow as pa

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

@final
class ChatEncoder:
    """Render -> tokenize -> assistant-only loss mask, for one tokenizer and chat
    template. The template's turn layout is probed once, here; raises DittoError
    when the tokenizer does not load or the template cannot be masked."""

    def __init__(
        self,
        tokenizer_json: str,
        chat_template: str,
        bos_token: str | None = None,
        eos_token: str | None = None,
        template_vars: Mapping[str, Any] | None = None,
    ) -> None: ...
    @property
    def system_policy(self) -> Literal["native", "fold_into_first_user"]: ...
    @property
    def anchor(self) -> str:
        """Text before every assistant turn; the mask starts after it."""
    @property
    def end_of_turn(self) -> str:
        """Text that ends an assistant turn; the mask ends with it."""
    def encode(self, sessions: Any) -> Any:
        """Sessions (any Arrow table/batch or Polars frame with session_id, system,
        messages) -> pyarrow.RecordBatch of input_ids list<int32>, loss_mask
        list<uint8> (null when dropped) and drop_reason (null when kept)."""

@final
class PromptEncoder:
    """Inference prompts with the same injection-safe rendering as `ChatEncoder`:
    special-token text inside a message is encoded as plain text, so it cannot
    forge a turn. No turn-layout probe, so any chat template works; a leading
    system message the template drops is folded into the first user message."""

    def __init__(
        self,
        tokenizer_json: str,
        chat_template: str,
        bos_token: str | None = None,
        eos_token: str | None = None,
        template_vars: Mapping[str, Any] | None = None,
    ) -> None: ...
    @property
    def system_policy(self) -> Literal["native", "fold_into_first_user"]: ...
    def encode(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of one conversation (dicts with string role and content)."""

@final
class SftPacker:
    """Encodes sessions chunk by chunk, then packs train and held-out rows."""

    def __init__(
        self,
        encoder: ChatEncoder,
        *,
        seq_len: int,
        overlong: Literal["truncate", "drop"] = "truncate",
        heldout_fraction: float = 0.02,
        pad_id: int = 0,
    ) -> None: ...
    def add(self, sessions: Any) -> int:
        """Encode one chunk (any Arrow table/batch); returns its row count."""
    def finish(self) -> tuple[Any, Any, dict[str, Any]]:
        """(train pyarrow.RecordBatch, heldout pyarrow.RecordBatch, counts): four
        fixed_size_list<seq_len> columns input_ids, loss_mask, segment_ids, positions."""

def is_heldout(session_id: str, fraction: float) -> bool:
    """Held-out iff the first 8 bytes of SHA-256(session_id), big-endian, are
    below fraction * 2**64."""

def system_message(label: str, description: str, lang: str) -> str:
    """The role's SFT system message, as the dialogues contract gives it:
    `You are {label}, {description}` / `你是{label}，{description}` (any `zh*` lang),
    `You are {label}.` / `你是{label}。` when the description is empty.
    Label and description are trimmed first."""

# ---- dedupe / filters (rust/src/dedupe.rs, rust/src/filters.rs) ----
# Array arguments take any Arrow array or chunked array (PyCapsule interface:
# pyarrow, polars Series, ...). Strings may be utf8, large_utf8 or utf8_view.

REASON_CODES: tuple[str, ...]
"""The quarantine reason codes, in their fixed order."""

def exact_duplicates(texts: Any, groups: Any | None = None, *, num_threads: int | None = None) -> pa.UInt32Array:
    """Index of the first text with the same normalised form (within its integer group)."""

def near_duplicates(
    texts: Any,
    groups: Any | None = None,
    *,
    word_ngram: int,
    cjk_char_ngram: int,
    num_perm: int,
    bands: int,
    rows: int,
    threshold: float,
    seed: int,
    max_bucket_window: int,
    num_threads: int | None = None,
) -> tuple[pa.UInt32Array, pa.UInt32Array, pa.FloatArray]:
    """MinHash-LSH clusters verified by exact Jaccard >= threshold:
    (lowest index of each text's cluster, closest verified match or null, its Jaccard)."""

def duplicates(
    texts: Any,
    groups: Any | None = None,
    *,
    exact: bool,
    threshold: float | None = None,
    word_ngram: int,
    cjk_char_ngram: int,
    num_perm: int,
    bands: int,
    rows: int,
    seed: int,
    max_bucket_window: int,
    num_threads: int | None = None,
) -> tuple[pa.UInt32Array | None, tuple[pa.UInt32Array, pa.UInt32Array, pa.FloatArray] | None]:
    """Both dedupe passes over one column, each text normalised once:
    (exact_duplicates' result if `exact`, near_duplicates' result if
    `threshold` is set). The near pass runs on the texts that are not exact
    duplicates, and its indices count those texts only, in order."""

def check_turns(
    *,
    session_index: Any,
    questions: Any,
    answers: Any,
    rejection_labels: Any,
    finish_reasons: Any,
    langs: Any,
    systems: Any,
    simulators: Any,
    config_json: str,
    num_threads: int | None = None,
) -> tuple[pa.StringArray, pa.StringArray]:
    """Per turn (reason code, detail), both null where the turn passes every check."""

# --- wikidata -----------------------------------------------------------------

def wikidata_scan(
    path: str | PathLike[str],
    *,
    languages: list[str],
    classes: list[tuple[str, str]],
    properties: list[str],
    keep_top: int | None,
    chunk_bytes: int,
    checkpoint: str | PathLike[str] | None = None,
    progress: Callable[[int, int, int, int], object] | None = None,
) -> tuple[bytes, str]:
    """Scan a Wikidata JSON dump (plain, .gz or .bz2) for instances of `classes`
    ((item id, category) in priority order). Returns the rows as JSON Lines
    (character_id, lang, category, label, description, aliases, sitelinks,
    wiki_title, claims) and the scan's counts as JSON. `progress(bytes_read,
    bytes_total, entities, rows_held)` runs after every chunk. With `checkpoint`,
    progress is saved there (and in `checkpoint.journal`, `checkpoint.labels`)
    after every chunk and resumed from on the next call.
    Raises DittoError for input that is not a dump (one line), OSError for I/O."""

def wikidata_decompressed_len(path: str | PathLike[str], *, parallel: bool = True) -> int:
    """Decompress the dump and return its length in bytes; `parallel=False`
    decodes bzip2 on one thread (the scan decodes it across blocks)."""
