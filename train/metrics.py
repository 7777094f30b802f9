"""Where training reports go: metrics.jsonl, TensorBoard, a progress bar or plain log lines.

Only rank 0 writes. ``metrics.jsonl`` holds one JSON object per logged step (``kind: "train"``)
and per validation (``kind: "val"``); on resume, lines after the checkpoint's step are dropped
first, so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

from tqdm import tqdm

from hapflow.io import atomic_write_text

__all__ = ["MetricsLog", "truncate_metrics"]

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


class MetricsLog:
    """Rank 0's reporter.

    Parameters
    ----------
    run_dir : the run folder (metrics.jsonl, tensorboard/)
    total_steps : for the progress bar and ETA
    start_step : the step a resumed run starts from
    enabled : False on ranks other than 0 (every call is then a no-op)
    tensorboard : write TensorBoard event files
    """

    def __init__(self, run_dir: Path, total_steps: int, start_step: int, enabled: bool,
                 tensorboard: bool = True):
        self.enabled = enabled
        self.total, self.start_step = total_steps, start_step
        self.t0 = time.monotonic()
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

    def train_step(self, record: dict) -> None:
        """A logged training step: JSONL + TensorBoard, and the bar or a plain line."""
        if not self.enabled:
            return
        self.write(record)
        step = record["step"]
        done = step - self.start_step
        elapsed = time.monotonic() - self.t0
        eta = elapsed / max(done, 1) * (self.total - step)
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(loss=f"{record['loss']:.4f}",
                                 samples_s=f"{record.get('samples_per_s', 0):.1f}")
            self.bar.refresh()
        else:
            log.info("step %d/%d  epoch %d  loss %.4f  lr %.2e  %.1f samples/s  data wait %.0f%%"
                     "  ETA %s", step, self.total, record["epoch"], record["loss"], record["lr"],
                     record.get("samples_per_s", 0.0), 100 * record.get("data_wait", 0.0),
                     _hms(eta))

    def validation(self, record: dict) -> None:
        if not self.enabled:
            return
        self.write(record)
        text = "  ".join(f"{k} {v:.4f}" for k, v in record.items()
                         if isinstance(v, float) and k.startswith("val_"))
        message = f"validation at step {record['step']} (epoch {record['epoch']}): {text}"
        if self.bar is not None:
            self.bar.write(message)
        else:
            log.info(message)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        self.fh.close()


def _hms(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
