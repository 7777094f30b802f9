"""analysis.attribute (analysis.attribution and its parts) on a real tiny trained run (chr22 demo, 2,048 bp windows): reverting nothing
changes nothing, each reversion equals a direct model call on the hand-reverted window, an indel's
reversion equals the engine's window without it, the ranking's formulas, the elastic-net join,
the PNG, byte-identical re-runs and clear errors."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from analysis.attribute import main
from analysis.attribution import run_attribution
from analysis.mutagenesis import (
    EFFECT_COLUMNS,
    personal_windows,
    predict_windows,
    reverted_windows,
)
from analysis.personal_variants import (
    AttributionError,
    find_gene,
    personal_variants,
    read_variants,
)
from analysis.variant_ranking import rank_variants
from hapflow.config import StudyConfig, load_study
from prep.encoding import encode
from tests.conftest import CHR22_REF, CHR22_VCF
from tests.train_demo import load_train_study, train_study

GENE = "ARVCF"  # minus strand; every test individual carries an indel within 1 kb of its TSS
HAP = {"snps_only": False, "unphased": "error", "ref_mismatch": "error", "seed": 0}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 2-step run whose model sees single bases (8 bp bins: the 128 bp tower of the tiny
    random model flattens them below float32 resolution) and the elastic net of the study."""
    from analysis.variant_baselines import run_baselines
    from hapflow.config import load_config
    from hapflow.sections import BaselinesConfig, HaplotypesConfig
    from train.loop import fine_tune

    workdir, config = train_study(tmp_path_factory.mktemp("attribute"))
    fine_tune(load_train_study(config, {"train": {"max_steps": 2},
                                        "model": {"num_downsamples": 3}}),
              workdir, name="ism")
    hcfg = load_config(HaplotypesConfig, config, "haplotypes", {"length": 2048})
    bcfg = BaselinesConfig(methods=["elastic_net"], n_jobs=1, backend="threads", min_maf=0.01)
    run_baselines(StudyConfig(haplotypes=hcfg, baselines=bcfg), workdir, progress=False)
    return workdir, config


@pytest.fixture(scope="module")
def result(study):
    workdir, config = study
    summary = run_attribution(_study(config), workdir, "ism", GENE, split="test")
    effects = pl.read_parquet(summary["files"]["effects"])
    return summary, effects


@pytest.fixture(scope="module")
def model(study):
    from train.prediction import load_predictor

    workdir, config = study
    return load_predictor(load_train_study(config), workdir, torch.device("cpu"), run="ism")


def _study(config):
    """The test study with attribution on the CPU, at most 3 individuals."""
    return load_study(config, {"attribute": {"device": "cpu", "max_individuals": 3}},
                      need=("haplotypes", "attribute"))


def _window(workdir):
    return find_gene(workdir / "tss4.tsv", GENE, 2048)


def test_outputs(result):
    summary, effects = result
    assert effects.columns == list(EFFECT_COLUMNS)
    assert summary["individuals"] == ["HG00097", "HG00100", "HG00101"]
    assert effects.height == summary["reverted"] == sum(
        f["n_variants"] for f in summary["per_individual"].values()) > 0
    assert summary["indels_reverted"] == 3  # one indel each
    diff = effects["prediction"] - effects["prediction_reverted"] - effects["effect"]
    assert diff.abs().max() == 0
    assert effects["effect"].abs().max() > 1e-4  # the model sees single bases
    assert set(effects["gene"]) == {"ENSG00000099889.9"} and set(effects["symbol"]) == {GENE}
    # window positions: 1-based POS inside [TSS - 1024, TSS + 1024) around the 1-based TSS
    off = effects["offset_from_tss"]
    assert off.min() >= -1024 and off.max() < 1024
    assert (effects["pos"] - off == summary["tss_1based"]).all()
    snp = effects.filter(pl.col("window_index").is_not_null())
    assert (snp["window_index"] == snp["offset_from_tss"] + 1024).all()
    assert effects.filter(pl.col("kind") == "indel")["window_index"].null_count() == 3
    variants = pl.read_parquet(summary["files"]["variants"])
    assert variants["rank"].to_list() == list(range(1, variants.height + 1))
    assert variants.height == effects["variant"].n_unique() == summary["variants"]
    drops = variants["variance_drop"].to_numpy()
    assert (np.diff(drops) <= 0).all()


