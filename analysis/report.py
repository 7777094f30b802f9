"""Figures (PNG, matplotlib Agg) and one self-contained HTML report of an evaluation.

:func:`write_report` takes an :class:`analysis.evaluate.EvaluationResult` and writes
``OUT/figures/*.png`` and ``OUT/report.html``; the HTML embeds every figure as a base64 PNG data
URI, so the file alone can be mailed or archived. Each table and figure has a short
plain-language explanation above it. The paper's published means (``perf_summary.csv``) appear
in their own, clearly labelled section: they were measured on the full GEUVADIS data (421
individuals, 500 genes), not on this study's data.

Variant attribution: when ``python -m analysis.attribute`` has written
``DIR/attribution/RUN/GENE.json`` (+ ``GENE.png``) for a run being evaluated,
:func:`read_attribution` reads and checks them and the report shows a section "Variant
attribution" (per gene: a summary table, the top variants, the plot embedded from its file);
without such files the report says in one sentence how to produce them.

Figures are drawn with ``matplotlib.figure.Figure`` on the Agg canvas (no pyplot state, no
display needed); the same inputs give the same bytes.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from analysis.evaluate import EvaluationResult

__all__ = [
    "Attribution",
    "read_attribution",
    "read_published",
    "figure_r_distributions",
    "figure_best_worst",
    "figure_predictor_pairs",
    "figure_published",
    "render_html",
    "write_report",
]

PAPER_CLASSES = ("random_split", "yri_split", "unseen")
"""The paper's gene classes, in its order."""

PUBLISHED_LABEL = ("Published figures (Rastogi et al. 2024, full GEUVADIS data: 421 individuals, "
                   "500 genes), not computed from this study")

ATTRIBUTION_TOP = 10
"""Top variants per gene listed in the report's attribution section."""

ATTRIBUTE_COMMAND = ("python -m analysis.attribute --config C --workdir DIR --run RUN --gene GENE "
                     "--split test --max-individuals 8")
"""How to produce what the attribution section shows (named in the report without it)."""

_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]


def _error(message: str) -> Exception:
    from analysis.evaluate import EvaluationError

    return EvaluationError(message)


# --------------------------------------------------------------------------------------------
# published figures


def read_published(path: str | os.PathLike) -> pl.DataFrame:
    """The paper's mean per-gene Pearson r per model type, full-data runs only.

    Reads ``perf_summary.csv`` (one row per model and replicate; columns Model Type, Replicate,
    Subsample Ratio, Min AF and, per class C in random_split / yri_split / unseen,
    ``C Genes Avg PearsonR``, ``C Genes Avg |PearsonR|`` and ``n_C``). Ablations that subsample
    individuals (Subsample Ratio not -1 or 1) or filter variants by allele frequency (Min AF not
    -1 or 0) are left out; replicates (seeds) are averaged.

    Returns
    -------
    pl.DataFrame
        model (str, line breaks removed), replicates (int), and for each class C: ``C`` (mean
        r), ``C_abs`` (mean |r|), ``n_C`` (genes); in the file's order of first appearance.
    """
    path = Path(path)
    try:
        table = pl.read_csv(path)
    except (OSError, pl.exceptions.PolarsError) as err:
        raise _error(f"{path}: cannot read the published summary ({err})") from None
    need = ["Model Type", "Subsample Ratio", "Min AF"]
    for c in PAPER_CLASSES:
        need += [f"{c} Genes Avg PearsonR", f"{c} Genes Avg |PearsonR|", f"n_{c}"]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise _error(f"{path}: missing column(s) {', '.join(missing)}; expected the paper's "
                     "perf_summary.csv")
    full = table.filter(pl.col("Subsample Ratio").is_in([-1.0, 1.0])
                        & pl.col("Min AF").is_in([-1.0, 0.0]))
    full = full.with_columns(
        pl.col("Model Type").str.replace_all(r"\s*\n\s*", " ").alias("model"),
        pl.int_range(pl.len()).alias("_order"),
    )
    aggs = [pl.len().alias("replicates"), pl.col("_order").min()]
    for c in PAPER_CLASSES:
        aggs += [pl.col(f"{c} Genes Avg PearsonR").mean().alias(c),
                 pl.col(f"{c} Genes Avg |PearsonR|").mean().alias(f"{c}_abs"),
                 pl.col(f"n_{c}").first().alias(f"n_{c}")]
    return full.group_by("model").agg(aggs).sort("_order").drop("_order")


