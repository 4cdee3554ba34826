"""Type stubs for the Rust core `ditto_native`."""
from collections.abc import Callable
from os import PathLike

__version__: str

class DittoError(ValueError): ...

def normalize_text(text: str) -> str: ...

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
    progress: Callable[[int, int, int, int, int], object] | None = None,
) -> tuple[bytes, str]:
    """Scan a Wikidata JSON dump (plain, .gz or .bz2) for instances of `classes`
    ((item id, category) in priority order). Returns the rows as JSON Lines
    (character_id, lang, category, label, description, aliases, sitelinks,
    wiki_title, claims) and the scan's counts as JSON. `progress(pass, bytes_read,
    bytes_total, entities, rows_held)` runs after every chunk. With `checkpoint`,
    state is saved there after every chunk and resumed from on the next call.
    Raises DittoError for input that is not a dump (one line), OSError for I/O."""

def wikidata_decompressed_len(path: str | PathLike[str]) -> int:
    """Decompress the dump and return its length in bytes."""
