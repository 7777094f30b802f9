"""The fine-tuning loop. Read it top to bottom: :func:`fine_tune` is the whole story.

One GPU or CPU process, or many with torchrun (NCCL on GPUs, gloo on CPU)::

    python -m train.run --config configs/demo.toml --workdir work/demo
    torchrun --nproc-per-node 8 -m train.run --config configs/geuvadis.toml --workdir /scratch/g
    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m train.run --config configs/geuvadis.toml --workdir /scratch/g --name pairwise

What happens, in order: the run folder is opened (the resolved study saved in it); every rank
builds the loaders of the batch streams its loss terms need (:mod:`train.data`), then the model
with the same seed (identical weights on every rank), with the BatchNorm policy and freezing
applied once, wrapped in DDP and torch.compile; AdamW with linear warm-up and cosine decay. Each
optimizer step (:func:`train_step`) runs micro-batches up to the effective batch (one-hot built
on the device, every stream's sequences in one forward), clips the gradients and steps; then
the loop logs metrics, validates (:func:`validate`: the strategy's loss and per-gene Pearson r
across validation individuals, forward and reverse complement averaged, gathered from all
ranks), keeps the best model (``best/``), stops early, and saves checkpoints
(:func:`train.checkpoint.save_checkpoint`). At the end the best model is exported as
``model.safetensors`` + ``model.json`` (:func:`export`).

Rank 0's log lines also go to ``DIR/runs/NAME/train.log`` (appended on resume); validation
shows progress (a bar on a terminal, a line every 30 s in a log) and the ETA counts it.
``summary.json`` holds steps, wall time, samples/s, and the final and best metrics.

Exact resume: a checkpoint holds model, optimizer, scheduler, step, every stream's loader
position and every rank's RNG states. A resume must name a run with a checkpoint, and the
settings that set the schedule, the data or the model must not have changed
(:mod:`train.resume`; ``--allow-schedule-change`` allows schedule changes and logs what was
recomputed). Data-loader iterators are created without touching the
global RNG (:func:`train.data.rng_neutral`), so dropout draws do not depend on where a run was
resumed: on CPU in fp32 eager mode a resumed run's per-step losses equal the uninterrupted
run's. ``metrics.jsonl`` is cut back to the checkpoint's step on resume.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hapflow.config import StudyConfig, check_study, config_to_dict
from hapflow.io import atomic_write_json
from hapflow.layout import Workdir
from hapflow.progress import progress
from hapflow.sections import LoaderConfig, TrainConfig
from train.checkpoint import latest_checkpoint, restore_checkpoint, save_checkpoint
from train.data import Streams, build_streams, forever, rng_neutral
from train.distributed import (
    Dist,
    all_mean,
    barrier,
    rank_seed,
    seed_everything,
    setup,
    teardown,
)
from train.export import load_exported, save_exported
from train.inference import autocast, per_gene_pearson, predict_loader
from train.joint import (
    joint_heads,
    model_inputs,
    stream_outputs,
    validate_joint,
)
from train.losses import TERMS, weighted_loss
from train.metrics import MetricsLog, hms, run_log, run_summary, truncate_metrics, val_metrics
from train.model import ExpressionModel, build_model, unwrap
from train.resume import apply_schedule, check_resumable
from train.schedule import accumulation_steps, warmup_cosine

__all__ = ["TrainError", "fine_tune", "train_step", "step_loss", "validate", "export",
           "warmup_cosine", "accumulation_steps"]

log = logging.getLogger("train")

SECTIONS = ("model", "train", "loader")
"""The study sections a run reads."""


class TrainError(ValueError):
    """The run cannot start or continue as configured; the message says what to do."""


@dataclass
class Run:
    """Where a run reads and writes, and how long it is."""

    name: str
    dir: Path
    """``DIR/runs/NAME``: config.toml, data.json, metrics.jsonl, checkpoints/, best/, the model."""
    shards: Path
    """``DIR/shards``."""
    latest: Path | None
    """The newest complete checkpoint (None: none yet)."""
    accum: int = 1
    """Micro-batches per optimizer step."""
    total_steps: int = 0
    """Optimizer steps of the whole run."""
    steps_per_epoch: int = 0
    """Optimizer steps of one epoch of the strategy's stream."""
    epoch_batches: int = 0
    """Micro-steps of one epoch (each reads a batch of every stream the mixing schedule draws
    there; with mixing = "all", the strategy stream's batches per rank)."""
    items_per_batch: int = 0
    """Samples (pairs) of one micro-step over all ranks: batch size x world size."""
    saved: StudyConfig | None = None
    """A resumed run's settings as it started (its config.toml before this start)."""
    schedule_changes: list[str] = dataclasses.field(default_factory=list)
    """A resumed run's schedule settings changed with --allow-schedule-change."""

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"


