"""Learning sanity: do sequences, targets and losses line up? A tiny Enformer must learn planted
causal SNPs, and must learn nothing from permuted labels.

Run from the repository root (about 35 minutes on 2 cores; ``--quick`` about 5)::

    python benchmarks/learning_sanity.py
    python benchmarks/learning_sanity.py --minutes 20 --control-minutes 5 --set train.lr=2e-3

The study is ``configs/chr20_sanity.toml``: the real chr20 genotypes (300 phased 1000 Genomes
samples with indels, 36 genes, 35 of them with a common SNP near the TSS) with expression
simulated by ``python -m prep.simulate``: 1-3 common causal SNPs per gene within 2,000 bp of
the TSS (``[simulate] max_distance``), h2 = 0.5, so the best possible predictor (the genetic
value itself) reaches r = sqrt(0.5) ~ 0.71. The model sees a 4,096 bp crop centred on the TSS
(``[loader] length``), which holds every causal SNP. Every stage runs through its own CLI, as a
user would run it:

1. ``python -m prep.simulate`` then ``python -m prep.shard`` (random per-gene split: 70 % train,
   10 % validation, 20 % test individuals);
2. ``python -m train.run``: pairwise regression, the tiny model (dim 48, depth 1: 74k
   parameters, no dropout) on CPU without augmentation (see the config's comments), batches of
   16 pairs from 16 genes, validation every ``[train] val_every_steps``; the learning rate is held
   constant after warm-up (``min_lr_ratio = 1``) and the run is stopped after ``--minutes`` of
   wall time (SIGINT), then completed with ``--resume --set train.max_steps=LAST`` so that the
   best validated model is exported. This script polls ``metrics.jsonl`` and stamps each
   validation record with the wall time since the run started (start-up and validations
   included): held-out (validation) mean per-gene Pearson r over time;
3. ``python -m train.predict --split test`` on the best model: per-gene r of predictions
   (forward and reverse complement averaged; forward only, ``--no-rc``, for a model trained
   without reverse complements) vs the simulated expression of the test
   individuals;
4. ``python -m analysis.baselines --length 4096``: ridge on the allele dosages of the same
   4,096 bp window, fitted on the training individuals;
5. the control: the same expression with individuals permuted within each gene (seeded), sharded
   with the same split, trained for ``--control-minutes`` and predicted on its test individuals:
   its mean r must stay within +-0.1 of 0.

Goal: mean test r >= 0.6 within 20 minutes; control within +-0.1 of 0. "others %" is the share
of both cores that other processes used while a stage ran (this machine is shared): the model's
r after N minutes depends on how many steps it got, which the lines also record.

Everything is built in ``--workdir`` (default ``benchmarks/_cache/learning_sanity``, rebuilt on
every run). Appends one JSON line to ``benchmarks/results/learning_sanity.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (  # noqa: E402
    REPO_ROOT,
    append_result,
    machine_busy_seconds,
    print_table,
)

CONFIG = REPO_ROOT / "configs" / "chr20_sanity.toml"
WORKDIR = REPO_ROOT / "benchmarks" / "_cache" / "learning_sanity"
RUN = "pairwise_regression"
CROP = 4096
GOAL_R = 0.6
CONTROL_TOLERANCE = 0.1


# ---------------------------------------------------------------------------------------------
# Machine load
# ---------------------------------------------------------------------------------------------


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and its finished (waited-for) children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Load:
    """Wall seconds and the share of all cores that other processes used over a stage."""

    def __enter__(self):
        self.t0, self.c0, self.m0 = time.perf_counter(), _own_cpu_seconds(), \
            machine_busy_seconds()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        cpu = _own_cpu_seconds() - self.c0
        n = os.cpu_count() or 1
        others = max(0.0, machine_busy_seconds() - self.m0 - cpu) / max(self.seconds * n, 1e-9)
        self.others = round(min(others, 1.0), 3)
        self.cpu = round(cpu, 1)
        return False

    def record(self) -> dict:
        return {"seconds": round(self.seconds, 1), "cpu_seconds": self.cpu,
                "others_cpu": self.others}


# ---------------------------------------------------------------------------------------------
# Stages (each one CLI call)
# ---------------------------------------------------------------------------------------------


THREADS = {"n": 1}
"""Torch (OpenMP) threads of every stage: on a shared 2-core machine one thread per process is
2-4x faster than two, whose threads wait on each other whenever another process runs."""


def _env() -> dict:
    n = str(THREADS["n"])
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS=n, MKL_NUM_THREADS=n)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    return env


def cli(module: str, *args: str, log: Path) -> None:
    """``python -m MODULE ARGS`` from the repository root, output appended to ``log``."""
    cmd = [sys.executable, "-m", module, *args]
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=_env(), stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); see {log}")


def permute_expression(source: Path, dest: Path, seed: int = 0) -> None:
    """The genes x individuals matrix with each gene's values shuffled across individuals."""
    import numpy as np
    import polars as pl

    from prep.expression_files import write_expression

    m = pl.read_parquet(source)
    people = [c for c in m.columns if c != "gene"]
    values = m.select(people).to_numpy()  # (genes, individuals)
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(row) for row in values])
    out = pl.DataFrame({"gene": m["gene"]}).hstack(
        pl.DataFrame(shuffled, schema=dict.fromkeys(people, pl.Float64), orient="row"))
    write_expression(out, dest)