def test_png_decodes(result):
    import matplotlib.image

    summary, _ = result
    path = summary["files"]["plot"]
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 500


def test_reverting_nothing_changes_nothing(study, model):
    workdir, _ = study
    w = _window(workdir)
    people = ["HG00097", "HG00100"]
    block = read_variants(str(CHR22_VCF), str(CHR22_REF), people, w, HAP)
    personal = personal_windows(str(CHR22_REF), str(CHR22_VCF), people, w, HAP)
    pv = personal_variants(block, 1, people[1], w, False)
    none = np.zeros((2, pv.n_variants), bool)
    seqs = reverted_windows(CHR22_REF, pv, w, none, snps_only=False, tmpdir=workdir)
    assert np.array_equal(seqs[0], personal[1]) and np.array_equal(seqs[1], personal[1])
    pred = predict_windows(model.model, seqs, w.tss_index, torch.device("cpu"))
    assert pred[0] - pred[1] == 0.0


def test_effect_equals_direct_call_on_hand_reverted_window(study, model, result):
    from train.inference import predict_codes

    workdir, _ = study
    _, effects = result
    w = _window(workdir)
    person = "HG00101"
    personal = personal_windows(str(CHR22_REF), str(CHR22_VCF), [person], w, HAP)[0]
    rows = effects.filter((pl.col("individual") == person)
                          & pl.col("window_index").is_not_null())
    assert rows.height >= 3
    seqs, expected = [], []
    for row in rows.iter_rows(named=True):
        seq = personal.copy()  # (2, L)
        for h in map(int, row["haplotypes"].split(",")):
            assert seq[h, row["window_index"]] == encode(row["alt"])[0]
            seq[h, row["window_index"]] = encode(row["ref"])[0]
        seqs.append(seq)
        expected.append(row["effect"])
    batch = torch.from_numpy(np.stack([personal, *seqs]))  # (1 + n, 2, L)
    pred = predict_codes(model.model, batch, torch.full((batch.shape[0],), w.tss_index),
                         torch.device("cpu"))["prediction"].numpy().astype(np.float64)
    direct = pred[0] - pred[1:]
    np.testing.assert_allclose(direct, expected, atol=2e-6)
    assert np.abs(direct).max() > 1e-4
    # the engine's reverted windows are the hand-reverted ones, byte for byte
    block = read_variants(str(CHR22_VCF), str(CHR22_REF), [person], w, HAP)
    pv = personal_variants(block, 0, person, w, False)
    ids = pv.variant_ids()
    revert = np.zeros((rows.height, pv.n_variants), bool)
    for i, v in enumerate(rows["variant"]):
        revert[i, ids.index(v)] = True
    engine = reverted_windows(CHR22_REF, pv, w, revert, snps_only=False, tmpdir=workdir)
    assert np.array_equal(engine, np.stack(seqs))


