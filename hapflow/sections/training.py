"""The sections of training: ``[loader]``, ``[model]`` and ``[train]``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hapflow.sections.base import (
    LOSS_TERM_HEADS,
    LOSS_TERM_STREAMS,
    ConfigError,
    require,
)

# ---------------------------------------------------------------------------------- loader


@dataclass(frozen=True)
class LoaderConfig:
    """How shards become batches (TOML section ``[loader]``)."""

    batch_size: int = 8
    """Samples (or pairs) per batch on each rank."""
    num_workers: int = 2
    """DataLoader worker processes per rank, each building windows on one thread (0: load in
    the main process, on `threads` threads)."""
    threads: int = 1
    """num_workers = 0: threads building each batch's windows in the main process; more than
    one pay off only on cores no other process (nor the training step) uses."""
    shuffle_buffer: int = 1024
    """Train modes: each lane is shuffled in blocks of shuffle_buffer / lanes items (see lanes);
    a worker draws the augmentation of shuffle_buffer items (rounded up to a multiple of
    batch_size) at once and keeps a gene read until no batch within that many items needs it."""
    lanes: int | None = None
    """Train modes (train, pairwise, gene): the epoch's reading order is cut into this many lanes
    read side by side (one sample, in gene mode one batch, of each lane in turn), so a batch
    holds samples of about min(lanes, batch_size) genes, where consecutive samples of the
    gene-sorted shards would give few. Default (None): batch_size. More lanes than batch_size
    (read in a spread order) make the genes a run of batches sees change faster: each lane
    covers fewer genes of the epoch. Each worker then reads that many places of its shards at
    once and holds about two genes per lane (each its reference span and edits, ~0.3 MB at
    196,608 bp); 1: one lane (consecutive samples, a plain block shuffle)."""
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
    """Length of the windows in batches around the TSS: a multiple of 128 up to the stored L
    ([haplotypes] length of the build, the widest window); default: the stored L."""
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
    """A corrupt gene record or shard: raise an error naming shard and member, or skip it (the
    samples of a corrupt gene, or of a broken shard's genes not yet read, become padding with
    valid = False, counted in loader.skipped and logged)."""
    prefetch_factor: int = 2
    """Batches each worker prepares ahead."""
    pin_memory: bool = False
    """Return batches in pinned memory (faster host-to-GPU copies)."""
    keep_freed_memory: bool = True
    """Loading processes (the workers; the main process too when num_workers = 0) keep freed
    memory for reuse instead of returning it to the OS (glibc only), so each batch's buffers do
    not page-fault fresh memory, at the cost of RSS staying at peak."""
    worker_start: Literal["default", "fork", "spawn", "forkserver"] = "default"
    """How worker processes start; "default" is Python's default (fork on Linux up to Python
    3.13; inside processes started by spawn, spawn, which re-imports everything per worker)."""
    timeout_s: float = 120.0
    """Network read timeout for http(s) shards, in seconds."""
    verify: bool = False
    """Verify the split's shards (prep.verify: file checksums against meta.json, every member)
    before loading; needs a local shards folder. Members are always checked as they are read."""

    def __post_init__(self):
        require(self, "loader", [
            (self.batch_size > 0, "batch_size must be > 0"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (self.threads > 0, "threads must be > 0"),
            (self.shuffle_buffer >= 0, "shuffle_buffer must be >= 0"),
            (self.lanes is None or self.lanes > 0, "lanes must be > 0"),
            (self.seed >= 0, "seed must be >= 0"),
            (0.0 <= self.rc_prob <= 1.0, "rc_prob must be between 0 and 1"),
            (self.max_shift >= 0, "max_shift must be >= 0"),
            (self.length is None or (self.length > 0 and self.length % 128 == 0),
             "length must be a positive multiple of 128 (Enformer's bin)"),
            (self.epoch_batches is None or self.epoch_batches > 0, "epoch_batches must be > 0"),
            (self.pairs_per_gene > 0 and self.val_pairs_per_gene > 0,
             "pairs_per_gene and val_pairs_per_gene must be > 0"),
            (self.min_percentile_diff is None or self.min_percentile_diff >= 0,
             "min_percentile_diff must be >= 0"),
            (self.prefetch_factor > 0, "prefetch_factor must be > 0"),
            (self.timeout_s > 0, "timeout_s must be > 0"),
        ])


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
    """Random init: tracks of the human output head (used by head = "track" and the
    enformer_human loss term)."""
    output_heads_mouse: int = 1643
    """Random init: tracks of the mouse output head (built only for the enformer_mouse loss
    term)."""
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
        require(self, "model")
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
    """Loss terms and their weights (default: the strategy's term with weight 1), each counted
    once. Terms on other batch streams read that stream too (see train.losses.TERMS; joint
    training: enformer_human, enformer_mouse read DIR/enformer_data, mpra reads DIR/mpra), e.g.
    {pairwise_regression = 1.0, enformer_human = 0.5, mpra = 0.1}."""
    mixing: Literal["all", "round_robin", "ratio"] = "all"
    """Which streams a micro-step draws: all (one batch of every stream), round_robin (one
    stream per micro-step, in turn) or ratio (one stream per micro-step, as often as
    stream_ratios say, spread evenly). An epoch ends when the strategy's stream has been read
    once; terms of streams a micro-step does not draw add nothing to it."""
    stream_ratios: dict[str, float] = field(default_factory=dict)
    """mixing = "ratio": how often each stream is drawn, e.g. {pairs = 4, enformer_human = 1,
    mpra = 1}; streams left out count 1. Streams: samples, pairs, pairs_p, gene,
    enformer_human, enformer_mouse, mpra (those of the configured terms only)."""
    enformer_batch_size: int = 1
    """Records per batch of the enformer_human / enformer_mouse streams on each rank (196,608 bp
    each)."""
    mpra_batch_size: int = 64
    """Oligo pairs per batch of the mpra stream on each rank."""
    joint_val_batches: int | None = None
    """Validation batches per rank of each joint stream (Enformer records, MPRA pairs);
    default: the whole validation split."""
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
        streams = {LOSS_TERM_STREAMS[t] for t in terms if t in LOSS_TERM_STREAMS}
        bad_streams = sorted(set(self.stream_ratios) - streams)
        require(self, "train", [
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
            (not bad_streams, f"stream_ratios names stream(s) {', '.join(bad_streams)} that no "
                              f"configured term reads; the terms' streams: "
                              f"{', '.join(sorted(streams))}"),
            (all(r > 0 for r in self.stream_ratios.values()), "stream_ratios must be > 0"),
            (self.enformer_batch_size > 0 and self.mpra_batch_size > 0,
             "enformer_batch_size and mpra_batch_size must be > 0"),
            (self.joint_val_batches is None or self.joint_val_batches > 0,
             "joint_val_batches must be > 0"),
            (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
             f"device {self.device!r}: use auto, cpu or cuda"),
        ])

    @property
    def loss_terms(self) -> dict[str, float]:
        """The composed loss terms with their weights."""
        return dict(self.terms or {self.strategy: 1.0})