@dataclass
class TrainState:
    """What the loop carries from step to step; saved in every checkpoint (as a dict)."""

    step: int = 0
    best: float | None = None
    best_step: int | None = None
    bad: int = 0
    """Validations in a row without improvement (early stopping)."""
    stopped_early: bool = False
    wall_seconds: float = 0.0
    """Wall time of the steps done, over every start of the run (validation included)."""
    val_seconds: float = 0.0
    """Of which validating."""
    samples: int = 0
    """Samples (pairs) of the training steps done, over all ranks."""
    last_loss: float | None = None
    """The last logged training loss (mean over ranks)."""
    last_val: dict | None = None
    """The last validation's metrics."""
    best_val: dict | None = None
    """The best validation's metrics (by [train] val_metric)."""
    epoch_micro: int = 0
    """Micro-steps done in the current epoch (where the mixing schedule stands)."""
    last_terms: dict = dataclasses.field(default_factory=dict)
    """Each loss term's last value (this rank's; a term is computed only on micro-steps that
    draw its stream)."""


@dataclass
class Trainer:
    """The model and what updates it."""

    model: ExpressionModel
    """The plain module: checkpoints and exports hold its state dict."""
    net: torch.nn.Module
    """What runs the forward: the model, wrapped in DDP and/or torch.compile."""
    ddp: torch.nn.Module
    """The DDP wrapper (``no_sync`` while accumulating), or the model in one process."""
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR


def fine_tune(study: StudyConfig, workdir: str | Path | Workdir, name: str | None = None,
              resume: bool = False, allow_schedule_change: bool = False) -> dict:
    """Fine-tune on a study's shards (``DIR/shards``) into ``DIR/runs/NAME``.

    Parameters
    ----------
    study : the loaded study (:func:`hapflow.config.load_study`): [model], [train], [loader]
    workdir : the study folder (a :class:`~hapflow.layout.Workdir` or a path)
    name : run name (default: the strategy)
    resume : continue from the run's latest checkpoint (the run must have one, and its
        schedule, data and model settings must be unchanged: :mod:`train.resume`)
    allow_schedule_change : with ``resume``, continue with changed schedule settings (the
        learning-rate schedule is recomputed, and the change logged)

    Returns
    -------
    dict: run folder, steps, best validation metric and step (on every rank).
    """
    # the run reads these three sections: they count as present (saved in the run's
    # config.toml) and the rules that join them are checked (hapflow.config.check_study)
    study = check_study(dataclasses.replace(study, present=study.present | set(SECTIONS)),
                        only=set(SECTIONS))
    cfg = study.train
    d = setup(cfg.device)  # distributed: set up once here, torn down once below
    try:
        run = open_run(study, Workdir(workdir), name or cfg.strategy, resume, d,
                       allow_schedule_change)
        with run_log(run.dir / "train.log", d.is_main) as file:
            if d.is_main:
                log.info("%s run %s", f"Resuming ({run.latest.name})" if resume else "Starting",
                         run.dir)
            streams = build_streams(run.shards, study.loader, cfg, d, Workdir(workdir))
            plan_steps(run, streams, study.loader, cfg, d)
            trainer = build_trainer(study, streams.length, run.total_steps, d,
                                    joint_heads(streams))
            state = resume_run(run, trainer, streams, d, cfg) if resume else TrainState()
            if d.is_main and state.step == 0:
                (run.dir / "metrics.jsonl").unlink(missing_ok=True)
            barrier()
            metrics = MetricsLog(run.dir, run.total_steps, state.step, d.is_main,
                                 cfg.tensorboard, cfg.val_every_steps, run.steps_per_epoch, file)
            try:
                train(trainer, streams, state, study, run, metrics, d)
            finally:
                metrics.close()
            return export(trainer.model, study, streams.length, run, state, d)
    finally:
        teardown()


# -- before the first step ------------------------------------------------------------------------