def test_indel_reversion_equals_window_without_it(study):
    """An individual whose only length-changing allele is one indel: reverting it gives the
    SNPs-only window; reverting everything gives the reference window."""
    from prep.reference import Reference

    workdir, _ = study
    w = _window(workdir)
    people = ["HG00097", "HG00100", "HG00101", "HG00102"]
    block = read_variants(str(CHR22_VCF), str(CHR22_REF), people, w, HAP)
    lengths = np.diff(block.allele_offsets)
    for s, person in enumerate(people):
        pv = personal_variants(block, s, person, w, False)
        hap = block.hap_allele[2 * s: 2 * s + 2]
        carried = hap > 0
        rows = block.first_allele[None, :] + np.maximum(hap, 1) - 1
        lengthy = carried & (lengths[rows] != block.ref_len[None, :])
        if lengthy.any(axis=0).sum() == 1 and pv.kind.count("indel") == 1:
            break
    else:
        pytest.fail("no individual carries exactly one indel near ARVCF")
    revert = np.zeros((2, pv.n_variants), bool)
    revert[0, pv.kind.index("indel")] = True
    revert[1] = True
    seqs = reverted_windows(CHR22_REF, pv, w, revert, snps_only=False, tmpdir=workdir)
    snps = personal_windows(str(CHR22_REF), str(CHR22_VCF), [person], w,
                            {**HAP, "snps_only": True})[0]
    assert np.array_equal(seqs[0], snps)
    assert not np.array_equal(seqs[0], personal_windows(str(CHR22_REF), str(CHR22_VCF),
                                                        [person], w, HAP)[0])
    ref = Reference(CHR22_REF)
    try:
        reference = ref.fetch(w.chrom, w.start, w.end)
    finally:
        ref.close()
    # the records carried outside the window are SNPs: they do not reach into it
    assert np.array_equal(seqs[1], np.stack([reference, reference]))


def test_rank_variants_by_hand():
    effects = pl.DataFrame({
        "individual": ["A", "A", "B"], "variant": ["1:10:C:T", "1:20:G:A", "1:20:G:A"],
        "chrom": ["1"] * 3, "pos": [10, 20, 20], "ref": ["C", "G", "G"],
        "alt": ["T", "A", "A"], "kind": ["snp"] * 3, "effect": [1.0, 0.5, 0.25],
        "dosage": pl.Series([1, 2, 1], dtype=pl.Int8)})
    r = rank_variants(effects, {"A": 2.0, "B": 1.0, "C": 0.0})
    # var(p) = 2/3. Reverting 1:10 everywhere: p = (1, 1, 0), var 2/9 -> drop (2/3-2/9)/(2/3)
    # Reverting 1:20: p = (1.5, 0.75, 0), var 0.375 -> drop (2/3 - 0.375) / (2/3) = 0.4375
    row = {v: d for v, d in zip(r["variant"], r.iter_rows(named=True), strict=True)}
    assert row["1:10:C:T"]["variance_drop"] == pytest.approx(2 / 3)
    assert row["1:20:G:A"]["variance_drop"] == pytest.approx(0.4375)
    assert r["variant"].to_list() == ["1:10:C:T", "1:20:G:A"]
    # cov((1,0,0), p) = 1/3 -> share 1/2; cov((.5,.25,0), p) = 1/6 -> share 1/4
    assert row["1:10:C:T"]["variance_share"] == pytest.approx(0.5)
    assert row["1:20:G:A"]["variance_share"] == pytest.approx(0.25)
    assert row["1:20:G:A"]["mean_effect_per_allele"] == pytest.approx((0.25 + 0.25) / 2)
    assert row["1:20:G:A"]["n_carriers"] == 2 and row["1:20:G:A"]["allele_count"] == 3
    one = rank_variants(effects.filter(pl.col("individual") == "A"), {"A": 2.0})
    assert one["variance_drop"].null_count() == 2 and one["variant"][0] == "1:10:C:T"


