"""Where shards come from: URL expansion, opening streams, tar reading, the split index.

A ``source`` is one of

* a study's shards folder (``W/shards``, local, or a URL such as ``http://host/W/shards`` or
  ``s3://bucket/W/shards``): shards and ``manifest.parquet`` are found inside it;
* a pattern of shard files: braces (``shard-{000000..000003}.tar``), globs (local or, with
  fsspec, ``s3://``/``gs://``), or a list of paths/URLs. The manifest is looked for in the
  shards' folder and its parent (``W/shards/manifest.parquet``), else pass ``manifest=``; without
  one the gene records' JSON members are scanned (slow on big studies: it reads every shard;
  every sample of the shards then belongs to the split asked for, without targets).

Shards are of format 3 (:mod:`prep.gene_record`: per gene, a reference span and edits; all
splits of a gene in one record, splits and targets in the manifest). Format 2 (one folder per
split) is refused with a message to rebuild.

Streams: local paths and ``file://`` are opened directly, ``http(s)://`` with urllib (streamed,
with a read timeout), ``pipe:CMD`` and webdataset's other schemes (ais, hf, sftp, ...) through
``webdataset.gopen``, and object stores (``s3://``, ``gs://``, ...) and any other fsspec URL
(``memory://``) through fsspec when it is installed (s3 needs s3fs, gs needs gcsfs).

Everything here is torch-free.
"""

from __future__ import annotations

import glob as globlib
import heapq
import io
import logging
import os
import posixpath
import sys
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlparse
from urllib.request import url2pathname

import braceexpand
import numpy as np
import polars as pl

from hapflow.sections import PRIMARY_TARGETS
from prep.gene_record import META_EXT, check_gene_meta
from prep.shard_format import (
    FORMAT_VERSION,
    ShardFormatError,
    decode_meta,
    old_format_message,
    sample_key,
)
from prep.shard_tar import iter_tar

__all__ = [
    "SplitIndex",
    "StaleShardError",
    "check_build",
    "expand_urls",
    "open_url",
    "read_url_bytes",
    "resolve_source",
    "scan_manifest",
    "build_order",
]

log = logging.getLogger(__name__)

_FSSPEC_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "hdfs", "webhdfs")


class StaleShardError(ShardFormatError):
    """A shard of another build than its manifest: the shards folder mixes builds."""


def check_build(index: SplitIndex, meta: dict, url: str) -> None:
    """Refuse a gene record whose build fingerprint differs from the manifest's.

    Raises
    ------
    StaleShardError
        Always, whatever ``on_error`` says: a stale shard is not damage to skip but a study
        that mixes builds (e.g. re-run with other settings and resumed).
    """
    if index.build is not None and meta.get("build") != index.build:
        raise StaleShardError(
            f"shard {url} was written by build {meta.get('build')}, but its manifest describes "
            f"build {index.build}: the shards folder mixes builds (different settings or "
            "inputs). Rebuild it with `python -m prep.shard ... --overwrite`."
        )


def _scheme(url: str) -> str:
    if url.startswith("pipe:"):
        return "pipe"
    scheme = urlparse(url).scheme
    return "" if len(scheme) <= 1 else scheme  # "C:" on Windows is a drive, not a scheme


def _local_path(url: str) -> str | None:
    scheme = _scheme(url)
    if scheme == "":
        return url
    if scheme == "file":
        return url2pathname(urlparse(url).path)
    return None


def _fsspec():
    try:  # an optional dependency (pip install hapflow[remote]), needed for object stores only
        import fsspec
    except ImportError:
        raise ImportError(
            "object-store URLs (s3://, gs://, ...) need fsspec and its backend: "
            "`pip install fsspec s3fs` (or gcsfs); or stream with webdataset's "
            "`pipe:aws s3 cp s3://bucket/shard.tar -`"
        ) from None
    return fsspec


