"""A small real study for the training tests, built once per test session.

The chr22 demo (real 1000 Genomes genotypes and GEUVADIS expression) restricted to the four genes
with most variants near their TSS (ARVCF, TANGO2, AC006547.3, DGCR8: two on each strand), so
validation stays short on two CPU cores, and a study TOML that trains a tiny Enformer on
2,048 bp windows. ``train_study(base)`` returns (workdir, config path).
"""

from __future__ import annotations

import threading
from pathlib import Path

from tests.conftest import CHR22_TSS, ROOT

CONFIG = ROOT / "configs" / "demo.toml"
GENES = 4
_LOCK = threading.Lock()

# Settings layered over configs/demo.toml for fast CPU tests.
TEST_SETTINGS = """
[loader]
batch_size = 4
num_workers = 0
length = 2048
epoch_batches = 6
val_pairs_per_gene = 4
seed = 0

[model]
source = "random"
dim = 48
depth = 1
heads = 1
attn_dim_key = 16
dim_divisible_by = 8
output_heads_human = 8
track = 0
n_bins = 4

[train]
strategy = "single"
effective_batch = 8
epochs = 2
lr = 3e-3
warmup_steps = 2
log_every_steps = 1
tensorboard = true
"""


def _render(data: dict) -> str:
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_value(v)}" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def write_config(path: Path, extra: str = "") -> Path:
    """A study TOML: demo.toml's data (absolute paths), the test settings, then ``extra``
    (TOML text whose keys replace those before them, section by section)."""
    import tomllib

    data = tomllib.loads(CONFIG.read_text())
    for key in ("reference", "vcf"):
        data["haplotypes"][key] = str((CONFIG.parent / data["haplotypes"][key]).resolve())
    data["expression"]["input"] = str((CONFIG.parent / data["expression"]["input"]).resolve())
    data["haplotypes"]["tss"] = str(Path(path).parent / "tss4.tsv")
    for layer in (TEST_SETTINGS, extra):
        for section, values in tomllib.loads(layer).items():
            data.setdefault(section, {}).update(values)
    Path(path).write_text(_render(data))
    return Path(path)


def load_train_study(config: Path, overrides: dict | None = None):
    """The study of ``config`` as train.run loads it ([model], [train], [loader]), with
    ``{section: {key: value}}`` overrides applied."""
    from hapflow.config import load_study

    return load_study(config, overrides, need=("model", "train", "loader"))


def train_study(base: Path) -> tuple[Path, Path]:
    """Build (once) the 4-gene study under ``base/train_demo``; returns (workdir, config)."""
    from tests.loader_demo import build_study

    workdir = Path(base) / "train_demo"
    config = workdir / "study.toml"
    with _LOCK:
        meta = workdir / "shards" / "meta.json"
        if meta.exists() and '"format": 3' in meta.read_text():
            return workdir, config
        workdir.mkdir(parents=True, exist_ok=True)
        lines = CHR22_TSS.read_text().splitlines()
        (workdir / "tss4.tsv").write_text("\n".join(lines[: 1 + GENES]) + "\n")
        write_config(config)
        build_study(config, workdir)
    return workdir, config