def test_cli_and_elastic_net_join(study, capsys):
    """AC006547.3: the elastic net weights 9 variants in its window; the first test individuals
    include two who carry no variant there (they still count in the variance)."""
    from scipy.stats import pearsonr, spearmanr

    workdir, config = study
    assert main(["--config", str(config), "--workdir", str(workdir), "--run", "ism",
                 "--gene", "ENSG00000268292", "--split", "test", "--max-individuals", "6",
                 "--device", "cpu", "--batch-size", "5", "--quiet"]) == 0
    out = workdir / "attribution" / "ism"
    summary = json.loads((out / "ENSG00000268292.1.json").read_text())
    assert len(summary["individuals"]) == 6
    empty = [i for i, f in summary["per_individual"].items() if f["n_variants"] == 0]
    assert len(empty) == 2
    en = summary["elastic_net"]
    weights = pl.read_parquet(workdir / "predictions" / "elastic_net" / "weights.parquet")
    weights = weights.filter(pl.col("gene") == summary["gene"])
    assert en["n_en_variants"] == weights.height == 9
    variants = pl.read_parquet(out / "ENSG00000268292.1.variants.parquet")
    assert variants["n_individuals"].to_list() == [6] * variants.height
    shared = variants.filter(pl.col("en_weight").is_not_null())
    assert shared.height == en["n_shared"] >= 3
    w = dict(zip(weights["variant"], weights["weight_per_allele"], strict=True))
    for v, x in zip(shared["variant"], shared["en_weight_per_allele"], strict=True):
        assert x == w[v]
    a, b = shared["mean_effect_per_allele"], shared["en_weight_per_allele"]
    assert en["pearson"] == pytest.approx(pearsonr(a, b).statistic)
    assert en["spearman"] == pytest.approx(spearmanr(a, b).statistic)
    assert "Traceback" not in capsys.readouterr().err


def test_rerun_gives_same_bytes(study, result):
    workdir, config = study
    summary, _ = result
    before = {k: open(p, "rb").read() for k, p in summary["files"].items()}
    again = run_attribution(_study(config), workdir, "ism", GENE, split="test")
    assert again == json.loads(before["summary"])
    for k, p in again["files"].items():
        assert open(p, "rb").read() == before[k], k