def open_run(study: StudyConfig, layout: Workdir, name: str, resume: bool, d: Dist,
             allow_schedule_change: bool = False) -> Run:
    """Check the shards are there and the run may start (or resume:
    :func:`train.resume.check_resumable`); rank 0 saves the resolved study."""
    if not layout.manifest.exists():
        raise TrainError(f"{layout.shards} holds no shards (no manifest.parquet): run `python -m "
                         f"prep.shard --config ... --workdir {layout}` first")
    run = Run(name=name, dir=layout.run(name), shards=layout.shards, latest=None)
    run.latest = latest_checkpoint(run.checkpoints)
    if resume:
        run.saved, run.schedule_changes = check_resumable(study, layout, name, run.latest,
                                                          allow_schedule_change)
    elif run.latest is not None:
        raise TrainError(f"run {run.dir} already has checkpoints: pass --resume to continue it, "
                         "or --name NEW to start another run")
    if d.is_main:
        run.dir.mkdir(parents=True, exist_ok=True)
        study.save(run.dir / "config.toml")  # the whole resolved study, overrides applied
    return run


def plan_steps(run: Run, streams: Streams, loader_cfg: LoaderConfig, cfg: TrainConfig,
               d: Dist) -> None:
    """Micro-batches per step and steps in all (into ``run``); rank 0 logs the plan and writes
    ``data.json``."""
    main = streams.train[streams.main]
    run.accum = accumulation_steps(cfg.effective_batch, loader_cfg.batch_size, d.world_size)
    micro = streams.epoch_micro_steps
    steps_per_epoch = math.ceil(micro / run.accum)
    run.steps_per_epoch = steps_per_epoch
    run.epoch_batches = micro
    run.items_per_batch = loader_cfg.batch_size * d.world_size
    run.total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    if d.is_main:
        log.info("Fine-tuning %s on %s: %d train batches of %d per device per epoch, %d device(s), "
                 "%d micro-batch(es) per step -> %d steps per epoch, %d steps in all; windows "
                 "of %d bp", cfg.strategy, run.shards, len(main), loader_cfg.batch_size,
                 d.world_size, run.accum, steps_per_epoch, run.total_steps, streams.length)
        if len(streams.train) > 1:
            log.info("Streams %s, mixing %s: %d micro-steps per epoch (period %s)",
                     ", ".join(f"{s} ({len(ld)} batches per epoch)"
                               for s, ld in streams.train.items()), cfg.mixing, micro,
                     " ".join("+".join(streams.schedule(j))
                              for j in range(streams.schedule.period)))
        _write_data_record(run, loader_cfg, streams.length)


def build_trainer(study: StudyConfig, length: int, total_steps: int, d: Dist,
                  heads: dict | None = None) -> Trainer:
    """The model (identical initial weights on every rank, then per-rank seeds for dropout),
    with the joint heads ``heads`` asks for (:func:`joint_heads`), wrapped for DDP and compile;
    AdamW with linear warm-up and cosine decay."""
    cfg = study.train
    seed_everything(cfg.seed)
    model = build_model(study.model, length, **(heads or {})).to(d.device)
    seed_everything(rank_seed(cfg.seed, d.rank))
    if d.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32
    net, ddp = parallelize(model, cfg, d)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas),
                                  weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(cfg.warmup_steps, total_steps, cfg.min_lr_ratio))
    return Trainer(model, net, ddp, params, optimizer, scheduler)


