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


def build_study(config: Path, workdir: Path) -> Path:
    """log1p expression + shards of the study ``config`` into ``workdir`` (prep's info logs
    quiet meanwhile); returns the shards folder."""
    from hapflow.config import StudyConfig, load_config
    from hapflow.sections import ExpressionConfig, HaplotypesConfig, ShardConfig
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
        h = load_config(HaplotypesConfig, config, "haplotypes")
        s = load_config(ShardConfig, config, "shard")
        summary = run_shard(StudyConfig(haplotypes=h, shard=s), workdir)
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
