"""The fine-tuning loop. Read it top to bottom: :func:`fine_tune` is the whole story.

One GPU or CPU process, or many with torchrun (NCCL on GPUs, gloo on CPU)::

    python -m train.run --config configs/demo.toml --workdir work/demo
    torchrun --nproc-per-node 8 -m train.run --config configs/geuvadis.toml --workdir /scratch/g
    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m train.run --config configs/geuvadis.toml --workdir /scratch/g --name pairwise

What happens, in order: settings are read and checked; every rank builds the loaders of the
batch streams its loss terms need (:mod:`train.losses`), then the model with the same seed
(identical weights on every rank), applies the BatchNorm policy and freezing once, wraps it in
DDP and torch.compile; AdamW with linear warm-up and cosine decay; gradient accumulation to the
effective batch; per optimizer step: micro-batches (one-hot built on the device, every stream's
sequences in one forward), gradient clipping, step; validation (the strategy's loss and
per-gene Pearson r across validation individuals, forward and reverse complement averaged,
gathered from all ranks), best model, early stopping, checkpoints; at the end the best model is
exported as ``model.safetensors`` + ``model.json``.

Exact resume: a checkpoint holds model, optimizer, scheduler, step, every stream's loader
position and every rank's RNG states. Data-loader iterators are created without touching the
global RNG (:func:`_rng_neutral`), so dropout draws do not depend on where a run was resumed:
on CPU in fp32 eager mode a resumed run's per-step losses equal the uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import torch

from hapflow.config import config_to_dict
from hapflow.io import atomic_write_text
from hapflow.layout import Workdir
from hapflow.sections import TrainConfig
from loader import make_loader
from train.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint
from train.distributed import (
    Dist,
    all_gather_object,
    all_mean,
    barrier,
    rank_seed,
    seed_everything,
    setup,
    teardown,
)
from train.inference import forward_codes, per_gene_pearson, predict_loader
from train.losses import STREAMS, TERMS
from train.metrics import MetricsLog, truncate_metrics

__all__ = ["TrainError", "fine_tune", "step_loss", "warmup_cosine", "accumulation_steps"]

log = logging.getLogger("train")


class TrainError(ValueError):
    """The run cannot start or continue as configured; the message says what to do."""


def fine_tune(config_path: str | Path, workdir: str | Path, name: str | None = None,
              resume: bool = False, overrides: dict[str, dict] | None = None) -> dict:
    """Fine-tune on a study's shards (``DIR/shards``) into ``DIR/runs/NAME``.

    Parameters
    ----------
    config_path : the study TOML ([model], [train], [loader])
    workdir : the study folder
    name : run name (default: the strategy)
    resume : continue from the run's latest checkpoint
    overrides : ``{section: {key: value}}`` applied over the file

    Returns
    -------
    dict: run folder, steps, best validation metric and step (on every rank).
    """
    from hapflow.config import load_study

    # the whole file, checked once before any work; the run reads three of its sections
    study = load_study(config_path, overrides, need=("model", "train", "loader"))
    model_cfg, cfg, loader_cfg = study.model, study.train, study.loader
    d = setup(cfg.device)
    try:
        return _fine_tune(model_cfg, cfg, loader_cfg, d, Path(workdir), name or cfg.strategy,
                          resume, study)
    finally:
        teardown()


def _fine_tune(model_cfg, cfg: TrainConfig, loader_cfg, d: Dist, workdir: Path, name: str,
               resume: bool, study) -> dict:
    from train.model import build_model, save_exported

    # -- where: the shards in, the run folder out -------------------------------------------
    layout = Workdir(workdir)
    shards = layout.shards
    if not (shards / "manifest.parquet").exists():
        raise TrainError(f"{shards} holds no shards (no manifest.parquet): run `python -m "
                         f"prep.shard --config ... --workdir {workdir}` first")
    run_dir = layout.runs / name
    ckpt_dir = run_dir / "checkpoints"
    latest = latest_checkpoint(ckpt_dir)
    if latest is not None and not resume:
        raise TrainError(f"run {run_dir} already has checkpoints: pass --resume to continue it, "
                         "or --name NEW to start another run")
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        study.save(run_dir / "config.toml")  # the whole resolved study, overrides applied
    terms = cfg.loss_terms
    for t in terms:
        need = TERMS[t].head
        if need is not None and model_cfg.head != need:
            raise TrainError(f"loss term {t} needs [model] head = {need!r}, the config has "
                             f"{model_cfg.head!r}")

    # -- data: one loader per batch stream, plus the validation loaders -----------------------
    main = TERMS[cfg.strategy].stream
    streams = [main] + sorted({TERMS[t].stream for t in terms} - {main})
    train_loaders = {s: _stream_loader(shards, s, "train", loader_cfg, cfg, d) for s in streams}
    val_loader = _stream_loader(shards, main, "val", loader_cfg, cfg, d)
    eval_loader = make_loader(shards, split="val", mode="eval", config=loader_cfg,
                              rank=d.rank, world_size=d.world_size)
    length = train_loaders[main].window.length
    accum = accumulation_steps(cfg.effective_batch, loader_cfg.batch_size, d.world_size)
    steps_per_epoch = math.ceil(len(train_loaders[main]) / accum)
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    if d.is_main:
        log.info("Fine-tuning %s on %s: %d train batches of %d per device per epoch, %d device(s), "
                 "%d micro-batch(es) per step -> %d steps per epoch, %d steps in all; windows "
                 "of %d bp", cfg.strategy, shards, len(train_loaders[main]),
                 loader_cfg.batch_size, d.world_size, accum, steps_per_epoch, total_steps, length)
        _write_data_record(run_dir, shards, loader_cfg, length)

    # -- model: identical initial weights on every rank, then per-rank seeds ------------------
    seed_everything(cfg.seed)
    model = build_model(model_cfg, length).to(d.device)
    seed_everything(rank_seed(cfg.seed, d.rank))
    if d.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32
    net = ddp = model
    if d.distributed:  # DDP first, then compile (so DDP's optimizer can split the graph)
        net = ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[d.device.index] if d.device.type == "cuda" else None,
            find_unused_parameters=cfg.find_unused_parameters)
    if cfg.compile:
        net = torch.compile(net)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas),
                                  weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(cfg.warmup_steps, total_steps, cfg.min_lr_ratio))

    # -- resume --------------------------------------------------------------------------------
    state = {"step": 0, "best": None, "best_step": None, "bad": 0, "stopped_early": False}
    if resume and latest is not None:
        trainer = load_checkpoint(latest, model, optimizer)
        state.update(trainer["state"])
        scheduler.load_state_dict(trainer["scheduler"])
        mine = trainer["ranks"][d.rank] if len(trainer["ranks"]) == d.world_size else None
        for s, loader in train_loaders.items():
            loader.load_state_dict((mine or trainer["ranks"][0])["loaders"][s])
        if mine is not None:
            from train.checkpoint import set_rng_state

            set_rng_state(mine["rng"])
        else:
            log.warning("The checkpoint was written by %d process(es), this run has %d: loaders "
                        "restart at the next epoch and random streams are new",
                        len(trainer["ranks"]), d.world_size)
        if d.is_main:
            truncate_metrics(run_dir / "metrics.jsonl", state["step"])
            log.info("Resumed %s at step %d (epoch %d, batch %d)", latest, state["step"],
                     train_loaders[main].epoch, train_loaders[main].batch)
    elif resume and d.is_main:
        log.info("No checkpoint in %s yet: starting from the beginning", ckpt_dir)
    if d.is_main and state["step"] == 0:
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    barrier()

    # -- the loop ------------------------------------------------------------------------------
    metrics = MetricsLog(run_dir, total_steps, state["step"], d.is_main, cfg.tensorboard)
    main_loader = train_loaders[main]
    others = {s: _forever(loader) for s, loader in train_loaders.items() if s != main}
    items_per_batch = loader_cfg.batch_size * d.world_size
    step = state["step"]
    try:
        while step < total_steps and not state["stopped_early"]:
            epoch = main_loader.epoch
            batches = _rng_neutral(main_loader)  # from the loader's position to the epoch's end
            left = len(main_loader) - main_loader.batch
            while left > 0 and step < total_steps:
                n_micro = min(accum, left)
                t_step = time.perf_counter()
                wait = 0.0
                net.train()
                loss_sum = torch.zeros((), device=d.device)
                for m in range(n_micro):
                    t_data = time.perf_counter()
                    group = {main: next(batches), **{s: next(it) for s, it in others.items()}}
                    wait += time.perf_counter() - t_data
                    last = m == n_micro - 1
                    sync = contextlib.nullcontext() if last or not d.distributed else \
                        ddp.no_sync()  # accumulate locally; all-reduce on the last micro-batch
                    with sync:
                        loss, _ = step_loss(net, group, cfg, d.device)
                        (loss / n_micro).backward()
                    loss_sum += loss.detach()
                left -= n_micro
                if left == 0:  # close the epoch: the loader moves to the next one
                    assert next(batches, None) is None, "the loader yielded more than len()"
                grad_norm = _clip(params, cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                state["step"] = step
                if step % cfg.log_every_steps == 0 or step == total_steps:
                    mean_loss = float(all_mean(loss_sum / n_micro))
                    seconds = time.perf_counter() - t_step
                    metrics.train_step({
                        "kind": "train", "step": step, "epoch": epoch, "loss": mean_loss,
                        "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                        "samples_per_s": n_micro * items_per_batch / seconds,
                        "data_wait": wait / seconds,
                    })
                end_of_epoch = left == 0
                validate_now = (cfg.val_every_steps and step % cfg.val_every_steps == 0) or (
                    not cfg.val_every_steps and end_of_epoch) or step == total_steps
                if validate_now:
                    record = validate(model, val_loader, eval_loader, cfg, d)
                    record.update({"kind": "val", "step": step, "epoch": epoch})
                    metrics.validation(record)
                    if _improved(record[cfg.val_metric], state["best"], cfg.val_metric):
                        state.update(best=record[cfg.val_metric], best_step=step, bad=0)
                        if d.is_main:
                            save_exported(model, model_cfg, length, run_dir / "best")
                            atomic_write_text(run_dir / "best" / "best.json",
                                              json.dumps(record, indent=1) + "\n")
                    else:
                        state["bad"] += 1
                        if cfg.patience and state["bad"] >= cfg.patience:
                            state["stopped_early"] = True
                            if d.is_main:
                                log.info("Early stop at step %d: %s has not improved on %.4f "
                                         "(step %d) for %d validations", step, cfg.val_metric,
                                         state["best"], state["best_step"], state["bad"])
                ckpt_now = (cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps
                            == 0) or (not cfg.checkpoint_every_steps and validate_now) \
                    or step == total_steps or state["stopped_early"]
                if ckpt_now:
                    _save(ckpt_dir, step, model, optimizer, scheduler, train_loaders, state, d,
                          cfg.keep_checkpoints)
                if state["stopped_early"]:
                    break
    finally:
        metrics.close()

    # -- export the best model -------------------------------------------------------------
    if d.is_main:
        best = run_dir / "best"
        if (best / "model.json").exists():
            from train.model import load_exported

            save_exported(load_exported(best), model_cfg, length, run_dir)
        else:
            save_exported(model, model_cfg, length, run_dir)
        summary = {"run": str(run_dir), "steps": step, "best_" + cfg.val_metric: state["best"],
                   "best_step": state["best_step"], "stopped_early": state["stopped_early"]}
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
        log.info("Done: %d steps; best %s %.4f at step %s; model in %s", step, cfg.val_metric,
                 state["best"] if state["best"] is not None else float("nan"),
                 state["best_step"], run_dir)
    barrier()
    return {"run": str(run_dir), "steps": step, "best": state["best"],
            "best_step": state["best_step"], "stopped_early": state["stopped_early"]}


# -- the pieces the loop calls, in the order it calls them ------------------------------------

def accumulation_steps(effective_batch: int, batch_size: int, world_size: int) -> int:
    """Micro-batches per optimizer step so that one step sees ``effective_batch`` items.

    Raises
    ------
    TrainError
        When ``effective_batch`` is not a multiple of ``batch_size x world_size``.
    """
    per_step = batch_size * world_size
    if effective_batch % per_step:
        raise TrainError(
            f"[train] effective_batch = {effective_batch} is not a multiple of [loader] "
            f"batch_size x devices = {batch_size} x {world_size} = {per_step}: choose an "
            f"effective batch of {max(1, effective_batch // per_step) * per_step} or another "
            "batch size")
    return effective_batch // per_step


def warmup_cosine(warmup: int, total: int, min_ratio: float = 0.0):
    """LR multiplier for LambdaLR: linear 0 -> 1 over ``warmup`` steps, cosine to ``min_ratio``
    at ``total``."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        span = max(total - warmup, 1)
        progress = min(max(step - warmup, 0) / span, 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _stream_loader(shards: Path, stream: str, split: str, loader_cfg, cfg: TrainConfig,
                   d: Dist):
    spec = STREAMS[stream]
    extra = {k: getattr(cfg, v) for k, v in spec.get("from_train", {}).items()}
    mode = spec["mode"]
    if split != "train" and mode == "train":
        mode = "eval"
    return make_loader(shards, split=split, mode=mode,
                       config=dataclasses.replace(loader_cfg, **extra), rank=d.rank,
                       world_size=d.world_size)


def _rng_neutral(iterable):
    """Iterate ``iterable`` without letting the creation of its DataLoader iterator draw from
    the global torch RNG (torch draws a base seed there; hapflow's workers seed themselves from
    (seed, epoch, rank, worker)), so dropout streams do not depend on where a run resumed."""
    state = torch.get_rng_state()
    it = iter(iterable)
    try:
        first = next(it)
    except StopIteration:
        return
    finally:
        torch.set_rng_state(state)
    yield first
    yield from it


def _forever(loader):
    """A secondary stream's batches, epoch after epoch."""
    while True:
        yield from _rng_neutral(loader)


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor)
                and not k.startswith("seq") else v) for k, v in batch.items()}


