"""What an evaluation writes to ``DIR/report``: tables, figures and one self-contained HTML report.

:func:`run_evaluation` is the ``python -m analysis.evaluate`` stage: :func:`analysis.evaluation.
evaluate`, then :func:`write_outputs` (the Parquet tables and config.toml, then
:func:`write_report`: ``OUT/figures/*.png`` and ``OUT/report.html``). The HTML embeds every
figure as a base64 PNG data URI, so the file alone can be mailed or archived. Each section is
one function (``_section_*``) returning its HTML pieces; :func:`render_html` puts them in
order. Each table and figure has a short plain-language explanation above it. The paper's
published means (``perf_summary.csv``) appear in their own, clearly labelled section: they
were measured on the full GEUVADIS data (421 individuals, 500 genes), not on this study's data.

Variant attribution: when ``python -m analysis.attribute`` has written
``DIR/attribution/RUN/GENE.json`` (+ ``GENE.png``) for a run being evaluated (read and checked
by :func:`analysis.evaluation_inputs.read_attribution`), the report shows a section "Variant
attribution" (per gene: a summary table, the top variants, the plot embedded from its file);
without such files the report says in one sentence how to produce them.

Training: for every evaluated predictor that is a fine-tuned run, a section shows its curves
(loss and validation r against step and wall time, from ``DIR/runs/RUN/metrics.jsonl``) and a
row of numbers (steps, final loss, best validation r, wall time); a missing or broken log is one
sentence there. Genes are named by symbol and Ensembl id wherever they are listed. A simulated
study's oracle r (the genetic value's r with expression) is a reference row of the summary.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import numpy as np
import polars as pl

from analysis.evaluation import ALL, ORACLE, EvaluationResult, evaluate
from analysis.evaluation_inputs import PAPER_CLASSES, Attribution, read_published
from analysis.report_figures import (
    figure_best_worst,
    figure_predictor_pairs,
    figure_published,
    figure_r_distributions,
    figure_training_curves,
)
from analysis.training_log import TrainingLog
from hapflow.config import StudyConfig, config_to_dict, save_config
from hapflow.io import atomic_write_bytes, atomic_write_parquet, atomic_write_text
from hapflow.layout import Workdir

__all__ = [
    "PUBLISHED_LABEL",
    "run_evaluation",
    "write_outputs",
    "write_report",
    "render_html",
]

PUBLISHED_LABEL = ("Published figures (Rastogi et al. 2024, full GEUVADIS data: 421 individuals, "
                   "500 genes), not computed from this study")

ATTRIBUTION_TOP = 10
"""Top variants per gene listed in the report's attribution section."""

ATTRIBUTE_COMMAND = ("python -m analysis.attribute --config C --workdir DIR --run RUN --gene GENE "
                     "--split test --max-individuals 8")
"""How to produce what the attribution section shows (named in the report without it)."""


# --------------------------------------------------------------------------------------------
# the stage's outputs


def run_evaluation(study: StudyConfig, workdir: str | os.PathLike | Workdir,
                   out: str | os.PathLike | None = None) -> tuple[EvaluationResult, Path]:
    """The ``analysis.evaluate`` stage: :func:`analysis.evaluation.evaluate`, then
    :func:`write_outputs` to ``out`` (default ``DIR/report``). Returns the result and the path
    of report.html."""
    result = evaluate(study, workdir)
    html_path = write_outputs(result, out if out is not None else Workdir(workdir).report)
    return result, html_path


def write_outputs(result: EvaluationResult, out: str | os.PathLike) -> Path:
    """Write the tables (per_gene, summary, paired, coverage .parquet; oracle.parquet for a
    simulated study), config.toml (the resolved ``[evaluate]``), the figures and report.html
    to ``out``; returns the HTML path."""
    out = Path(out)
    atomic_write_parquet(result.per_gene, out / "per_gene.parquet")
    atomic_write_parquet(result.summary, out / "summary.parquet")
    atomic_write_parquet(result.paired, out / "paired.parquet")
    atomic_write_parquet(result.coverage, out / "coverage.parquet")
    if result.oracle is not None:
        atomic_write_parquet(result.oracle, out / "oracle.parquet")
    save_config({"evaluate": result.config}, out / "config.toml")
    return write_report(result, out)


