"""What ``prep.enformer_data`` will write, decided from the small files alone.

From each organism's ``statistics.json``, ``sequences.bed`` and the list of its TFRecord files
(:mod:`prep.basenji`) the plan fixes every record's place before any record is read: record r
of a split (its r-th row of sequences.bed) is record ``r - first`` of file
``r // records_per_file``, and sample ``r - first`` of that file goes to the file's shard
``(r - first) // samples_per_shard``. A file's records are never mixed with another file's, so
one pass over each (ZLIB-compressed) file writes its shards, and ``--part K/N`` hands out whole
files: file i (over organisms, splits and files, in order) belongs to part ``i % N + 1``.

Shard paths, relative to ``DIR/enformer_data``: ``{organism}/{split}/shard-{FFFFF}-{JJJ}.tar``
(F: the TFRecord file's number, J: the shard's number within it).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from hapflow.sections import EnformerDataConfig, HaplotypesConfig
from prep.basenji import (
    SPLIT_LABELS,
    BasenjiError,
    BasenjiStats,
    list_tfrecords,
    read_sequences_bed,
    read_statistics,
)
from prep.contigs import ContigError
from prep.reference import Reference

__all__ = ["EnformerDataError", "Organism", "SourceFile", "EnformerPlan", "plan_enformer_data",
           "MANIFEST_SCHEMA", "layout_digest"]


class EnformerDataError(ValueError):
    """Enformer's training data cannot be converted as configured; the message names the file
    (and record) and what to fix."""


@dataclass(frozen=True)
class Organism:
    """One organism's inputs: its Basenji2 folder, FASTA, statistics and (split-filtered) bed."""

    name: str
    folder: Path
    reference: Path
    stats: BasenjiStats
    bed: pl.DataFrame
    """chrom, start, end, split, record (:func:`prep.basenji.read_sequences_bed`)."""


@dataclass(frozen=True)
class SourceFile:
    """One TFRecord file and the shards its records go to."""

    organism: str
    split: str
    path: Path
    source: str
    """``tfrecords/{label}-{i}.tfr``: the path relative to the organism's folder."""
    number: int
    first: int
    """Index in the split of the file's first record (a row of sequences.bed)."""
    n_records: int
    """Records the file must hold."""
    shards: tuple[str, ...]
    """Its shards, relative to DIR/enformer_data, in record order."""


@dataclass
class EnformerPlan:
    """Every organism's inputs, every TFRecord file and every sample's place.

    ``manifest`` has one row per record (:data:`MANIFEST_SCHEMA` less the columns known only
    after reading: mismatches, n_differences, build).
    """

    organisms: dict[str, Organism]
    files: list[SourceFile]
    manifest: pl.DataFrame

    @property
    def shards(self) -> list[str]:
        """Every shard, in build order."""
        return [s for f in self.files for s in f.shards]


MANIFEST_SCHEMA = {
    "organism": pl.Utf8, "split": pl.Utf8, "shard": pl.Utf8, "index": pl.Int32,
    "key": pl.Utf8, "record": pl.Int64, "source": pl.Utf8, "source_record": pl.Int32,
    "chrom": pl.Utf8, "centre_start": pl.Int64, "centre_end": pl.Int64, "start": pl.Int64,
    "end": pl.Int64, "beyond_contig": pl.Int32,
}
"""Planned manifest columns (see prep.enformer_build for the full table)."""


def _inputs_of(cfg: EnformerDataConfig, hcfg: HaplotypesConfig) -> list[tuple[str, Path, Path]]:
    """(organism, folder, FASTA) of every configured organism."""
    out = []
    if cfg.human:
        ref = cfg.human_reference or hcfg.reference
        if not ref:
            raise EnformerDataError("[enformer_data] human needs human_reference (the hg38 "
                                    "FASTA of the Basenji2 human records) or [haplotypes] "
                                    "reference")
        out.append(("human", Path(cfg.human), Path(ref)))
    if cfg.mouse:
        if not cfg.mouse_reference:
            raise EnformerDataError("[enformer_data] mouse needs mouse_reference (the mm10 "
                                    "FASTA of the Basenji2 mouse records)")
        out.append(("mouse", Path(cfg.mouse), Path(cfg.mouse_reference)))
    if not out:
        raise EnformerDataError("[enformer_data] sets neither human nor mouse: give the "
                                "Basenji2 data folder(s) to convert")
    return out


def _load_organism(name: str, folder: Path, reference: Path,
                   cfg: EnformerDataConfig) -> Organism:
    if not folder.is_dir():
        raise EnformerDataError(f"[enformer_data] {name} = {folder}: no such folder")
    stats = read_statistics(folder / "statistics.json")
    bed = read_sequences_bed(folder / "sequences.bed", stats.seq_length)
    for split in cfg.splits:
        n = bed.filter(pl.col("split") == split).height
        if split in stats.counts and stats.counts[split] != n:
            raise BasenjiError(f"{folder / 'sequences.bed'} lists {n} {SPLIT_LABELS[split]} "
                               f"sequences, {folder / 'statistics.json'} says "
                               f"{stats.counts[split]}: the folder is inconsistent")
    bed = bed.filter(pl.col("split").is_in(list(cfg.splits)))
    if not reference.exists():
        raise EnformerDataError(f"[enformer_data] {name} reference {reference} does not exist")
    return Organism(name, folder, reference, stats, bed)


