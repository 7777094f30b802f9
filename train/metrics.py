"""Where training reports go: metrics.jsonl, TensorBoard, a progress bar or plain log lines, and
the run's ``train.log``.

Only rank 0 writes. ``metrics.jsonl`` holds one JSON object per logged step (``kind: "train"``)
and per validation (``kind: "val"``); on resume, lines after the checkpoint's step are dropped
first, so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from hapflow.command import LOG_DATE, LOG_FORMAT
from hapflow.io import atomic_write_text

__all__ = ["MetricsLog", "truncate_metrics", "run_log", "validations_left", "run_summary",
           "val_metrics", "hms"]

log = logging.getLogger("train")


def truncate_metrics(path: str | Path, step: int) -> None:
    """Keep the lines of ``path`` whose step is at most ``step`` (atomically)."""
    path = Path(path)
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            break  # a line cut by a kill: drop it and everything after
    atomic_write_text(path, "".join(k + "\n" for k in keep))


def validations_left(step: int, total: int, val_every: int, steps_per_epoch: int) -> int:
    """Validations still to run after ``step`` of ``total`` steps: every ``val_every`` steps
    (0: at the end of every epoch of ``steps_per_epoch`` steps), and after the last step."""
    if step >= total:
        return 0
    every = val_every or steps_per_epoch
    if every <= 0:
        return 1
    return total // every - step // every + (1 if total % every else 0)


class MetricsLog:
    """Rank 0's reporter: metrics.jsonl, TensorBoard, a bar on a terminal or a log line per
    logged step, and the ETA (training steps at their measured pace plus the validations
    still to run at the mean measured time of one).

    Parameters
    ----------
    run_dir : the run folder (metrics.jsonl, tensorboard/)
    total_steps : for the progress bar and ETA
    start_step : the step a resumed run starts from
    enabled : False on ranks other than 0 (every call is then a no-op)
    tensorboard : write TensorBoard event files
    val_every, steps_per_epoch : when validations run ([train] val_every_steps; 0: every
        epoch of that many steps), for the ETA
    file : a handler of the run's ``train.log`` (:func:`run_log`): step and validation lines
        go there also while a bar shows them on the terminal
    """

    def __init__(self, run_dir: Path, total_steps: int, start_step: int, enabled: bool,
                 tensorboard: bool = True, val_every: int = 0, steps_per_epoch: int = 0,
                 file: logging.Handler | None = None):
        self.enabled = enabled
        self.total, self.start_step = total_steps, start_step
        self.val_every, self.steps_per_epoch = val_every, steps_per_epoch
        self.file = file
        self.t0 = time.monotonic()
        self.val_times: list[float] = []
        self.bar = None
        self.tb = None
        if not enabled:
            return
        self.fh = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")
        if tensorboard:
            # imported only when asked for: tensorboard is a heavy import ([train] tensorboard)
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)
        if sys.stderr.isatty():
            self.bar = tqdm(total=total_steps, initial=start_step, unit="step",
                            desc="fine-tuning", dynamic_ncols=True)

    def write(self, record: dict) -> None:
        """Append a record to metrics.jsonl and TensorBoard (numbers only)."""
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in record.items()}
        self.fh.write(json.dumps(clean) + "\n")
        self.fh.flush()
        if self.tb is not None:
            kind = record.get("kind", "train")
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{kind}/{k}", v, record["step"])

    def eta(self, step: int) -> float | None:
        """Seconds left after ``step``: the steps left at this session's pace of training
        (validation time taken out), plus the validations left at their mean measured time
        (None before a step has been timed)."""
        done = step - self.start_step
        if done <= 0:
            return None
        validating = sum(self.val_times)
        per_step = max(time.monotonic() - self.t0 - validating, 0.0) / done
        left = per_step * (self.total - step)
        if self.val_times:
            left += (validating / len(self.val_times)) * validations_left(
                step, self.total, self.val_every, self.steps_per_epoch)
        return left

    def train_step(self, record: dict) -> None:
        """A logged training step: JSONL + TensorBoard, and the bar or a plain line."""
        if not self.enabled:
            return
        self.write(record)
        step = record["step"]
        eta = self.eta(step)
        eta_text = hms(eta) if eta is not None else "?"
        if not self.val_times and validations_left(step, self.total, self.val_every,
                                                   self.steps_per_epoch):
            eta_text += " + validations (not timed yet)"
        message = (f"step {step}/{self.total}  epoch {record['epoch']}  loss {record['loss']:.4f}"
                   f"  lr {record['lr']:.2e}  {record.get('samples_per_s', 0.0):.1f} samples/s"
                   f"  data wait {100 * record.get('data_wait', 0.0):.0f}%  ETA {eta_text}")
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(loss=f"{record['loss']:.4f}",
                                 samples_s=f"{record.get('samples_per_s', 0):.1f}",
                                 eta=eta_text)
            self.bar.refresh()
            self._to_file(message)
        else:
            log.info(message)

    def validation(self, record: dict, seconds: float | None = None) -> None:
        """A validation's record (JSONL + TensorBoard) and line; ``seconds`` it took (for the
        ETA)."""
        if not self.enabled:
            return
        if seconds is not None:
            self.val_times.append(seconds)
        self.write(record)
        text = "  ".join(f"{k} {v:.4f}" for k, v in record.items()
                         if isinstance(v, float) and k.startswith("val_"))
        took = f" ({seconds:.0f} s)" if seconds is not None else ""
        message = f"validation at step {record['step']} (epoch {record['epoch']}){took}: {text}"
        if self.bar is not None:
            self.bar.write(message)
            self._to_file(message)
        else:
            log.info(message)

    def _to_file(self, message: str) -> None:
        """A line for train.log only (the terminal shows the bar)."""
        if self.file is not None:
            self.file.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, message, (),
                                            None))

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        self.fh.close()


@contextlib.contextmanager
def run_log(path: Path, enabled: bool) -> Iterator[logging.Handler | None]:
    """While inside, rank 0's log lines are appended to ``path`` (``DIR/runs/RUN/train.log``),
    timed as on the terminal (:data:`hapflow.command.LOG_FORMAT`), at INFO level also under
    ``--quiet`` (the terminal's handlers keep their threshold). Yields the file's handler
    (None when not ``enabled``)."""
    if not enabled:
        yield None
        return
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATE))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    level = root.level
    raised = []
    if root.getEffectiveLevel() > logging.INFO:  # --quiet: the file still gets INFO lines
        for h in root.handlers:
            if h.level < level:
                raised.append((h, h.level))
                h.setLevel(level)
        root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(level)
        for h, old in raised:
            h.setLevel(old)


def run_summary(run_dir: Path, state, val_metric: str) -> dict:
    """What ``summary.json`` holds, from a run's ``state`` (:class:`train.loop.TrainState`).

    Keys: ``run``, ``steps``, ``best_<val_metric>``, ``best_step``, ``stopped_early``;
    ``wall_seconds`` (over every start of the run, validation included), ``val_seconds``,
    ``samples`` (training samples or pairs seen, all ranks), ``samples_per_s`` (over the
    training time, validation excluded), ``final`` (``train_loss``: the last logged loss, and
    the last validation's ``val_loss``, ``val_pearson_r``, ...) and ``best`` (the best
    validation's metrics and ``step``).
    """
    training = state.wall_seconds - state.val_seconds
    return {
        "run": str(run_dir), "steps": state.step, "best_" + val_metric: state.best,
        "best_step": state.best_step, "stopped_early": state.stopped_early,
        "wall_seconds": round(state.wall_seconds, 3), "val_seconds": round(state.val_seconds, 3),
        "samples": state.samples,
        "samples_per_s": round(state.samples / training, 3) if training > 0 else None,
        "final": {"train_loss": state.last_loss, **(state.last_val or {})},
        "best": {**(state.best_val or {}), "step": state.best_step},
    }


def val_metrics(record: dict) -> dict:
    """The metrics of a validation record (``val_*``; non-finite numbers as None)."""
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
            for k, v in record.items() if k.startswith("val_")}


def hms(seconds: float) -> str:
    """``H:MM:SS`` of a number of seconds."""
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
