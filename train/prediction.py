"""Predict expression with a fine-tuned (or pretrained) model: from a study's shards, or for new
people straight from a VCF.

Every predictor writes ``DIR/predictions/NAME/SPLIT.parquet`` (``vcf.parquet`` from a VCF) with
columns gene, individual, prediction_forward, prediction_rc, prediction (the mean of forward
and reverse-complement predictions), one row per (gene, individual), rows sorted by gene then
individual. Under torchrun each rank predicts its share (eval loaders pad and
:func:`loader.gather_predictions` drops the padding; VCF samples are dealt round-robin) and
rank 0 writes: every sample exactly once.

From a VCF the windows are built by prep's engine directly (no shards), with the settings the
training windows had (``DIR/runs/RUN/data.json``: SNPs only or not, unphased and REF-mismatch
policies, reverse-complemented minus-strand genes) and the model's window length.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import polars as pl
import torch

from hapflow.config import StudyConfig, load_study
from hapflow.io import atomic_write_parquet
from hapflow.layout import Workdir
from hapflow.sections import LoaderConfig
from loader import make_loader
from prep.builder import HaplotypeBuilder
from prep.regions import read_tss_table
from prep.vcf_files import VcfSet
from train.distributed import Dist, all_gather_object, barrier, setup, teardown
from train.export import load_exported
from train.inference import predict_codes, predict_loader
from train.model import build_model

__all__ = ["PredictError", "Predictor", "load_predictor", "run_predict", "predict_split",
           "predict_vcf", "write_predictions", "COLUMNS"]

log = logging.getLogger("train")

COLUMNS = ("gene", "individual", "prediction_forward", "prediction_rc", "prediction")
"""The columns of every predictions table: gene (str), individual (str), and float64
predictions of the forward window, its reverse complement and their mean."""


class PredictError(ValueError):
    """Prediction cannot run as asked; the message says what to fix."""


@dataclasses.dataclass
class Predictor:
    """A model ready to predict, and how its training windows were made.

    Attributes
    ----------
    model : ExpressionModel (eval mode, on the device)
    name : the predictions folder name (the run, or "pretrained")
    length : L, the window the model reads
    haplotypes : dict of the [haplotypes] settings of the training shards (snps_only,
        unphased, ref_mismatch, reverse_minus, seed)
    loader : LoaderConfig for shard-based prediction (the run's, so crops match)
    precision : "fp32" or "bf16"
    """

    model: torch.nn.Module
    name: str
    length: int
    haplotypes: dict
    loader: LoaderConfig
    precision: str


def load_predictor(study: StudyConfig, workdir: str | Path | Workdir, device: torch.device,
                   run: str | None = None, weights: str | None = None) -> Predictor:
    """The fine-tuned model of ``DIR/runs/RUN``, or the pretrained Enformer in ``weights`` (its
    CAGE GM12878 track summed over the centre bins, the paper's pretrained baseline).

    Parameters
    ----------
    study : the loaded study; read for ``weights`` only ([model], [loader], [haplotypes]
        length): a run brings its own settings (``DIR/runs/RUN/config.toml``, read once)
    workdir : the study folder
    device : where the model goes
    run, weights : exactly one of them

    Raises
    ------
    PredictError
        Neither or both of run / weights, a run that has not exported a model yet.
    """
    if (run is None) == (weights is None):
        raise PredictError("give --run RUN (a fine-tuned model) or --weights DIR (pretrained "
                           "Enformer weights), not both")
    layout = Workdir(workdir)
    if run is not None:
        return _run_predictor(layout, run, device)
    return _pretrained_predictor(study, layout, weights, device)


def _run_predictor(layout: Workdir, run: str, device: torch.device) -> Predictor:
    """A finished run's exported model, with the loader and precision it was trained with."""
    run_dir = layout.run(run)
    if not (run_dir / "model.json").exists():
        raise PredictError(f"{run_dir} has no exported model (model.json): is the run "
                           "finished? `python -m train.run ... --resume` completes it")
    model = load_exported(run_dir, device)
    data = json.loads((run_dir / "data.json").read_text())
    saved = load_study(run_dir / "config.toml")  # the run's own resolved settings
    return Predictor(model, run, model.length, data.get("haplotypes", {}), saved.loader,
                     saved.train.precision)


def _pretrained_predictor(study: StudyConfig, layout: Workdir, weights: str,
                          device: torch.device) -> Predictor:
    """The pretrained trunk's human track (``[model] track``) on the study's windows."""
    model_cfg = dataclasses.replace(study.model, source="pretrained", weights=str(weights),
                                    head="track", batchnorm="local", freeze="none")
    hap = _shards_meta(layout.shards).get("config", {}).get("haplotypes", {})
    length = study.loader.length or int(hap.get("length", 0)) or study.haplotypes.length
    model = build_model(model_cfg, length).to(device).eval()
    return Predictor(model, "pretrained", length, hap, study.loader, "fp32")


def _shards_meta(shards: Path) -> dict:
    path = shards / "meta.json"
    return json.loads(path.read_text()) if path.exists() else {}


def predict_split(p: Predictor, shards: Path, split: str, d: Dist,
                  rc_average: bool = True) -> pl.DataFrame | None:
    """Predictions for every sample of ``split`` in the shards (rank 0 gets the table, other
    ranks None)."""
    loader = make_loader(shards, split=split, mode="eval", config=p.loader, rank=d.rank,
                         world_size=d.world_size)
    if loader.window.length != p.length:
        raise PredictError(f"the model reads {p.length} bp windows but the loader gives "
                           f"{loader.window.length}: set [loader] length = {p.length}")
    out = predict_loader(p.model, loader, d.device, p.precision, rc_average)
    if not d.is_main:
        return None
    return _table(out["gene"], out["individual"], out["prediction_forward"],
                  out["prediction_rc"], out["prediction"])


def predict_vcf(p: Predictor, reference: str, vcf: str, tss: str, d: Dist,
                samples: list[str] | None = None, batch_size: int = 8,
                rc_average: bool = True, memory_mb: int = 256) -> pl.DataFrame | None:
    """Predictions for new people from a phased VCF (every gene of ``tss`` x every sample).

    Parameters
    ----------
    reference, vcf, tss : FASTA, phased VCF/BCF, TSS table (see prep.regions.read_tss_table)
    samples : VCF samples to predict (default: all)
    batch_size : samples per forward
    memory_mb : budget of the windows built at once

    Returns
    -------
    The predictions table on rank 0, None elsewhere.
    """
    genes = read_tss_table(tss)
    if genes.height == 0:
        raise PredictError(f"the TSS table {tss} lists no gene")
    everyone = samples or list(VcfSet(vcf).samples)
    mine = everyone[d.rank::d.world_size]  # this rank's share
    rows: list[tuple] = []
    h = p.haplotypes
    if mine:
        builder = HaplotypeBuilder(reference, vcf, mine, snps_only=bool(h.get("snps_only")),
                                   unphased=h.get("unphased", "error"),
                                   ref_mismatch=h.get("ref_mismatch", "error"),
                                   seed=int(h.get("seed", 0)))
        try:
            for name, windows, tss_index in _gene_windows(builder, genes, p, len(mine),
                                                          memory_mb):
                for b in range(0, len(mine), batch_size):
                    part = torch.from_numpy(np.ascontiguousarray(windows[b:b + batch_size]))
                    out = predict_codes(p.model, part, torch.full((part.shape[0],), tss_index),
                                        d.device, p.precision, rc_average)
                    cols = [out[k].cpu().numpy() for k in ("forward", "rc", "prediction")]
                    rows += [(name, mine[b + i], *(float(c[i]) for c in cols))
                             for i in range(part.shape[0])]
        finally:
            builder.close()
    gathered = [r for part in all_gather_object(rows) for r in part]
    if not d.is_main:
        return None
    if not gathered:
        raise PredictError(f"nothing to predict: no sample of {vcf} was selected")
    cols = list(zip(*gathered, strict=True))
    return _table(*cols)


def _gene_windows(builder: HaplotypeBuilder, genes: pl.DataFrame, p: Predictor, n_samples: int,
                  memory_mb: int):
    """Every gene's windows, built chromosome by chromosome in chunks of about ``memory_mb``.

    Yields
    ------
    (gene name, windows (S, 2, L) uint8 codes of the builder's S samples, the TSS's 0-based
    index in the window). Minus-strand genes are reverse-complemented when the training
    windows were (``reverse_minus``): their TSS then sits at ``L - 1 - L // 2``.
    """
    L = p.length
    reverse = bool(p.haplotypes.get("reverse_minus"))
    per_chunk = max(1, (memory_mb << 20) // (n_samples * 2 * L))
    for chrom_df in genes.partition_by("chrom", maintain_order=True):
        chrom = chrom_df["chrom"][0]
        for lo in range(0, chrom_df.height, per_chunk):
            chunk = chrom_df.slice(lo, per_chunk)
            minus = (chunk["strand"] == "-").to_numpy() & reverse
            res = builder.fixed(chrom, chunk["tss"].to_numpy(), L, minus)
            for g, name in enumerate(chunk["name"]):
                yield name, res.seqs[g], L - 1 - L // 2 if minus[g] else L // 2


def _table(gene, individual, forward, rc, prediction) -> pl.DataFrame:
    """The predictions table (:data:`COLUMNS`), sorted by gene then individual."""
    values = [list(gene), list(individual),
              *(np.asarray(v, np.float64) for v in (forward, rc, prediction))]
    return pl.DataFrame(dict(zip(COLUMNS, values, strict=True))).sort(["gene", "individual"])


def write_predictions(table: pl.DataFrame, path: Path) -> None:
    """Write a predictions table as Parquet, atomically."""
    dup = table.select("gene", "individual").is_duplicated()
    if dup.any():
        raise PredictError(f"{int(dup.sum())} (gene, individual) rows predicted twice")
    atomic_write_parquet(table, path)


def run_predict(study: StudyConfig, workdir: str | Path | Workdir, *, run: str | None = None,
                weights: str | None = None, split: str = "test",
                vcf: str | list[str] | None = None, reference: str | None = None,
                tss: str | None = None, samples: list[str] | None = None,
                device: str = "auto", rc_average: bool = True) -> Path | None:
    """Predict a split of the study's shards, or everyone in a VCF, and write the table
    (``DIR/predictions/NAME/SPLIT.parquet`` or ``vcf.parquet``).

    Parameters
    ----------
    study, workdir, run, weights : see :func:`load_predictor`
    split : the shards' split to predict (without ``vcf``)
    vcf, reference, tss : a phased VCF (one file, a list, or a pattern with {chrom}), its
        reference FASTA and a gene TSS table: predict its samples instead of a split
    samples : VCF samples (default: all)
    device : "auto", "cpu", "cuda" or "cuda:N"
    rc_average : average forward and reverse-complement predictions

    Returns
    -------
    The Parquet written (on rank 0; None on other ranks).
    """
    if vcf is not None and (reference is None or tss is None):
        raise PredictError("--vcf needs --reference (FASTA) and --tss (gene TSS table)")
    layout = Workdir(workdir)
    d = setup(device)
    try:
        p = load_predictor(study, layout, d.device, run=run, weights=weights)
        if vcf is not None:
            table = predict_vcf(p, reference, vcf, tss, d, samples, p.loader.batch_size,
                                rc_average)
            path = layout.predictor(p.name) / "vcf.parquet"
        else:
            table = predict_split(p, layout.shards, split, d, rc_average)
            path = layout.predictor(p.name) / f"{split}.parquet"
        if d.is_main:
            write_predictions(table, path)
            log.info("Predicted %d (gene, individual) pairs (%d genes, %d individuals) with %s: "
                     "%s", table.height, table["gene"].n_unique(),
                     table["individual"].n_unique(), p.name, path)
        barrier()
        return path if d.is_main else None
    finally:
        teardown()