def train_for(workdir: Path, config: Path, minutes: float, sets: list[str], log: Path,
              poll_s: float = 2.0) -> dict:
    """``python -m train.run`` for ``minutes`` of wall time, then export the best model.

    Returns
    -------
    dict: ``val`` (validation records with ``minutes`` since the start), ``train`` (train
    records), ``steps``, ``seconds``, ``others_cpu``.
    """
    run_dir = workdir / "runs" / RUN
    metrics = run_dir / "metrics.jsonl"
    args = ["--config", str(config), "--workdir", str(workdir), "--name", RUN,
            "--set", "train.min_lr_ratio=1.0"]
    for s in sets:
        args += ["--set", s]
    cmd = [sys.executable, "-m", "train.run", *args]
    seen: dict[int, float] = {}  # line number -> minutes when first seen
    with Load() as load, open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=_env(), stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = t0 + 60 * minutes
        while proc.poll() is None and time.perf_counter() < deadline:
            time.sleep(poll_s)
            _stamp(metrics, seen, (time.perf_counter() - t0) / 60)
        stopped = proc.poll() is None
        if stopped:  # SIGINT: the loop's finally blocks close the loaders and metrics
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        elif proc.returncode != 0:
            raise SystemExit(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); see {log}")
        _stamp(metrics, seen, (time.perf_counter() - t0) / 60)
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    val = [dict(r, minutes=round(seen.get(i, float("nan")), 2))
           for i, r in enumerate(records) if r["kind"] == "val"]
    train = [r for r in records if r["kind"] == "train"]
    if not val:
        raise SystemExit(f"no validation within {minutes} minutes in {metrics}: lower "
                         "[train] val_every_steps or give more minutes")
    if stopped:  # export the best validated model: resume with nothing left to do
        last = _latest_step(run_dir)
        cli("train.run", *args, "--resume", "--set", f"train.max_steps={last}", log=log)
    return {"val": val, "train": train, "steps": max((r["step"] for r in records), default=0),
            "stopped_at_deadline": stopped, **load.record()}


def _stamp(metrics: Path, seen: dict, minutes: float) -> None:
    if not metrics.exists():
        return
    for i, line in enumerate(metrics.read_text().splitlines()):
        if i not in seen and line.endswith("}"):
            seen[i] = minutes


def _latest_step(run_dir: Path) -> int:
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()  # step-0000123
    return int(latest.rsplit("-", 1)[1])


def test_r(workdir: Path, predictions: Path) -> dict[str, float]:
    """Per-gene Pearson r of ``predictions`` (gene, individual, prediction) vs the test
    individuals' Y in the shards manifest."""
    import polars as pl

    from train.inference import per_gene_pearson

    manifest = pl.read_parquet(workdir / "shards" / "manifest.parquet",
                               columns=["split", "gene", "individual", "Y"])
    test = manifest.filter(pl.col("split") == "test")
    joined = pl.read_parquet(predictions).join(test, on=["gene", "individual"], how="inner")
    if joined.height != test.height:
        raise SystemExit(f"{predictions} covers {joined.height} of the {test.height} test "
                         "samples")
    return per_gene_pearson(joined["gene"].to_list(), joined["prediction"].to_numpy(),
                            joined["Y"].to_numpy())


