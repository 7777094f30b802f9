"""A fine-tuned run's training history for the report: ``DIR/runs/RUN/metrics.jsonl`` read into
tables of training and validation records (:func:`read_training_log`).

``train.metrics.MetricsLog`` writes one JSON object per logged step (``kind: "train"``: step,
epoch, loss, lr, grad_norm, samples_per_s, data_wait, wall_seconds) and per validation
(``kind: "val"``: step, epoch, val_loss, val_pearson_r, val_pearson_r_median, val_genes,
seconds, wall_seconds). ``wall_seconds`` (the run's wall time so far, over every start of a
resumed run) is missing from logs of runs trained before it existed: their curves are drawn
against steps only. A missing or broken file is described in one sentence
(:attr:`TrainingLog.problem`), never raised: the report shows that sentence instead of a curve.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

__all__ = ["TrainingLog", "read_training_log"]


@dataclass(frozen=True)
class TrainingLog:
    """What a run's ``metrics.jsonl`` says about its training, for the report's curves.

    Attributes
    ----------
    run : str
    path : Path
        ``DIR/runs/RUN/metrics.jsonl``.
    train : pl.DataFrame
        One row per logged training step: step (int64), loss, wall_seconds (float64; NaN where
        not logged).
    val : pl.DataFrame
        One row per validation: step, val_pearson_r, val_loss, wall_seconds (float64; NaN where
        not logged).
    problem : str or None
        Why the file is missing or could not be read to its end (the tables then hold the
        records before the first bad line), in one sentence; None when it was read whole.
    """

    run: str
    path: Path
    train: pl.DataFrame
    val: pl.DataFrame
    problem: str | None = None

    @property
    def has_time(self) -> bool:
        """Every record carries wall_seconds (logs of older runs do not)."""
        return bool(self.train.height + self.val.height) and not any(
            t["wall_seconds"].is_nan().any() for t in (self.train, self.val))


_TRAIN_COLUMNS = {"step": pl.Int64, "loss": pl.Float64, "wall_seconds": pl.Float64}
_VAL_COLUMNS = {"step": pl.Int64, "val_pearson_r": pl.Float64, "val_loss": pl.Float64,
                "wall_seconds": pl.Float64}


def _metric_problem(record) -> str | None:
    """Why a metrics.jsonl record cannot be plotted, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    kind = record.get("kind", "train")
    if kind not in ("train", "val"):
        return None  # a kind the report does not plot: skipped
    step = record.get("step")
    if not isinstance(step, int) or isinstance(step, bool):
        return f"{kind} record without an integer step"
    need = "loss" if kind == "train" else "val_pearson_r"
    if need not in record:
        return f"{kind} record of step {step} without {need}"
    for key in ("loss", "val_pearson_r", "val_loss", "wall_seconds"):
        value = record.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"{key} of step {step} is {type(value).__name__}, expected a number"
    return None


def read_training_log(run_dir: str | os.PathLike, run: str) -> TrainingLog:
    """Read ``run_dir/metrics.jsonl`` (``train.metrics.MetricsLog``'s records) for the curves.

    Records of kind ``train`` (step, loss, wall_seconds) and ``val`` (step, val_pearson_r,
    val_loss, wall_seconds) are kept; nulls (non-finite values) become NaN. Reading stops at the
    first line that is not a usable record (a run killed mid-write leaves a cut last line).
    Never raises: a missing, unreadable or broken file is described in ``problem``.
    """
    path = Path(run_dir) / "metrics.jsonl"
    rows: dict[str, list[dict]] = {"train": [], "val": []}
    problem = None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines, problem = [], f"{path} does not exist (the run logged no metrics)"
    except (OSError, UnicodeDecodeError) as err:
        lines, problem = [], f"{path} cannot be read ({getattr(err, 'strerror', None) or err})"
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            why = "is not JSON (cut by a kill?)"
        else:
            why = _metric_problem(record)
        if why is not None:
            kept = sum(map(len, rows.values()))
            problem = (f"{path} line {number} {why}" if why.startswith("is ") else
                       f"{path} line {number}: {why}") + (
                f"; the curves show the {kept} record(s) before it" if kept else "")
            break
        kind = record.get("kind", "train")
        if kind in rows:
            columns = _TRAIN_COLUMNS if kind == "train" else _VAL_COLUMNS
            rows[kind].append({k: record.get(k) for k in columns})
    if problem is None and not any(rows.values()):
        problem = f"{path} holds no training or validation record"
    tables = {kind: pl.DataFrame(rows[kind], schema=schema, strict=False).with_columns(
                  pl.col(pl.Float64).fill_null(float("nan")))
              for kind, schema in (("train", _TRAIN_COLUMNS), ("val", _VAL_COLUMNS))}
    return TrainingLog(run, path, tables["train"], tables["val"], problem)
