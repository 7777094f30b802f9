"""What ``train.run --resume`` may change: the run's saved settings against the new study.

A run saves its resolved study in ``DIR/runs/RUN/config.toml`` and the build of the shards it
reads in ``data.json``. A resumed run continues exactly only with the same schedule, data and
model, so :func:`resume_changes` compares them setting by setting and :func:`check_resume`
refuses any change but those of :data:`FREE` (how the run is computed and reported, not what
it computes), naming each change. Schedule changes (:data:`SCHEDULE`) are allowed with
``--allow-schedule-change``: the learning-rate schedule is then recomputed
(:func:`apply_schedule`) and the loop logs old and new.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from hapflow.config import StudyConfig, config_to_dict, load_study
from hapflow.layout import Workdir
from hapflow.sections import SECTIONS
from train.runs import existing_run, run_state

__all__ = ["SCHEDULE", "FREE", "KINDS", "ResumeError", "check_resumable", "resume_changes",
           "check_resume", "apply_schedule"]

SCHEDULE = {"train": ("epochs", "max_steps", "lr", "warmup_steps", "min_lr_ratio",
                      "effective_batch")}
"""Settings that set the learning-rate schedule and the number of steps."""

FREE = {
    "train": ("device", "compile", "tf32", "precision", "find_unused_parameters",
              "val_every_steps", "patience", "checkpoint_every_steps", "keep_checkpoints",
              "log_every_steps", "tensorboard"),
    "loader": ("prefetch_factor", "pin_memory", "keep_freed_memory", "worker_start",
               "timeout_s", "verify", "on_error"),
    "model": ("checkpointing",),
}
"""Settings a resumed run may change freely: how it runs and reports, not what it computes."""

KINDS = {"schedule": "the schedule", "data": "the data", "model": "the model",
         "training": "the loss, optimiser or validation"}
"""The kinds of change, in the order they are listed, and their names."""


class ResumeError(ValueError):
    """A run cannot be resumed as asked; the message says why (what changed) and what to do."""


def check_resumable(study: StudyConfig, layout: Workdir, name: str, latest: Path | None,
                    allow_schedule_change: bool) -> tuple[StudyConfig | None, list[str]]:
    """A run to resume exists, has a checkpoint (``latest``), and its schedule, data and model
    settings are those it started with (schedule changes only with
    ``allow_schedule_change``).

    Returns
    -------
    (the run's settings as it started, or None for a run without config.toml; the schedule
    changes allowed, as "[train] epochs 3 -> 2" texts)

    Raises
    ------
    train.runs.RunError
        No such run (the runs there are listed, with a did-you-mean).
    ResumeError
        The run has no checkpoint, or settings changed (each named).
    """
    run_dir = existing_run(layout, name)
    if latest is None:
        raise ResumeError(f"{run_dir} has no checkpoint to resume from ({run_state(run_dir)}): "
                          "it stopped before its first checkpoint; run the same command "
                          "without --resume to start it again")
    if not (run_dir / "config.toml").exists():
        return None, []
    saved = load_study(run_dir / "config.toml")
    changes = resume_changes(saved, study, run_dir, layout.shards)
    check_resume(changes, allow_schedule_change, run_dir)
    return saved, changes.get("schedule", [])


def _kind(section: str, key: str) -> str | None:
    if key in FREE.get(section, ()):
        return None
    if key in SCHEDULE.get(section, ()):
        return "schedule"
    return {"loader": "data", "model": "model"}.get(section, "training")


def resume_changes(saved: StudyConfig, new: StudyConfig, run_dir: Path, shards: Path
                   ) -> dict[str, list[str]]:
    """``{kind: ["[train] epochs 3 -> 2", ...]}`` of the settings that differ between the run's
    saved study and ``new`` in [model], [train], [loader], and of the shards' build (kinds:
    :data:`KINDS`; a kind without change is left out)."""
    changes: dict[str, list[str]] = {}
    for section in ("model", "train", "loader"):
        old = config_to_dict(getattr(saved, section), keep_none=True)
        now = config_to_dict(getattr(new, section), keep_none=True)
        for key in (f.name for f in dataclasses.fields(SECTIONS[section])):
            kind = _kind(section, key)
            if kind is not None and old.get(key) != now.get(key):
                changes.setdefault(kind, []).append(
                    f"[{section}] {key} {_text(old.get(key))} -> {_text(now.get(key))}")
    built, building = _build(run_dir / "data.json"), _build(shards / "meta.json")
    if built is not None and building is not None and built != building:
        changes.setdefault("data", []).append(
            f"the shards were rebuilt (build {built} -> {building})")
    return {k: changes[k] for k in KINDS if k in changes}


def _build(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("build")
    except (OSError, ValueError):
        return None


def _text(value) -> str:
    return "none" if value is None else json.dumps(value) if isinstance(value, str) else str(value)


def check_resume(changes: dict[str, list[str]], allow_schedule: bool, run_dir: Path) -> None:
    """Refuse to resume with changed settings (a ``ValueError`` naming every change), unless
    they are schedule changes and ``allow_schedule``."""
    refused = {k: v for k, v in changes.items() if k != "schedule" or not allow_schedule}
    if not refused:
        return
    listed = "; ".join(f"{KINDS[k]}: {', '.join(v)}" for k, v in refused.items())
    advice = (" or, to continue with the new schedule, --allow-schedule-change"
              if set(refused) == {"schedule"} else "")
    raise ResumeError(f"cannot resume {run_dir} with other settings than it started with "
                      f"({listed}); resume with the run's settings ({run_dir / 'config.toml'}), "
                      f"start another run with --name NEW{advice}")


def apply_schedule(optimizer: torch.optim.Optimizer, scheduler, lr: float, factor,
                   step: int) -> tuple[float, float]:
    """Put a restored optimizer on a new schedule from ``step`` on: peak ``lr`` and the
    multiplier ``factor(step)`` (:func:`train.schedule.warmup_cosine`).

    A checkpoint restores the old peak lr (the scheduler's ``base_lrs``) and the lr of the
    step; both are replaced. Returns (old lr, new lr) at ``step``.
    """
    old = optimizer.param_groups[0]["lr"]
    scheduler.lr_lambdas = [factor] * len(optimizer.param_groups)
    scheduler.base_lrs = [lr] * len(optimizer.param_groups)
    for group in optimizer.param_groups:
        group["initial_lr"] = lr
        group["lr"] = lr * factor(step)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
    return old, optimizer.param_groups[0]["lr"]
