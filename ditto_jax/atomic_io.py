"""The one atomic writer: readers see the old file or the whole new one, never a torn write.

Every stage that writes output goes through here (`data_tools` imports this
module; it is import-light: standard library only).

    with atomic_path("out/clean.parquet") as tmp:   # any writer that takes a path
        frame.write_parquet(tmp)
    write_text_atomic("out/manifest.json", text)
    append_line_durable("votes.jsonl", json.dumps(vote))

Durability: the temporary file is fsynced before the rename, and the directory
after it, so a power loss after return keeps the new content (POSIX rename is
atomic; the directory fsync makes the rename itself durable).
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def fsync_path(path: str | Path) -> None:
    """fsync a file, or every file under a directory plus the directory itself."""
    path = Path(path)
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file():
                _fsync_file(child)
        fsync_dir(path)
    else:
        _fsync_file(path)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Make a directory's entries (a new file, a rename) durable."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # some filesystems refuse to open directories; nothing to sync then
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write (a file or a directory); on success it replaces `path`.

    On an exception the temporary is removed and `path` is untouched. A
    directory target is swapped by renaming the old one aside first, so the
    new one appears in one rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _remove(tmp)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: the writer created nothing")
        if tmp.is_file() and path.is_dir():  # name the user's path, not the temporary
            raise IsADirectoryError(errno.EISDIR, "is a directory; expected a file path", str(path))
        fsync_path(tmp)
        if tmp.is_dir() and path.is_dir():
            old = path.with_name(f".{path.name}.{os.getpid()}.old")
            _remove(old)
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        _remove(tmp)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def append_line_durable(path: str | Path, line: str) -> None:
    """Append one line with a single write on an O_APPEND descriptor, then fsync.

    Concurrent appenders never interleave within a line (one write() per
    line), and a crash after return keeps the line.
    """
    if "\n" in line:
        raise ValueError("append_line_durable: the line must not contain a newline")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
