"""Reading a study's shards as windows, torch-free: what users (and checks) get from them.

A format-3 shard holds per gene a reference span and every haplotype's edits
(:mod:`prep.gene_record`); windows are built from them on read with prep's numba engine
(:func:`prep.edits.build_windows`), at the study's length ``L`` or any length up to the stored
width ``W = L + 2 x flank``. A window of ``n`` bases equals
:meth:`prep.builder.HaplotypeBuilder.fixed` at length ``n`` for the same inputs and settings
(reverse-complemented for minus-strand genes with ``[haplotypes] reverse_minus``).

* :func:`gene_records` — raw WebDataset samples in (``{"__key__", "__url__", ext: bytes}``, as
  :func:`prep.shard_tar.read_tar_members` or an undecoded ``webdataset.WebDataset`` yield them),
  one verified :class:`prep.gene_record.GeneRecord` per gene out;
* :func:`gene_windows` — the windows of some (or all) individuals of one record;
* :func:`unpack_genes` — a WebDataset stage: one sample per (gene, individual) with its windows;
* :func:`iter_shard` — the same for a local shard file;
* :func:`iter_study` — the samples of a study folder (``DIR/shards``), with the manifest's
  split, population and targets.

Every member is verified as it is read (:func:`prep.gene_record.decode_gene`); a corrupt one is
a :class:`prep.shard_format.ShardFormatError` naming shard and member.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import polars as pl

from prep.edits import build_windows, make_pool
from prep.gene_record import GeneRecord, decode_gene
from prep.shard_format import ShardFormatError, check_study_format, sample_key
from prep.shard_tar import read_tar_members

__all__ = ["gene_records", "gene_windows", "unpack_genes", "iter_shard", "iter_study"]

_CHUNK = 256
"""Individuals whose windows are built at once (memory: 2 x _CHUNK x n bytes)."""


def gene_records(samples: Iterable[dict]) -> Iterator[GeneRecord]:
    """One verified :class:`GeneRecord` per raw shard sample (see the module docstring).

    Raises
    ------
    ShardFormatError
        A missing or corrupt member, naming shard and member.
    """
    for sample in samples:
        yield decode_gene(sample, sample.get("__url__", "?"))


def gene_windows(record: GeneRecord, length: int | None = None,
                 rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Windows of one gene's individuals, built from its record.

    Parameters
    ----------
    record : GeneRecord
    length : int, optional
        Bases per window, 1..W (default: the study's L, ``record.meta["length"]``).
    rows : np.ndarray of int, optional
        Rows of ``record.meta["individuals"]`` (default: all, in order).

    Returns
    -------
    (windows, tss_index)
        uint8 (len(rows), 2, length): codes A, C, G, T, N = 0..4, haplotype 1 and 2 (the GT
        allele order); int64 (len(rows),): 0-based index of the TSS in each window
        (``length // 2``, or ``length - 1 - length // 2`` when reverse-complemented).
    """
    meta = record.meta
    n = meta["length"] if length is None else int(length)
    if not 0 < n <= meta["width"]:
        raise ValueError(f"window length {n} of gene {meta['gene']}: the record holds windows "
                         f"of 1 to {meta['width']} bases")
    rows = np.arange(len(meta["individuals"])) if rows is None else np.asarray(rows, np.int64)
    if rows.size and not (0 <= rows.min() and rows.max() < len(meta["individuals"])):
        raise ValueError(f"rows of gene {meta['gene']} must lie in 0..."
                         f"{len(meta['individuals']) - 1}")
    pool = make_pool([(record.ref, record.edits, meta["tss_rel"], meta["reverse_complemented"])])
    out = np.empty((rows.shape[0], 2, n), np.uint8)
    tss_index = np.empty(rows.shape[0], np.int64)
    zeros = np.zeros(rows.shape[0], np.int64)
    build_windows(pool, zeros, rows.astype(np.int64), zeros, np.zeros(rows.shape[0], bool),
                  meta["width"], False, out, tss_index)
    return out, tss_index


