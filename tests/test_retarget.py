"""Re-targeting rewrites the targets table only; several target sets give masked (B, T) targets.

Real chr22 demo shards (configs/demo.toml); the second target set is the bundled FastQTL
GEUVADIS matrix of the same region (16 of the demo's 26 genes, rank-normalised).
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hapflow.config import StudyConfig, load_config
from hapflow.names import gene_key
from hapflow.sections import HaplotypesConfig, ShardConfig
from prep.expression_files import ExpressionError, read_expression, write_expression
from prep.retarget import main
from prep.shard_reader import iter_study
from prep.sharding import run_shard
from prep.target_table import run_retarget
from prep.verification import verify_shards
from tests.conftest import DATA
from tests.loader_demo import CONFIG, demo_shards

FASTQTL = DATA / "chr22_demo" / "fastqtl_geuvadis_chr22_20-21Mb.normexpr.bed"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return demo_shards(tmp_path_factory.getbasetemp()).parent


@pytest.fixture()
def study(built, tmp_path) -> Path:
    """A private copy of the built demo study (workdir with expression/ and shards/)."""
    work = tmp_path / "study"
    shutil.copytree(built, work)
    return work


def _tars(work: Path) -> dict[str, tuple[str, int]]:
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted((work / "shards").glob("*/*.tar"))}


def _config(**overrides) -> ShardConfig:
    return load_config(ShardConfig, CONFIG, "shard", overrides)


def _val_batches(work: Path, **kw) -> list[dict]:
    from loader import make_loader  # imported here: only the batch tests need the loader

    loader = make_loader(work / "shards", split="val", mode="eval", batch_size=64,
                         num_workers=0, length=256, **kw)
    return list(loader)


def _val_y(work: Path) -> np.ndarray:
    """Y of the val split as users read it: the study's samples with their manifest rows."""
    return np.array([s["Y"] for s in iter_study(work / "shards", split="val", length=256)])


def test_retarget_changes_y_in_seconds_without_touching_the_tars(study):
    before = _tars(study)
    old = _val_y(study)
    path = study / "expression" / "expression.parquet"
    write_expression(read_expression(path).with_columns(pl.exclude("gene") * 2.0 + 1.0), path)
    t0 = time.perf_counter()
    summary = run_retarget(StudyConfig(shard=_config()), study)
    seconds = time.perf_counter() - t0
    assert summary["changed"] and summary["sets"] == ["primary"]
    assert seconds < 10, f"re-targeting the demo took {seconds:.1f} s"
    assert _tars(study) == before  # not a byte, not an mtime
    np.testing.assert_allclose(_val_y(study), old * 2.0 + 1.0, rtol=1e-6)
    assert verify_shards(study / "shards").ok
    # the same targets again: nothing written
    again = run_retarget(StudyConfig(shard=_config()), study)
    assert not again["changed"]


def test_retargeted_y_reaches_the_batches(study):
    old = np.concatenate([b["Y"].numpy()[b["valid"].numpy()] for b in _val_batches(study)])
    path = study / "expression" / "expression.parquet"
    write_expression(read_expression(path).with_columns(pl.exclude("gene") * 2.0 + 1.0), path)
    run_retarget(StudyConfig(shard=_config()), study)
    new = np.concatenate([b["Y"].numpy()[b["valid"].numpy()] for b in _val_batches(study)])
    np.testing.assert_allclose(new, old * 2.0 + 1.0, rtol=1e-6)