# --------------------------------------------------------------------------------------------
# variant attribution (files of python -m analysis.attribute)


@dataclass(frozen=True)
class Attribution:
    """One gene's attribution as ``python -m analysis.attribute`` wrote it.

    Attributes
    ----------
    run : str
        The run (folder name under ``DIR/attribution``).
    json_path, png_path : Path
        ``DIR/attribution/RUN/GENE.json`` and the plot next to it, ``GENE.png``.
    summary : dict
        The JSON's content (gene, symbol, run, individuals, variants, reverted,
        indels_reverted, elastic_net, top_variants, ...), checked by :func:`read_attribution`.
    png : bytes
        The plot's bytes (a checked PNG).
    """

    run: str
    json_path: Path
    png_path: Path
    summary: dict
    png: bytes


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SUMMARY_TYPES = {"gene": str, "symbol": str, "individuals": list, "variants": int,
                  "reverted": int, "indels_reverted": int, "top_variants": list}
_TOP_KEYS = ("variant", "n_carriers", "mean_effect", "variance_drop")


def _png_problem(data: bytes) -> str | None:
    """Why ``data`` is not a complete PNG (signature, chunk lengths and CRCs, IHDR first, IEND
    last), or None when it is one. Reads no pixels."""
    if data[:8] != _PNG_MAGIC:
        return "not a PNG (wrong signature)"
    at, first = 8, True
    while True:
        if at + 12 > len(data):
            return "truncated PNG (no IEND chunk)"
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind = data[at + 4:at + 8]
        end = at + 12 + length
        if end > len(data):
            return f"truncated PNG (chunk {kind!r} runs past the end of the file)"
        (crc,) = struct.unpack(">I", data[end - 4:end])
        if zlib.crc32(data[at + 4:end - 4]) != crc:
            return f"corrupt PNG (checksum of chunk {kind!r} at byte {at} does not match)"
        if first and kind != b"IHDR":
            return "corrupt PNG (first chunk is not IHDR)"
        first, at = False, end
        if kind == b"IEND":
            return None


def _summary_problem(summary) -> str | None:
    """What a GENE.json lacks to be shown, or None."""
    if not isinstance(summary, dict):
        return "not a JSON object"
    missing = [k for k in _SUMMARY_TYPES if k not in summary]
    if missing:
        return f"missing key(s) {', '.join(missing)}"
    for key, kind in _SUMMARY_TYPES.items():
        value = summary[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{key} is {type(value).__name__}, expected {kind.__name__}"
    en = summary.get("elastic_net")
    if en is not None and not isinstance(en, dict):
        return f"elastic_net is {type(en).__name__}, expected an object or null"
    for k, row in enumerate(summary["top_variants"]):
        lacking = [c for c in _TOP_KEYS if not isinstance(row, dict) or c not in row]
        if lacking:
            return f"top_variants[{k}] lacks {', '.join(lacking)}"
    return None


def read_attribution(root: str | os.PathLike, runs: list[str]) -> list[Attribution]:
    """The attribution summaries and plots of ``runs`` under ``root`` (``DIR/attribution``).

    For each run in the given order, every ``root/RUN/*.json`` (sorted by name) with the
    ``.png`` of the same stem beside it. Runs without a folder are skipped; an empty list means
    there is nothing to show.

    Raises
    ------
    EvaluationError
        A JSON that cannot be read or is not an attribution summary, or a missing, unreadable
        or incomplete PNG; the message names the file and how to rewrite it.
    """
    root = Path(root)
    found: list[Attribution] = []
    for run in runs:
        folder = root / run
        if not folder.is_dir():
            continue
        redo = (f"re-run python -m analysis.attribute --run {run} --gene GENE (same --config "
                f"and --workdir) or delete the file")
        for path in sorted(folder.glob("*.json")):
            try:
                summary = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, ValueError) as err:
                raise _error(f"{path}: cannot read the attribution summary ({err}); "
                             f"{redo}") from None
            problem = _summary_problem(summary)
            if problem:
                raise _error(f"{path}: not an attribution summary of python -m "
                             f"analysis.attribute ({problem}); {redo}")
            png_path = path.with_suffix(".png")
            try:
                png = png_path.read_bytes()
            except OSError as err:
                raise _error(f"{png_path}: cannot read the attribution plot of {path.name} "
                             f"({err.strerror or err}); {redo}") from None
            problem = _png_problem(png)
            if problem:
                raise _error(f"{png_path}: {problem}; {redo}")
            found.append(Attribution(run, path, png_path, summary, png))
    return found


