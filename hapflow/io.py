"""Atomic outputs: every file hapflow writes appears whole under its final name, or not at all.

One rule for every output, whatever writes it: data goes to a temporary file beside the target
(``.NAME.<random>.tmp``), is flushed to disk, gets the mode ``open()`` would give a new file
(0666 less the process umask; :func:`file_mode`) and is renamed over the target. The temporary
file is removed on any failure, Ctrl-C included.

* :func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`atomic_write_json` and
  :func:`atomic_write_parquet` for outputs built in memory;
* :func:`atomic_output` for outputs streamed to disk (FASTA, shards): a context manager that
  yields the temporary path and renames it when the block ends without an error;
* :func:`os_error_message`: one line naming what could not be written and why.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "file_mode",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_parquet",
    "os_error_message",
]


def file_mode(base: int = 0o666) -> int:
    """``base`` less the process umask: the mode ``open()`` gives a new file (0666 & ~umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or Path
        The final file. Its folder is created.
    mode : int, optional
        File mode of the result; default :func:`file_mode` (0666 less the umask).

    The temporary file exists (empty) when the block starts; it is flushed to disk, given its
    mode and renamed after the block, or removed if the block raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode() if mode is None else mode)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, record: Any, indent: int | None = 1,
                      **kwargs: Any) -> None:
    """Write ``record`` as JSON (``indent`` 1, a final newline) to ``path`` atomically.

    ``kwargs`` go to :func:`json.dumps` (``sort_keys``, ``default``).
    """
    atomic_write_text(path, json.dumps(record, indent=indent, **kwargs) + "\n")


def atomic_write_parquet(frame, path: str | os.PathLike) -> None:
    """Write a polars DataFrame to ``path`` atomically, zstd-compressed, without statistics.

    One option set for every table hapflow writes, so the same table gives the same bytes.
    """
    buf = io.BytesIO()
    frame.write_parquet(buf, compression="zstd", statistics=False)
    atomic_write_bytes(path, buf.getvalue())


def os_error_message(err: OSError, target: str | os.PathLike) -> str:
    """One line naming what could not be written, the path that failed and the cause.

    >>> os_error_message(PermissionError(13, "Permission denied", "/x/.a.tmp"), "/x/a")
    'cannot write /x/a (/x/.a.tmp: Permission denied)'
    """
    cause = err.strerror or str(err) or type(err).__name__
    if err.filename is not None and str(err.filename) != str(target):
        return f"cannot write {target} ({err.filename}: {cause})"
    return f"cannot write {target}: {cause}"
