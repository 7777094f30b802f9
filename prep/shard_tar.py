"""The shard container: WebDataset tar files, written deterministically and read member by
member.

:class:`ShardWriter` writes one shard's members (per gene its JSON, reference span and edits:
:mod:`prep.gene_record` encodes them; the Enformer and MPRA data write their own) with fixed tar
metadata, so the same content gives the same bytes, under a temporary name renamed when the shard
is complete. :func:`iter_tar` and :func:`read_tar_members` read a shard back as raw WebDataset
samples (``{"__key__", "__url__", ext: bytes}``); :mod:`prep.shard_reader` decodes a study's
shards into windows.
"""

from __future__ import annotations

import http.client
import io
import os
import secrets
import socket
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

from hapflow.io import file_mode
from prep.shard_format import ShardFormatError, decode_meta

__all__ = ["ShardWriter", "iter_tar", "read_tar_members", "build_metas"]


class ShardWriter:
    """Writes one shard deterministically and atomically.

    Members get fixed metadata (mtime 0, uid/gid 0, mode 0444), so the same content gives the
    same bytes. Data goes to ``.NAME.{host}.{pid}.{token}.tmp`` beside ``PATH`` (unique across
    hosts and processes, so a job requeued on another node never clobbers a live writer) and is
    renamed to ``PATH`` by :meth:`close`; an interrupted shard never appears under its final name.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname().replace(".", "-").replace("/", "-")
        self._tmp = self.path.with_name(
            f".{self.path.name}.{host}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        self._fh = open(self._tmp, "wb")
        self._tar = tarfile.open(fileobj=self._fh, mode="w", format=tarfile.USTAR_FORMAT)
        self.n_genes = 0

    def add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        info.mode = 0o444
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._tar.addfile(info, io.BytesIO(data))

    def add_gene(self, key: str, members: list[tuple[str, bytes]]) -> None:
        """Add one gene's members (:func:`prep.gene_record.encode_gene`: ``[(ext, bytes)]``, in
        write order) under ``key`` (:func:`prep.shard_format.safe_key` of the gene)."""
        for ext, blob in members:
            self.add(f"{key}.{ext}", blob)
        self.n_genes += 1

    def close(self) -> None:
        self._tar.close()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.chmod(self._tmp, file_mode())  # the user's umask, as every other output
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop the temp file; never raises (called while another error propagates)."""
        for close in (self._tar.close, self._fh.close):
            try:
                close()
            except Exception:  # noqa: BLE001 - a full disk or closed file: the temp goes anyway
                pass
        try:
            self._tmp.unlink(missing_ok=True)
        except OSError:
            pass


def iter_tar(fileobj, url: str, want: Callable[[str, str], bool] | None = None,
             complete: int | None = None) -> Iterator[dict]:
    """Raw WebDataset samples of one tar stream: ``{"__key__", "__url__", ext: bytes}``.

    Members with the same key (name up to the first dot) form one sample. Members for which
    ``want(key, ext)`` is false are skipped without being read into memory (seeked over in
    local files); ``want`` is asked as each member comes, so it may change between samples.
    ``fileobj`` may be a local file or a non-seekable stream (HTTP, pipes). With ``complete``,
    a sample is yielded as soon as it holds that many members, without waiting for the next
    member (a stream reader can stop right after the sample it wants).

    Raises
    ------
    ShardFormatError
        A truncated or corrupt tar; the message names ``url``. (A corrupt header after the first
        member ends a tar silently: callers compare what they got with the manifest.)
    """
    current: dict | None = None
    seekable = getattr(fileobj, "seekable", lambda: False)()
    try:
        with tarfile.open(fileobj=fileobj, mode="r:" if seekable else "r|") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, _, ext = os.path.basename(info.name).partition(".")
                if want is not None and not want(key, ext):
                    continue
                data = tar.extractfile(info).read()
                if len(data) != info.size:
                    raise ShardFormatError(f"shard {url}: member {info.name} is truncated")
                if current is not None and current["__key__"] != key:
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": key, "__url__": url}
                current[ext] = data
                if complete is not None and len(current) == 2 + complete:
                    yield current
                    current = None
    except (tarfile.TarError, EOFError, OSError, http.client.HTTPException) as err:
        raise ShardFormatError(f"shard {url} is corrupt or truncated: {err}") from None
    if current is not None:
        yield current


def read_tar_members(
    path: str | os.PathLike, want: Callable[[str, str], bool] | None = None
) -> Iterator[dict]:
    """Raw WebDataset samples of one local shard (see :func:`iter_tar`)."""
    try:
        fh = open(path, "rb")
    except OSError as err:
        raise ShardFormatError(f"shard {path} cannot be opened: {err}") from None
    with fh:
        yield from iter_tar(fh, str(path), want)


def build_metas(path: str | os.PathLike, build: str,
                error: type[Exception] = ShardFormatError) -> Iterator[tuple[str, dict]]:
    """``(key, meta)`` of every JSON member of a finished shard, each checked to carry ``build``.

    Raises
    ------
    error
        A member written by another build: the ``--part`` jobs of one output ran with different
        settings or inputs (the message says how to fix it).
    """
    for sample in read_tar_members(path, want=lambda _k, ext: ext == "json"):
        meta = decode_meta(sample["json"], f"shard {path}: member {sample['__key__']}.json")
        if meta.get("build") != build:
            raise error(
                f"shard {path} was written by build {meta.get('build')}, this part by build "
                f"{build}: the --part jobs ran with different settings or inputs. Re-run "
                "every part with the same config and inputs (--overwrite rebuilds the "
                "other build's shards).")
        yield sample["__key__"], meta

