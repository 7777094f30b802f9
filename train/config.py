"""The training stage's settings: TOML section ``[train]`` of a study file.

The model's settings are :class:`train.model.ModelConfig` (section ``[model]``), the batches'
:class:`loader.LoaderConfig` (section ``[loader]``: per-device batch size, workers,
augmentation, the window ``length`` the model sees). Load all three with
:func:`load_run_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["TrainConfig", "STRATEGIES", "load_run_config"]

STRATEGIES = ("single", "pairwise_regression", "pairwise_classification", "in_batch")


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
        from train.losses import TERMS  # the registry of loss terms

        terms = self.terms or {self.strategy: 1.0}
        unknown = sorted(set(terms) - set(TERMS))
        checks = [
            (not unknown, f"unknown loss term(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(TERMS))}"),
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
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"[train] {message}")

    @property
    def loss_terms(self) -> dict[str, float]:
        """The composed loss terms with their weights."""
        return dict(self.terms or {self.strategy: 1.0})


def load_run_config(path, overrides: dict[str, dict] | None = None):
    """(ModelConfig, TrainConfig, LoaderConfig) from a study TOML plus ``{section: {key: value}}``.

    The whole file is read and checked (:func:`hapflow.config.load_study`), so unknown
    sections, wrong types and broken cross-section rules are errors here too.

    Raises
    ------
    prep.config.ConfigError
        Unknown keys or values of the wrong type, naming the file and key.
    ValueError
        Values out of range, naming the section and setting.
    """
    from hapflow.config import load_study

    study = load_study(path, overrides, need=("model", "train", "loader"))
    return study.model, study.train, study.loader
