"""Checkpoints: written atomically, loadable without executing code, resumable exactly.

Layout under ``DIR/runs/RUN/checkpoints``::

    step-0000100/model.safetensors   the plain model's state dict (no DDP / compile prefixes)
    step-0000100/optimizer.pt        AdamW state (tensors, numbers: torch.load weights_only)
    step-0000100/trainer.pt          step, epoch, scheduler, every stream's loader state, every
                                     rank's RNG states, early-stopping state
    latest                           the name of the newest complete checkpoint

A checkpoint is written into a temporary folder and renamed into place, then ``latest`` is
rewritten (temp + rename): a run killed at any moment leaves the previous checkpoint intact.
The newest ``keep`` checkpoints are kept; the best model is exported separately
(``DIR/runs/RUN/best``, by the loop).

The loop calls :func:`save_checkpoint` (every rank: their loader positions and RNG states are
gathered, rank 0 writes) and :func:`restore_checkpoint` (every rank takes back its own).
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from hapflow.io import atomic_write_text
from train.distributed import Dist, all_gather_object, barrier

__all__ = ["rng_state", "set_rng_state", "save_checkpoint", "restore_checkpoint",
           "write_checkpoint", "load_checkpoint", "latest_checkpoint"]

log = logging.getLogger("train")


def rng_state() -> dict:
    """This process's RNG states as tensors and plain values (weights_only-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def _plain_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(directory: str | os.PathLike, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler, loaders: dict, state: dict,
                    d: Dist, keep: int = 3) -> None:
    """Checkpoint a run after ``step`` optimizer steps (call it on every rank).

    Every rank's RNG states and loader positions (``loaders``: {stream: loader}) are gathered;
    rank 0 writes them with the model, optimizer, scheduler and the loop's ``state`` (a dict of
    plain values: step, best metric, early-stopping count) as :func:`write_checkpoint`.
    """
    mine = {"rng": rng_state(), "loaders": {s: ld.state_dict() for s, ld in loaders.items()}}
    ranks = all_gather_object(mine)
    if d.is_main:
        trainer = {"state": dict(state), "scheduler": scheduler.state_dict(), "ranks": ranks,
                   "world_size": d.world_size}
        write_checkpoint(directory, step, model, optimizer, trainer, keep)
    barrier()


def restore_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                       optimizer: torch.optim.Optimizer, scheduler, loaders: dict,
                       d: Dist) -> dict:
    """Put a run back where :func:`save_checkpoint` left it; returns the loop's ``state``.

    Weights, optimizer and scheduler are loaded in place; each rank takes back its own loader
    positions and RNG states. With another number of processes than the checkpoint's, every
    loader takes rank 0's position (it restarts at the next epoch) and random streams are new.
    """
    trainer = load_checkpoint(path, model, optimizer)
    scheduler.load_state_dict(trainer["scheduler"])
    mine = trainer["ranks"][d.rank] if len(trainer["ranks"]) == d.world_size else None
    for s, loader in loaders.items():
        loader.load_state_dict((mine or trainer["ranks"][0])["loaders"][s])
    if mine is not None:
        set_rng_state(mine["rng"])
    else:
        log.warning("The checkpoint was written by %d process(es), this run has %d: loaders "
                    "restart at the next epoch and random streams are new",
                    len(trainer["ranks"]), d.world_size)
    return trainer["state"]


def write_checkpoint(directory: str | os.PathLike, step: int, model: torch.nn.Module,
                     optimizer: torch.optim.Optimizer, trainer: dict, keep: int = 3) -> Path:
    """Write ``directory/step-NNNNNNN`` atomically, point ``latest`` at it, prune old ones.

    Parameters
    ----------
    directory : the run's ``checkpoints`` folder
    step : optimizer steps done
    model : the plain (unwrapped) model
    optimizer : its optimizer
    trainer : dict of tensors and plain values (step, epoch, scheduler, loaders, rng, ...)
    keep : how many of the newest checkpoints to keep

    Returns
    -------
    Path of the checkpoint folder.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    final = directory / name
    tmp = directory / f".{name}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        save_file(_plain_state(model), str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(trainer, tmp / "trainer.pt")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # the same step written again after a resume: replace it
            trash = directory / f".{name}.old-{secrets.token_hex(4)}"
            final.rename(trash)
            shutil.rmtree(trash)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(directory / "latest", name + "\n")
    for old in sorted(directory.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in directory.glob(".step-*"):  # temp folders of killed writers
        shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The folder ``latest`` names, or None when the run has no complete checkpoint."""
    pointer = Path(directory) / "latest"
    if not pointer.exists():
        return None
    path = Path(directory) / pointer.read_text().strip()
    return path if (path / "trainer.pt").exists() else None


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Load weights (strict) and optimizer state into place; return the trainer dict.

    Everything is read with safetensors or ``torch.load(weights_only=True)``: nothing in a
    checkpoint can execute code.

    Raises
    ------
    ValueError
        Missing or unexpected weights (a checkpoint of another model), naming the file.
    """
    path = Path(path)
    weights = path / "model.safetensors"
    state = load_file(str(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{weights} does not fit this model: {len(missing)} missing (e.g. "
            f"{list(missing)[:3]}), {len(unexpected)} unexpected (e.g. {list(unexpected)[:3]}) "
            "weights; was the [model] section changed since the run started?")
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu",
                                             weights_only=True))
    return torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