def expand_urls(pattern: str | os.PathLike | Sequence[str]) -> list[str]:
    """Expand a brace pattern, glob or list into shard URLs.

    Parameters
    ----------
    pattern : str, Path or sequence of str
        ``a/shard-{000000..000003}.tar``, ``a/*.tar``, ``s3://b/a/*.tar`` (needs fsspec),
        ``http://h/a/shard-{0..3}.tar`` (no globs over http), or a list of any of these.

    Returns
    -------
    list of str
        In pattern order; glob matches sorted.

    Raises
    ------
    FileNotFoundError
        A local glob or brace item that matches no file.
    """
    if isinstance(pattern, (list, tuple)):
        return [u for p in pattern for u in expand_urls(p)]
    urls: list[str] = []
    for item in braceexpand.braceexpand(str(pattern)):
        has_glob = any(c in item for c in "*?[")
        local = _local_path(item)
        if local is not None:
            if has_glob:
                found = sorted(globlib.glob(local))
                if not found:
                    raise FileNotFoundError(f"no shard matches {item}")
                urls.extend(found)
            elif not os.path.exists(local):
                raise FileNotFoundError(f"{item} does not exist (expected a shards folder, a shard "
                                        "or a pattern of shards)")
            else:
                urls.append(local)
        elif has_glob and _scheme(item) not in ("http", "https", "pipe"):
            fs, _, paths = _fsspec().get_fs_token_paths(item)
            if not paths:
                raise FileNotFoundError(f"no shard matches {item}")
            urls.extend(sorted(fs.unstrip_protocol(p) for p in paths))
        elif has_glob and _scheme(item) != "pipe":  # http(s)
            raise ValueError(f"{item}: globs work on local paths and object stores only; "
                             "use a brace pattern such as shard-{000000..000009}.tar")
        else:
            urls.append(item)
    return urls


def open_url(url: str, timeout: float = 120.0, buffering: int = 1 << 20):
    """Open a shard (or any file) for binary reading; see the module docstring for schemes.

    ``buffering``: the read buffer of a local file, in bytes.

    Raises
    ------
    FileNotFoundError
        The file or URL does not exist (HTTP 404 included); the message names it.
    """
    local = _local_path(url)
    if local is not None:
        return open(local, "rb", buffering=buffering)
    scheme = _scheme(url)
    if scheme in ("http", "https"):
        try:
            return urllib.request.urlopen(url, timeout=timeout)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                raise FileNotFoundError(f"{url}: HTTP 404 not found") from None
            raise OSError(f"{url}: HTTP {err.code} {err.reason}") from None
        except urllib.error.URLError as err:
            raise OSError(f"{url}: {err.reason}") from None
    if scheme not in _FSSPEC_SCHEMES and (scheme == "pipe" or scheme in _wds_schemes()):
        import webdataset as wds  # imported here: webdataset imports torch (see _wds_schemes)

        return wds.gopen(url, "rb")
    fs = _fsspec()
    try:
        return fs.open(url, "rb").open()
    except FileNotFoundError:
        raise FileNotFoundError(f"{url} does not exist") from None


def _wds_schemes() -> set[str]:
    """URL schemes webdataset.gopen handles itself (pipe:, ais, hf, sftp, ...)."""
    # imported here, for these schemes only: importing webdataset imports torch (~3 s), and
    # this module stays torch-free (plans and tests of workers never need it)
    import webdataset  # noqa: F401 - registers webdataset.gopen

    return set(sys.modules["webdataset.gopen"].gopen_schemes) - {"__default__", "http", "https"}


def read_url_bytes(url: str, timeout: float = 120.0) -> bytes | None:
    """All bytes of ``url``, or None when it does not exist."""
    try:
        with open_url(url, timeout) as fh:
            return fh.read()
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------
# The split index: the manifest rows of one split, as compact arrays
# ---------------------------------------------------------------------------------------------