def _contig_lengths(org: Organism) -> dict[str, int]:
    """Length of every contig of the bed (as the bed spells it) in the organism's FASTA."""
    ref = Reference(org.reference)
    try:
        out = {}
        for chrom in org.bed["chrom"].unique(maintain_order=True):
            try:
                out[chrom] = ref.length(chrom)
            except ContigError as err:
                raise EnformerDataError(f"{org.folder / 'sequences.bed'} has records on {chrom}: "
                                        f"{err}. Is {org.reference} the genome build of the "
                                        f"{org.name} records?") from None
        return out
    finally:
        ref.close()


def _split_files(org: Organism, split: str, cfg: EnformerDataConfig) -> list[SourceFile]:
    n = org.bed.filter(pl.col("split") == split).height
    if n == 0:
        return []
    paths = list_tfrecords(org.folder, split)
    per = cfg.records_per_file
    want = -(-n // per)
    if len(paths) != want:
        raise EnformerDataError(
            f"{org.folder / 'tfrecords'}: {len(paths)} {SPLIT_LABELS[split]}-N.tfr files, but "
            f"{org.folder / 'sequences.bed'} lists {n} {SPLIT_LABELS[split]} sequences, which "
            f"at records_per_file = {per} fill {want} files; set [enformer_data] "
            "records_per_file to the folder's records per file")
    files = []
    for i, path in enumerate(paths):
        count = min(per, n - i * per)
        shards = tuple(f"{org.name}/{split}/shard-{i:05d}-{j:03d}.tar"
                       for j in range(-(-count // cfg.samples_per_shard)))
        files.append(SourceFile(org.name, split, path, f"tfrecords/{path.name}", i, i * per,
                                count, shards))
    return files


def _file_rows(org: Organism, f: SourceFile, cfg: EnformerDataConfig,
               lengths: dict[str, int]) -> pl.DataFrame:
    rows = org.bed.filter((pl.col("split") == f.split) & (pl.col("record") >= f.first)
                          & (pl.col("record") < f.first + f.n_records))
    i = pl.col("record") - f.first
    ext = cfg.extend
    contig = pl.col("chrom").replace_strict(lengths, return_dtype=pl.Int64)
    return rows.select(
        pl.lit(org.name).alias("organism"), "split",
        (i // cfg.samples_per_shard).replace_strict(dict(enumerate(f.shards)),
                                                    return_dtype=pl.Utf8).alias("shard"),
        (i % cfg.samples_per_shard).cast(pl.Int32).alias("index"),
        # sample_key(organism, split, record), vectorised
        pl.format(f"{org.name}_{f.split}_{{}}",
                  pl.col("record").cast(pl.Utf8).str.zfill(6)).alias("key"),
        "record", pl.lit(f.source).alias("source"), i.cast(pl.Int32).alias("source_record"),
        "chrom", pl.col("start").alias("centre_start"), pl.col("end").alias("centre_end"),
        (pl.col("start") - ext).alias("start"), (pl.col("end") + ext).alias("end"),
        ((ext - pl.col("start")).clip(0, None)
         + (pl.col("end") + ext - contig).clip(0, None)).cast(pl.Int32).alias("beyond_contig"),
    )


def plan_enformer_data(cfg: EnformerDataConfig, hcfg: HaplotypesConfig) -> EnformerPlan:
    """Read every organism's small files and decide where each record goes.

    Raises
    ------
    EnformerDataError, BasenjiError
        A missing folder, file or FASTA, an inconsistent folder (bed vs statistics vs
        TFRecord files), a contig the FASTA lacks; raised before anything is written.
    """
    organisms, files, frames = {}, [], []
    for name, folder, reference in _inputs_of(cfg, hcfg):
        org = _load_organism(name, folder, reference, cfg)
        organisms[name] = org
        lengths = _contig_lengths(org)
        for split in cfg.splits:
            for f in _split_files(org, split, cfg):
                files.append(f)
                frames.append(_file_rows(org, f, cfg, lengths))
    if not files:
        raise EnformerDataError(f"no record of the splits {', '.join(cfg.splits)} in "
                                f"{', '.join(str(o.folder) for o in organisms.values())}")
    manifest = pl.concat(frames).cast(MANIFEST_SCHEMA)
    return EnformerPlan(organisms, files, manifest)


def layout_digest(plan: EnformerPlan) -> str:
    """sha256 (hex) of the planned manifest and the TFRecord files' names and sizes.

    The TFRecords are not hashed (hundreds of GB, and every record's CRC32C is checked while
    reading); a re-downloaded file of another size changes the digest.
    """
    h = hashlib.sha256(plan.manifest.write_csv().encode())
    for f in plan.files:
        h.update(f"{f.organism}/{f.source}:{os.path.getsize(f.path)}\n".encode())
    return h.hexdigest()
