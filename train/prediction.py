"""Predict expression with a fine-tuned (or pretrained) model: from a study's shards, or for new
people straight from a VCF.

Every predictor writes ``DIR/predictions/NAME/SPLIT.parquet`` (``vcf.parquet`` from a VCF) with
columns gene, individual, prediction_forward, prediction_rc (NaN when forward only),
prediction, one row per (gene, individual), rows sorted by gene then individual; and beside it
``SPLIT.json`` / ``vcf.json``, how the predictions were made (:func:`prediction_record`): the
strand choice and why, and from a VCF the haplotype policies used and the genotypes they
touched. Under torchrun each rank predicts its share (eval loaders pad and
:func:`loader.gather_predictions` drops the padding; VCF samples are dealt round-robin) and
rank 0 writes: every sample exactly once.

Strands follow the run: forward and reverse-complement predictions are averaged when the run
was trained with reverse complements (``[loader] rc_prob > 0``) and validated on their average
(``[train] val_rc_average``), forward only otherwise; ``--rc`` / ``--no-rc`` decide instead.

From a VCF the windows are built by prep's engine directly (no shards), with the settings the
training windows had (``DIR/runs/RUN/data.json``: SNPs only or not, reverse-complemented
minus-strand genes) and the model's window length. The unphased and REF-mismatch policies (and
the random policy's seed) default to the run's and may be set for the new people
(``--unphased``, ``--ref-mismatch``, ``--set haplotypes.seed=N``).
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
from hapflow.io import atomic_write_json, atomic_write_parquet
from hapflow.layout import Workdir
from hapflow.progress import progress
from hapflow.sections import LoaderConfig
from loader import make_loader
from prep.builder import HaplotypeBuilder
from prep.regions import read_tss_table
from prep.variants import ReferenceMismatchError, UnphasedGenotypeError
from prep.vcf_files import VcfError, VcfSet
from train.checkpoint import latest_checkpoint
from train.distributed import Dist, all_gather_object, barrier, setup, teardown
from train.export import load_exported
from train.inference import predict_codes, predict_loader
from train.model import build_model
from train.runs import existing_run

__all__ = ["PredictError", "Predictor", "load_predictor", "run_predict", "predict_split",
           "predict_vcf", "write_predictions", "strand_choice", "prediction_record", "COLUMNS",
           "VCF_POLICIES"]

log = logging.getLogger("train")

COLUMNS = ("gene", "individual", "prediction_forward", "prediction_rc", "prediction")
"""The columns of every predictions table: gene (str), individual (str), and float64
predictions of the forward window, its reverse complement (NaN when forward only) and the
prediction (their mean, or the forward one)."""

VCF_POLICIES = ("unphased", "ref_mismatch", "seed")
"""The [haplotypes] settings a VCF's new people may set (default: the run's)."""


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
    rc_average : whether the model's predictions are best averaged over both strands (how
        the run was trained and validated; see :func:`strand_choice`)
    rc_why : why, in words
    """

    model: torch.nn.Module
    name: str
    length: int
    haplotypes: dict
    loader: LoaderConfig
    precision: str
    rc_average: bool = True
    rc_why: str = ""


def load_predictor(study: StudyConfig, workdir: str | Path | Workdir, device: torch.device,
                   run: str | None = None, weights: str | None = None,
                   loader: dict | None = None) -> Predictor:
    """The fine-tuned model of ``DIR/runs/RUN``, or the pretrained Enformer in ``weights`` (its
    CAGE GM12878 track summed over the centre bins, the paper's pretrained baseline).

    Parameters
    ----------
    study : the loaded study; read for ``weights`` only ([model], [loader], [haplotypes]
        length): a run brings its own settings (``DIR/runs/RUN/config.toml``, read once)
    workdir : the study folder
    device : where the model goes
    run, weights : exactly one of them
    loader : ``{key: value}`` of [loader] settings that replace the run's (how batches are
        read: batch_size, num_workers, ...)

    Raises
    ------
    PredictError
        Neither or both of run / weights, a run that has not exported a model yet.
    train.runs.RunError
        No run of that name (the message lists the runs there).
    """
    if (run is None) == (weights is None):
        raise PredictError("give --run RUN (a fine-tuned model) or --weights DIR (pretrained "
                           "Enformer weights), not both")
    layout = Workdir(workdir)
    if run is not None:
        return _run_predictor(layout, run, device, loader or {})
    return _pretrained_predictor(study, layout, weights, device)