def parallelize(model: torch.nn.Module, cfg: TrainConfig, d: Dist
                ) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(what runs the forward, the DDP wrapper): DDP first, then compile (so DDP's optimizer
    can split the graph)."""
    net = ddp = model
    if d.distributed:
        net = ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[d.device.index] if d.device.type == "cuda" else None,
            find_unused_parameters=cfg.find_unused_parameters)
    if cfg.compile:
        net = torch.compile(net)
    return net, ddp


def resume_run(run: Run, t: Trainer, streams: Streams, d: Dist, cfg: TrainConfig
               ) -> TrainState:
    """Continue from the run's latest checkpoint (:func:`check_resumable` made sure there is
    one); with schedule changes, the learning rate follows the new schedule from here on."""
    saved = restore_checkpoint(run.latest, t.model, t.optimizer, t.scheduler, streams.train, d)
    known = {f.name for f in dataclasses.fields(TrainState)}
    state = TrainState(**{k: v for k, v in saved.items() if k in known})
    if run.schedule_changes:
        factor = warmup_cosine(cfg.warmup_steps, run.total_steps, cfg.min_lr_ratio)
        old_lr, new_lr = apply_schedule(t.optimizer, t.scheduler, cfg.lr, factor, state.step)
        if d.is_main:
            log.warning("Resuming with a changed schedule (--allow-schedule-change): %s; "
                        "recomputed: steps in all %d -> %d, learning rate at step %d %.3g -> "
                        "%.3g (the new schedule from here on)",
                        ", ".join(run.schedule_changes), _total_steps(run, cfg=run.saved.train),
                        run.total_steps, state.step, old_lr, new_lr)
    if d.is_main:
        truncate_metrics(run.dir / "metrics.jsonl", state.step)
        main = streams.train[streams.main]
        log.info("Resumed %s at step %d (epoch %d, batch %d)", run.latest, state.step,
                 main.epoch, main.batch)
    return state


def _total_steps(run: Run, cfg: TrainConfig) -> int:
    """The run's steps in all under ``cfg``'s schedule (same data and devices)."""
    accum = max(1, cfg.effective_batch // run.items_per_batch)
    return cfg.max_steps or cfg.epochs * math.ceil(run.epoch_batches / accum)


# -- the loop -------------------------------------------------------------------------------------

def train(t: Trainer, streams: Streams, state: TrainState, study: StudyConfig, run: Run,
          metrics: MetricsLog, d: Dist) -> None:
    """Optimizer steps until ``run.total_steps`` (or early stopping), epoch by epoch of the
    strategy's stream: step, log, validate, checkpoint. Logged records carry
    ``wall_seconds`` (the run's wall time so far, over every start); validation records also
    ``seconds`` (the validation's own time)."""
    cfg = study.train
    main = streams.train[streams.main]
    others = {s: forever(loader) for s, loader in streams.train.items() if s != streams.main}
    clock, base = time.monotonic(), state.wall_seconds
    if cfg.mixing == "all":  # micro-step j of the epoch reads main batch j
        state.epoch_micro = main.batch
    while state.step < run.total_steps and not state.stopped_early:
        epoch = main.epoch
        batches = rng_neutral(main)  # from the loader's position to the epoch's end
        left = run.epoch_batches - state.epoch_micro
        while left > 0 and state.step < run.total_steps and not state.stopped_early:
            n_micro = min(run.accum, left)
            left -= n_micro
            drawn = streams.schedule.counts(state.epoch_micro + n_micro)[streams.main] - \
                streams.schedule.counts(state.epoch_micro)[streams.main]
            groups = streams.micro_batches(batches, others, n_micro, end_of_epoch=left == 0,
                                           start=state.epoch_micro)
            record = train_step(t, groups, n_micro, cfg, d)
            state.epoch_micro = 0 if left == 0 else state.epoch_micro + n_micro
            state.last_terms.update(record["terms"])
            state.step += 1
            state.samples += drawn * run.items_per_batch
            last = state.step == run.total_steps
            if state.step % cfg.log_every_steps == 0 or last:
                logged = _train_record(record, state.step, epoch, t,
                                       drawn * run.items_per_batch / max(n_micro, 1))
                logged.update({f"loss_{k}": float(all_mean(torch.tensor(v, device=d.device)))
                               for k, v in sorted(state.last_terms.items())})
                logged["wall_seconds"] = round(base + time.monotonic() - clock, 3)
                state.last_loss = logged["loss"]
                metrics.train_step(logged)
            validated = (state.step % cfg.val_every_steps == 0 if cfg.val_every_steps
                         else left == 0) or last
            if validated:
                started = time.monotonic()
                result = validate(t.model, streams, cfg, d)
                seconds = time.monotonic() - started
                state.val_seconds += seconds
                result.update({"kind": "val", "step": state.step, "epoch": epoch,
                               "seconds": round(seconds, 3),
                               "wall_seconds": round(base + time.monotonic() - clock, 3)})
                metrics.validation(result, seconds)
                state.last_val = val_metrics(result)
                keep_best(t.model, study, streams.length, run, state, result, d)
            state.wall_seconds = base + time.monotonic() - clock
            if (state.step % cfg.checkpoint_every_steps == 0 if cfg.checkpoint_every_steps
                    else validated) or last or state.stopped_early:
                save_checkpoint(run.checkpoints, state.step, t.model, t.optimizer, t.scheduler,
                                streams.train, dataclasses.asdict(state), d,
                                cfg.keep_checkpoints)


def train_step(t: Trainer, groups: Iterator[dict[str, dict]], n_micro: int, cfg: TrainConfig,
               d: Dist) -> dict:
    """One optimizer step over ``n_micro`` micro-batch groups: forward, loss and backward on
    each (gradients all-reduced on the last one only), then clip, step and schedule.

    Returns
    -------
    dict: ``loss`` (this rank's mean over the micro-batches, a tensor), ``grad_norm``,
    ``n_micro``, ``data_wait`` and ``started`` (seconds; perf_counter), ``terms`` (each term's
    last value in this step, floats; only the terms of streams drawn).
    """
    started = time.perf_counter()
    wait = 0.0
    t.net.train()
    loss_sum = torch.zeros((), device=d.device)
    terms = {}
    t_data = time.perf_counter()
    for m, group in enumerate(groups):
        wait += time.perf_counter() - t_data
        # accumulate locally; all-reduce the gradients on the last micro-batch
        sync = contextlib.nullcontext() if m == n_micro - 1 or not d.distributed \
            else t.ddp.no_sync()
        with sync:
            loss, parts = step_loss(t.net, group, cfg, d.device)
            (loss / n_micro).backward()
        loss_sum += loss.detach()
        terms.update(parts)
        t_data = time.perf_counter()
    grad_norm = _clip(t.params, cfg.grad_clip)
    t.optimizer.step()
    t.scheduler.step()
    t.optimizer.zero_grad(set_to_none=True)
    return {"loss": loss_sum / n_micro, "grad_norm": grad_norm, "n_micro": n_micro,
            "data_wait": wait, "started": started,
            "terms": {k: float(v) for k, v in terms.items()}}


def step_loss(net, group: dict[str, dict], cfg: TrainConfig, device: torch.device
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted loss of one micro-step: the model on every stream's sequences in one
    forward (pairs as their a and b halves, so BatchNorm sees one batch and DDP one forward per
    backward), then :func:`train.losses.weighted_loss`.

    Parameters
    ----------
    net : model (possibly DDP / compiled): ``net(x (N, 2, L, 4), tss_index (N,)) -> (N,)``
    group : {stream: batch}; sample streams carry ``seq`` (B, 2, L) uint8, pair streams
        ``seq_a`` / ``seq_b``; every batch carries ``tss_index`` (B,) and ``valid`` (B,)
    cfg : TrainConfig (terms and their weights)

    With joint heads in the model (joint-data terms configured, :mod:`train.joint`), every stream of the group goes
    through one model call that runs each length's sequences in one trunk forward (personal
    windows and MPRA oligos at L, Enformer records at 196,608 bp); the call's ``anchor`` (0 x
    the unused heads) joins the loss so that DDP sees a gradient for every parameter.

    Returns
    -------
    (loss, {term: value}) scalar tensors on ``device``.
    """
    plain = unwrap(net)
    joint = bool(len(plain.track_heads)) or plain.mpra_head is not None
    inputs = model_inputs(group, plain.length, device)
    sizes = inputs.pop("sizes")
    with autocast(device, cfg.precision):
        # the plain call keeps the compiled expression forward's signature
        out = net(**inputs) if joint else {"pred": net(inputs["x"], inputs["tss_index"]).float()}
    loss, parts = weighted_loss(stream_outputs(out, group, sizes), group, cfg, device)
    return (loss + out["anchor"].float(), parts) if joint else (loss, parts)


def validate(model, streams: Streams, cfg: TrainConfig, d: Dist) -> dict:
    """The strategy's loss on the validation stream and per-gene Pearson r across validation
    individuals (predictions forward + reverse complement averaged, unless
    ``val_rc_average = false``), over all ranks; rank 0 shows progress (a bar on a terminal,
    else a line every 30 s).

    Returns
    -------
    dict: ``val_loss``, ``val_pearson_r`` (mean over genes), ``val_pearson_r_median``,
    ``val_genes``; with joint streams their metrics too (:func:`train.joint.validate_joint`:
    ``val_enformer_human_r``, ``val_mpra_r``, ...).
    """
    model.eval()
    term = TERMS[cfg.strategy]
    total = torch.zeros(2, dtype=torch.float64, device=d.device)
    one = dataclasses.replace(cfg, terms={cfg.strategy: 1.0})  # the strategy's term alone
    n_joint = sum(len(ld) for ld in streams.joint_val.values())
    with progress(total=len(streams.val) + len(streams.eval) + n_joint, desc="validating",
                  unit="batch",
                  leave=False, disable=not d.is_main or not log.isEnabledFor(logging.INFO)
                  ) as bar:
        with torch.no_grad():
            for batch in _counted(rng_neutral(streams.val), bar):
                loss, _ = step_loss(model, {term.stream: batch}, one, d.device)
                n = float(batch["valid"].sum())
                total += torch.tensor([float(loss) * n, n], dtype=torch.float64,
                                      device=d.device)
        if d.distributed:
            torch.distributed.all_reduce(total)
        preds = predict_loader(model, _counted(rng_neutral(streams.eval), bar), d.device,
                               cfg.precision, cfg.val_rc_average)
        joint = validate_joint(model, streams.joint_val, cfg, d, bar)
    r = per_gene_pearson(preds["gene"], preds["prediction"], preds["Y"])
    model.train()
    values = np.array(list(r.values())) if r else np.array([np.nan])
    return {"val_loss": float(total[0] / total[1].clamp(min=1)),
            "val_pearson_r": float(np.mean(values)),
            "val_pearson_r_median": float(np.median(values)), "val_genes": len(r), **joint}


def keep_best(model: ExpressionModel, study: StudyConfig, length: int, run: Run,
              state: TrainState, record: dict, d: Dist) -> None:
    """After a validation: export an improved model to ``best/`` (rank 0), or count one more
    validation without improvement and stop early after ``patience`` of them."""
    cfg = study.train
    if _improved(record[cfg.val_metric], state.best, cfg.val_metric):
        state.best, state.best_step, state.bad = record[cfg.val_metric], state.step, 0
        state.best_val = val_metrics(record)
        if d.is_main:
            save_exported(model, study.model, length, run.dir / "best")
            atomic_write_json(run.dir / "best" / "best.json", record)
        return
    state.bad += 1
    if cfg.patience and state.bad >= cfg.patience:
        state.stopped_early = True
        if d.is_main:
            log.info("Early stop at step %d: %s has not improved on %.4f (step %d) for %d "
                     "validations", state.step, cfg.val_metric, state.best, state.best_step,
                     state.bad)


# -- after the last step --------------------------------------------------------------------------

def export(model: ExpressionModel, study: StudyConfig, length: int, run: Run,
           state: TrainState, d: Dist) -> dict:
    """Rank 0 exports the best validated model (else the last) into the run folder and writes
    ``summary.json``; returns the summary on every rank."""
    cfg = study.train
    if d.is_main:
        best = run.dir / "best"
        if (best / "model.json").exists():
            save_exported(load_exported(best), study.model, length, run.dir)
        else:
            save_exported(model, study.model, length, run.dir)
        summary = run_summary(run.dir, state, cfg.val_metric)
        atomic_write_json(run.dir / "summary.json", summary)
        log.info("Done: %d steps in %s (%.1f samples/s); best %s %.4f at step %s; model in %s",
                 state.step, hms(state.wall_seconds), summary["samples_per_s"] or 0.0,
                 cfg.val_metric, state.best if state.best is not None else float("nan"),
                 state.best_step, run.dir)
    barrier()
    return {"run": str(run.dir), "steps": state.step, "best": state.best,
            "best_step": state.best_step, "stopped_early": state.stopped_early}


def _counted(iterable, bar):
    """``iterable``, one ``bar.update(1)`` per item."""
    for item in iterable:
        yield item
        bar.update(1)


# -- small pieces -------------------------------------------------------------------------------

def _train_record(step_out: dict, step: int, epoch: int, t: Trainer, items_per_batch: float
                  ) -> dict:
    """A metrics.jsonl line of a training step (the loss averaged over ranks: a collective)."""
    loss = float(all_mean(step_out["loss"]))
    seconds = time.perf_counter() - step_out["started"]
    items = step_out["n_micro"] * items_per_batch
    return {"kind": "train", "step": step, "epoch": epoch, "loss": loss,
            "lr": t.scheduler.get_last_lr()[0], "grad_norm": step_out["grad_norm"],
            "samples_per_s": items / seconds, "data_wait": step_out["data_wait"] / seconds}


def _clip(params, max_norm: float) -> float:
    if max_norm and max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    grads = [p.grad.detach().norm() for p in params if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


def _improved(value: float, best: float | None, metric: str) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if metric == "val_pearson_r" else value < best


def _write_data_record(run: Run, loader_cfg: LoaderConfig, length: int) -> None:
    """``data.json``: how the training windows were made (for predictions from a VCF)."""
    meta_path = run.shards / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    hap = meta.get("config", {}).get("haplotypes", {})
    record = {
        "shards": str(run.shards), "build": meta.get("build"), "length": length,
        "stored_length": hap.get("length"), "haplotypes": hap,
        "loader": config_to_dict(loader_cfg),
    }
    atomic_write_json(run.dir / "data.json", record)
