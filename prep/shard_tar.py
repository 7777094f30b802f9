"""The shard container: WebDataset tar files, written deterministically and read member by
member.

:class:`ShardWriter` writes one shard's members (a gene's reference window, then its groups:
:mod:`prep.shard_format` encodes them) with fixed tar metadata, so the same content gives the same
bytes, under a temporary name renamed when the shard is complete. :func:`iter_tar` and
:func:`read_tar_members` read a shard back as raw WebDataset samples (``{"__key__", "__url__",
ext: bytes}``); :func:`iter_shard` decodes a local shard into one sample per (gene, individual).
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import secrets
import socket
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

from hapflow.io import file_mode
from prep.shard_format import (
    FORMAT_VERSION,
    HAP_EXT,
    META_EXT,
    REF_EXT,
    ShardFormatError,
    decode_meta,
    encode_meta,
    reference_key,
    unpack_groups,
)

__all__ = ["ShardWriter", "iter_tar", "read_tar_members", "iter_shard"]


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
        self.genes_with_reference: set[str] = set()
        self._ref_sha: dict[str, str] = {}
        self.n_samples = 0

    def add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        info.mode = 0o444
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._tar.addfile(info, io.BytesIO(data))

    def add_reference(self, gene: str, packed: bytes) -> None:
        """Add a gene's packed reference window (:func:`encode_reference`) once per shard."""
        if gene not in self.genes_with_reference:
            self.add(f"{reference_key(gene)}.{REF_EXT}", packed)
            self.genes_with_reference.add(gene)
            self._ref_sha[gene] = _sha256_hex(packed)

    def add_group(self, key: str, hap_blob: bytes, meta: dict) -> None:
        """Add a group: its haplotype frame and its JSON (:func:`encode_meta`).

        ``meta`` gets ``format``, ``ref_sha256`` (the gene's reference member, which must have
        been added first) and ``hap_sha256`` filled in; the caller's dict is left unchanged.
        """
        gene = meta["gene"]
        if gene not in self._ref_sha:
            raise ValueError(f"group {key}: add the reference window of {gene} first")
        meta = {**meta, "format": FORMAT_VERSION, "ref_sha256": self._ref_sha[gene],
                "hap_sha256": _sha256_hex(hap_blob)}
        self.add(f"{key}.{HAP_EXT}", hap_blob)
        self.add(f"{key}.{META_EXT}", encode_meta(meta))
        self.n_samples += len(meta["individuals"])

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


def iter_tar(fileobj, url: str, want: Callable[[str, str], bool] | None = None) -> Iterator[dict]:
    """Raw WebDataset samples of one tar stream: ``{"__key__", "__url__", ext: bytes}``.

    Members with the same key (name up to the first dot) form one sample. Members for which
    ``want(key, ext)`` is false are skipped without being read into memory (seeked over in
    local files). ``fileobj`` may be a local file or a non-seekable stream (HTTP, pipes).

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


def iter_shard(path: str | os.PathLike) -> Iterator[dict]:
    """Every (gene, individual) sample of a local shard, decoded (see :func:`unpack_groups`)."""
    return unpack_groups(read_tar_members(path))


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