def _run_predictor(layout: Workdir, run: str, device: torch.device, loader: dict) -> Predictor:
    """A finished run's exported model, with the loader and precision it was trained with."""
    run_dir = existing_run(layout, run)
    if not (run_dir / "model.json").exists():
        raise PredictError(_unfinished(layout, run, run_dir))
    model = load_exported(run_dir, device)
    data = json.loads((run_dir / "data.json").read_text())
    saved = load_study(run_dir / "config.toml")  # the run's own resolved settings
    rc, why = _run_strands(saved)
    return Predictor(model, run, model.length, data.get("haplotypes", {}),
                     dataclasses.replace(saved.loader, **loader), saved.train.precision,
                     rc, why)


def _unfinished(layout: Workdir, run: str, run_dir: Path) -> str:
    """Why a run folder without model.json cannot predict, and what to run."""
    start = f"python -m train.run --config STUDY.toml --workdir {layout} --name {run}"
    latest = latest_checkpoint(run_dir / "checkpoints")
    if latest is not None:
        return (f"{run_dir} has no exported model (model.json): the run has not finished "
                f"(its latest checkpoint: {latest.name}); `{start} --resume` completes it")
    return (f"{run_dir} has no exported model (model.json) and no checkpoint: the run stopped "
            f"before its first checkpoint; `{start}` starts it again")


def _run_strands(saved: StudyConfig) -> tuple[bool, str]:
    """(average both strands?, why) from how a run was trained and validated."""
    if saved.loader.rc_prob == 0:
        return False, "the run was trained without reverse complements ([loader] rc_prob = 0)"
    if not saved.train.val_rc_average:
        return False, "the run validated forward predictions only ([train] val_rc_average = false)"
    return True, (f"the run was trained with reverse complements ([loader] rc_prob = "
                  f"{saved.loader.rc_prob:g}) and validated on the average of both strands")


def _pretrained_predictor(study: StudyConfig, layout: Workdir, weights: str,
                          device: torch.device) -> Predictor:
    """The pretrained trunk's human track (``[model] track``) on the study's windows."""
    model_cfg = dataclasses.replace(study.model, source="pretrained", weights=str(weights),
                                    head="track", batchnorm="local", freeze="none")
    hap = _shards_meta(layout.shards).get("config", {}).get("haplotypes", {})
    length = study.loader.length or int(hap.get("length", 0)) or study.haplotypes.length
    model = build_model(model_cfg, length).to(device).eval()
    return Predictor(model, "pretrained", length, hap, study.loader, "fp32", True,
                     "Enformer was trained on both strands (reverse-complement augmentation)")


def _shards_meta(shards: Path) -> dict:
    path = shards / "meta.json"
    return json.loads(path.read_text()) if path.exists() else {}


def strand_choice(p: Predictor, rc: bool | None) -> tuple[bool, str]:
    """(average forward and reverse-complement predictions?, why): ``rc`` when given
    (``--rc`` / ``--no-rc``), else what the predictor was trained for (:class:`Predictor`)."""
    if rc is not None:
        return rc, "--rc given" if rc else "--no-rc given"
    return p.rc_average, p.rc_why


def predict_split(p: Predictor, shards: Path, split: str, d: Dist,
                  rc_average: bool = True) -> pl.DataFrame | None:
    """Predictions for every sample of ``split`` in the shards (rank 0 gets the table, other
    ranks None); rank 0 shows progress (a bar on a terminal, else a line every 30 s)."""
    loader = make_loader(shards, split=split, mode="eval", config=p.loader, rank=d.rank,
                         world_size=d.world_size)
    if loader.window.length != p.length:
        raise PredictError(f"the model reads {p.length} bp windows but the loader gives "
                           f"{loader.window.length}: set [loader] length = {p.length}")
    batches = progress(loader, total=len(loader), desc=f"predicting {split}", unit="batch",
                       disable=not d.is_main or not log.isEnabledFor(logging.INFO))
    out = predict_loader(p.model, batches, d.device, p.precision, rc_average)
    if not d.is_main:
        return None
    return _table(out["gene"], out["individual"], out["prediction_forward"],
                  out["prediction_rc"], out["prediction"])