@dataclass
class SplitIndex:
    """The samples of one split, in manifest order, and the shards holding them.

    Attributes
    ----------
    split : str
    urls : list of str
        The shards holding a sample of the split (all splits share shards); ``shard`` indexes
        this list.
    shard : np.ndarray, shape (N,), int32
    key : list of str, length N
        ``{gene}__{individual}`` keys (unique).
    gene : np.ndarray, shape (N,), int32
        Index into ``genes``, the sorted gene ids.
    genes : list of str
    P : np.ndarray, shape (N,), float64
        Expression percentile (for pair filtering).
    row : np.ndarray, shape (N,), int64
        Row number in the manifest (``index`` in batches).
    length, flank : int
        The stored layout: L (the widest window) and the flank; W = L + 2 x flank.
    record_row : np.ndarray, shape (N,), int32
        The sample's individual's row in its gene record (the manifest's ``row`` column).
    individual, population : np.ndarray, shape (N,), object (str)
        Ids for the batches ("" where unknown).
    gene_rank : np.ndarray, shape (G,), int64
        Each gene's place in its shard (build order), so a reader knows which genes lie
        before which.
    build : str or None
        The manifest's build fingerprint (:mod:`prep.fingerprint`); every gene read must carry
        it. None for a scanned manifest (no check).
    targets : np.ndarray, shape (N, 3), float32
        Y, Z, P of the primary target set, from the manifest (shards carry no targets); NaN
        when the manifest has none (a scanned one).
    sets : np.ndarray, shape (N, T), float32, or None
        With further target sets (``[shard] target_sets``): Y of each set, the primary first;
        NaN where a set lacks the sample. None with the primary set only.
    set_names : list of str
        The T target sets' names (``["primary", ...]``).
    """

    split: str
    urls: list
    shard: np.ndarray
    key: list
    gene: np.ndarray
    genes: list
    P: np.ndarray
    row: np.ndarray
    length: int
    flank: int
    record_row: np.ndarray | None = None
    individual: np.ndarray | None = None
    population: np.ndarray | None = None
    gene_rank: np.ndarray | None = None
    build: str | None = None
    targets: np.ndarray | None = None
    sets: np.ndarray | None = None
    set_names: list | None = None

    def __post_init__(self):  # an index built by hand (tests, benchmarks): fill the rest
        n = len(self.key)
        if self.targets is None:
            self.targets = np.full((n, 3), np.nan, dtype=np.float32)
        if self.record_row is None:
            self.record_row = np.zeros(n, np.int32)
        for name in ("individual", "population"):
            if getattr(self, name) is None:
                setattr(self, name, np.full(n, "", dtype=object))
        if self.gene_rank is None:
            self.gene_rank = np.arange(len(self.genes), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.key)

    @property
    def width(self) -> int:
        """W = L + 2 x flank: the window whose real bases a shift may bring in."""
        return self.length + 2 * self.flank

    def gene_shard(self) -> np.ndarray:
        """The shard of each gene, shape (G,), int64 (-1 for a gene without samples)."""
        out = np.full(len(self.genes), -1, np.int64)
        out[self.gene] = self.shard
        return out


def _dir_like(source: str) -> bool:
    local = _local_path(source)
    if local is not None:
        return os.path.isdir(local)
    return not source.rstrip("/").endswith(".tar") and not any(c in source for c in "{*?[")


def _join(base: str, rel: str) -> str:
    local = _local_path(base)
    if local is not None:
        return os.path.join(local, rel)
    return base.rstrip("/") + "/" + rel


def _parent(url: str) -> str:
    local = _local_path(url)
    if local is not None:
        return os.path.dirname(os.path.abspath(local))
    return url.rstrip("/").rsplit("/", 1)[0]


def _read_manifest(url: str, timeout: float) -> pl.DataFrame | None:
    data = read_url_bytes(url, timeout)
    if data is None:
        return None
    try:
        table = pl.read_parquet(io.BytesIO(data))
    except Exception as err:  # noqa: BLE001 - polars raises several types
        raise ShardFormatError(f"manifest {url} is not a readable parquet file: {err}") from None
    if "row" not in table.columns or "group" in table.columns:
        raise ShardFormatError(old_format_message(
            f"manifest {url} (shards in {_parent(url)})", 2,
            "one folder per split, haplotype groups"))
    return table


def scan_manifest(urls: Sequence[str], split: str, timeout: float = 120.0) -> pl.DataFrame:
    """A manifest built from the gene records' JSON members (``shard`` = the URL).

    Shards hold neither splits nor targets, so every sample of the shards is put in ``split``
    and targets are absent: batches then hold NaN targets (for prediction); pass the study's
    manifest for training.
    """
    rows = []
    for url in urls:
        with open_url(url, timeout) as fh:
            for sample in iter_tar(fh, url, want=lambda _k, ext: ext == META_EXT):
                where = f"shard {url}: member {sample['__key__']}.{META_EXT}"
                meta = decode_meta(sample[META_EXT], where, version=FORMAT_VERSION)
                check_gene_meta(meta, where)
                for j, ind in enumerate(meta["individuals"]):
                    rows.append({
                        "split": split, "shard": url, "key": sample_key(meta["gene"], ind),
                        "row": j, "gene": meta["gene"], "individual": ind, "population": "",
                        "chrom": meta["chrom"], "tss": meta["tss"], "strand": meta["strand"],
                    })
    if not rows:
        raise ShardFormatError(f"no samples found in {len(urls)} shard(s), e.g. {urls[0]}")
    return pl.DataFrame(rows)


def _probe_layout(url: str, timeout: float) -> tuple[int, int]:
    """(L, flank) from the first gene's JSON member of a shard (verified: an old format or a
    corrupt member stops here, naming it)."""
    with open_url(url, timeout) as fh:
        for sample in iter_tar(fh, url, want=lambda _k, ext: ext == META_EXT):
            where = f"shard {url}: member {sample['__key__']}.{META_EXT}"
            meta = decode_meta(sample[META_EXT], where, version=FORMAT_VERSION)
            check_gene_meta(meta, where)
            return meta["length"], meta["flank"]
    raise ShardFormatError(f"shard {url} holds no gene record")