# --------------------------------------------------------------------------------------------
# figures


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _classes(per_gene: pl.DataFrame) -> list[str]:
    present = per_gene["class"].unique().to_list()
    ordered = [c for c in PAPER_CLASSES if c in present]
    return ordered + sorted(c for c in present if c not in ordered)


def _horizontal() -> dict:
    """Horizontal box plots: ``orientation`` from matplotlib 3.10, ``vert`` before it."""
    import matplotlib

    major, minor = (int(v) for v in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def figure_r_distributions(per_gene: pl.DataFrame, predictors: list[str],
                           seed: int = 0) -> bytes:
    """Box plots of per-gene Pearson r, one box per predictor, one panel per gene class.

    ``per_gene``: the evaluation's per-gene table (rows of population "all" are used). Points
    are the genes (jittered sideways with a seeded generator). Returns PNG bytes.
    """
    base = per_gene.filter((pl.col("population") == "all") & pl.col("excluded").is_null())
    classes = _classes(base) or ["all"]
    fig = _figure(min(4.0 + 3.2 * len(classes), 16), 0.6 + 0.45 * len(predictors) + 1.6)
    axes = fig.subplots(1, len(classes), sharex=True, squeeze=False)[0]
    rng = np.random.default_rng(seed)
    for ax, cls in zip(axes, classes, strict=True):
        data = [base.filter((pl.col("predictor") == p) & (pl.col("class") == cls))["pearson_r"]
                .to_numpy() for p in predictors]
        pos = np.arange(len(predictors))[::-1]  # best predictor on top
        ax.boxplot([d if d.size else [np.nan] for d in data], positions=pos, widths=0.6,
                   showfliers=False, **_horizontal())
        for k, d in enumerate(data):
            ax.scatter(d, pos[k] + rng.uniform(-0.18, 0.18, d.size), s=9, alpha=0.6,
                       color=_COLORS[k % len(_COLORS)], linewidths=0)
        ax.axvline(0, color="grey", lw=0.8, ls="--")
        ax.set_yticks(pos, predictors if ax is axes[0] else [""] * len(predictors))
        n = max((d.size for d in data), default=0)
        ax.set_title(f"{cls} ({n} genes)")
        ax.set_xlabel("Pearson r per gene")
    return _png(fig)


def figure_best_worst(joined: pl.DataFrame, per_gene: pl.DataFrame, predictor: str,
                      k: int = 3) -> bytes:
    """Predicted vs observed expression for the ``k`` best and ``k`` worst genes of a predictor.

    ``joined``: scored pairs (predictor, gene, individual, observed, prediction). One point per
    individual; top row best genes, bottom row worst. Returns PNG bytes.
    """
    scored = per_gene.filter((pl.col("predictor") == predictor) & (pl.col("population") == "all")
                             & pl.col("excluded").is_null()).sort("pearson_r", "gene",
                                                                   descending=[True, False])
    k = max(1, min(k, scored.height // 2 or 1))
    best, worst = scored.head(k), scored.tail(k).reverse()
    fig = _figure(3.1 * k, 6.0)
    axes = fig.subplots(2, k, squeeze=False)
    rows = joined.filter(pl.col("predictor") == predictor)
    for row, (label, genes) in enumerate((("best", best), ("worst", worst))):
        for col in range(k):
            ax = axes[row][col]
            if col >= genes.height:
                ax.set_axis_off()
                continue
            g = genes.row(col, named=True)
            pts = rows.filter(pl.col("gene") == g["gene"])
            ax.scatter(pts["observed"].to_numpy(), pts["prediction"].to_numpy(), s=12,
                       alpha=0.7, color=_COLORS[0] if row == 0 else _COLORS[3], linewidths=0)
            ax.set_title(f"{label}: {g['gene']}\nr = {g['pearson_r']:.2f}, n = {g['n']}",
                         fontsize=9)
            ax.set_xlabel("observed expression")
            if col == 0:
                ax.set_ylabel("predicted")
    return _png(fig)


def figure_predictor_pairs(per_gene: pl.DataFrame, predictors: list[str],
                           max_panels: int = 4) -> bytes | None:
    """Per-gene r of the best predictor (y) against each other predictor (x), one dot per gene.

    Dots above the diagonal are genes where the best predictor does better; colour is the gene
    class. ``None`` when there is only one predictor.
    """
    if len(predictors) < 2:
        return None
    base = per_gene.filter(pl.col("population") == "all")
    wide = base.pivot(on="predictor", index=["gene", "class"], values="pearson_r")
    best, others = predictors[0], predictors[1:1 + max_panels]
    classes = _classes(base)
    fig = _figure(3.4 * len(others) + 0.6, 3.7)
    axes = fig.subplots(1, len(others), squeeze=False)[0]
    for ax, other in zip(axes, others, strict=True):
        for j, cls in enumerate(classes):
            sub = wide.filter(pl.col("class") == cls)
            ax.scatter(sub[other].to_numpy(), sub[best].to_numpy(), s=14, alpha=0.7,
                       color=_COLORS[j % len(_COLORS)], label=cls, linewidths=0)
        ax.plot([-1, 1], [-1, 1], color="grey", lw=0.8, ls="--")
        ax.set_xlim(-1.02, 1.02)
        ax.set_ylim(-1.02, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel(f"r of {other}")
        ax.set_ylabel(f"r of {best}")
    axes[-1].legend(fontsize=8, loc="lower right")
    return _png(fig)


def figure_published(published: pl.DataFrame, summary: pl.DataFrame,
                     predictors: list[str]) -> bytes:
    """Two panels: the paper's published mean r per class, and this run's, labelled as such."""
    fig = _figure(13.0, 0.9 + 0.28 * max(published.height, len(predictors)) + 1.2)
    left, right = fig.subplots(1, 2, width_ratios=[1.4, 1.0])
    y = np.arange(published.height)[::-1]
    h = 0.8 / len(PAPER_CLASSES)
    for j, cls in enumerate(PAPER_CLASSES):
        left.barh(y + (1 - j) * h, published[cls].to_numpy(), height=h, label=cls,
                  color=_COLORS[j])
    left.set_yticks(y, published["model"].to_list(), fontsize=7)
    left.set_xlabel("mean Pearson r per gene")
    left.set_title("PUBLISHED: Rastogi et al. 2024, full GEUVADIS data", fontsize=10)
    left.legend(fontsize=8, loc="lower right")
    base = summary.filter((pl.col("population") == "all") & (pl.col("class") != "all"))
    classes = _classes(base)
    y = np.arange(len(predictors))[::-1]
    h = 0.8 / max(len(classes), 1)
    for j, cls in enumerate(classes):
        sub = base.filter(pl.col("class") == cls)
        by = dict(zip(sub["predictor"], sub["mean_r"], strict=True))
        means = np.array([by.get(p, np.nan) for p in predictors])
        lows = dict(zip(sub["predictor"], sub["mean_r_low"], strict=True))
        highs = dict(zip(sub["predictor"], sub["mean_r_high"], strict=True))
        err = np.array([[m - lows.get(p, m), highs.get(p, m) - m]
                        for p, m in zip(predictors, means, strict=True)]).T
        right.barh(y + ((len(classes) - 1) / 2 - j) * h, means, height=h, xerr=err, label=cls,
                   color=_COLORS[(j + 3) % len(_COLORS)], capsize=2)
    right.set_yticks(y, predictors, fontsize=8)
    right.set_xlabel("mean Pearson r per gene (95% bootstrap interval)")
    right.set_title("THIS RUN: this study's data", fontsize=10)
    right.axvline(0, color="grey", lw=0.8)
    right.legend(fontsize=8, loc="lower right")
    return _png(fig)


# --------------------------------------------------------------------------------------------
# HTML


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


def _attribution_html(items: list[Attribution], runs: list[str]) -> list[str]:
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
        s = item.summary
        name = f"{s['symbol']} ({s['gene']})" if s["symbol"] else s["gene"]
        parts.append(f"<h3>{html.escape(name)}, run {html.escape(item.run)}</h3>"
                     f"<p class='explain'>From {html.escape(str(item.json_path))} and "
                     f"{html.escape(item.png_path.name)}.</p>")
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


def render_html(result: EvaluationResult, figures: dict[str, bytes],
                published: pl.DataFrame | None) -> str:
    """The report as one HTML string; ``figures`` maps figure names to PNG bytes."""
    cfg = result.config
    best = result.predictors[0]
    split = html.escape(cfg.split)
    summary = result.summary
    base = summary.filter(pl.col("population") == "all")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>hapflow evaluation: {split} split</title><style>{_CSS}</style></head><body>",
             f"<h1>How well do the predictors explain differences between individuals? "
             f"({split} split)</h1>"]
    n_genes = result.per_gene.filter(pl.col("population") == "all")["gene"].n_unique()
    n_pairs = int(result.coverage["pairs_expected"][0])
    parts.append(
        f"<p class='explain'>For every gene we compare each predictor's predicted expression "
        f"with the measured expression ({html.escape(cfg.target)}) of the {split} individuals "
        f"and compute the Pearson correlation r across those individuals. r = 1 means the "
        f"predictor ranks and spaces the individuals exactly as measured; r = 0 means it "
        f"explains nothing of the differences between people. Here: {n_genes} genes, "
        f"{n_pairs} (gene, individual) pairs, {len(result.predictors)} predictor(s). Gene "
        f"classes: {html.escape(result.class_source)}. As in Rastogi et al. 2024, a gene whose "
        f"predictions are identical for every individual counts as r = 0. Pearson r does not "
        f"change when a gene's values are shifted or rescaled, so log expression (Y) and its "
        f"per-gene z-score (Z) give the same r.</p>")
    head = base.filter(pl.col("predictor") == best)
    parts.append(f"<h2>Headline</h2><p class='explain'>The best predictor (highest mean r over "
                 f"all scored genes) is <b>{html.escape(best)}</b>. Mean r per gene class with "
                 f"a 95% bootstrap interval (genes resampled {cfg.bootstrap} times, seed "
                 f"{cfg.seed}):</p>")
    parts.append(_table(head, {k: _SUMMARY_HEADERS[k] for k in (
        "class", "n_genes", "mean_r", "mean_r_low", "mean_r_high", "median_r")}))
    if result.warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in result.warnings)
        parts.append(f"<h2>Warnings</h2><ul class='warn'>{items}</ul>")

    parts.append("<h2>Summary per predictor and gene class</h2><p class='explain'>One row per "
                 "predictor and gene class ('all' pools every class). Mean and median are over "
                 "genes; the 95% intervals come from resampling genes, so they say how much "
                 "the mean would move with a different set of genes. 'share r &gt; 0' is the "
                 "fraction of genes predicted in the right direction; 'constant' counts genes "
                 "given r = 0 because the predictor gave every individual the same value; "
                 "'not scored' genes had too few individuals or no predictions (listed "
                 "below); coverage is the fraction of the split's (gene, individual) pairs "
                 "that were predicted.</p>")
    order = {p: i for i, p in enumerate(result.predictors)}
    ranked = base.sort(pl.col("predictor").replace_strict(order, return_dtype=pl.Int64),
                       maintain_order=True)
    parts.append(_table(ranked, _SUMMARY_HEADERS))
    parts.append("<h2>Per-gene r by predictor and class</h2><p class='explain'>Each dot is one "
                 "gene: its correlation between predicted and measured expression across "
                 "individuals. Boxes show the middle half of genes and the median. Dots right "
                 "of the dashed line are genes where the predictor gets the direction of "
                 "differences between people right.</p>")
    parts.append(_img(figures["r_distributions"], "per-gene r distributions"))
    parts.append(f"<h2>Best and worst genes of {html.escape(best)}</h2><p class='explain'>Each "
                 "dot is one individual: measured expression (x) against the prediction (y). "
                 "Top row: the genes with the highest r; bottom row: the lowest.</p>")
    parts.append(_img(figures["best_worst"], "predicted vs observed, best and worst genes"))
    if "predictor_pairs" in figures:
        parts.append(f"<h2>{html.escape(best)} against the other predictors, gene by gene</h2>"
                     f"<p class='explain'>Each dot is a gene: its r under another predictor "
                     f"(x) and under {html.escape(best)} (y). Dots above the diagonal are genes "
                     f"where {html.escape(best)} does better.</p>")
        parts.append(_img(figures["predictor_pairs"], "predictor vs predictor per-gene r"))
    if result.paired.height:
        parts.append("<h2>Paired comparisons</h2><p class='explain'>Two predictors compared on "
                     "the genes both scored: the mean of (r of A − r of B) over genes with a "
                     "95% bootstrap interval, the share of genes where A is better, and the "
                     "p-value of a Wilcoxon signed-rank test (small p: the difference is "
                     "unlikely to be chance across these genes). A is the higher-ranked "
                     "predictor.</p>")
        parts.append(_table(result.paired, {
            "predictor_a": "A", "predictor_b": "B", "class": "gene class", "n_genes": "genes",
            "mean_diff": "mean r(A) − r(B)", "diff_low": "95% low", "diff_high": "95% high",
            "share_a_better": "share A better", "wilcoxon_p": "Wilcoxon p"}, digits=3))
    if result.populations:
        pops = summary.filter((pl.col("population") != "all") & (pl.col("class") == "all"))
        parts.append("<h2>Per population</h2><p class='explain'>The same per-gene correlation "
                     "computed within each population's individuals only (populations as "
                     "recorded in the shard manifest).</p>")
        parts.append(_table(pops, {"predictor": "predictor", "population": "population",
                                   "n_genes": "genes scored", "mean_r": "mean r",
                                   "mean_r_low": "95% low", "mean_r_high": "95% high",
                                   "median_r": "median r", "share_positive": "share r > 0"}))
    parts.append("<h2>Coverage</h2><p class='explain'>How many of the split's (gene, "
                 "individual) pairs each predictor predicted. Missing pairs are not scored; "
                 "a predictor with low coverage is judged on fewer individuals.</p>")
    parts.append(_table(result.coverage, {
        "predictor": "predictor", "pairs_expected": "pairs in split",
        "pairs_predicted": "pairs predicted", "coverage": "coverage",
        "genes_expected": "genes in split", "genes_predicted": "genes predicted",
        "genes_scored": "genes scored", "genes_constant": "constant (r = 0)"}))
    excluded = result.per_gene.filter(pl.col("excluded").is_not_null()
                                      & (pl.col("population") == "all"))
    parts.append(f"<h2>Genes not scored ({excluded.height})</h2><p class='explain'>Genes with "
                 f"fewer than {cfg.min_individuals} predicted individuals, without predictions, "
                 "or whose measured expression is the same for every individual have no "
                 "meaningful correlation; they are left out of every mean above.</p>")
    if excluded.height:
        parts.append(_table(excluded, {"predictor": "predictor", "gene": "gene",
                                       "class": "class", "n_split": "individuals in split",
                                       "n": "scored", "excluded": "reason"}))
    parts += _attribution_html(result.attribution, result.runs)
    if published is not None:
        parts.append(f"<div class='published'><h2>{html.escape(PUBLISHED_LABEL)}</h2>"
                     "<p class='explain'>For orientation only: the mean per-gene r that "
                     "Rastogi et al. 2024 report for each model on the full GEUVADIS data "
                     "(random_split: 200 genes with individuals held out at random; yri_split: "
                     "200 genes tested on Yoruba individuals; unseen: genes never trained on; "
                     "replicates averaged; subsampling and allele-frequency ablations left "
                     "out). Variant-based models (elastic net, LASSO, top SNP, BLUP, BSLMM) "
                     "cannot predict unseen genes, which the paper scores as 0. This run's "
                     "numbers come from different data and gene sets and are shown beside "
                     "them, not as a reproduction.</p>")
        parts.append(_img(figures["published"], "published means beside this run"))
        headers = {"model": "model (published)", "replicates": "replicates"}
        for c in PAPER_CLASSES:
            headers.update({c: f"{c}: mean r", f"{c}_abs": f"{c}: mean |r|", f"n_{c}": f"n {c}"})
        parts.append(_table(published, headers))
        this_run = base.filter(pl.col("class") != "all").pivot(
            on="class", index="predictor", values="mean_r")
        this_run = this_run.sort(pl.col("predictor").replace_strict(order, return_dtype=pl.Int64))
        parts.append("<p class='explain'><b>This run</b> (this study's data), mean r per gene "
                     "class:</p>")
        parts.append(_table(this_run))
        parts.append("</div>")
    from hapflow.config import config_to_dict

    settings = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                       for k, v in config_to_dict(cfg).items())
    parts.append("<h2>Settings</h2><p class='explain'>The resolved [evaluate] settings (also in "
                 f"config.toml next to this report); observed values from "
                 f"{html.escape(str(result.manifest))}.</p><table>{settings}</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(result: EvaluationResult, out: str | os.PathLike) -> Path:
    """Draw the figures, write ``OUT/figures/*.png`` and ``OUT/report.html``; returns the HTML.

    The published section appears when ``result.config.published`` names the paper's
    ``perf_summary.csv``.
    """
    from hapflow.io import atomic_write_bytes, atomic_write_text

    out = Path(out)
    cfg = result.config
    figures = {
        "r_distributions": figure_r_distributions(result.per_gene, result.predictors, cfg.seed),
        "best_worst": figure_best_worst(result.joined, result.per_gene, result.predictors[0]),
    }
    pairs = figure_predictor_pairs(result.per_gene, result.predictors)
    if pairs is not None:
        figures["predictor_pairs"] = pairs
    published = read_published(cfg.published) if cfg.published else None
    if published is not None:
        figures["published"] = figure_published(published, result.summary, result.predictors)
    for name, png in figures.items():
        atomic_write_bytes(out / "figures" / f"{name}.png", png)
    path = out / "report.html"
    atomic_write_text(path, render_html(result, figures, published))
    return path