def predict_vcf(p: Predictor, reference: str, vcf: str, tss: str, d: Dist,
                samples: list[str] | None = None, batch_size: int = 8,
                rc_average: bool = True, memory_mb: int = 256
                ) -> tuple[pl.DataFrame | None, dict]:
    """Predictions for new people from a VCF (every gene of ``tss`` x every sample), their
    windows built with ``p.haplotypes`` (:func:`vcf_haplotypes` merges the settings given).

    Parameters
    ----------
    reference, vcf, tss : FASTA, VCF/BCF, TSS table (see prep.regions.read_tss_table)
    samples : VCF samples to predict (default: all)
    batch_size : samples per forward
    memory_mb : budget of the windows built at once

    Returns
    -------
    (the predictions table on rank 0, None elsewhere; on every rank the genotypes the policies
    touched over all ranks: ``unphased_resolved`` (unphased heterozygous genotypes, sample x
    record), ``ref_mismatch_skipped`` (records whose REF disagreed with the FASTA),
    ``missing_alleles`` (haplotype calls "." kept as reference), each counted per gene window:
    a genotype in two genes' windows counts twice)

    Raises
    ------
    PredictError
        On every rank, when one rank's VCF cannot be read with these policies (the message
        names the flag that sets them).
    """
    genes = read_tss_table(tss)
    if genes.height == 0:
        raise PredictError(f"the TSS table {tss} lists no gene")
    everyone = samples or list(VcfSet(vcf).samples)
    mine = everyone[d.rank::d.world_size]  # this rank's share
    rows, counts, problem = [], _no_counts(), None
    try:
        if mine:
            rows = _predict_people(p, reference, vcf, genes, mine, d, batch_size, rc_average,
                                   memory_mb, counts)
    except (UnphasedGenotypeError, ReferenceMismatchError, VcfError) as err:
        problem = _with_the_flag(err)
    parts = all_gather_object((rows, counts, problem))
    problems = [x[2] for x in parts if x[2]]
    if problems:
        raise PredictError(problems[0])
    total = {k: sum(x[1][k] for x in parts) for k in counts}
    total["ref_mismatch_skipped"] = max(x[1]["ref_mismatch_skipped"] for x in parts)
    if not d.is_main:
        return None, total
    gathered = [r for x in parts for r in x[0]]
    if not gathered:
        raise PredictError(f"nothing to predict: no sample of {vcf} was selected")
    return _table(*zip(*gathered, strict=True)), total


def _no_counts() -> dict:
    return {"unphased_resolved": 0, "ref_mismatch_skipped": 0, "missing_alleles": 0}


def _with_the_flag(err: Exception) -> str:
    """A VCF error, and how train.predict sets the policy it needs."""
    text = str(err)
    if isinstance(err, UnphasedGenotypeError):
        return (f"{text} For train.predict: --unphased random (or reference, as-phased), or "
                "--set haplotypes.unphased=random (the default is the run's training "
                "setting).")
    if isinstance(err, ReferenceMismatchError):
        return (f"{text} For train.predict: --ref-mismatch skip, or --set "
                "haplotypes.ref_mismatch=skip.")
    return text


def _predict_people(p: Predictor, reference: str, vcf, genes: pl.DataFrame, mine: list[str],
                    d: Dist, batch_size: int, rc_average: bool, memory_mb: int,
                    counts: dict) -> list[tuple]:
    """This rank's rows (gene, individual, forward, rc, prediction); ``counts`` filled in."""
    h = p.haplotypes
    builder = HaplotypeBuilder(reference, vcf, mine, snps_only=bool(h.get("snps_only")),
                               unphased=h.get("unphased", "error"),
                               ref_mismatch=h.get("ref_mismatch", "error"),
                               seed=int(h.get("seed", 0)))
    rows: list[tuple] = []
    bar = progress(total=genes.height, desc="predicting genes", unit="gene",
                   disable=not d.is_main or not log.isEnabledFor(logging.INFO))
    try:
        for name, windows, tss_index in _gene_windows(builder, genes, p, len(mine), memory_mb,
                                                      counts):
            for b in range(0, len(mine), batch_size):
                part = torch.from_numpy(np.ascontiguousarray(windows[b:b + batch_size]))
                out = predict_codes(p.model, part, torch.full((part.shape[0],), tss_index),
                                    d.device, p.precision, rc_average)
                cols = [out[k].cpu().numpy() for k in ("forward", "rc", "prediction")]
                rows += [(name, mine[b + i], *(float(c[i]) for c in cols))
                         for i in range(part.shape[0])]
            bar.update(1)
    finally:
        bar.close()
        builder.close()
    return rows