def test_errors_are_clear(study, capsys):
    workdir, config = study
    with pytest.raises(AttributionError, match="not in the TSS table"):
        find_gene(workdir / "tss4.tsv", "NOTAGENE", 2048)
    base = ["--config", str(config), "--workdir", str(workdir), "--run", "ism", "--quiet",
            "--device", "cpu"]
    assert main(base + ["--gene", "NOTAGENE"]) == 2
    err = capsys.readouterr().err
    assert "gene 'NOTAGENE' is not in the TSS table" in err and "Traceback" not in err
    assert main(base + ["--gene", GENE, "--individuals", "HG00097,NA99999"]) == 2
    err = capsys.readouterr().err
    assert "NA99999 are not samples of the VCF" in err
    assert main(base + ["--gene", GENE, "--individuals", ","]) == 2
    assert "names no individual" in capsys.readouterr().err
    assert main(base + ["--gene", GENE, "--run", "nope"]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    assert main(base + ["--gene", GENE, "--set", "attribute.batch_size=0"]) == 2
    assert "batch_size = 0 must be >= 1" in capsys.readouterr().err


# ------------------------------------------------------------------ the report and the demo


@pytest.fixture(scope="module")
def evaluated(study, result, tmp_path_factory):
    """The study evaluated with the run ``ism`` and the elastic net as predictors: the report
    shows the attribution of ``result`` (and of any gene attributed so far), read from the
    study's DIR/attribution. The run needs test predictions to be evaluated; predicting the split
    with this model costs ~50 s on 2 cores, so ``ism`` gets the elastic net's test predictions
    as a stand-in (its r values are not what these tests read)."""
    import shutil

    from analysis.report import run_evaluation
    from hapflow.sections import EvaluateConfig

    workdir, _ = study
    copy = tmp_path_factory.mktemp("attribution_report")
    for name in ("shards", "runs", "attribution"):
        (copy / name).symlink_to(workdir / name, target_is_directory=True)
    (copy / "predictions" / "ism").mkdir(parents=True)
    (copy / "predictions" / "elastic_net").symlink_to(workdir / "predictions" / "elastic_net",
                                                      target_is_directory=True)
    shutil.copy(workdir / "predictions" / "elastic_net" / "test.parquet",
                copy / "predictions" / "ism" / "test.parquet")
    cfg = EvaluateConfig(bootstrap=20, predictions=["ism", "elastic_net"])
    res, html = run_evaluation(StudyConfig(evaluate=cfg), copy)
    return copy, res, html


def test_report_shows_the_attribution_from_its_files(study, result, evaluated):
    import base64

    from tests.test_report import _parse

    workdir, _ = study
    summary, _ = result
    _, res, html = evaluated
    parsed = _parse(html.read_text())
    assert "Variant attribution" in parsed.headings
    text = "".join(parsed.text)
    assert f"{GENE} (ENSG00000099889.9), run ism" in text
    assert "python -m analysis.attribute --config" not in text  # the how-to sentence is not
    assert summary["top_variants"][0]["variant"] in text
    jsons = sorted((workdir / "attribution" / "ism").glob("*.json"))
    assert [a.json_path.name for a in res.attribution] == [p.name for p in jsons]
    assert res.runs == ["ism"]
    images = {attrs["alt"]: attrs["src"] for tag, attrs in parsed.tags if tag == "img"}
    shown = {alt: src for alt, src in images.items() if alt.startswith("attribution of ")}
    assert len(shown) == len(jsons)
    png = base64.b64decode(shown[f"attribution of {GENE} (ENSG00000099889.9), run ism"]
                           .split(",", 1)[1], validate=True)
    assert png == open(summary["files"]["plot"], "rb").read()
    for a in res.attribution:  # the elastic net's r, where the summary has one
        en = a.summary["elastic_net"]
        if en is not None and en["pearson"] is not None:
            assert f"{en['pearson']:.3f}" in text and "r with elastic net" in text


def test_broken_attribution_files_are_clear_errors(study, evaluated, tmp_path, capsys):
    import shutil

    from analysis.evaluate import main as evaluate_main
    from analysis.evaluation_inputs import EvaluationError, read_attribution
    from tests.conftest import ROOT

    workdir, _ = study
    copy = tmp_path / "study"
    copy.mkdir()
    for name in ("shards", "predictions", "runs"):
        (copy / name).symlink_to(evaluated[0] / name, target_is_directory=True)
    shutil.copytree(workdir / "attribution" / "ism", copy / "attribution" / "ism")
    path = copy / "attribution" / "ism" / "ENSG00000099889.9.json"
    good = path.read_text()
    path.write_text(good[: len(good) // 2])
    args = ["--config", str(ROOT / "configs" / "demo.toml"), "--workdir", str(copy),
            "--predictions", "ism", "--set", "evaluate.bootstrap=10", "--quiet"]
    assert evaluate_main(args) == 2
    err = capsys.readouterr().err
    assert f"error: {path}: cannot read the attribution summary" in err
    assert "re-run python -m analysis.attribute --run ism" in err and "Traceback" not in err
    path.write_text(json.dumps({"gene": "x"}))
    with pytest.raises(EvaluationError, match=f"{path}: not an attribution summary .*missing "
                       "key"):
        read_attribution(copy / "attribution", ["ism"])
    path.write_text(good)
    png = path.with_suffix(".png")
    png.write_bytes(png.read_bytes()[:-20])
    with pytest.raises(EvaluationError, match=f"{png}: truncated PNG"):
        read_attribution(copy / "attribution", ["ism"])
    png.unlink()
    with pytest.raises(EvaluationError, match=f"{png}: cannot read the attribution plot"):
        read_attribution(copy / "attribution", ["ism"])
    assert read_attribution(copy / "attribution", ["other_run"]) == []


def test_demo_attributes_the_test_gene_with_most_window_variants(study):
    from analysis.whole_path import attribution_gene

    workdir, _ = study
    genes = pl.read_parquet(workdir / "predictions" / "elastic_net" / "genes.parquet")
    weighed = genes.filter(pl.col("n_nonzero") >= 3)
    assert weighed.height  # so the rule below is the one tested
    most = weighed.sort(["n_variants", "n_nonzero", "gene"], descending=[True, True, False])
    assert attribution_gene(str(workdir)) == most["gene"][0]
    with pytest.raises(AttributionError, match="run the shards"):
        attribution_gene(str(workdir / "absent"))
