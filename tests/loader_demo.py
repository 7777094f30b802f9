"""The demo study's shards for the loader tests, built once per test session.

``demo_shards(base)`` runs prep's expression and shard stages on the real chr22 demo (configs/
demo.toml: 1,024 samples per shard, so the train split has uneven shards of 984, 984, 984 and
246 samples) into ``base/loader_demo`` and returns its ``shards`` folder; later calls in the same
session reuse it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from tests.conftest import ROOT

CONFIG = ROOT / "configs" / "demo.toml"
_LOCK = threading.Lock()


def demo_shards(base: Path) -> Path:
    from prep.config import load_config
    from prep.export import HaplotypesConfig
    from prep.expression import ExpressionConfig
    from prep.sharding import ShardConfig, run_shard
    from prep.targets import log1p_expression, read_expression, write_expression

    workdir = Path(base) / "loader_demo"
    shards = workdir / "shards"
    with _LOCK:
        if (shards / "meta.json").exists():
            return shards
        prep_log = logging.getLogger("prep")
        level = prep_log.level
        prep_log.setLevel(logging.WARNING)
        e = load_config(ExpressionConfig, CONFIG, "expression")
        write_expression(log1p_expression(read_expression(e.input)),
                         workdir / "expression" / "expression.parquet")
        h = load_config(HaplotypesConfig, CONFIG, "haplotypes")
        s = load_config(ShardConfig, CONFIG, "shard")
        try:
            summary = run_shard(h, s, workdir)
        finally:
            prep_log.setLevel(level)
        assert summary.get("finalized"), f"demo shards not finalized: {summary}"
    return shards
