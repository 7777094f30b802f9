"""The sections of a study's inputs: ``[haplotypes]``, ``[expression]``, ``[simulate]`` and
``[shard]`` (read by the prep stage)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from hapflow.sections.base import (
    MAX_LENGTH,
    PRIMARY_TARGETS,
    ConfigError,
    file_stem,
    require,
)

# ------------------------------------------------------------------------------------ prep


@dataclass(frozen=True)
class HaplotypesConfig:
    """Inputs and options of the haplotype engine (TOML section ``[haplotypes]``)."""

    reference: str | None = field(default=None, metadata={"path": True})
    """Reference FASTA, plain or bgzip, indexed."""
    vcf: list[str] | str | None = field(default=None, metadata={"path": True})
    """Phased VCF/BCF, bgzipped and indexed: one file, a list, or a pattern with {chrom}. Files
    may hold different samples: the study uses those in every file (the others are named in a
    warning and in the shards' quality.json)."""
    tss: str | None = field(default=None, metadata={"path": True})
    """Gene TSS table (CSV/TSV/BED; layouts in prep.regions) for fixed-length windows."""
    bed: str | None = field(default=None, metadata={"path": True})
    """BED of intervals for ragged (bcftools-exact) haplotypes; instead of ``tss``."""
    length: int = 49_152
    """Window length L of fixed mode: a multiple of 128 up to 524,288; TSS at index L // 2. In
    shards it is the widest window: the loader may crop any multiple of 128 up to it."""
    samples: list[str] | None = None
    """Samples to build (default: all in the VCF)."""
    samples_file: str | None = field(default=None, metadata={"path": True})
    """File with one sample per line, instead of ``samples``."""
    snps_only: bool = False
    """Apply SNPs (and MNPs) only, as the paper did; indels are skipped and counted."""
    unphased: Literal["error", "reference", "as-phased", "random"] = "error"
    """Unphased heterozygous genotypes: error | reference | as-phased | random."""
    ref_mismatch: Literal["error", "skip"] = "error"
    """REF alleles that disagree with the FASTA: error | skip."""
    reverse_minus: bool = False
    """Reverse-complement windows of minus-strand genes."""
    seed: int = 0
    """Seed of the 'random' unphased policy."""
    batch_mb: int = 256
    """Memory budget of one batch of windows, in MB."""
    tss_one_based: bool | None = None
    """Force the TSS column to be read as 1-based (true) or 0-based (false); default detected."""

    def __post_init__(self):
        # a one-file list (how a plain string or `--vcf a.vcf.gz` is read) is the file itself
        if isinstance(self.vcf, (list, tuple)):
            vcf = [str(v) for v in self.vcf]
            object.__setattr__(self, "vcf", vcf[0] if len(vcf) == 1 else vcf)
        require(self, "haplotypes", [
            (0 < self.length <= MAX_LENGTH and self.length % 128 == 0,
             f"length = {self.length} must be a positive multiple of 128 up to {MAX_LENGTH:,} "
             "(Enformer's bins are 128 bp; the paper: 49152)"),
            (not (self.samples and self.samples_file), "give samples or samples_file, not both"),
            (self.batch_mb > 0, f"batch_mb = {self.batch_mb} must be > 0"),
        ])


@dataclass(frozen=True)
class ExpressionConfig:
    """The expression matrix to prepare (TOML section ``[expression]``)."""

    input: str | None = field(default=None, metadata={"path": True})
    """Expression file: CSV/TSV/Parquet matrix, QTLtools/FastQTL BED or GEUVADIS RPKM."""
    format: Literal["auto", "matrix", "bed", "geuvadis_rpkm"] = "auto"
    """Layout of ``input``; ``auto`` guesses from the name and header line."""
    process: Literal["none", "geuvadis"] = "none"
    """``geuvadis``: the paper's RPKM → TPM → filter → ln → top-PC removal; ``none``: as read."""
    n_pcs: int = 10
    """Principal components removed by ``process = "geuvadis"`` (below min(genes, individuals))."""
    min_nonzero_fraction: float = 0.5
    """``geuvadis``: keep genes expressed (> 0) in more than this fraction of individuals."""
    pseudocount: float = 0.01
    """``geuvadis``: added to TPM before the natural log."""
    log1p: bool = False
    """``process = "none"`` only: store ln(1 + value), for RPKM-like inputs such as the demo."""

    def __post_init__(self) -> None:
        require(self, "expression", [
            (self.n_pcs >= 0, f"n_pcs={self.n_pcs} must be >= 0"),
            (0.0 <= self.min_nonzero_fraction < 1.0,
             f"min_nonzero_fraction={self.min_nonzero_fraction} must be in [0, 1)"),
            (self.pseudocount > 0, f"pseudocount={self.pseudocount} must be > 0"),
            (not (self.log1p and self.process == "geuvadis"),
             'log1p = true conflicts with process = "geuvadis", which takes ln(TPM + '
             "pseudocount) itself; set log1p = false"),
        ])


@dataclass(frozen=True)
class SimulateConfig:
    """Simulated expression on real genotypes (TOML section ``[simulate]``)."""

    h2: float = 0.5
    """Heritability of the simulated expression: variance of the genetic value (noise 1 - h2)."""
    min_maf: float = 0.05
    """Causal SNPs have at least this MAF among the simulated individuals."""
    n_causal_min: int = 1
    """Fewest causal SNPs per gene."""
    n_causal_max: int = 3
    """Most causal SNPs per gene (fewer when the window has fewer candidates)."""
    max_distance: int | None = None
    """Causal SNPs at most this many bases from the TSS (default: anywhere in the window)."""
    seed: int = 0
    """Seed; each gene draws from (seed, crc32 of its id)."""
    output: str | None = field(default=None, metadata={"path": True})
    """Expression matrix to write; default DIR/expression/expression.parquet. The truth and
    gene tables go beside it."""

    def __post_init__(self):
        require(self, "simulate", [
            (0.0 <= self.h2 <= 1.0, f"h2 = {self.h2} must be in [0, 1]"),
            (0.0 < self.min_maf <= 0.5, f"min_maf = {self.min_maf} must be in (0, 0.5]"),
            (1 <= self.n_causal_min <= self.n_causal_max,
             f"need 1 <= n_causal_min ({self.n_causal_min}) <= n_causal_max "
             f"({self.n_causal_max})"),
            (self.max_distance is None or self.max_distance >= 0,
             f"max_distance = {self.max_distance} must be >= 0"),
        ])



def target_set_labels(shard: ShardConfig) -> list[str]:
    """Labels of a study's target sets, primary first (:data:`PRIMARY_TARGETS`): the
    ``target_names``, or the ``target_sets`` file names without extensions."""
    names = list(shard.target_names) or [file_stem(p) for p in shard.target_sets]
    return [PRIMARY_TARGETS, *names]


@dataclass(frozen=True)
class ShardConfig:
    """Targets, splits and shard layout (TOML section ``[shard]``)."""

    expression: str | None = field(default=None, metadata={"path": True})
    """Expression matrix (genes x individuals); default DIR/expression/expression.parquet."""
    expression_format: Literal["auto", "matrix", "bed", "geuvadis_rpkm"] = "auto"
    """Layout of ``expression`` (see prep.expression_files.read_expression)."""
    splits: Literal["random", "population", "unseen", "file", "paper"] = "random"
    """How individuals are split per gene: generated (random, population, unseen), a file of
    your own (long gene,individual,split or wide genes x individuals), or the paper's files."""
    splits_file: str | None = field(default=None, metadata={"path": True})
    """Split table for ``file``; the paper's sample_splits.csv for ``paper``."""
    gene_classes: str | None = field(default=None, metadata={"path": True})
    """The paper's gene_class.csv (``paper`` splits: unseen genes go entirely to test)."""
    n_test: int | None = None
    """Random split: test individuals per gene, of all the study's individuals (the paper: 77
    of 421); instead of test_fraction."""
    test_fraction: float | None = 0.2
    """Random split: fraction of all the study's individuals put in test per gene (rounded),
    when n_test is not set."""
    val_fraction: float = 0.05
    """Fraction of the individuals left after test is taken out that go to validation, per
    gene (rounded): 300 individuals with test_fraction 0.2 and val_fraction 0.1 give 60 test,
    24 validation (0.1 of 240), 216 train. Population split: of those outside the test
    population; unseen-gene split: of all individuals of a gene that is not held out."""
    population: str = "YRI"
    """Population split: the population held out as test."""
    samples_table: str | None = field(default=None, metadata={"path": True})
    """Table sample,population (population split; populations in the shards' metadata)."""
    test_chroms: list[str] = field(default_factory=list)
    """Unseen-gene split: chromosomes whose genes go entirely to test."""
    seed: int = 0
    """Seed of generated splits."""
    target_reference: Literal["train", "all"] = "train"
    """Individuals whose statistics define Z and P: train (no leak) or all (the paper's way)."""
    target_sets: list[str] = field(default_factory=list, metadata={"path": True})
    """Further expression matrices (e.g. one per tissue), same layouts as expression: each adds
    the manifest columns Y:NAME, Z:NAME, P:NAME (NaN where it lacks a sample) and a column of
    the batches' (B, T) ``targets`` / ``target_mask``. The samples come from expression."""
    target_names: list[str] = field(default_factory=list)
    """Names of target_sets, in order (default: their file names without extensions)."""
    shard_samples: int = 2048
    """(gene, individual) samples per shard: genes fill shards in build order, each with all its
    samples (every split; a gene is never split), and a shard may run over by one gene."""
    flank: int = 8
    """Extra real bases each side of the L-bp window, for shift augmentation (shifts beyond
    them fill N)."""
    compression_level: int = 3
    """zstd level of each gene's edits."""
    workers: int = 0
    """Threads for building and compressing (0: all cores)."""
    batch_mb: int = 256
    """Memory budget for the parsed genotypes of one batch of nearby genes, in MB (4 bytes per
    individual and VCF record; sized for up to one record per 16 bases)."""

    def __post_init__(self):
        require(self, "shard", [
            (self.shard_samples > 0 and self.flank >= 0,
             "shard_samples must be > 0 and flank >= 0"),
            (not self.target_names or len(self.target_names) == len(self.target_sets),
             f"target_names lists {len(self.target_names)} name(s) for "
             f"{len(self.target_sets)} target_sets; give one per set or none"),
            (self.splits != "population" or bool(self.samples_table),
             "splits = 'population' needs samples_table (sample,population)"),
            (self.splits != "unseen" or bool(self.test_chroms),
             "splits = 'unseen' needs test_chroms, e.g. ['chr22']"),
        ])
        labels = target_set_labels(self)
        bad = [n for n in labels[1:]
               if not re.fullmatch(r"[A-Za-z0-9_.+-]+", n) or n == PRIMARY_TARGETS]
        if bad or len(set(labels)) != len(labels):
            raise ConfigError(f"[shard] target set names must be unique, not "
                              f"'{PRIMARY_TARGETS}', and letters, digits, _ . + - only; got "
                              f"{', '.join(labels[1:])}: set target_names")