def r_at(val: list[dict], minutes: float) -> float | None:
    """The last validation mean r stamped at or before ``minutes``."""
    before = [v for v in val if v["minutes"] <= minutes + 1e-9]
    return round(before[-1]["val_pearson_r"], 4) if before else None


def _mean(values) -> float:
    import numpy as np

    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else float("nan")


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------


def prepare(config: Path, workdir: Path, log: Path) -> dict:
    """Simulate, shard, and build the permuted-label control study beside it."""
    import polars as pl

    common = ["--config", str(config), "--workdir", str(workdir)]
    cli("prep.simulate", *common, log=log)
    cli("prep.shard", *common, log=log)
    control = workdir / "control"
    permute_expression(workdir / "expression" / "expression.parquet",
                       control / "expression" / "expression.parquet")
    cli("prep.shard", "--config", str(config), "--workdir", str(control), log=log)
    genes = pl.read_parquet(workdir / "expression" / "simulation_genes.parquet")
    return {"genes": genes.height, "oracle_r": round(float(genes["oracle_r"].mean()), 4),
            "oracle_r_by_gene": dict(zip(genes["gene"].to_list(),
                                         [round(x, 4) for x in genes["oracle_r"].to_list()],
                                         strict=True)),
            "causal_snps": int(genes["n_causal"].sum())}


def run(args) -> dict:
    from hapflow.config import load_study, split_overrides

    config, workdir = Path(args.config).resolve(), Path(args.workdir).resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    log = workdir / "log.txt"
    marks = [float(m) for m in args.marks.split(",")]
    print(f"Building the study in {workdir} (log: {log})", flush=True)
    with Load() as prep_load:
        truth = prepare(config, workdir, log)
    print(f"{truth['genes']} genes, {truth['causal_snps']} causal SNPs, oracle r "
          f"{truth['oracle_r']:.3f}; training for {args.minutes} min", flush=True)

    # a model trained without reverse complements predicts the forward strand only
    no_rc = ["--no-rc"] if load_study(config, split_overrides(args.set)).loader.rc_prob == 0 else []
    main = train_for(workdir, config, args.minutes, args.set, log)
    cli("train.predict", "--config", str(config), "--workdir", str(workdir), "--run", RUN,
        "--split", "test", "--device", "cpu", *no_rc, log=log)
    model_r = test_r(workdir, workdir / "predictions" / RUN / "test.parquet")

    with Load() as ridge_load:
        cli("analysis.baselines", "--config", str(config), "--workdir", str(workdir),
            "--length", str(CROP), "--methods", "ridge", log=log)
    ridge_r = test_r(workdir, workdir / "predictions" / "ridge" / "test.parquet")

    print(f"Control (labels permuted within genes): training for {args.control_minutes} min",
          flush=True)
    control_dir = workdir / "control"
    control = train_for(control_dir, config, args.control_minutes, args.set, log)
    cli("train.predict", "--config", str(config), "--workdir", str(control_dir), "--run", RUN,
        "--split", "test", "--device", "cpu", *no_rc, log=log)
    control_r = test_r(control_dir, control_dir / "predictions" / RUN / "test.parquet")

    best = max(main["val"], key=lambda v: v["val_pearson_r"])
    train_rates = [r["samples_per_s"] for r in main["train"]]
    waits = [r["data_wait"] for r in main["train"]]
    genes = sorted(model_r)
    per_gene = [{"gene": g, "model_r": round(model_r[g], 4),
                 "ridge_r": round(ridge_r[g], 4) if g in ridge_r else None,
                 "control_r": round(control_r[g], 4) if g in control_r else None,
                 "oracle_r": truth["oracle_r_by_gene"].get(g)} for g in genes]
    summary = {
        "val_r_at_minutes": {f"{m:g}": r_at(main["val"], m) for m in marks},
        "best_val_r": round(best["val_pearson_r"], 4), "best_val_step": best["step"],
        "best_val_minutes": best["minutes"],
        "test_r": _mean(model_r.values()), "test_r_median": round(_median(model_r), 4),
        "ridge_test_r": _mean(ridge_r.values()),
        "control_test_r": _mean(control_r.values()),
        "control_best_val_r": round(max(v["val_pearson_r"] for v in control["val"]), 4),
        "oracle_r": truth["oracle_r"],
        "goal_reached": _mean(model_r.values()) >= GOAL_R,
        "control_ok": abs(_mean(control_r.values())) <= CONTROL_TOLERANCE,
        "steps": main["steps"], "pairs_per_s_median": _median_list(train_rates),
        "data_wait_median": _median_list(waits),
        "others_cpu_training": main["others_cpu"], "others_cpu_control": control["others_cpu"],
    }
    return {
        "config": str(config.relative_to(REPO_ROOT)) if config.is_relative_to(REPO_ROOT)
        else str(config),
        "sets": args.set, "threads": args.threads, "minutes": args.minutes, "control_minutes": args.control_minutes,
        "summary": summary,
        "stages": {"prepare": prep_load.record(), "ridge": ridge_load.record(),
                   "training": {k: main[k] for k in ("seconds", "cpu_seconds", "others_cpu",
                                                     "steps", "stopped_at_deadline")},
                   "control": {k: control[k] for k in ("seconds", "cpu_seconds", "others_cpu",
                                                       "steps", "stopped_at_deadline")}},
        "val_curve": [{k: v.get(k) for k in ("minutes", "step", "val_pearson_r",
                                             "val_pearson_r_median", "val_loss")}
                      for v in main["val"]],
        "control_val_curve": [{k: v.get(k) for k in ("minutes", "step", "val_pearson_r")}
                              for v in control["val"]],
        "per_gene": per_gene,
    }


