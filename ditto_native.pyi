"""Type stubs of the Rust core `ditto_native`."""
from typing import Any

import pyarrow as pa

__version__: str

class DittoError(ValueError): ...

def normalize_text(text: str) -> str: ...

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
