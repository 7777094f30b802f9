"""The demo study's shards for the loader tests, built once per test session.

``demo_shards(base)`` runs prep's expression and shard stages on the real chr22 demo (configs/
demo.toml: 26 genes x 162 individuals, 1,024 samples per shard, so shard format 3 gives five
shards of 6, 6, 6, 6 and 2 genes, each gene with its samples of every split) into
``base/loader_demo`` and returns its ``shards`` folder; later calls in the same session reuse
it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from tests.conftest import ROOT

CONFIG = ROOT / "configs" / "demo.toml"
_LOCK = threading.Lock()


def build_study(config: Path, workdir: Path, overrides: dict | None = None) -> Path:
    """log1p expression + shards (format 3) of the study ``config`` (``overrides``: a
    ``{section: {key: value}}`` of haplotypes/shard settings) into ``workdir``, prep's info logs
    quiet meanwhile; returns the shards folder."""
    from hapflow.config import load_config, load_study
    from hapflow.sections import ExpressionConfig
    from prep.expression_files import read_expression, write_expression
    from prep.expression_processing import log1p_expression
    from prep.sharding import run_shard

    prep_log = logging.getLogger("prep")
    level = prep_log.level
    prep_log.setLevel(logging.WARNING)
    try:
        e = load_config(ExpressionConfig, config, "expression")
        write_expression(log1p_expression(read_expression(e.input)),
                         workdir / "expression" / "expression.parquet")
        study = load_study(config, overrides or {}, need=("haplotypes", "shard"))
        summary = run_shard(study, workdir)
    finally:
        prep_log.setLevel(level)
    assert summary.get("finalized"), f"shards of {config} not finalized: {summary}"
    return workdir / "shards"


def demo_shards(base: Path) -> Path:
    workdir = Path(base) / "loader_demo"
    shards = workdir / "shards"
    with _LOCK:
        if (shards / "meta.json").exists():
            return shards
        return build_study(CONFIG, workdir)


def demo_reverse_minus(base: Path) -> Path:
    """The demo study with ``[haplotypes] reverse_minus = true`` (minus-strand genes' windows
    reverse-complemented) under ``base/loader_demo_rc``, built once per session."""
    workdir = Path(base) / "loader_demo_rc"
    shards = workdir / "shards"
    with _LOCK:
        if (shards / "meta.json").exists():
            return shards
        return build_study(CONFIG, workdir, {"haplotypes": {"reverse_minus": True}})
