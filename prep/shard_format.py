"""The hapflow shard format: WebDataset tar files of compressed haplotype groups.

Why groups
----------
A tar member costs a 512-byte header plus its data padded to 512 bytes, so one member per
(gene, individual) would cost over 1 kB before any sequence, while a diploid 49,152 bp sample
compresses to tens of bytes. Shards therefore store *groups*: up to ``group_size`` individuals of
one gene and split per WebDataset sample. :func:`unpack_groups` turns each group back into one
sample per (gene, individual), keyed ``{gene}__{individual}``.

Members of a shard, in order
----------------------------
``{gene}__reference.ref.2bit``
    The gene's reference window (codes, shape (W,), uint8; reverse-complemented when the
    haplotypes are), 2 bits per base plus N runs (:func:`encode_reference`). Written once per
    gene per shard, before its groups.
``{gene}__{split}{NNNN}.hap.zst``
    The group's haplotypes, codes of shape (n, 2, W) uint8 (individual, haplotype, position),
    as one zstd frame compressed with the reference window as a raw-content dictionary, so only
    the differences from the reference cost bytes.
``{gene}__{split}{NNNN}.json``
    UTF-8 JSON: gene, chrom, tss (0-based), strand, split, length (L), flank, window (W =
    L + 2 * flank), tss_index (index of the TSS in the stored window), reverse_complemented,
    build (the build fingerprint, :mod:`prep.fingerprint`),
    individuals, populations, targets ``Y``/``Z``/``P`` (lists, float32 precision), ``applied``
    (variants applied per individual and haplotype), group totals of missing genotypes and
    overlapping variants skipped, and the gene's ``n_variants`` / ``n_ref_mismatch``.

Keys hold no dots (WebDataset splits member names at the first dot): the gene id's dots become
underscores in keys (``ENSG00000099889.9`` -> ``ENSG00000099889_9``); the JSON keeps the real id.

Everything here is torch-free; the loader imports it.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import zstandard as zstd

__all__ = [
    "FORMAT_VERSION",
    "REF_EXT",
    "HAP_EXT",
    "META_EXT",
    "safe_key",
    "group_key",
    "reference_key",
    "sample_key",
    "encode_reference",
    "decode_reference",
    "encode_group",
    "decode_group",
    "ShardWriter",
    "ShardFormatError",
    "iter_tar",
    "read_tar_members",
    "unpack_groups",
    "iter_shard",
]

FORMAT_VERSION = 1
REF_EXT = "ref.2bit"
HAP_EXT = "hap.zst"
META_EXT = "json"


class ShardFormatError(ValueError):
    """A shard or one of its members is corrupt or inconsistent; the message names it."""


def safe_key(gene: str) -> str:
    """A gene id usable in a WebDataset key: no dots, no slashes."""
    return gene.replace(".", "_").replace("/", "_")


def group_key(gene: str, split: str, index: int) -> str:
    """Key of a gene's ``index``-th group in ``split``: ``{gene}__{split}{NNNN}``."""
    return f"{safe_key(gene)}__{split}{index:04d}"


def reference_key(gene: str) -> str:
    return f"{safe_key(gene)}__reference"


def sample_key(gene: str, individual: str) -> str:
    return f"{safe_key(gene)}__{safe_key(individual)}"


_REF_MAGIC = b"HFR1"


def encode_reference(window: np.ndarray) -> bytes:
    """Pack a reference window: 2 bits per base plus the runs of N.

    Layout: ``b"HFR1"``, uint32 W, uint32 n_runs, int32 (n_runs, 2) run starts and lengths, then
    ceil(W / 4) bytes of bases (first base in the high bits; N stored as A and restored from
    the runs). About 12.3 kB for 49,152 bases, smaller than zstd at any level, in ~0.1 ms.

    Parameters
    ----------
    window : np.ndarray, shape (W,), uint8 codes 0..4
    """
    window = np.ascontiguousarray(window, dtype=np.uint8)
    width = window.shape[0]
    is_n = window == 4
    edges = np.flatnonzero(np.diff(np.concatenate([[0], is_n.view(np.int8), [0]])))
    runs = np.stack([edges[0::2], edges[1::2] - edges[0::2]], axis=1).astype(np.int32)
    bases = np.where(is_n, 0, window)
    bases = np.concatenate([bases, np.zeros(-width % 4, np.uint8)]).reshape(-1, 4)
    packed = (bases[:, 0] << 6) | (bases[:, 1] << 4) | (bases[:, 2] << 2) | bases[:, 3]
    header = _REF_MAGIC + np.array([width, runs.shape[0]], dtype="<u4").tobytes()
    return header + runs.astype("<i4").tobytes() + packed.astype(np.uint8).tobytes()


