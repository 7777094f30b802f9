"""analysis.report (and analysis.report_figures): the HTML renders, is self-contained, embeds valid PNGs, labels the paper."""

from __future__ import annotations

import base64
import dataclasses
import io
from html.parser import HTMLParser

import matplotlib.image
import polars as pl
import pytest

from analysis.evaluation_inputs import EvaluationError, read_published
from analysis.report import PUBLISHED_LABEL, run_evaluation
from hapflow.config import StudyConfig, load_config
from hapflow.sections import EvaluateConfig
from tests.conftest import ROOT
from tests.test_evaluate import make_study

CONFIG = ROOT / "configs" / "demo.toml"
PUBLISHED = ROOT / "data" / "paper" / "perf_summary.csv"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Collector(HTMLParser):
    """Tags with their attributes, and the text under each h2 heading."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.headings: list[str] = []
        self.text: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_h2 = tag == "h2"
        if self._in_h2:
            self.headings.append("")

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_h2:
            self.headings[-1] += data


def _parse(text: str) -> _Collector:
    parser = _Collector()
    parser.feed(text)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    study = make_study(tmp_path_factory.getbasetemp(), "report_study")
    cfg = dataclasses.replace(load_config(EvaluateConfig, CONFIG, "evaluate"), bootstrap=100,
                              published=str(PUBLISHED))
    result, html = run_evaluation(StudyConfig(evaluate=cfg), study)
    return result, html, _parse(html.read_text())


def test_every_image_is_an_embedded_png(report):
    _, html, parsed = report
    images = [attrs for tag, attrs in parsed.tags if tag == "img"]
    # distributions, best/worst genes, predictor vs predictor, published beside this run
    assert len(images) == 4
    for attrs in images:
        src = attrs["src"]
        assert src.startswith("data:image/png;base64,"), src[:40]
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == PNG_MAGIC
        pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert attrs["alt"]
    figures = sorted(p.name for p in (html.parent / "figures").iterdir())
    assert figures == ["best_worst.png", "predictor_pairs.png", "published.png",
                       "r_distributions.png"]


def test_report_needs_no_external_files(report):
    _, html, parsed = report
    for tag, attrs in parsed.tags:
        assert tag not in ("link", "script", "iframe"), tag
        for key in ("src", "href"):
            assert key not in attrs or attrs[key].startswith("data:"), (tag, attrs)
    assert "http" not in html.read_text().replace("http-equiv", "")


def test_sections_explain_and_list_what_was_left_out(report):
    result, _, parsed = report
    headings = parsed.headings
    for expected in ("Headline", "Summary per predictor and gene class", "Paired comparisons",
                     "Coverage", "Genes not scored (1)", "Settings", PUBLISHED_LABEL):
        assert expected in headings, (expected, headings)
    text = "".join(parsed.text)
    assert "The best predictor (highest mean r over all scored genes) is noisy" in text
    sparse = result.per_gene.filter(pl.col("excluded").is_not_null())
    assert sparse.height == 1 and sparse["gene"][0] in text
    assert "only 2 individual(s) scored, fewer than 3" in text
    assert "log expression (Y) and its per-gene z-score (Z) give the same r" in text
    assert "permuted: predictions cover 748 of 832" in text


def test_published_figures_are_labelled_and_match_the_file(report):
    _, _, parsed = report
    text = "".join(parsed.text)
    assert "Published figures (Rastogi et al. 2024, full GEUVADIS data" in text
    assert "not computed from this study" in text
    assert "model (published)" in text and "This run" in text
    published = read_published(PUBLISHED)
    lasso = published.filter(pl.col("model") == "LASSO").row(0, named=True)
    assert f"{lasso['random_split']:.3f}" in text  # 0.283, as in perf_summary.csv


def test_read_published_keeps_full_data_runs_and_averages_replicates():
    table = read_published(PUBLISHED)
    models = table["model"].to_list()
    assert models[:5] == ["BLUP", "BSLMM", "Elastic net/ PrediXcan", "LASSO", "Top SNP"]
    assert not any("% of Samples" in m for m in models)  # subsampling ablations left out
    raw = pl.read_csv(PUBLISHED).filter(
        (pl.col("Model Type") == "Pairwise\nRegression") & (pl.col("Subsample Ratio") == 1.0)
        & (pl.col("Min AF") == 0.0))
    row = table.filter(pl.col("model") == "Pairwise Regression").row(0, named=True)
    assert row["replicates"] == 3 == raw.height
    assert row["random_split"] == pytest.approx(raw["random_split Genes Avg PearsonR"].mean())
    assert row["n_unseen"] == 670
    assert table.filter(pl.col("model") == "LASSO")["unseen"][0] == 0.0


def test_read_published_rejects_other_tables(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("Model,score\nx,1\n")
    with pytest.raises(EvaluationError, match=f"{path}: missing column"):
        read_published(path)
    with pytest.raises(EvaluationError, match="cannot read"):
        read_published(tmp_path / "absent.csv")


def test_single_predictor_without_published_section(tmp_path_factory, tmp_path):
    study = make_study(tmp_path_factory.getbasetemp(), "report_study")
    cfg = dataclasses.replace(load_config(EvaluateConfig, CONFIG, "evaluate"), bootstrap=50,
                              predictions=["noisy"], published=None)
    _, html = run_evaluation(StudyConfig(evaluate=cfg), study, tmp_path / "out")
    parsed = _parse(html.read_text())
    assert len([1 for tag, _ in parsed.tags if tag == "img"]) == 2
    assert PUBLISHED_LABEL not in parsed.headings and "Genes not scored (0)" in parsed.headings


def test_without_attribution_files_the_report_says_how_to_make_them(report):
    result, _, parsed = report
    assert result.attribution == [] and "Variant attribution" not in parsed.headings
    text = "".join(parsed.text)
    assert "No variant attribution for the runs evaluated here" in text
    assert "python -m analysis.attribute --config C --workdir DIR --run RUN --gene GENE" in text