def step_loss(net, group: dict[str, dict], cfg: TrainConfig, device: torch.device
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted loss of one micro-step.

    Every stream's sequences go through the model in one forward (pairs as their a and b
    halves), so BatchNorm sees one batch and DDP one forward per backward.

    Parameters
    ----------
    net : model (possibly DDP / compiled): ``net(x (N, 2, L, 4), tss_index (N,)) -> (N,)``
    group : {stream: batch}; sample streams carry ``seq`` (B, 2, L) uint8, pair streams
        ``seq_a`` / ``seq_b``; every batch carries ``tss_index`` (B,) and ``valid`` (B,)
    cfg : TrainConfig (terms and their weights)

    Returns
    -------
    (loss, {term: value}) scalar tensors on ``device``.
    """
    seqs, tss, sizes = [], [], []
    for stream, batch in group.items():
        names = ("seq_a", "seq_b") if STREAMS[stream]["pairs"] else ("seq",)
        for n in names:
            seqs.append(batch[n])
            tss.append(batch["tss_index"])
            sizes.append(batch[n].shape[0])
    pred = forward_codes(net, torch.cat(seqs), torch.cat(tss), device, cfg.precision)  # (N,)
    chunks = iter(pred.split(sizes))
    outputs = {}
    for stream in group:
        if STREAMS[stream]["pairs"]:
            outputs[stream] = {"pred_a": next(chunks), "pred_b": next(chunks)}
        else:
            outputs[stream] = {"pred": next(chunks)}
    parts = {}
    total = torch.zeros((), device=device)
    for name, weight in cfg.loss_terms.items():
        term = TERMS[name]
        value = term.fn(outputs[term.stream], _to_device(group[term.stream], device), cfg)
        parts[name] = value.detach()
        total = total + weight * value
    return total, parts


def _clip(params, max_norm: float) -> float:
    if max_norm and max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    grads = [p.grad.detach().norm() for p in params if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


def validate(model, val_loader, eval_loader, cfg: TrainConfig, d: Dist) -> dict:
    """The strategy's loss on the validation stream and per-gene Pearson r across validation
    individuals (predictions forward + reverse complement averaged), over all ranks.

    Returns
    -------
    dict: ``val_loss``, ``val_pearson_r`` (mean over genes), ``val_pearson_r_median``,
    ``val_genes``.
    """
    import numpy as np

    model.eval()
    term = TERMS[cfg.strategy]
    total = torch.zeros(2, dtype=torch.float64, device=d.device)
    one = dataclasses.replace(cfg, terms={cfg.strategy: 1.0})  # the strategy's term alone
    with torch.no_grad():
        for batch in _rng_neutral(val_loader):
            loss, _ = step_loss(model, {term.stream: batch}, one, d.device)
            n = float(batch["valid"].sum())
            total += torch.tensor([float(loss) * n, n], dtype=torch.float64, device=d.device)
    if d.distributed:
        torch.distributed.all_reduce(total)
    preds = predict_loader(model, _rng_neutral(eval_loader), d.device, cfg.precision,
                           cfg.val_rc_average)
    r = per_gene_pearson(preds["gene"], preds["prediction"], preds["Y"])
    model.train()
    values = np.array(list(r.values())) if r else np.array([np.nan])
    return {"val_loss": float(total[0] / total[1].clamp(min=1)),
            "val_pearson_r": float(np.mean(values)),
            "val_pearson_r_median": float(np.median(values)), "val_genes": len(r)}


def _improved(value: float, best: float | None, metric: str) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if metric == "val_pearson_r" else value < best


def _save(ckpt_dir: Path, step: int, model, optimizer, scheduler, loaders: dict, state: dict,
          d: Dist, keep: int) -> None:
    """Gather every rank's loader positions and RNG states; rank 0 writes the checkpoint."""
    mine = {"rng": rng_state(), "loaders": {s: ld.state_dict() for s, ld in loaders.items()}}
    ranks = all_gather_object(mine)
    if d.is_main:
        trainer = {"state": dict(state), "scheduler": scheduler.state_dict(), "ranks": ranks,
                   "world_size": d.world_size}
        save_checkpoint(ckpt_dir, step, model, optimizer, trainer, keep)
    barrier()


def _write_data_record(run_dir: Path, shards: Path, loader_cfg, length: int) -> None:
    """``data.json``: how the training windows were made (for predictions from a VCF)."""
    meta_path = shards / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    hap = meta.get("config", {}).get("haplotypes", {})
    record = {
        "shards": str(shards), "build": meta.get("build"), "length": length,
        "stored_length": hap.get("length"), "haplotypes": hap,
        "loader": config_to_dict(loader_cfg),
    }
    atomic_write_text(run_dir / "data.json", json.dumps(record, indent=1) + "\n")
