"""A small joint-training study for the tests, built once per test session.

The 4-gene training study of :mod:`tests.train_demo` (real chr22 genotypes and expression,
2,048 bp windows) plus, in the same workdir, Enformer's own data at full size (Basenji2
TFRecords of real chr22 sequence, 131,072 bp records extended to 196,608 bp, 896 bins; 5 human
and 3 mouse tracks so a tiny model's heads stay small) built by prep.enformer_data, and MPRA
variant effects (the tables of tests/test_mpra.py: real chr22 200 bp oligos, three cell types)
built by prep.mpra. ``joint_study(base)`` returns (workdir, config path).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from tests import tfrecord_writer as tw
from tests.conftest import CHR22_REF
from tests.train_demo import train_study, write_config

SEQ, BINS, EXT = 131_072, 896, 32_768
HUMAN = {"train": [("chr22", 20_200_000), ("chr22", 20_400_000)],
         "valid": [("chr22", 20_600_000), ("chr22", 20_750_000)],
         "test": [("chr22", 20_850_000)]}
MOUSE_LEN = 300_000
MOUSE = {"train": [("chrM1", 10_000)], "valid": [("chrM1", 150_000)],
         "test": [("chrM1", MOUSE_LEN - SEQ)]}
TRACKS = {"human": 5, "mouse": 3}
_LOCK = threading.Lock()

JOINT_SETTINGS = """
[model]
output_heads_human = 5
output_heads_mouse = 3

[train]
strategy = "pairwise_regression"
enformer_batch_size = 1
mpra_batch_size = 16
joint_val_batches = 1
"""


def _inputs(root: Path) -> str:
    """Basenji2 folders and MPRA tables under ``root``; returns the TOML of their sections."""
    from tests.test_mpra import CELLS, _pairs, _table, _write

    tw.basenji_folder(root / "human", CHR22_REF, HUMAN, seq_length=SEQ, target_length=BINS,
                      num_targets=TRACKS["human"], records_per_file=2)
    mouse_fa = tw.write_small_fasta(root / "mouse.fa", "chrM1",
                                    tw.fasta_slice(CHR22_REF, "22", 20_100_000,
                                                   20_100_000 + MOUSE_LEN))
    tw.basenji_folder(root / "mouse", mouse_fa, MOUSE, seq_length=SEQ, target_length=BINS,
                      num_targets=TRACKS["mouse"], records_per_file=2, seed=1)
    pairs = _pairs()
    rng = np.random.default_rng(3)
    paths = [_write(root / f"{cell}.tsv", _table(pairs, i, rng), "\t")
             for i, cell in enumerate(CELLS)]
    return f"""
[enformer_data]
human = "{root / 'human'}"
human_reference = "{CHR22_REF}"
mouse = "{root / 'mouse'}"
mouse_reference = "{mouse_fa}"
records_per_file = 2
samples_per_shard = 2
workers = 1

[mpra]
tables = {json.dumps([str(p) for p in paths])}
cell_types = {json.dumps(list(CELLS))}
group_size = 64
shard_samples = 256
"""


def joint_study(base: Path) -> tuple[Path, Path]:
    """Build (once) the joint study under ``base/train_demo``; returns (workdir, config)."""
    from hapflow.config import load_study
    from prep.enformer_build import run_enformer_data
    from prep.mpra_build import run_mpra

    workdir, _ = train_study(base)
    config = workdir / "joint.toml"
    with _LOCK:
        if (workdir / "mpra" / "meta.json").exists() and config.exists():
            return workdir, config
        sections = _inputs(workdir / "joint_inputs")
        (workdir / "joint_inputs" / "prep.toml").write_text(sections)
        write_config(config, JOINT_SETTINGS + sections)
        prep = load_study(config, need=("enformer_data", "mpra"))
        run_enformer_data(prep, workdir)
        run_mpra(prep, workdir)
    return workdir, config
