"""The sections of joint-training data: ``[enformer_data]`` (Basenji2) and ``[mpra]``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from hapflow.names import SPLITS
from hapflow.sections.base import (
    ConfigError,
    file_stem,
    require,
)


@dataclass(frozen=True)
class EnformerDataConfig:
    """Enformer's own training data, Basenji2 TFRecords -> shards (TOML section
    ``[enformer_data]``; ``python -m prep.enformer_data``)."""

    human: str | None = field(default=None, metadata={"path": True})
    """Basenji2 human folder (gs://basenji_barnyard/data/human): statistics.json, sequences.bed,
    tfrecords/{train,valid,test}-N.tfr."""
    human_reference: str | None = field(default=None, metadata={"path": True})
    """FASTA of the human records' genome build (hg38), indexed; default [haplotypes] reference."""
    mouse: str | None = field(default=None, metadata={"path": True})
    """Basenji2 mouse folder (gs://basenji_barnyard/data/mouse), same layout as ``human``."""
    mouse_reference: str | None = field(default=None, metadata={"path": True})
    """FASTA of the mouse records' genome build (mm10), indexed; needed with ``mouse``."""
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    """Splits to convert: train, val (Basenji's "valid"), test."""
    extend: int = 32_768
    """Bases of FASTA added on each side of a record's sequence (131,072 + 2 x 32,768 = 196,608,
    Enformer's input); N beyond contig ends."""
    records_per_file: int = 256
    """Records in every TFRecord file of a split but its last (Basenji's seqs_per_tfr); checked
    while reading."""
    samples_per_shard: int = 64
    """Records per output shard (a TFRecord file's records are never mixed with another file's)."""
    max_mismatch_fraction: float = 0.01
    """A record whose bases differ from the FASTA (A/C/G/T against another A/C/G/T) in more than
    this fraction of its length stops the run: wrong genome build or record order."""
    compression_level: int = 3
    """zstd level of the float16 targets."""
    workers: int = 0
    """TFRecord files read at once (threads; 0: all cores)."""

    def __post_init__(self):
        bad = [s for s in self.splits if s not in SPLITS]
        require(self, "enformer_data", [
            (bool(self.splits) and not bad and len(set(self.splits)) == len(self.splits),
             f"splits = {self.splits} must list some of {', '.join(SPLITS)}, each once"),
            (self.extend >= 0, f"extend = {self.extend} must be >= 0"),
            (self.records_per_file > 0, f"records_per_file = {self.records_per_file} must be > 0"),
            (self.samples_per_shard > 0,
             f"samples_per_shard = {self.samples_per_shard} must be > 0"),
            (0.0 <= self.max_mismatch_fraction <= 1.0,
             f"max_mismatch_fraction = {self.max_mismatch_fraction} must be in [0, 1]"),
            (1 <= self.compression_level <= 22,
             f"compression_level = {self.compression_level} must be in 1..22 (zstd)"),
            (self.workers >= 0, f"workers = {self.workers} must be >= 0"),
        ])


@dataclass(frozen=True)
class MpraConfig:
    """MPRA variant effects (Siraj et al.; Tewhey MPRAmodel tables) -> shards (TOML section
    ``[mpra]``; ``python -m prep.mpra``)."""

    tables: list[str] = field(default_factory=list, metadata={"path": True})
    """One variant-effect table per cell type: CSV or TSV, plain or .gz (columns below)."""
    cell_types: list[str] = field(default_factory=list)
    """Cell type of each table, in order (default: the file names without extensions)."""
    id_column: str = "ID"
    """Column naming the oligo pair (one sample; the key joining the tables)."""
    variant_column: str = "SNP"
    """Column naming the variant; the split keeps a variant's oligo pairs together (a table
    without it: id_column)."""
    ref_column: str = "ref_seq"
    """Column of the reference-allele oligo (A, C, G, T, N; any case)."""
    alt_column: str = "alt_seq"
    """Column of the alternate-allele oligo."""
    effect_column: str = "Log2Skew"
    """Column of the allelic effect (MPRAmodel: Log2Skew = log2 of alt over ref activity)."""
    effect_direction: Literal["alt_minus_ref", "ref_minus_alt"] = "alt_minus_ref"
    """What effect_column measures; ref_minus_alt tables are negated, so the stored effect is
    always alt - ref."""
    normalise: Literal["zscore", "scale", "none"] = "zscore"
    """Per cell type: zscore ((x - mean) / sd), scale (x / sd: keeps 0 = no effect and the
    sign) or none."""
    normalise_over: Literal["train", "all"] = "train"
    """Variants whose effects define mean and sd: train (no leak) or all."""
    val_fraction: float = 0.05
    """Fraction of variants in validation."""
    test_fraction: float = 0.05
    """Fraction of variants in test."""
    seed: int = 0
    """Seed of the split (a variant's split depends only on the seed and its name)."""
    group_size: int = 256
    """Oligo pairs stored together in one shard sample."""
    shard_samples: int = 8192
    """Oligo pairs per shard (groups are never split)."""

    def __post_init__(self):
        require(self, "mpra", [
            (not self.cell_types or len(self.cell_types) == len(self.tables),
             f"cell_types lists {len(self.cell_types)} name(s) for {len(self.tables)} tables; "
             "give one per table or none"),
            (self.val_fraction >= 0 and self.test_fraction >= 0
             and self.val_fraction + self.test_fraction < 1,
             f"val_fraction = {self.val_fraction} and test_fraction = {self.test_fraction} must "
             "be >= 0 and leave some variants to train on"),
            (self.group_size > 0 and self.shard_samples > 0,
             "group_size and shard_samples must be > 0"),
            (all(c for c in (self.id_column, self.ref_column, self.alt_column,
                             self.effect_column)), "column names must not be empty"),
        ])
        names = mpra_cell_types(self)
        bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_.+-]+", n)]
        if bad or len(set(names)) != len(names):
            raise ConfigError(f"[mpra] cell types must be unique and letters, digits, _ . + - "
                              f"only; got {', '.join(names)}: set cell_types")


def mpra_cell_types(mpra: MpraConfig) -> list[str]:
    """The cell type of each ``[mpra] tables`` entry: ``cell_types``, or the file names without
    extensions."""
    return list(mpra.cell_types) or [file_stem(p) for p in mpra.tables]
