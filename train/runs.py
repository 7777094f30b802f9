"""A study's training runs by name: which exist, and errors that list them.

A run is a folder ``DIR/runs/NAME`` (:meth:`hapflow.layout.Workdir.run`). Commands that take
a run name (``train.run --resume``, ``train.predict --run``, ``analysis.attribute --run``) look
it up here, so a misspelt name is an error that lists the runs there with a did-you-mean,
never a new run under the misspelt name.
"""

from __future__ import annotations

from pathlib import Path

from hapflow.config import _suggest  # the did-you-mean of every setting name, reused
from hapflow.layout import Workdir
from train.checkpoint import latest_checkpoint

__all__ = ["RunError", "run_names", "existing_run", "run_state"]


class RunError(ValueError):
    """A run name that names no run, or a run that cannot do what was asked."""


def run_names(layout: Workdir) -> list[str]:
    """Names of the folders in ``DIR/runs``, sorted (empty when there is none)."""
    if not layout.runs.is_dir():
        return []
    return sorted(p.name for p in layout.runs.iterdir() if p.is_dir()
                  and not p.name.startswith("."))


def run_state(run_dir: Path) -> str:
    """A run's state in words: ``finished``, ``checkpoint at step N`` or ``no checkpoint``."""
    if (run_dir / "model.json").exists():
        return "finished"
    latest = latest_checkpoint(run_dir / "checkpoints")
    if latest is not None:
        return f"checkpoint at step {int(latest.name.split('-')[-1])}"
    return "no checkpoint"


def existing_run(layout: Workdir, name: str) -> Path:
    """``DIR/runs/NAME``, which must exist.

    Raises
    ------
    RunError
        No such run: the message lists the runs there (with their state) and the nearest
        name, or says that there is none yet and how to train one.
    """
    path = layout.run(name)
    if path.is_dir():
        return path
    names = run_names(layout)
    if not names:
        raise RunError(f"no run {name!r}: {layout.runs} holds no run yet; train one with "
                       f"`python -m train.run --config STUDY.toml --workdir {layout} --name "
                       f"{name}`")
    listed = ", ".join(f"{n} ({run_state(layout.run(n))})" for n in names)
    raise RunError(f"no run {name!r} in {layout.runs}{_suggest(name, names)}; the runs there: "
                   f"{listed}")