def decode_reference(blob: bytes) -> np.ndarray:
    """Inverse of :func:`encode_reference`: shape (W,), uint8.

    Raises
    ------
    ShardFormatError
        If the blob is not a packed reference window or is truncated.
    """
    if blob[:4] != _REF_MAGIC or len(blob) < 12:
        raise ShardFormatError("not a hapflow reference window (bad magic)")
    width, n_runs = (int(x) for x in np.frombuffer(blob, "<u4", 2, 4))
    runs_end = 12 + 8 * n_runs
    if len(blob) != runs_end + (width + 3) // 4:
        raise ShardFormatError(f"reference window of {width} bases is truncated")
    runs = np.frombuffer(blob, "<i4", 2 * n_runs, 12).reshape(-1, 2)
    packed = np.frombuffer(blob, np.uint8, offset=runs_end)
    shifts = np.array([6, 4, 2, 0], dtype=np.uint8)
    out = ((packed[:, None] >> shifts) & 3).astype(np.uint8).reshape(-1)[:width]
    for start, length in runs:
        out[start : start + length] = 4
    return out


def _dictionary(reference: np.ndarray) -> zstd.ZstdCompressionDict:
    return zstd.ZstdCompressionDict(
        np.ascontiguousarray(reference, dtype=np.uint8).tobytes(),
        dict_type=zstd.DICT_TYPE_RAWCONTENT,
    )


def encode_group(haplotypes: np.ndarray, reference: np.ndarray, level: int = 3) -> bytes:
    """Compress a group's haplotypes against their reference window.

    Parameters
    ----------
    haplotypes : np.ndarray, shape (n, 2, W), uint8
    reference : np.ndarray, shape (W,), uint8
    level : int
        zstd level; 3 is fast, higher levels save a little space slowly.

    Returns
    -------
    bytes
        One zstd frame (long-distance matching on, so haplotypes share matches). Deterministic.
    """
    haplotypes = np.ascontiguousarray(haplotypes, dtype=np.uint8)
    if haplotypes.ndim != 3 or haplotypes.shape[1] != 2 or haplotypes.shape[2] != reference.shape[0]:
        raise ValueError(
            f"haplotypes must have shape (n, 2, {reference.shape[0]}), got {haplotypes.shape}"
        )
    size = max(haplotypes.nbytes, 1)
    window_log = min(max(int(np.ceil(np.log2(size))) + 1, 20), 27)
    params = zstd.ZstdCompressionParameters.from_level(
        level, window_log=window_log, enable_ldm=True, threads=0
    )
    cctx = zstd.ZstdCompressor(compression_params=params, dict_data=_dictionary(reference))
    return cctx.compress(haplotypes.tobytes())