def write_report(result: EvaluationResult, out: str | os.PathLike) -> Path:
    """Draw the figures, write ``OUT/figures/*.png`` and ``OUT/report.html``; returns the HTML.

    The published section appears when ``result.config.published`` names the paper's
    ``perf_summary.csv``.
    """
    out = Path(out)
    cfg = result.config
    figures = {
        "r_distributions": figure_r_distributions(result.per_gene, result.predictors, cfg.seed),
        "best_worst": figure_best_worst(result.joined, result.per_gene, result.predictors[0]),
    }
    pairs = figure_predictor_pairs(result.per_gene, result.predictors)
    if pairs is not None:
        figures["predictor_pairs"] = pairs
    ceiling = result.oracle["mean_r"][0] if result.oracle is not None else None
    for log in result.training:
        if log.train.height or log.val.height:
            figures[f"training_{log.run}"] = figure_training_curves(log, ceiling)
    published = read_published(cfg.published) if cfg.published else None
    if published is not None:
        figures["published"] = figure_published(published, result.summary, result.predictors)
    for name, png in figures.items():
        atomic_write_bytes(out / "figures" / f"{name}.png", png)
    path = out / "report.html"
    atomic_write_text(path, render_html(result, figures, published))
    return path


def render_html(result: EvaluationResult, figures: dict[str, bytes],
                published: pl.DataFrame | None) -> str:
    """The report as one HTML string; ``figures`` maps figure names to PNG bytes, ``published``
    is :func:`analysis.evaluation_inputs.read_published`'s table (None: no such section)."""
    parts = [
        *_section_title(result),
        *_section_headline(result),
        *_section_warnings(result),
        *_section_summary(result),
        *_section_figures(result, figures),
        *_section_training(result.training, figures),
        *_section_paired(result),
        *_section_populations(result),
        *_section_coverage(result),
        *_section_not_scored(result),
        *_section_attribution(result.attribution, result.runs),
        *_section_published(result, figures, published),
        *_section_settings(result),
        "</body></html>\n",
    ]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# HTML pieces


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; margin-top: 1.5em; }
table { border-collapse: collapse; font-size: 0.88em; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
p.explain { color: #444; max-width: 60em; } img { max-width: 100%; }
.published { background: #fff7e6; border: 2px solid #e0a030; padding: 0.5em 1em; }
.warn { color: #8a4b00; }
"""

_SUMMARY_HEADERS = {
    "predictor": "predictor", "class": "gene class", "n_genes": "genes scored",
    "mean_r": "mean r", "mean_r_low": "mean r: 95% low", "mean_r_high": "mean r: 95% high",
    "median_r": "median r", "median_r_low": "median: 95% low", "median_r_high": "median: 95% high",
    "mean_abs_r": "mean |r|", "share_positive": "share r > 0", "mean_spearman_r": "mean Spearman",
    "n_constant": "constant (r = 0)", "n_excluded": "not scored", "coverage": "coverage",
}


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if np.isnan(value):
            return "–"
        if 0 < abs(value) < 10 ** -digits:
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(frame: pl.DataFrame, headers: dict[str, str] | None = None,
           digits: int = 3) -> str:
    headers = headers or {c: c for c in frame.columns}
    cols = [c for c in headers if c in frame.columns]
    head = "".join(f"<th>{html.escape(headers[c])}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r[c], digits)}</td>" for c in cols) + "</tr>"
                   for r in frame.iter_rows(named=True))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _number(value) -> float:
    """A JSON number for the tables (null: NaN, shown as a dash)."""
    return float("nan") if value is None else float(value)


def _overall(result: EvaluationResult) -> pl.DataFrame:
    """The summary rows over every individual (population "all")."""
    return result.summary.filter(pl.col("population") == ALL)


def _by_rank(frame: pl.DataFrame, result: EvaluationResult, **sort) -> pl.DataFrame:
    """``frame``'s rows in the predictors' rank order (best first)."""
    order = {p: i for i, p in enumerate(result.predictors)}
    return frame.sort(pl.col("predictor").replace_strict(order, return_dtype=pl.Int64), **sort)


def _section_title(result: EvaluationResult) -> list[str]:
    """The page head, the title and what the numbers mean."""
    cfg = result.config
    split = html.escape(cfg.split)
    n_genes = result.per_gene.filter(pl.col("population") == ALL)["gene"].n_unique()
    n_pairs = int(result.coverage["pairs_expected"][0])
    return [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>hapflow evaluation: {split} split</title><style>{_CSS}</style></head><body>",
        f"<h1>How well do the predictors explain differences between individuals? "
        f"({split} split)</h1>",
        f"<p class='explain'>For every gene we compare each predictor's predicted expression "
        f"with the measured expression ({html.escape(cfg.target)}) of the {split} individuals "
        f"and compute the Pearson correlation r across those individuals. r = 1 means the "
        f"predictor ranks and spaces the individuals exactly as measured; r = 0 means it "
        f"explains nothing of the differences between people. Here: {n_genes} genes, "
        f"{n_pairs} (gene, individual) pairs, {len(result.predictors)} predictor(s). Gene "
        f"classes: {html.escape(result.class_source)}. As in Rastogi et al. 2024, a gene whose "
        f"predictions are identical for every individual counts as r = 0. Pearson r does not "
        f"change when a gene's values are shifted or rescaled, so log expression (Y) and its "
        f"per-gene z-score (Z) give the same r.</p>",
    ]


def _section_headline(result: EvaluationResult) -> list[str]:
    """The best predictor and its mean r per gene class."""
    cfg = result.config
    best = result.predictors[0]
    head = _overall(result).filter(pl.col("predictor") == best)
    return [
        f"<h2>Headline</h2><p class='explain'>The best predictor (highest mean r over "
        f"all scored genes) is <b>{html.escape(best)}</b>. Mean r per gene class with "
        f"a 95% bootstrap interval (genes resampled {cfg.bootstrap} times, seed "
        f"{cfg.seed}):</p>",
        _table(head, {k: _SUMMARY_HEADERS[k] for k in (
            "class", "n_genes", "mean_r", "mean_r_low", "mean_r_high", "median_r")}),
        *_oracle_sentence(result),
    ]


def _oracle_sentence(result: EvaluationResult) -> list[str]:
    """For a simulated study: the oracle r, the ceiling the headline should be read against."""
    if result.oracle is None:
        return []
    r = result.oracle.row(0, named=True)
    return [f"<p class='explain'>This study's expression is simulated: the best any predictor "
            f"can reach is the <b>oracle r {_fmt(r['mean_r'])}</b> (mean over {r['n_genes']} "
            f"genes of the simulated genetic value's r with the simulated expression), shown "
            f"as a reference row in the summary below.</p>"]


def _section_warnings(result: EvaluationResult) -> list[str]:
    """The evaluation's warnings, when there are any."""
    if not result.warnings:
        return []
    items = "".join(f"<li>{html.escape(w)}</li>" for w in result.warnings)
    return [f"<h2>Warnings</h2><ul class='warn'>{items}</ul>"]


def _section_summary(result: EvaluationResult) -> list[str]:
    """One row per predictor and gene class."""
    return [
        "<h2>Summary per predictor and gene class</h2><p class='explain'>One row per "
        "predictor and gene class ('all' pools every class). Mean and median are over "
        "genes; the 95% intervals come from resampling genes, so they say how much "
        "the mean would move with a different set of genes. 'share r &gt; 0' is the "
        "fraction of genes predicted in the right direction; 'constant' counts genes "
        "given r = 0 because the predictor gave every individual the same value; "
        "'not scored' genes had too few individuals or no predictions (listed "
        "below); coverage is the fraction of the split's (gene, individual) pairs "
        "that were predicted.</p>",
        _table(_summary_rows(result), _SUMMARY_HEADERS),
        *_oracle_note(result),
    ]


def _summary_rows(result: EvaluationResult) -> pl.DataFrame:
    """The summary's rows over every individual in rank order, then a simulated study's oracle
    rows (the reference)."""
    rows = _by_rank(_overall(result), result, maintain_order=True)
    if result.oracle is None:
        return rows
    return pl.concat([rows, result.oracle], how="diagonal_relaxed")


def _oracle_note(result: EvaluationResult) -> list[str]:
    if result.oracle is None:
        return []
    return [f"<p class='explain'>The rows <b>{html.escape(ORACLE)}</b> are a reference, not a "
            "predictor: per gene, the Pearson r between the simulated genetic value and the "
            "simulated expression, over every simulated individual (from "
            f"{html.escape(str(result.oracle_source))}). No predictor can expect more; a "
            "predictor's mean r divided by the oracle's says how much of the reachable "
            "signal it recovers.</p>"]


def _section_figures(result: EvaluationResult, figures: dict[str, bytes]) -> list[str]:
    """Per-gene r distributions, the best and worst genes, the best against the others."""
    best = html.escape(result.predictors[0])
    parts = [
        "<h2>Per-gene r by predictor and class</h2><p class='explain'>Each dot is one "
        "gene: its correlation between predicted and measured expression across "
        "individuals. Boxes show the middle half of genes and the median. Dots right "
        "of the dashed line are genes where the predictor gets the direction of "
        "differences between people right.</p>",
        _img(figures["r_distributions"], "per-gene r distributions"),
        f"<h2>Best and worst genes of {best}</h2><p class='explain'>Each "
        "dot is one individual: measured expression (x) against the prediction (y). "
        "Top row: the genes with the highest r; bottom row: the lowest.</p>",
        _img(figures["best_worst"], "predicted vs observed, best and worst genes"),
    ]
    if "predictor_pairs" in figures:
        parts += [
            f"<h2>{best} against the other predictors, gene by gene</h2>"
            f"<p class='explain'>Each dot is a gene: its r under another predictor "
            f"(x) and under {best} (y). Dots above the diagonal are genes "
            f"where {best} does better.</p>",
            _img(figures["predictor_pairs"], "predictor vs predictor per-gene r"),
        ]
    return parts


def _section_paired(result: EvaluationResult) -> list[str]:
    """Every two predictors compared on the genes both scored."""
    if not result.paired.height:
        return []
    return [
        "<h2>Paired comparisons</h2><p class='explain'>Two predictors compared on "
        "the genes both scored: the mean of (r of A − r of B) over genes with a "
        "95% bootstrap interval, the share of genes where A is better, and the "
        "p-value of a Wilcoxon signed-rank test (small p: the difference is "
        "unlikely to be chance across these genes). A is the higher-ranked "
        "predictor.</p>",
        _table(result.paired, {
            "predictor_a": "A", "predictor_b": "B", "class": "gene class", "n_genes": "genes",
            "mean_diff": "mean r(A) − r(B)", "diff_low": "95% low", "diff_high": "95% high",
            "share_a_better": "share A better", "wilcoxon_p": "Wilcoxon p"}, digits=3),
    ]


def _section_populations(result: EvaluationResult) -> list[str]:
    """The summary within each population, when the manifest records two or more."""
    if not result.populations:
        return []
    pops = result.summary.filter((pl.col("population") != ALL) & (pl.col("class") == ALL))
    return [
        "<h2>Per population</h2><p class='explain'>The same per-gene correlation "
        "computed within each population's individuals only (populations as "
        "recorded in the shard manifest).</p>",
        _table(pops, {"predictor": "predictor", "population": "population",
                      "n_genes": "genes scored", "mean_r": "mean r",
                      "mean_r_low": "95% low", "mean_r_high": "95% high",
                      "median_r": "median r", "share_positive": "share r > 0"}),
    ]


def _section_coverage(result: EvaluationResult) -> list[str]:
    """How many of the split's pairs each predictor predicted."""
    return [
        "<h2>Coverage</h2><p class='explain'>How many of the split's (gene, "
        "individual) pairs each predictor predicted. Missing pairs are not scored; "
        "a predictor with low coverage is judged on fewer individuals.</p>",
        _table(result.coverage, {
            "predictor": "predictor", "pairs_expected": "pairs in split",
            "pairs_predicted": "pairs predicted", "coverage": "coverage",
            "genes_expected": "genes in split", "genes_predicted": "genes predicted",
            "genes_scored": "genes scored", "genes_constant": "constant (r = 0)"}),
    ]


def _section_not_scored(result: EvaluationResult) -> list[str]:
    """The (predictor, gene) pairs left out of every mean, and why."""
    excluded = result.per_gene.filter(pl.col("excluded").is_not_null()
                                      & (pl.col("population") == ALL))
    parts = [f"<h2>Genes not scored ({excluded.height})</h2><p class='explain'>Genes with "
             f"fewer than {result.config.min_individuals} predicted individuals, without "
             "predictions, or whose measured expression is the same for every individual have "
             "no meaningful correlation; they are left out of every mean above.</p>"]
    if excluded.height:
        parts.append(_table(excluded, {"predictor": "predictor", "symbol": "symbol",
                                       "gene": "gene",
                                       "class": "class", "n_split": "individuals in split",
                                       "n": "scored", "excluded": "reason"}))
    return parts


def _section_training(logs: list[TrainingLog], figures: dict[str, bytes]) -> list[str]:
    """Per fine-tuned run: its curves and numbers, or one sentence on why there are none."""
    if not logs:
        return []
    parts = ["<h2>How the runs trained</h2><p class='explain'>Per fine-tuned run, from its "
             "<code>metrics.jsonl</code>: the training loss at each logged step and the "
             "validation loss, and the validation mean per-gene Pearson r across the validation "
             "individuals, against the optimizer step (top) and the run's wall time (bottom, "
             "when logged). A validation r that stops rising while the training loss keeps "
             "falling is overfitting; the exported model is the best validated one.</p>"]
    for log in logs:
        parts.append(f"<h3>Run {html.escape(log.run)}</h3>")
        if log.problem:
            parts.append(f"<p class='warn'>No complete training curves: "
                         f"{html.escape(log.problem)}.</p>")
        if not (log.train.height or log.val.height):
            continue
        parts.append(_table(pl.DataFrame([_training_numbers(log)], strict=False), {
            "steps": "steps", "final_loss": "final training loss",
            "best_val_r": "best validation r", "best_step": "at step",
            "last_val_r": "last validation r", "validations": "validations",
            "wall": "wall time"}))
        parts.append(_img(figures[f"training_{log.run}"], f"training curves of {log.run}"))
    return parts


def _training_numbers(log: TrainingLog) -> dict:
    """One run's row: steps, final loss, best and last validation r, wall time."""
    train, val = log.train, log.val
    steps = max([*train["step"].to_list(), *val["step"].to_list()])
    row = {"steps": steps,
           "final_loss": float(train["loss"][-1]) if train.height else float("nan"),
           "validations": val.height, "best_val_r": float("nan"), "best_step": None,
           "last_val_r": float(val["val_pearson_r"][-1]) if val.height else float("nan")}
    scored = val.filter(pl.col("val_pearson_r").is_not_nan())
    if scored.height:
        best = scored.sort("val_pearson_r", descending=True).row(0, named=True)
        row.update(best_val_r=best["val_pearson_r"], best_step=best["step"])
    seconds = max(train["wall_seconds"].max() or 0, val["wall_seconds"].max() or 0) \
        if log.has_time else None
    row["wall"] = _duration(seconds) if seconds is not None else "not logged"
    return row


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _section_attribution(items: list[Attribution], runs: list[str]) -> list[str]:
    """The "Variant attribution" section, or without ``items`` one sentence on how to get it.

    ``runs``: the evaluated predictors that are fine-tuned runs (named in that sentence).
    """
    if not items:
        run = html.escape(runs[0]) if runs else "RUN"
        command = html.escape(ATTRIBUTE_COMMAND.replace("--run RUN", f"--run {run}"))
        return [f"<p class='explain'>No variant attribution for the runs evaluated here: "
                f"<code>{command}</code> writes DIR/attribution/{run}/GENE.json and GENE.png, "
                f"which the next evaluation shows in a section of this report.</p>"]
    parts = ["<h2>Variant attribution</h2><p class='explain'>Which of the individuals' own "
             "variants drive a fine-tuned run's predictions (<code>python -m "
             "analysis.attribute</code>). Each variant an individual carries in the gene's "
             "window is reverted to the reference allele, one at a time, and the run predicts "
             "again: the effect is prediction(personal) − prediction(reverted), positive when "
             "the ALT allele raises predicted expression; 'mean effect' averages it over the "
             "carriers. 'variance drop' is the share of the variance of predictions across the "
             "attributed individuals that disappears when the variant is reverted in everyone "
             "(variants are ranked by it). 'r with elastic net' is the Pearson correlation "
             "between the mean per-allele effect and the elastic net's per-allele weight over "
             "the variants both weigh (shown when the baselines' weights exist). The plot shows "
             "every (individual, variant) effect along the window, the TSS dashed.</p>"]
    for item in items:
        parts += _attribution_gene(item)
    return parts


def _attribution_gene(item: Attribution) -> list[str]:
    """One attributed gene: its summary row, its top variants and its plot."""
    s = item.summary
    name = f"{s['symbol']} ({s['gene']})" if s["symbol"] else s["gene"]
    parts = [f"<h3>{html.escape(name)}, run {html.escape(item.run)}</h3>"
             f"<p class='explain'>From {html.escape(str(item.json_path))} and "
             f"{html.escape(item.png_path.name)}.</p>"]
    row = {"gene": s["gene"], "symbol": s["symbol"] or "–", "run": item.run,
           "individuals": len(s["individuals"]), "variants": s["variants"],
           "reverted": s["reverted"], "indels": s["indels_reverted"]}
    headers = {"symbol": "symbol", "gene": "gene", "run": "run",
               "individuals": "individuals", "variants": "distinct variants",
               "reverted": "(individual, variant) reverted", "indels": "indels reverted"}
    en = s.get("elastic_net")
    if en is not None:
        row.update(en_pearson=_number(en.get("pearson")),
                   en_spearman=_number(en.get("spearman")), en_shared=en.get("n_shared"))
        headers.update(en_pearson="r with elastic net", en_spearman="Spearman with "
                       "elastic net", en_shared="variants both weigh")
    parts.append(_table(pl.DataFrame([row], strict=False), headers))
    top = s["top_variants"][:ATTRIBUTION_TOP]
    if top:
        frame = pl.DataFrame(
            [{"rank": r.get("rank", k + 1), "variant": r["variant"],
              "n_carriers": r["n_carriers"], "mean_effect": _number(r["mean_effect"]),
              "variance_drop": _number(r["variance_drop"])}
             for k, r in enumerate(top)], strict=False)
        more = (f" (the first {len(top)} of {s['variants']}; all in "
                f"{html.escape(item.json_path.name.removesuffix('.json'))}"
                ".variants.parquet)") if s["variants"] > len(top) else ""
        parts.append(f"<p class='explain'>Top variants{more}:</p>")
        parts.append(_table(frame, {"rank": "rank", "variant": "variant",
                                    "n_carriers": "carriers", "mean_effect": "mean effect",
                                    "variance_drop": "variance drop"}, digits=4))
    else:
        parts.append("<p class='explain'>None of these individuals carries a variant in "
                     "the window.</p>")
    parts.append(_img(item.png, f"attribution of {name}, run {item.run}"))
    return parts


def _section_published(result: EvaluationResult, figures: dict[str, bytes],
                       published: pl.DataFrame | None) -> list[str]:
    """The paper's published means beside this run's, labelled as such (when configured)."""
    if published is None:
        return []
    headers = {"model": "model (published)", "replicates": "replicates"}
    for c in PAPER_CLASSES:
        headers.update({c: f"{c}: mean r", f"{c}_abs": f"{c}: mean |r|", f"n_{c}": f"n {c}"})
    this_run = _overall(result).filter(pl.col("class") != ALL).pivot(
        on="class", index="predictor", values="mean_r")
    return [
        f"<div class='published'><h2>{html.escape(PUBLISHED_LABEL)}</h2>"
        "<p class='explain'>For orientation only: the mean per-gene r that "
        "Rastogi et al. 2024 report for each model on the full GEUVADIS data "
        "(random_split: 200 genes with individuals held out at random; yri_split: "
        "200 genes tested on Yoruba individuals; unseen: genes never trained on; "
        "replicates averaged; subsampling and allele-frequency ablations left "
        "out). Variant-based models (elastic net, LASSO, top SNP, BLUP, BSLMM) "
        "cannot predict unseen genes, which the paper scores as 0. This run's "
        "numbers come from different data and gene sets and are shown beside "
        "them, not as a reproduction.</p>",
        _img(figures["published"], "published means beside this run"),
        _table(published, headers),
        "<p class='explain'><b>This run</b> (this study's data), mean r per gene class:</p>",
        _table(_by_rank(this_run, result)),
        "</div>",
    ]


def _section_settings(result: EvaluationResult) -> list[str]:
    """The resolved [evaluate] settings and where the observed values came from."""
    settings = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                       for k, v in config_to_dict(result.config).items())
    return ["<h2>Settings</h2><p class='explain'>The resolved [evaluate] settings (also in "
            f"config.toml next to this report); observed values from "
            f"{html.escape(str(result.manifest))}.</p><table>{settings}</table>"]