def _gene_windows(builder: HaplotypeBuilder, genes: pl.DataFrame, p: Predictor, n_samples: int,
                  memory_mb: int, counts: dict):
    """Every gene's windows, built chromosome by chromosome in chunks of about ``memory_mb``;
    the genotypes the policies touched are added to ``counts`` (see :func:`predict_vcf`).

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
            counts["unphased_resolved"] += int(res.n_unphased.sum())
            counts["ref_mismatch_skipped"] += int(res.n_ref_mismatch.sum())
            counts["missing_alleles"] += int(res.counts["missing"].sum())
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


def vcf_haplotypes(p: Predictor, given: dict) -> tuple[dict, dict]:
    """The [haplotypes] settings of a VCF's windows: the predictor's (the run's training
    windows), with the :data:`VCF_POLICIES` in ``given`` (``{key: value}``) instead.

    Returns
    -------
    (settings, {key: where its value came from}) for the record and the log.

    Raises
    ------
    PredictError
        ``given`` holds another setting (the windows must be made as the training ones were).
    """
    other = sorted(set(given) - set(VCF_POLICIES))
    if other:
        raise PredictError(f"[haplotypes] {', '.join(other)} of a VCF's windows come from the "
                           "run's training settings (DIR/runs/RUN/data.json); only "
                           f"{', '.join(VCF_POLICIES)} may be set")
    source = f"the run {p.name} (DIR/runs/{p.name}/data.json)" if p.name != "pretrained" \
        else "the study's shards (DIR/shards/meta.json)"
    settings = {"unphased": "error", "ref_mismatch": "error", "seed": 0, **p.haplotypes}
    origin = {k: source if k in p.haplotypes else "the default" for k in VCF_POLICIES}
    for key, value in given.items():
        settings[key], origin[key] = value, "the command line"
    return settings, origin


def prediction_record(p: Predictor, table: pl.DataFrame, strands: tuple[bool, str],
                      inputs: dict, haplotypes: dict | None = None,
                      genotypes: dict | None = None) -> dict:
    """What ``SPLIT.json`` / ``vcf.json`` beside a predictions table holds.

    Keys: ``predictor``, ``rows``, ``genes``, ``individuals``, ``inputs`` (split, or VCF,
    reference, TSS table, samples), ``strands`` (``rc_average``: whether ``prediction`` is the
    mean of both strands, ``why``); from a VCF also ``haplotypes`` (``settings``: unphased,
    ref_mismatch, seed, snps_only, reverse_minus as used; ``from``: where each policy came
    from) and ``genotypes`` (the counts of :func:`predict_vcf`).
    """
    record = {"predictor": p.name, "rows": table.height, "genes": table["gene"].n_unique(),
              "individuals": table["individual"].n_unique(), "inputs": inputs,
              "strands": {"rc_average": strands[0], "why": strands[1]}}
    if haplotypes is not None:
        record["haplotypes"] = haplotypes
    if genotypes is not None:
        record["genotypes"] = {**genotypes, "counted": "per gene window (a genotype in two "
                               "genes' windows counts twice)"}
    return record


def run_predict(study: StudyConfig, workdir: str | Path | Workdir, *, run: str | None = None,
                weights: str | None = None, split: str = "test",
                vcf: str | list[str] | None = None, reference: str | None = None,
                tss: str | None = None, samples: list[str] | None = None,
                device: str = "auto", rc: bool | None = None,
                haplotypes: dict | None = None, loader: dict | None = None) -> Path | None:
    """Predict a split of the study's shards, or everyone in a VCF, and write the table
    (``DIR/predictions/NAME/SPLIT.parquet`` or ``vcf.parquet``) and its record
    (``SPLIT.json`` / ``vcf.json``, :func:`prediction_record`).

    Parameters
    ----------
    study, workdir, run, weights : see :func:`load_predictor`
    split : the shards' split to predict (without ``vcf``)
    vcf, reference, tss : a VCF (one file, a list, or a pattern with {chrom}), its reference
        FASTA and a gene TSS table: predict its samples instead of a split
    samples : VCF samples (default: all)
    device : "auto", "cpu", "cuda" or "cuda:N"
    rc : average forward and reverse-complement predictions (True), forward only (False), or
        as the run was trained (None; :func:`strand_choice`)
    haplotypes : ``{key: value}`` of :data:`VCF_POLICIES` for the VCF's windows (default: the
        run's)
    loader : ``{key: value}`` of [loader] settings replacing a run's (how batches are read)

    Returns
    -------
    The Parquet written (on rank 0; None on other ranks).
    """
    if vcf is not None and (reference is None or tss is None):
        raise PredictError("--vcf needs --reference (FASTA) and --tss (gene TSS table)")
    if vcf is None and haplotypes:
        raise PredictError(f"[haplotypes] {', '.join(haplotypes)} set for a split: its windows "
                           "are in the shards; the unphased and REF policies apply to --vcf")
    layout = Workdir(workdir)
    d = setup(device)
    try:
        p = load_predictor(study, layout, d.device, run=run, weights=weights, loader=loader)
        strands = strand_choice(p, rc)
        if d.is_main:
            log.info("Strands: %s (%s)", "forward and reverse complement averaged"
                     if strands[0] else "forward only", strands[1])
        if vcf is not None:
            table, record = _predict_vcf_file(p, d, strands, vcf, reference, tss, samples,
                                              haplotypes or {})
            path = layout.predictor(p.name) / "vcf.parquet"
        else:
            table = predict_split(p, layout.shards, split, d, strands[0])
            path = layout.predictor(p.name) / f"{split}.parquet"
            record = prediction_record(p, table, strands, {"split": split}) if d.is_main \
                else None
        if d.is_main:
            write_predictions(table, path)
            atomic_write_json(path.with_suffix(".json"), record)
            log.info("Predicted %d (gene, individual) pairs (%d genes, %d individuals) with %s: "
                     "%s (how: %s)", table.height, table["gene"].n_unique(),
                     table["individual"].n_unique(), p.name, path, path.with_suffix(".json"))
        barrier()
        return path if d.is_main else None
    finally:
        teardown()


def _predict_vcf_file(p: Predictor, d: Dist, strands: tuple[bool, str], vcf, reference: str,
                      tss: str, samples: list[str] | None, given: dict
                      ) -> tuple[pl.DataFrame | None, dict | None]:
    """The table and record of a VCF's people, the policies used logged with what they
    touched."""
    settings, origin = vcf_haplotypes(p, given)
    p = dataclasses.replace(p, haplotypes=settings)
    if d.is_main:
        log.info("VCF windows: unphased genotypes %r (from %s, seed %d), REF mismatches %r "
                 "(from %s); SNPs only %s, minus-strand genes reverse-complemented %s (from "
                 "the run)", settings["unphased"], origin["unphased"], int(settings["seed"]),
                 settings["ref_mismatch"], origin["ref_mismatch"],
                 bool(settings.get("snps_only")), bool(settings.get("reverse_minus")))
    table, counts = predict_vcf(p, reference, vcf, tss, d, samples, p.loader.batch_size,
                                strands[0])
    if not d.is_main:
        return None, None
    log.info("Genotypes in the windows (per gene window): %d unphased heterozygous resolved "
             "with %r, %d REF-mismatch records skipped, %d missing alleles kept as reference",
             counts["unphased_resolved"], settings["unphased"], counts["ref_mismatch_skipped"],
             counts["missing_alleles"])
    used = {k: settings.get(k) for k in (*VCF_POLICIES, "snps_only", "reverse_minus")}
    inputs = {"vcf": vcf, "reference": str(reference), "tss": str(tss),
              "samples": table["individual"].n_unique()}
    return table, prediction_record(p, table, strands, inputs,
                                    {"settings": used, "from": origin}, counts)