def decode_group(blob: bytes, reference: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`encode_group`: shape (n, 2, W), uint8 (read-only view).

    Raises
    ------
    ShardFormatError
        If the frame is corrupt or does not hold ``n * 2 * W`` bytes.
    """
    width = reference.shape[0]
    want = n * 2 * width
    try:
        raw = zstd.ZstdDecompressor(
            dict_data=_dictionary(reference), max_window_size=1 << 27
        ).decompress(blob, max_output_size=want)
    except zstd.ZstdError as err:
        raise ShardFormatError(f"corrupt haplotype group: {err}") from None
    if len(raw) != want:
        raise ShardFormatError(f"haplotype group holds {len(raw)} bytes, expected {want}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(n, 2, width)


class ShardWriter:
    """Writes one shard deterministically and atomically.

    Members get fixed metadata (mtime 0, uid/gid 0, mode 0444), so the same content gives the
    same bytes. Data goes to ``.NAME.{host}.{pid}.{token}.tmp`` beside ``PATH`` (unique across
    hosts and processes, so a job requeued on another node never clobbers a live writer) and is
    renamed to ``PATH`` by :meth:`close`; an interrupted shard never appears under its final name.
    """

    def __init__(self, path: str | os.PathLike):
        import secrets
        import socket

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname().replace(".", "-").replace("/", "-")
        self._tmp = self.path.with_name(
            f".{self.path.name}.{host}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        self._fh = open(self._tmp, "wb")
        self._tar = tarfile.open(fileobj=self._fh, mode="w", format=tarfile.USTAR_FORMAT)
        self.genes_with_reference: set[str] = set()
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

    def add_group(self, key: str, hap_blob: bytes, meta: dict) -> None:
        self.add(f"{key}.{HAP_EXT}", hap_blob)
        self.add(f"{key}.{META_EXT}", json.dumps(meta, separators=(",", ":")).encode())
        self.n_samples += len(meta["individuals"])

    def close(self) -> None:
        self._tar.close()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.chmod(self._tmp, 0o644)
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        try:
            self._tar.close()
            self._fh.close()
        finally:
            if self._tmp.exists():
                self._tmp.unlink()


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


def unpack_groups(samples: Iterable[dict]) -> Iterator[dict]:
    """WebDataset stage: raw shard samples in, one sample per (gene, individual) out.

    Input samples are dicts with ``__key__`` and member bytes (as :func:`read_tar_members` or
    ``webdataset.WebDataset(...)`` without decoding yield them). Reference members are cached
    per gene; each group is decompressed and split.

    Yields
    ------
    dict
        ``__key__`` (``{gene}__{individual}``), ``seq`` (np.ndarray (2, W) uint8), ``gene``,
        ``individual``, ``population``, ``split``, ``Y``, ``Z``, ``P`` (float), ``chrom``,
        ``tss``, ``strand``, ``tss_index``, ``flank``, ``length``, ``applied`` (variants applied
        to haplotype 1 and 2), ``__url__`` (the shard) when known. Targets are float32 values.
    """
    references: dict[str, np.ndarray] = {}
    for sample in samples:
        key = sample["__key__"]
        url = sample.get("__url__", "?")
        if REF_EXT in sample:
            gene_key = key[: -len("__reference")]
            try:
                references[gene_key] = decode_reference(sample[REF_EXT])
            except ShardFormatError as err:
                raise ShardFormatError(f"shard {url}: reference {key}: {err}") from None
            continue
        if HAP_EXT not in sample or META_EXT not in sample:
            raise ShardFormatError(
                f"shard {url}: sample {key} lacks its .{HAP_EXT} or .{META_EXT} member"
            )
        meta = json.loads(sample[META_EXT])
        gkey = safe_key(meta["gene"])
        if gkey not in references:
            raise ShardFormatError(
                f"shard {url}: group {key} comes before the reference window of {meta['gene']}"
            )
        n = len(meta["individuals"])
        try:
            haps = decode_group(sample[HAP_EXT], references[gkey], n)
        except ShardFormatError as err:
            raise ShardFormatError(f"shard {url}: group {key}: {err}") from None
        applied = meta["applied"]
        for i, individual in enumerate(meta["individuals"]):
            yield {
                "__key__": sample_key(meta["gene"], individual),
                "__url__": url,
                "seq": haps[i],
                "gene": meta["gene"],
                "individual": individual,
                "population": meta["populations"][i],
                "split": meta["split"],
                "Y": meta["Y"][i],
                "Z": meta["Z"][i],
                "P": meta["P"][i],
                "chrom": meta["chrom"],
                "tss": meta["tss"],
                "strand": meta["strand"],
                "tss_index": meta["tss_index"],
                "flank": meta["flank"],
                "length": meta["length"],
                "applied": applied[i],
            }


def iter_shard(path: str | os.PathLike) -> Iterator[dict]:
    """Every (gene, individual) sample of a local shard, decoded (see :func:`unpack_groups`)."""
    return unpack_groups(read_tar_members(path))