def _median(r: dict) -> float:
    import numpy as np

    return float(np.median(list(r.values())))


def _median_list(values) -> float | None:
    import numpy as np

    return round(float(np.median(values)), 3) if values else None


def report(result: dict) -> None:
    s = result["summary"]
    rows = [{"what": f"model, validation r at {m} min", "mean r": r}
            for m, r in s["val_r_at_minutes"].items()]
    rows += [
        {"what": f"model, best validation (step {s['best_val_step']}, "
                 f"{s['best_val_minutes']} min)", "mean r": s["best_val_r"]},
        {"what": "model, test (best model)", "mean r": s["test_r"]},
        {"what": "ridge on dosages, test", "mean r": s["ridge_test_r"]},
        {"what": "control (permuted labels), test", "mean r": s["control_test_r"]},
        {"what": "oracle (genetic value), all individuals", "mean r": s["oracle_r"]},
    ]
    print_table(rows, ["what", "mean r"])
    print(f"{s['steps']} steps, median {s['pairs_per_s_median']} pairs/s, data wait "
          f"{s['data_wait_median']}; other processes used {100 * s['others_cpu_training']:.0f} %"
          f" of the cores during training, {100 * s['others_cpu_control']:.0f} % during the "
          f"control. Goal r >= {GOAL_R}: {'reached' if s['goal_reached'] else 'NOT reached'}; "
          f"control within +-{CONTROL_TOLERANCE}: {'yes' if s['control_ok'] else 'NO'}",
          flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Learning sanity: planted causal SNPs on real chr20 "
                                            "genotypes, a tiny Enformer, ridge and a permuted "
                                            "control.")
    p.add_argument("--config", default=str(CONFIG), help="study TOML (default: %(default)s)")
    p.add_argument("--workdir", default=str(WORKDIR),
                   help="scratch study folder, deleted and rebuilt (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=20.0, help="training wall time")
    p.add_argument("--control-minutes", type=float, default=5.0,
                   help="training wall time of the permuted-label control")
    p.add_argument("--marks", default="5,10,15,20",
                   help="minutes at which to report validation r (comma-separated)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a training setting (train.run --set), e.g. train.lr=2e-3")
    p.add_argument("--threads", type=int, default=1,
                   help="OMP_NUM_THREADS of every stage (default: %(default)s; see THREADS)")
    p.add_argument("--quick", action="store_true",
                   help="1.5 + 0.75 minutes, validation every 10 steps, no result line (a "
                        "smoke test)")
    p.add_argument("--no-record", action="store_true", help="do not append a result line")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    THREADS["n"] = args.threads
    if args.quick:
        args.minutes, args.control_minutes, args.marks = 1.5, 0.75, "0.5,1,1.5"
        args.set = ["train.val_every_steps=10", *args.set]
        args.no_record = True
    result = run(args)
    report(result)
    if not args.no_record:
        path = append_result("learning_sanity", result)
        print(f"Appended to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