def _match_urls(manifest: pl.DataFrame, urls: list[str], where: str) -> dict[str, str]:
    """Map each manifest shard path to the given URL that ends with it."""
    shards = manifest["shard"].unique().to_list()
    by_tail = {}
    for s in shards:
        by_tail.setdefault(posixpath.basename(s), []).append(s)
    mapping = {}
    for url in urls:
        norm = url.replace(os.sep, "/")
        candidates = [s for s in by_tail.get(posixpath.basename(norm), [])
                      if norm == s or norm.endswith("/" + s)]
        if not candidates:
            raise ShardFormatError(
                f"shard {url} is not listed in the manifest {where}; pass the study's "
                "manifest.parquet with manifest=..."
            )
        mapping[candidates[0]] = url
    return mapping


def build_order(table: pl.DataFrame) -> dict[str, int]:
    """Each gene's place in build order, from a manifest (every split).

    Rows list the splits one after another, each in build order, so build order is the one
    order consistent with every split's sequence of genes (a merge of those sequences; ties
    broken by first appearance).
    """
    seqs = [part["gene"].unique(maintain_order=True).to_list()
            for part in table.partition_by("split", maintain_order=True)]
    first: dict[str, int] = {}
    after: dict[str, set] = defaultdict(set)
    waiting: dict[str, int] = defaultdict(int)
    for seq in seqs:
        for g in seq:
            first.setdefault(g, len(first))
        for a, b in zip(seq, seq[1:], strict=False):
            if b not in after[a]:
                after[a].add(b)
                waiting[b] += 1
    ready = [(first[g], g) for g in first if waiting[g] == 0]
    heapq.heapify(ready)
    order: dict[str, int] = {}
    while ready:
        _, g = heapq.heappop(ready)
        order[g] = len(order)
        for b in after[g]:
            waiting[b] -= 1
            if waiting[b] == 0:
                heapq.heappush(ready, (first[b], b))
    return order if len(order) == len(first) else first  # inconsistent splits: appearance


def resolve_source(
    source: str | os.PathLike | Sequence[str],
    split: str,
    manifest: str | os.PathLike | pl.DataFrame | None = None,
    timeout: float = 120.0,
) -> SplitIndex:
    """Find the shards and manifest rows of ``split`` in ``source`` (see the module docstring).

    Raises
    ------
    ShardFormatError
        No manifest found where one must be, a shard not in the manifest, an empty split, or
        shards of format 2; the message names the file and the fix.
    """
    if isinstance(source, (str, os.PathLike)) and _dir_like(str(source)):
        table, url_of, where = _folder_rows(str(source), split, manifest, timeout)
    else:
        table, url_of, where = _pattern_rows(source, split, manifest, timeout)
    rank = build_order(table)
    table = table.filter(pl.col("split") == split)
    if table.height == 0:
        raise ShardFormatError(
            f"source {source} holds no sample of split {split!r} (manifest {where})"
        )
    return _index(table, split, url_of, rank, timeout)


def _given_manifest(manifest, timeout: float) -> tuple[pl.DataFrame | None, str]:
    if isinstance(manifest, pl.DataFrame):
        if "row" not in manifest.columns:
            raise ShardFormatError(old_format_message(
                "the given manifest", 2, "no row column: one folder per split, haplotype groups"))
        return manifest, "(given)"
    return _read_manifest(str(manifest), timeout), str(manifest)


def _folder_rows(base: str, split: str, manifest,
                 timeout: float) -> tuple[pl.DataFrame, dict[str, str], str]:
    """A shards folder's manifest (its own unless given; the manifest row number as
    ``_mrow``), the URL of each shard, and where the manifest came from."""
    if manifest is None:
        manifest = _join(base, "manifest.parquet")
    table, where = _given_manifest(manifest, timeout)
    if table is None:
        raise ShardFormatError(
            f"{where} does not exist: is {base} a study's shards folder (W/shards, "
            "written by `python -m prep.shard`)?"
        )
    table = table.with_row_index("_mrow")
    url_of = {s: _join(base, s) for s in table["shard"].unique().to_list()}
    return table, url_of, where