def unpack_genes(samples: Iterable[dict], length: int | None = None) -> Iterator[dict]:
    """WebDataset stage: raw shard samples in, one sample per (gene, individual) out.

    Shards carry no splits and no targets: join them from the study's ``manifest.parquet`` by
    ``__key__`` (or use :func:`iter_study`).

    Yields
    ------
    dict
        ``__key__`` (``{gene}__{individual}``, :func:`prep.shard_format.sample_key`),
        ``__url__``, ``seq`` (uint8 (2, n), n = ``length`` or the study's L), ``tss_index``,
        ``gene``, ``individual``, ``row`` (in the gene's record), ``chrom``, ``tss`` (0-based),
        ``strand``, ``length`` (n), ``flank``, ``reverse_complemented``, ``applied`` (variants
        applied to haplotype 1 and 2).
    """
    for sample in samples:
        url = sample.get("__url__", "?")
        record = decode_gene(sample, url)
        yield from _samples(record, url, np.arange(len(record.meta["individuals"])), length)


def _samples(record: GeneRecord, url: str, rows: np.ndarray, length: int | None
             ) -> Iterator[dict]:
    """:func:`unpack_genes`' samples of ``rows`` of one record, built ``_CHUNK`` at a time."""
    meta = record.meta
    for lo in range(0, len(rows), _CHUNK):
        chunk = rows[lo:lo + _CHUNK]
        seqs, tss_index = gene_windows(record, length, chunk)
        for k, r in enumerate(chunk):
            individual = meta["individuals"][r]
            yield {
                "__key__": sample_key(meta["gene"], individual), "__url__": url,
                "seq": seqs[k], "tss_index": int(tss_index[k]), "gene": meta["gene"],
                "individual": individual, "row": int(r), "chrom": meta["chrom"],
                "tss": meta["tss"], "strand": meta["strand"], "length": seqs.shape[2],
                "flank": meta["flank"], "reverse_complemented": meta["reverse_complemented"],
                "applied": meta["applied"][r],
            }


def iter_shard(path: str | os.PathLike, length: int | None = None) -> Iterator[dict]:
    """Every (gene, individual) sample of a local shard, with its windows (see
    :func:`unpack_genes`)."""
    return unpack_genes(read_tar_members(path), length)


def iter_study(shards_dir: str | os.PathLike, split: str | None = None,
               length: int | None = None) -> Iterator[dict]:
    """The samples of a study (``DIR/shards``), in shard order (genes in build order,
    individuals sorted), each :func:`unpack_genes`' sample plus its manifest row (split,
    population, the targets Y, Z, P and any further sets', build, targets_build).

    Parameters
    ----------
    split : {"train", "val", "test"}, optional
        Only this split's samples (default: all).

    Raises
    ------
    ShardFormatError
        A folder of another shard format, a corrupt member, or a manifest row whose gene or
        individual is not in its shard.
    """
    root = Path(shards_dir)
    check_study_format(root)
    manifest = pl.read_parquet(root / "manifest.parquet")
    if split is not None:
        manifest = manifest.filter(pl.col("split") == split)
    by_gene = manifest.partition_by("gene", as_dict=True)
    for shard in sorted(manifest["shard"].unique().to_list()):
        genes = set(manifest.filter(pl.col("shard") == shard)["gene"].unique().to_list())
        for sample in read_tar_members(root / shard):
            url = sample["__url__"]
            record = decode_gene(sample, url)
            gene = record.meta["gene"]
            if gene not in genes:
                continue
            genes.discard(gene)
            rows = by_gene[(gene,)].sort("row")
            at = rows["row"].to_numpy().astype(np.int64)
            known = record.meta["individuals"]
            if at.min() < 0 or at.max() >= len(known) or [known[i] for i in at] != rows["individual"].to_list():
                raise ShardFormatError(f"shard {url}: gene {gene}'s individuals are not those "
                                       "the manifest lists for it: rebuild with `python -m "
                                       "prep.shard ... --overwrite`")
            for row, sample_out in zip(rows.iter_rows(named=True),
                                       _samples(record, url, at, length), strict=True):
                yield {**row, **sample_out}
        if genes:
            raise ShardFormatError(f"shard {root / shard} lacks gene(s) {', '.join(sorted(genes))} "
                                   "that the manifest lists for it: rebuild with `python -m "
                                   "prep.shard ... --overwrite`")
