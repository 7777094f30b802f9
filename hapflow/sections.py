"""Every section of a study file: one frozen dataclass each, in one place.

A study file (TOML) holds the sections of :data:`SECTIONS`; each field below is one setting with
its default and a docstring line (``docs/config.md`` is generated from them). Fields marked
``metadata={"path": True}`` are paths, resolved against the study file's folder. Every
``__post_init__`` checks the values of its own section and raises :class:`ConfigError` only;
rules that join sections are in :func:`hapflow.config.check_study`; what a stage needs that a
section may leave unset (an input file) is checked by that stage.

Nothing here imports numpy, torch or a stage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hapflow.names import SPLITS

__all__ = [
    "ConfigError",
    "HaplotypesConfig",
    "ExpressionConfig",
    "SimulateConfig",
    "ShardConfig",
    "LoaderConfig",
    "ModelConfig",
    "TrainConfig",
    "BaselinesConfig",
    "EvaluateConfig",
    "AttributeConfig",
    "EnformerDataConfig",
    "MpraConfig",
    "SECTIONS",
    "MAX_LENGTH",
    "STRATEGIES",
    "LOSS_TERM_HEADS",
    "BASELINE_METHODS",
    "PRIMARY_TARGETS",
    "target_set_labels",
    "mpra_cell_types",
    "ORGANISMS",
    "MPRA_CELL_TYPES",
]


class ConfigError(ValueError):
    """A study file, section, setting or override is invalid; the message says which and why."""


def _require(checks: list[tuple[bool, str]], section: str) -> None:
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"[{section}] {message}")


MAX_LENGTH = 393_216
"""The longest window the haplotype engine builds (3 x Enformer's 131,072 bp)."""

STRATEGIES = ("single", "pairwise_regression", "pairwise_classification", "in_batch")
"""The paper's fine-tuning strategies (``[train] strategy``)."""

LOSS_TERM_HEADS: dict[str, str | None] = {
    "single": None,
    "pairwise_regression": None,
    "pairwise_classification": "track",
    "in_batch": None,
}
"""Every loss term ``[train] terms`` may name, and the ``[model] head`` it needs (None: any).
The terms themselves are :data:`train.losses.TERMS` (same names)."""

BASELINE_METHODS = ("elastic_net", "lasso", "ridge", "top_snp")
"""The baseline methods, as named in ``[baselines] methods`` and ``DIR/predictions/NAME``."""

PRIMARY_TARGETS = "primary"
"""The label of a study's primary target set (``[shard] expression``)."""


# ------------------------------------------------------------------------------------ prep


@dataclass(frozen=True)
class HaplotypesConfig:
    """Inputs and options of the haplotype engine (TOML section ``[haplotypes]``)."""

    reference: str | None = field(default=None, metadata={"path": True})
    """Reference FASTA, plain or bgzip, indexed."""
    vcf: list[str] | str | None = field(default=None, metadata={"path": True})
    """Phased VCF/BCF, bgzipped and indexed: one file, a list, or a pattern with {chrom}."""
    tss: str | None = field(default=None, metadata={"path": True})
    """Gene TSS table (CSV/TSV/BED; layouts in prep.regions) for fixed-length windows."""
    bed: str | None = field(default=None, metadata={"path": True})
    """BED of intervals for ragged (bcftools-exact) haplotypes; instead of ``tss``."""
    length: int = 49_152
    """Window length L of fixed mode: a multiple of 128 up to 393,216; TSS at index L // 2."""
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
        _require([
            (0 < self.length <= MAX_LENGTH and self.length % 128 == 0,
             f"length = {self.length} must be a positive multiple of 128 up to {MAX_LENGTH:,} "
             "(Enformer's bins are 128 bp; the paper: 49152)"),
            (not (self.samples and self.samples_file), "give samples or samples_file, not both"),
            (self.batch_mb > 0, f"batch_mb = {self.batch_mb} must be > 0"),
        ], "haplotypes")


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
        _require([
            (self.n_pcs >= 0, f"n_pcs={self.n_pcs} must be >= 0"),
            (0.0 <= self.min_nonzero_fraction < 1.0,
             f"min_nonzero_fraction={self.min_nonzero_fraction} must be in [0, 1)"),
            (self.pseudocount > 0, f"pseudocount={self.pseudocount} must be > 0"),
            (not (self.log1p and self.process == "geuvadis"),
             'log1p = true conflicts with process = "geuvadis", which takes ln(TPM + '
             "pseudocount) itself; set log1p = false"),
        ], "expression")


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
        _require([
            (0.0 <= self.h2 <= 1.0, f"h2 = {self.h2} must be in [0, 1]"),
            (0.0 < self.min_maf <= 0.5, f"min_maf = {self.min_maf} must be in (0, 0.5]"),
            (1 <= self.n_causal_min <= self.n_causal_max,
             f"need 1 <= n_causal_min ({self.n_causal_min}) <= n_causal_max "
             f"({self.n_causal_max})"),
            (self.max_distance is None or self.max_distance >= 0,
             f"max_distance = {self.max_distance} must be >= 0"),
        ], "simulate")


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".gz", ".zst", ".parquet", ".pq", ".tsv", ".csv", ".txt", ".bed"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def target_set_labels(shard: ShardConfig) -> list[str]:
    """Labels of a study's target sets, primary first (:data:`PRIMARY_TARGETS`): the
    ``target_names``, or the ``target_sets`` file names without extensions."""
    names = list(shard.target_names) or [_stem(p) for p in shard.target_sets]
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
    """Random split: test individuals per gene (the paper: 77 of 421)."""
    test_fraction: float | None = 0.2
    """Random split: fraction of individuals to test, when n_test is not set."""
    val_fraction: float = 0.05
    """Fraction of non-test individuals put in validation."""
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
    group_size: int = 256
    """Individuals of one gene and split stored together (0: all of them in one group). Larger
    groups compress better and write faster (64: 289, 256: 258 bytes per diploid sample on
    chr20 at 49,152 bp); the loader decodes a group at a time (256 x 2 x W bytes)."""
    shard_samples: int = 2048
    """Samples per shard (groups are never split; a shard may run over by one group)."""
    flank: int = 8
    """Extra real bases stored each side of the L-bp window, for shift augmentation."""
    compression_level: int = 3
    """zstd level of haplotype groups."""
    workers: int = 0
    """Threads for building and compressing (0: all cores)."""
    batch_mb: int = 256
    """Memory budget for one batch of genes' haplotypes, in MB."""

    def __post_init__(self):
        _require([
            (self.group_size >= 0 and self.shard_samples > 0 and self.flank >= 0,
             "group_size must be >= 0, shard_samples > 0 and flank >= 0"),
            (not self.target_names or len(self.target_names) == len(self.target_sets),
             f"target_names lists {len(self.target_names)} name(s) for "
             f"{len(self.target_sets)} target_sets; give one per set or none"),
            (self.splits != "population" or bool(self.samples_table),
             "splits = 'population' needs samples_table (sample,population)"),
            (self.splits != "unseen" or bool(self.test_chroms),
             "splits = 'unseen' needs test_chroms, e.g. ['chr22']"),
        ], "shard")
        labels = target_set_labels(self)
        bad = [n for n in labels[1:]
               if not re.fullmatch(r"[A-Za-z0-9_.+-]+", n) or n == PRIMARY_TARGETS]
        if bad or len(set(labels)) != len(labels):
            raise ConfigError(f"[shard] target set names must be unique, not "
                              f"'{PRIMARY_TARGETS}', and letters, digits, _ . + - only; got "
                              f"{', '.join(labels[1:])}: set target_names")


# ---------------------------------------------------------------------------------- loader


@dataclass(frozen=True)
class LoaderConfig:
    """How shards become batches (TOML section ``[loader]``)."""

    batch_size: int = 8
    """Samples (or pairs) per batch on each rank."""
    num_workers: int = 2
    """DataLoader worker processes per rank (0: load in the main process)."""
    shuffle_buffer: int = 1024
    """Train modes: samples (pairs) read together in each worker (rounded up to a multiple of
    batch_size); each lane is shuffled in blocks of shuffle_buffer / lanes items (see lanes);
    memory is about shuffle_buffer x 2 x L bytes."""
    lanes: int | None = None
    """Train modes (train, pairwise, gene): the epoch's reading order is cut into this many lanes
    read side by side (one sample, in gene mode one batch, of each lane in turn), so a batch
    holds samples of about min(lanes, batch_size) genes, where consecutive samples of the
    gene-sorted shards would give few. Default (None): batch_size. More lanes than batch_size
    (read in a spread order) make the genes a run of batches sees change faster: each lane
    covers fewer genes of the epoch. Each worker then reads that many places of its shards at
    once and holds about lanes x group_size decoded samples besides the shuffle buffer; 1: one
    lane (consecutive samples, a plain block shuffle)."""
    seed: int = 0
    """Seed of shard order, shuffling, pair sampling and augmentation (with epoch, rank, worker)."""
    rc_prob: float = 0.5
    """Train modes: probability of reverse-complementing a sample (both haplotypes together)."""
    max_shift: int = 3
    """Train modes: the TSS moves by a uniform random shift in [-max_shift, max_shift] bases."""
    shift_fill: Literal["flank", "N"] = "flank"
    """Bases shifted into the window: the stored real flanks (needs [shard] flank >= max_shift)
    or N."""
    length: int | None = None
    """Length of the windows in batches, cropped around the TSS (default: the stored L)."""
    epoch_batches: int | None = None
    """Train modes: batches per rank per epoch (default: every sample or pair once, less the
    remainder that does not fill a batch on every rank)."""
    pairs_per_gene: int = 250
    """Pairwise mode on the train split: pairs drawn per gene per epoch (the paper: 250)."""
    val_pairs_per_gene: int = 100
    """Pairwise mode on other splits: the fixed pairs per gene (the paper: 100)."""
    min_percentile_diff: float | None = None
    """Pairwise mode: keep only pairs whose P differs by more than this (the paper's
    classification variant: 25); None keeps every pair."""
    on_error: Literal["raise", "skip"] = "raise"
    """A corrupt or truncated shard: raise an error naming it, or skip the rest of it (its
    missing samples become padding with valid = False, counted and logged)."""
    prefetch_factor: int = 2
    """Batches each worker prepares ahead."""
    pin_memory: bool = False
    """Return batches in pinned memory (faster host-to-GPU copies)."""
    keep_freed_memory: bool = True
    """Loading processes (the workers; the main process too when num_workers = 0) keep freed
    memory for reuse instead of returning it to the OS (glibc only), so each decoded group does
    not page-fault fresh memory: about 1.6x more samples/s, at the cost of RSS staying at peak."""
    worker_start: Literal["default", "fork", "spawn", "forkserver"] = "default"
    """How worker processes start; "default" is Python's default (fork on Linux up to Python
    3.13; inside processes started by spawn, spawn, which re-imports everything per worker)."""
    timeout_s: float = 120.0
    """Network read timeout for http(s) shards, in seconds."""
    verify: bool = False
    """Verify the split's shards (prep.verify: file checksums against meta.json, every member)
    before loading; needs a local shards folder. Members are always checked as they are read."""

    def __post_init__(self):
        _require([
            (self.batch_size > 0, "batch_size must be > 0"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (self.shuffle_buffer >= 0, "shuffle_buffer must be >= 0"),
            (self.lanes is None or self.lanes > 0, "lanes must be > 0"),
            (self.seed >= 0, "seed must be >= 0"),
            (0.0 <= self.rc_prob <= 1.0, "rc_prob must be between 0 and 1"),
            (self.max_shift >= 0, "max_shift must be >= 0"),
            (self.length is None or self.length > 0, "length must be > 0"),
            (self.epoch_batches is None or self.epoch_batches > 0, "epoch_batches must be > 0"),
            (self.pairs_per_gene > 0 and self.val_pairs_per_gene > 0,
             "pairs_per_gene and val_pairs_per_gene must be > 0"),
            (self.min_percentile_diff is None or self.min_percentile_diff >= 0,
             "min_percentile_diff must be >= 0"),
            (self.prefetch_factor > 0, "prefetch_factor must be > 0"),
            (self.timeout_s > 0, "timeout_s must be > 0"),
        ], "loader")


# ----------------------------------------------------------------------------------- train


@dataclass(frozen=True)
class ModelConfig:
    """Trunk, head and what trains (TOML section ``[model]``)."""

    source: Literal["random", "pretrained", "hub"] = "random"
    """Trunk weights: random init, a local Hugging Face layout folder (``weights``), or the hub."""
    weights: str | None = field(default=None, metadata={"path": True})
    """Folder with config.json + model.safetensors or pytorch_model.bin (source = pretrained)."""
    hub_id: str = "EleutherAI/enformer-official-rough"
    """Hugging Face hub repository (source = hub; needs internet or the local HF cache)."""
    dim: int = 1536
    """Random init: trunk width; embeddings have 2 * dim features."""
    depth: int = 11
    """Random init: transformer blocks."""
    heads: int = 8
    """Random init: attention heads; dim // heads must be divisible by 6."""
    attn_dim_key: int = 64
    """Random init: attention key/query size per head."""
    num_downsamples: int = 7
    """Random init: conv downsamplings; bins are 2 ** num_downsamples bp (7: 128 bp)."""
    dim_divisible_by: int = 128
    """Random init: conv tower widths are rounded to multiples of this (<= dim // 2)."""
    output_heads_human: int = 5313
    """Random init: tracks of the human output head (used by head = "track")."""
    dropout_rate: float = 0.4
    """Transformer and final dropout, for every source (Enformer's value: 0.4)."""
    attn_dropout: float = 0.05
    """Attention-weight dropout, for every source (Enformer's value: 0.05)."""
    pos_dropout: float = 0.01
    """Positional-feature dropout, for every source (Enformer's value: 0.01)."""
    use_tf_gamma: bool | None = None
    """TensorFlow gamma positional features; None: on only for pretrained weights at 196,608 bp."""
    head: Literal["attention_pool", "track"] = "attention_pool"
    """attention_pool: the paper's learned head; track: one pretrained human output track."""
    n_bins: int = 10
    """Bins around the TSS bin fed to the head (10: tss_bin - 5 .. tss_bin + 4)."""
    track: int = 5110
    """Human track for head = "track" (5110: CAGE, GM12878, the paper's)."""
    haplotypes: Literal["average", "mean_onehot"] = "average"
    """average: run both haplotypes, average predictions; mean_onehot: one run on their mean."""
    batchnorm: Literal["frozen", "local", "sync"] = "local"
    """frozen: running statistics and BN weights fixed; local: per-GPU; sync: SyncBatchNorm."""
    freeze: Literal["none", "conv_tower", "transformer", "trunk"] = "none"
    """Parameters that do not train: stem + conv tower, transformer, or the whole trunk."""
    checkpointing: bool = False
    """Activation checkpointing of the transformer blocks (memory for compute)."""

    def __post_init__(self) -> None:
        if self.source == "pretrained" and not self.weights:
            raise ConfigError('model.source = "pretrained" needs model.weights (a folder with '
                              'config.json and model.safetensors or pytorch_model.bin)')
        if self.n_bins < 1:
            raise ConfigError(f"model.n_bins = {self.n_bins}: must be at least 1")
        if self.source != "random":
            return
        if self.num_downsamples < 3:
            raise ConfigError(f"model.num_downsamples = {self.num_downsamples}: Enformer needs "
                              "at least 3")
        if self.dim % 2 or self.dim_divisible_by < 1 or self.dim_divisible_by > self.dim // 2:
            raise ConfigError(f"model.dim = {self.dim}, dim_divisible_by = "
                              f"{self.dim_divisible_by}: dim must be even and dim_divisible_by "
                              "between 1 and dim // 2")
        if self.heads < 1 or self.dim % self.heads or (self.dim // self.heads) % 6:
            raise ConfigError(f"model.dim = {self.dim}, heads = {self.heads}: dim // heads must "
                              "be a whole multiple of 6 (relative position features)")


@dataclass(frozen=True)
class TrainConfig:
    """How to fine-tune (TOML section ``[train]``)."""

    strategy: Literal["single", "pairwise_regression", "pairwise_classification",
                      "in_batch"] = "pairwise_regression"
    """The paper's training strategy: its loss term and batch stream define an epoch and the
    validation loss. single: one sample at a time (SMAPE on Y or MSE on Z); pairwise_regression
    (the paper's best): MSE of prediction differences vs Z differences over pairs of people;
    pairwise_classification: which of two people expresses more (track head); in_batch: all
    pairs inside a batch of one gene's individuals (Drusinsky et al.)."""
    terms: dict[str, float] = field(default_factory=dict)
    """Loss terms and their weights (default: the strategy's term with weight 1). Terms on other
    batch streams add a batch of that stream per step (see train.losses.TERMS)."""
    single_target: Literal["Y", "Z"] = "Y"
    """single: SMAPE on log expression Y (the paper) or MSE on the z-score Z."""
    in_batch_alpha: float = 0.5
    """in_batch: weight of the per-sample MSE on Z; 1 - alpha weighs the pairwise part."""
    classification_min_percentile_diff: float = 25.0
    """pairwise_classification: keep pairs whose expression percentiles differ by more than this
    (the paper: 25)."""
    epochs: int = 20
    """Passes over the training stream (an epoch: one loader epoch of the strategy's stream)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (default: epochs x steps per epoch)."""
    lr: float = 1e-4
    """Peak learning rate of AdamW (the paper: 1e-4)."""
    weight_decay: float = 1e-3
    """AdamW weight decay (the paper: 1e-3)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    warmup_steps: int = 1000
    """Linear warm-up from 0 to lr over this many optimizer steps, then cosine decay."""
    min_lr_ratio: float = 0.0
    """Cosine decay ends at lr x min_lr_ratio."""
    grad_clip: float = 0.2
    """Clip the global gradient norm to this (0: no clipping; the paper: 0.2)."""
    effective_batch: int = 64
    """Samples (pairs) per optimizer step over all devices (the paper: 64); gradient
    accumulation = effective_batch / (batch_size x world size), which must be a whole number."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """fp32, or bf16 autocast (GPUs)."""
    tf32: bool = True
    """Allow TF32 matrix multiplies on Ampere+ GPUs."""
    compile: bool = False
    """torch.compile the model (the forward has no graph breaks)."""
    device: str = "auto"
    """auto (cuda when available, else cpu), cpu or cuda."""
    find_unused_parameters: bool = False
    """DDP: only for configurations with parameters that get no gradient."""
    seed: int = 0
    """One seed: model initialisation (the same on every rank), then per-rank seeds for dropout."""
    val_every_steps: int = 0
    """Validate every N optimizer steps (0: at the end of every epoch)."""
    val_metric: Literal["val_pearson_r", "val_loss"] = "val_pearson_r"
    """What picks the best checkpoint and drives early stopping: the mean per-gene Pearson r
    across validation individuals (higher is better) or the strategy's validation loss."""
    patience: int = 5
    """Stop after this many validations without improvement (0: never stop early)."""
    val_rc_average: bool = True
    """Validation predictions average the forward and reverse-complement windows."""
    checkpoint_every_steps: int = 0
    """Write a checkpoint every N optimizer steps (0: at every validation)."""
    keep_checkpoints: int = 3
    """Checkpoints kept besides best/ (the newest)."""
    log_every_steps: int = 10
    """Training metrics to metrics.jsonl / TensorBoard (and a plain log line when stderr is not
    a terminal) every N optimizer steps."""
    tensorboard: bool = True
    """Write DIR/runs/RUN/tensorboard/."""

    def __post_init__(self):
        terms = self.terms or {self.strategy: 1.0}
        unknown = sorted(set(terms) - set(LOSS_TERM_HEADS))
        _require([
            (not unknown, f"unknown loss term(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(LOSS_TERM_HEADS))}"),
            (self.strategy in terms, f"terms must include the strategy {self.strategy!r}"),
            (all(w >= 0 for w in terms.values()), "term weights must be >= 0"),
            (0.0 <= self.in_batch_alpha <= 1.0, "in_batch_alpha must be between 0 and 1"),
            (self.epochs > 0, "epochs must be > 0"),
            (self.max_steps is None or self.max_steps > 0, "max_steps must be > 0"),
            (self.lr > 0, "lr must be > 0"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (len(self.betas) == 2, "betas must hold two numbers"),
            (self.effective_batch > 0, "effective_batch must be > 0"),
            (self.patience >= 0 and self.keep_checkpoints >= 1,
             "patience must be >= 0 and keep_checkpoints >= 1"),
            (self.log_every_steps > 0, "log_every_steps must be > 0"),
            (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
             f"device {self.device!r}: use auto, cpu or cuda"),
        ], "train")

    @property
    def loss_terms(self) -> dict[str, float]:
        """The composed loss terms with their weights."""
        return dict(self.terms or {self.strategy: 1.0})


# -------------------------------------------------------------------------------- analysis


def _default_ridge_alphas() -> list[float]:
    return [float(10.0 ** (k / 2)) for k in range(-4, 11)]  # 0.01 ... 1e5, half-decades


@dataclass(frozen=True)
class BaselinesConfig:
    """Variant-based baselines (TOML section ``[baselines]``)."""

    methods: list[str] = field(default_factory=lambda: list(BASELINE_METHODS))
    """Methods to fit: elastic_net, lasso, ridge, top_snp."""
    min_maf: float = 0.05
    """Variants with at least this MAF among the gene's training individuals."""
    snps_only: bool = False
    """Use SNPs only (drop indels and MNPs)."""
    folds: int = 5
    """Cross-validation folds (on training individuals) choosing the penalty."""
    seed: int = 0
    """Seed of the fold assignment (the same folds for every method)."""
    n_jobs: int = 2
    """Genes fitted at once."""
    backend: Literal["processes", "threads"] = "processes"
    """joblib workers: processes (loky; both cores busy) or threads (no start-up cost, but
    scikit-learn's Python code holds the GIL, so ~1.2 cores)."""
    target: Literal["Z", "Y"] = "Z"
    """Target column of the manifest: Z (per-gene z-score, as the models) or Y (log expr)."""
    l1_ratio: float = 0.5
    """Elastic net mixing (PrediXcan: 0.5)."""
    n_alphas: int = 100
    """Penalties on the elastic net and LASSO paths (glmnet's default count)."""
    eps: float = 0.01
    """Smallest / largest penalty of those paths (glmnet's lambda.min.ratio for n < p; 0.01
    rather than scikit-learn's 0.001 makes fits 4-5x faster with near-identical choices)."""
    ridge_alphas: list[float] = field(default_factory=_default_ridge_alphas)
    """Ridge penalties tried (on standardised dosages)."""
    max_iter: int = 5000
    """Coordinate-descent iterations per penalty."""
    tol: float = 1e-3
    """Coordinate-descent tolerance (duality gap relative to the target's sum of squares).
    1e-3 rather than scikit-learn's 1e-4: 1.5-3x faster (most on weak-signal genes), within
    CV noise; set 1e-4 for tighter fits."""
    batch_genes: int = 32
    """Genes whose dosage matrices are held at once (memory bound)."""

    def __post_init__(self):
        bad = [m for m in self.methods if m not in BASELINE_METHODS]
        _require([
            (not bad and bool(self.methods),
             f"methods {bad or '[]'}: choose from {', '.join(BASELINE_METHODS)}"),
            (0.0 <= self.min_maf <= 0.5, f"min_maf = {self.min_maf} must be in [0, 0.5]"),
            (self.folds >= 2, f"folds = {self.folds} must be at least 2"),
            (self.n_jobs >= 1 and self.batch_genes >= 1,
             "n_jobs and batch_genes must be at least 1"),
            (0.0 < self.l1_ratio <= 1.0, f"l1_ratio = {self.l1_ratio} must be in (0, 1]"),
        ], "baselines")


@dataclass(frozen=True)
class EvaluateConfig:
    """Evaluation of predictions against observed expression (TOML section ``[evaluate]``)."""

    split: str = "test"
    """Split whose individuals are scored (a value of the manifest's split column)."""
    target: Literal["Y", "Z"] = "Y"
    """Observed value: Y (log expression) or Z (per-gene z-score); Pearson r is the same."""
    predictions: list[str] | None = None
    """Predictor names (folders of DIR/predictions); default every one with the split's file."""
    gene_classes: str | None = field(default=None, metadata={"path": True})
    """Table gene,class (the paper's gene_class.csv); default the split's seen/unseen genes."""
    published: str | None = field(default=None, metadata={"path": True})
    """The paper's perf_summary.csv, shown beside this run's figures in the report."""
    bootstrap: int = 1000
    """Bootstrap resamples over genes for the confidence intervals."""
    ci_level: float = 0.95
    """Coverage of the bootstrap intervals."""
    seed: int = 0
    """Seed of the bootstraps (and of the jitter in figures)."""
    min_individuals: int = 3
    """Genes with fewer individuals than this get r = NaN and are listed, not scored."""

    def __post_init__(self):
        _require([
            (self.min_individuals >= 2, f"min_individuals = {self.min_individuals}: a "
                                        "correlation needs at least 2 individuals"),
            (self.bootstrap >= 1, f"bootstrap = {self.bootstrap}: use at least 1 resample "
                                  "(1000 is the default)"),
            (0.0 < self.ci_level < 1.0,
             f"ci_level = {self.ci_level}: use a fraction such as 0.95"),
        ], "evaluate")


@dataclass(frozen=True)
class AttributeConfig:
    """Variant attribution (TOML section ``[attribute]``)."""

    batch_size: int = 16
    """Windows per forward pass on the device."""
    split: str = "test"
    """Split of the shards manifest whose individuals are attributed when none are named."""
    max_individuals: int = 10
    """At most this many individuals (the first ones, sorted, of a split); 0: no limit."""
    rc_average: bool = True
    """Average forward and reverse-complement predictions, as train.predict does."""
    device: str = "auto"
    """auto, cpu or cuda."""
    top: int = 20
    """Variants listed in the summary and labelled in the plot."""

    def __post_init__(self):
        _require([
            (self.batch_size >= 1, f"batch_size = {self.batch_size} must be >= 1"),
            (self.max_individuals >= 0,
             f"max_individuals = {self.max_individuals} must be >= 0"),
            (self.split in SPLITS, f"split = {self.split!r} must be {', '.join(SPLITS[:-1])} "
                                   f"or {SPLITS[-1]}"),
            (self.top >= 0, f"top = {self.top} must be >= 0"),
        ], "attribute")


# ------------------------------------------------------------------- joint-training data

ORGANISMS = ("human", "mouse")
"""Enformer's two output heads, and the Basenji2 data folders of ``[enformer_data]``."""

MPRA_CELL_TYPES = ("K562", "HepG2", "GM12878", "SK-N-SH", "A549")
"""The cell types of Siraj et al.'s MPRA variant-effect tables (the usual ``[mpra] cell_types``)."""



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
        _require([
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
        ], "enformer_data")


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
        _require([
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
        ], "mpra")
        names = mpra_cell_types(self)
        bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_.+-]+", n)]
        if bad or len(set(names)) != len(names):
            raise ConfigError(f"[mpra] cell types must be unique and letters, digits, _ . + - "
                              f"only; got {', '.join(names)}: set cell_types")


def mpra_cell_types(mpra: MpraConfig) -> list[str]:
    """The cell type of each ``[mpra] tables`` entry: ``cell_types``, or the file names without
    extensions."""
    return list(mpra.cell_types) or [_stem(p) for p in mpra.tables]


SECTIONS: dict[str, type] = {
    "haplotypes": HaplotypesConfig,
    "expression": ExpressionConfig,
    "simulate": SimulateConfig,
    "shard": ShardConfig,
    "loader": LoaderConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "baselines": BaselinesConfig,
    "evaluate": EvaluateConfig,
    "attribute": AttributeConfig,
    "enformer_data": EnformerDataConfig,
    "mpra": MpraConfig,
}
"""Every section of a study file and the dataclass that reads it, in file order."""
