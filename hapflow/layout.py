"""The one layout of a study's working directory (``--workdir DIR``).

::

    DIR/expression/expression.parquet   prep.expression, prep.simulate (targets' input)
    DIR/shards/                         prep.shard (manifest.parquet, meta.json, {split}/*.tar)
    DIR/enformer_data/                  prep.enformer_data (manifest.parquet, meta.json,
                                        {organism}/{split}/*.tar)
    DIR/mpra/                           prep.mpra (manifest.parquet, meta.json, {split}/*.tar)
    DIR/runs/RUN/                       train.run (checkpoints, model, metrics, summary)
    DIR/predictions/NAME/SPLIT.parquet  train.predict, analysis.baselines
    DIR/attribution/RUN/GENE.*          analysis.attribute
    DIR/report/report.html              analysis.evaluate
    DIR/.cache/                         input checksums and build records (safe to delete)

Every stage finds its folders through :class:`Workdir`; nothing builds these paths by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Workdir"]


@dataclass(frozen=True)
class Workdir:
    """A study's working directory and every folder in it (nothing is created here)."""

    root: Path
    """The folder given as ``--workdir``."""

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    def __fspath__(self) -> str:
        return str(self.root)

    def __str__(self) -> str:
        return str(self.root)

    @property
    def expression(self) -> Path:
        """``DIR/expression``: the prepared (or simulated) expression matrix."""
        return self.root / "expression"

    @property
    def expression_matrix(self) -> Path:
        """``DIR/expression/expression.parquet``: the default ``[shard] expression``."""
        return self.expression / "expression.parquet"

    @property
    def shards(self) -> Path:
        """``DIR/shards``: the study's shards and tables."""
        return self.root / "shards"

    @property
    def manifest(self) -> Path:
        """``DIR/shards/manifest.parquet``: one row per (gene, individual) with its targets."""
        return self.shards / "manifest.parquet"

    @property
    def enformer_data(self) -> Path:
        """``DIR/enformer_data``: Enformer's own training data as shards (joint training)."""
        return self.root / "enformer_data"

    @property
    def enformer_manifest(self) -> Path:
        """``DIR/enformer_data/manifest.parquet``: one row per record, its origin and interval."""
        return self.enformer_data / "manifest.parquet"

    @property
    def mpra(self) -> Path:
        """``DIR/mpra``: MPRA variant effects as shards (joint training)."""
        return self.root / "mpra"

    @property
    def mpra_manifest(self) -> Path:
        """``DIR/mpra/manifest.parquet``: one row per oligo pair, its split and effects."""
        return self.mpra / "manifest.parquet"

    @property
    def runs(self) -> Path:
        """``DIR/runs``: one folder per training run."""
        return self.root / "runs"

    def run(self, name: str) -> Path:
        """``DIR/runs/NAME``."""
        return self.runs / name

    @property
    def predictions(self) -> Path:
        """``DIR/predictions``: one folder per predictor (runs and baselines)."""
        return self.root / "predictions"

    def predictor(self, name: str) -> Path:
        """``DIR/predictions/NAME``."""
        return self.predictions / name

    @property
    def attribution(self) -> Path:
        """``DIR/attribution``: one folder per attributed run."""
        return self.root / "attribution"

    def attribution_of(self, run: str) -> Path:
        """``DIR/attribution/RUN``."""
        return self.attribution / run

    @property
    def report(self) -> Path:
        """``DIR/report``: report.html and the evaluation tables."""
        return self.root / "report"

    @property
    def cache(self) -> Path:
        """``DIR/.cache``: input checksums and build records; deleting it costs only time."""
        return self.root / ".cache"