def test_retarget_cli_with_another_target_reference(study, capsys):
    m0 = pl.read_parquet(study / "shards" / "manifest.parquet")
    assert main(["--config", str(CONFIG), "--workdir", str(study),
                 "--set", "shard.target_reference=all"]) == 0
    assert "rewritten" in capsys.readouterr().out
    m1 = pl.read_parquet(study / "shards" / "manifest.parquet")
    assert m1["Y"].equals(m0["Y"]) and not m1["Z"].equals(m0["Z"])
    for gene in m1["gene"].unique().to_list()[:3]:  # "all": z-scores over every individual
        z = m1.filter(pl.col("gene") == gene)["Z"].to_numpy()
        assert abs(z.mean()) < 1e-9 and abs(z.std() - 1) < 1e-9
    # prep.shard with the changed setting sees the same sequence build: nothing to rebuild
    h = load_config(HaplotypesConfig, CONFIG, "haplotypes")
    summary = run_shard(StudyConfig(haplotypes=h, shard=_config(target_reference="all")), study)
    assert summary["built"] == 0 and summary.get("nothing_to_do")


def test_retarget_refuses_to_drop_samples(study):
    path = study / "expression" / "expression.parquet"
    m = pl.read_parquet(study / "shards" / "manifest.parquet")
    gone = m["individual"][0]
    write_expression(read_expression(path).drop(gone), path)
    with pytest.raises(ExpressionError, match=f"individual {gone}.*rebuild the shards"):
        run_retarget(StudyConfig(shard=_config()), study)
    assert pl.read_parquet(study / "shards" / "manifest.parquet").equals(m)
    assert main(["--config", str(CONFIG), "--workdir", str(study), "--quiet"]) == 2


def test_multi_target_sets_are_masked_where_a_matrix_lacks_the_sample(study):
    """The manifest gains the set's columns (NaN where FastQTL lacks the sample) without a
    byte of the shards changing; batches carry them as masked (B, T) targets."""
    before = _tars(study)
    h = load_config(HaplotypesConfig, CONFIG, "haplotypes")
    scfg = _config(target_sets=str(FASTQTL), target_names="fastqtl")
    # the same sequences serve the new target set
    summary = run_shard(StudyConfig(haplotypes=h, shard=scfg), study)
    assert summary.get("retargeted") and summary["built"] == 0 and _tars(study) == before
    m = pl.read_parquet(study / "shards" / "manifest.parquet")
    assert {"Y:fastqtl", "Z:fastqtl", "P:fastqtl"} <= set(m.columns)
    assert 0 < m["Y:fastqtl"].is_nan().sum() < m.height  # FastQTL lacks 10 of the 26 genes
    assert verify_shards(study / "shards").ok
    fq = read_expression(FASTQTL)
    value = {(gene_key(g), ind): v for g, *vs in fq.iter_rows()
             for ind, v in zip(fq.columns[1:], vs, strict=True)}
    batches = _val_batches(study)
    seen = masked = 0
    for b in batches:
        t, mask, valid = b["targets"].numpy(), b["target_mask"].numpy(), b["valid"].numpy()
        assert t.shape == mask.shape == (len(valid), 2)
        np.testing.assert_array_equal(t[valid, 0], b["Y"].numpy()[valid])
        assert mask[valid, 0].all() and not mask[~valid].any()
        for i in np.flatnonzero(valid):
            expect = value.get((gene_key(b["gene"][i]), b["individual"][i]))
            assert mask[i, 1] == (expect is not None)
            if expect is not None:
                assert abs(t[i, 1] - expect) < 1e-5
                seen += 1
            else:
                assert np.isnan(t[i, 1])
                masked += 1
    assert seen > 0 and masked > 0  # FastQTL lacks 10 of the demo's genes
    import torch  # imported here: only the batch tests need torch and the loader

    from loader import make_loader

    pair = next(iter(make_loader(study / "shards", split="train", mode="pairwise", batch_size=4,
                                 num_workers=0, length=256)))
    assert pair["targets_a"].shape == pair["target_mask_b"].shape == (4, 2)
    assert pair["target_mask_b"].dtype == torch.bool
    assert verify_shards(study / "shards").ok


def test_target_set_names_are_checked():
    with pytest.raises(ValueError, match="one per set"):
        dataclasses.replace(_config(target_sets=str(FASTQTL)), target_names=["a", "b"])
    with pytest.raises(ValueError, match="must be unique"):
        _config(target_sets=f"{FASTQTL},{FASTQTL}")