def _pattern_rows(source, split: str, manifest,
                  timeout: float) -> tuple[pl.DataFrame, dict[str, str], str]:
    """The manifest rows of the given shards (manifest given, found next to them, or
    scanned; the manifest row number as ``_mrow``), the given URL of each shard, and where
    the manifest came from."""
    urls = expand_urls(source)
    if not urls:
        raise ShardFormatError(f"source {source!r} names no shard")
    table, where = None, "(scanned)"
    if manifest is not None:
        table, where = _given_manifest(manifest, timeout)
        if table is None:
            raise ShardFormatError(f"manifest {manifest} does not exist")
    elif _scheme(urls[0]) != "pipe":  # no manifest to guess next to a command
        for candidate in (_join(_parent(urls[0]), "manifest.parquet"),
                          _join(_parent(_parent(urls[0])), "manifest.parquet")):
            try:
                table = _read_manifest(candidate, timeout)
            except OSError:  # e.g. a server refusing the guess: look further, then scan
                table = None
            if table is not None:
                where = candidate
                break
    if table is None:
        log.warning("No manifest.parquet next to %s: scanning %d shard(s)", urls[0], len(urls))
        table = scan_manifest(urls, split, timeout)
    url_of = _match_urls(table, urls, where)
    table = table.with_row_index("_mrow").filter(pl.col("shard").is_in(list(url_of)))
    return table, url_of, where


def _index(table: pl.DataFrame, split: str, url_of: dict[str, str], rank: dict[str, int],
           timeout: float) -> SplitIndex:
    shard_names = table["shard"].unique(maintain_order=True).to_list()
    shard_id = {s: i for i, s in enumerate(shard_names)}
    genes = sorted(table["gene"].unique().to_list())
    gene_id = {g: i for i, g in enumerate(genes)}
    keys = table["key"].to_list()
    if len(set(keys)) != len(keys):
        raise ShardFormatError(f"the manifest of split {split} lists a sample key twice")
    if table.select(pl.col("shard").n_unique().over("gene").max()).item() > 1:
        raise ShardFormatError(f"the manifest of split {split} puts a gene in two shards: a "
                               "gene record is never split; rebuild with `prep.shard "
                               "--overwrite`")
    urls = [url_of[s] for s in shard_names]
    length, flank = _probe_layout(urls[0], timeout)
    build = None
    if "build" in table.columns:
        builds = table["build"].unique().to_list()
        if len(builds) != 1:
            raise ShardFormatError(
                f"the manifest of split {split} mixes {len(builds)} shard builds "
                f"({', '.join(map(str, builds[:3]))}): rebuild with `prep.shard --overwrite`")
        build = builds[0]
    targets, sets, names = _targets(table, split)
    population = table["population"] if "population" in table.columns else None
    return SplitIndex(
        split=split, urls=urls, key=keys,
        shard=np.array([shard_id[s] for s in table["shard"].to_list()], dtype=np.int32),
        gene=np.array([gene_id[g] for g in table["gene"].to_list()], dtype=np.int32),
        genes=genes, P=targets[:, 2].astype(np.float64),
        row=table["_mrow"].to_numpy().astype(np.int64), length=length, flank=flank,
        record_row=table["row"].to_numpy().astype(np.int32),
        individual=np.array(table["individual"].to_list(), dtype=object),
        population=np.array(population.to_list() if population is not None
                            else [""] * table.height, dtype=object),
        gene_rank=np.array([rank.get(g, 0) for g in genes], dtype=np.int64),
        build=build, targets=targets, sets=sets, set_names=names,
    )


def _targets(table: pl.DataFrame, split: str) -> tuple[np.ndarray, np.ndarray | None, list]:
    """Y, Z, P (N, 3) float32; Y of every target set (N, T) or None; the sets' names.

    Raises
    ------
    ShardFormatError
        A primary target that is missing or not finite (the manifest is damaged).
    """
    n = table.height
    if not {"Y", "Z", "P"} <= set(table.columns):
        log.warning("The manifest of split %s has no targets (Y, Z, P): batches carry NaN "
                    "targets; pass the study's manifest.parquet to train", split)
        return np.full((n, 3), np.nan, np.float32), None, [PRIMARY_TARGETS]
    targets = table.select("Y", "Z", "P").to_numpy().astype(np.float32)
    bad = ~np.isfinite(targets).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ShardFormatError(
            f"the manifest of split {split} has {int(bad.sum())} sample(s) without finite "
            f"targets, first {table['key'][i]}: re-run `python -m prep.retarget` (or prep.shard)")
    extra = [c[2:] for c in table.columns if c.startswith("Y:")]
    if not extra:
        return targets, None, [PRIMARY_TARGETS]
    cols = [pl.col("Y"), *(pl.col(f"Y:{name}") for name in extra)]
    sets = table.select(cols).to_numpy().astype(np.float32)
    return targets, sets, [PRIMARY_TARGETS, *extra]
