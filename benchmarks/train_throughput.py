"""Training throughput: samples/s, peak memory, data wait and model FLOP utilisation of the
fine-tuning step, eager vs torch.compile and fp32 vs bf16 autocast.

Run from the repository root::

    python benchmarks/train_throughput.py                          # CPU, tiny model (~6 min)
    python benchmarks/train_throughput.py --device cuda --full     # GPU, full Enformer
    python benchmarks/train_throughput.py --device cpu --full --lengths 4096 --warmup 1 \\
        --steps 1 --batch-size 1 --variants eager-fp32,compiled-bf16 --no-record   # dry run

What one step is: the loop's own pieces (:mod:`train.loop`), not a copy: a batch from
``make_loader`` in the strategy's stream mode (pairwise regression of ``configs/demo.toml``:
pairs of two individuals of one gene, shift and reverse-complement augmentation), the model from
``build_model``, ``step_loss`` (one-hot on the device, both pair halves and both haplotypes in
one forward, the loss), backward, gradient clipping (as the loop, its norm read back), AdamW
step, zero_grad: one micro-batch per optimizer step. After ``--warmup`` untimed steps
(torch.compile compiles there), ``--steps`` steps are timed on the wall clock with one device
synchronisation at the end, as the loop runs; **data wait** is the time spent in
``next(loader)`` over that wall time (the loop's ``data_wait`` metric). Each (length, variant)
runs in its own process (this script re-invoked with ``--worker``), so peak memory is its own:
``torch.cuda.max_memory_allocated`` on GPUs, the process's peak RSS on CPU.

* default (CPU): the tiny model of ``configs/demo.toml`` ``[model]`` (dim 48, depth 1) on
  4,096 bp crops (``[loader] length``) of the real chr22 demo shards (1000 Genomes genotypes,
  GEUVADIS expression), batches of 8 pairs.
* ``--full``: the full Enformer (``ModelConfig`` defaults: dim 1,536, 11 transformer blocks,
  random initialisation: speed does not depend on the weights) at 49,152 and 196,608 bp, crops
  of demo shards built at 196,608 bp.

**MFU** (model FLOP utilisation) = achieved model FLOP/s / ``--peak-tflops`` (default 989, the
H100/H200 dense bf16 peak, with ``--device cuda``; CPU rows show it only when a peak is given).
Model FLOPs are counted, not guessed: ``torch.utils.flop_counter.FlopCounterMode`` over one
forward of the model on the meta device (matmuls and convolutions; about 3.26 TFLOP per
196,608 bp sequence and 0.78 at 49,152 for the full model), times 3 for forward + backward,
times the sequences per item (a pair: 2 people x 2 haplotypes). Goals reported: MFU >= 40 % in
bf16 compiled at 196,608 bp, compiled >= 1.3x eager, data wait < 5 %.

"others %" is the share of all cores other processes used while a row's process ran (this is a
shared machine; compare ratios). Shards (format 3) are built once into ``benchmarks/_cache/train_throughput``.
Appends one JSON line to ``benchmarks/results/train_throughput.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import REPO_ROOT, append_result, print_table, run_worker  # noqa: E402
from benchmarks.learning_sanity import Load  # noqa: E402

CONFIG = REPO_ROOT / "configs" / "demo.toml"
CACHE = REPO_ROOT / "benchmarks" / "_cache" / "train_throughput"
VARIANTS = ("eager-fp32", "compiled-fp32", "eager-bf16", "compiled-bf16")
TINY_LENGTHS = (4096,)
FULL_LENGTHS = (49_152, 196_608)
FULL_BATCH = {49_152: 4, 196_608: 1}
"""Pairs per step of the full model by window length (each pair: 4 sequences of L bp)."""
GOALS = {"mfu_bf16_compiled_196608": 0.40, "compiled_speedup": 1.3, "data_wait": 0.05}
COLUMNS = ["L", "variant", "pairs/s", "seqs/s", "step ms", "data wait %", "peak MB",
           "TFLOP/s", "MFU %", "x eager", "others %"]


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def build_shards(stored: int, config: Path = CONFIG) -> Path:
    """Demo shards (real chr22 genotypes and GEUVADIS expression) with ``stored``-bp windows,
    built once into ``CACHE/demo_L{stored}``; returns the workdir."""
    import logging

    from hapflow.config import load_study
    from prep.sharding import run_shard
    from prep.targets import run_expression

    work = CACHE / f"demo_L{stored}"
    meta = work / "shards" / "meta.json"
    if meta.exists() and json.loads(meta.read_text()).get("format") == 3:
        return work
    logging.getLogger("prep").setLevel(logging.WARNING)
    run_expression(load_study(config), work)
    run_shard(load_study(config, {"haplotypes": {"length": stored}}, need=("haplotypes", "shard")),
              work)
    return work


def forward_flops(full: bool, length: int, config: Path = CONFIG) -> int:
    """Model FLOPs of one forward of one ``length``-bp sequence (one haplotype), counted by
    FlopCounterMode on the meta device (no memory, no compute)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from hapflow.config import load_study
    from hapflow.sections import ModelConfig
    from train.model import build_model

    model_cfg = ModelConfig() if full else load_study(config, need=("model",)).model
    model = build_model(model_cfg, length).to("meta")
    x = torch.zeros(1, 2, length, 4, device="meta")  # (B, haplotypes, L, 4)
    tss = torch.full((1,), length // 2, device="meta")
    with FlopCounterMode(display=False) as counter:
        model(x, tss)
    per_haplotype = 2 if model_cfg.haplotypes == "average" else 1
    return counter.get_total_flops() // per_haplotype


# ---------------------------------------------------------------------------------------------
# Worker: one (length, variant) in its own process
# ---------------------------------------------------------------------------------------------


def measure(spec: dict) -> dict:
    """Time ``spec["steps"]`` training steps after ``spec["warmup"]``; see the module docstring.

    Parameters
    ----------
    spec : dict with ``workdir`` (study with shards), ``config``, ``device``, ``length``,
        ``compile`` (bool), ``precision`` ("fp32" / "bf16"), ``full`` (bool), ``batch_size``,
        ``warmup``, ``steps``, ``threads`` (None: torch's default)

    Returns
    -------
    dict: ``items`` (pairs or samples), ``sequences`` (model inputs of L bp per item),
    ``seconds``, ``data_wait_s``, ``peak_mb``, ``loss`` (last), ``stream``.
    """
    import dataclasses
    import resource

    import torch

    from hapflow.config import load_study
    from hapflow.sections import ModelConfig
    from loader import make_loader
    from train.loop import step_loss
    from train.losses import STREAMS, TERMS
    from train.model import build_model

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    study = load_study(spec["config"], need=("model", "train", "loader"))
    model_cfg, cfg, loader_cfg = study.model, study.train, study.loader
    if spec["full"]:
        model_cfg = ModelConfig()
    cfg = dataclasses.replace(cfg, precision=spec["precision"], compile=spec["compile"])
    stream = TERMS[cfg.strategy].stream
    extra = {k: getattr(cfg, v) for k, v in STREAMS[stream].get("from_train", {}).items()}
    n_steps = spec["warmup"] + spec["steps"]
    loader_cfg = dataclasses.replace(loader_cfg, length=spec["length"],
                                     batch_size=spec["batch_size"], epoch_batches=n_steps,
                                     pin_memory=device.type == "cuda", **extra)
    loader = make_loader(Path(spec["workdir"]) / "shards", split="train",
                         mode=STREAMS[stream]["mode"], config=loader_cfg)

    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg, spec["length"]).to(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32
    net = torch.compile(model) if cfg.compile else model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas),
                                  weight_decay=cfg.weight_decay)
    net.train()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    batches = iter(loader)
    wait = 0.0
    t0 = None
    for i in range(n_steps):
        if i == spec["warmup"]:  # timing starts once compilation and warm-up are done
            sync()
            wait, t0 = 0.0, time.perf_counter()
        t_data = time.perf_counter()
        batch = next(batches)
        wait += time.perf_counter() - t_data
        loss, _ = step_loss(net, {stream: batch}, cfg, device)
        loss.backward()
        if cfg.grad_clip and cfg.grad_clip > 0:  # as the loop: the norm is read back
            float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync()
    seconds = time.perf_counter() - t0
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    people = 2 if STREAMS[stream]["pairs"] else 1
    haplotypes = 2 if model_cfg.haplotypes == "average" else 1
    return {"items": spec["steps"] * spec["batch_size"], "sequences": people * haplotypes,
            "seconds": seconds, "data_wait_s": wait, "peak_mb": round(peak_mb, 1),
            "loss": float(loss), "stream": stream, "threads": torch.get_num_threads(),
            "parameters": sum(p.numel() for p in model.parameters())}


# ---------------------------------------------------------------------------------------------
# Main: one worker per row, then ratios, MFU and goals
# ---------------------------------------------------------------------------------------------


def row_from(length: int, variant: str, m: dict, flops: int, peak_tflops: float | None,
             others: float) -> dict:
    """A table row from a worker's measurement (rates per second of wall time)."""
    items_s = m["items"] / m["seconds"]
    seqs_s = items_s * m["sequences"]
    tflops = 3 * flops * seqs_s / 1e12  # forward + backward (~2x forward)
    return {
        "L": length, "variant": variant, "pairs/s": round(items_s, 2),
        "seqs/s": round(seqs_s, 2),
        "step ms": round(1000 * m["seconds"] / (m["items"] / m["batch_size"]), 1),
        "data wait %": round(100 * m["data_wait_s"] / m["seconds"], 2),
        "peak MB": m["peak_mb"], "TFLOP/s": round(tflops, 4),
        "MFU %": round(100 * tflops / peak_tflops, 2) if peak_tflops else None,
        "others %": round(100 * others), "forward_tflop_per_seq": round(flops / 1e12, 4),
        **{k: m[k] for k in ("items", "seconds", "batch_size", "threads", "parameters", "loss")},
    }


def add_ratios(rows: list[dict]) -> None:
    """``x eager``: samples/s over the eager row of the same length and precision."""
    eager = {(r["L"], r["variant"].split("-")[1]): r["pairs/s"] for r in rows
             if r["variant"].startswith("eager")}
    for r in rows:
        base = eager.get((r["L"], r["variant"].split("-")[1]))
        r["x eager"] = round(r["pairs/s"] / base, 3) if base else None


def goals(rows: list[dict], full: bool) -> dict:
    """Each goal's measured value and whether it is met (None: not measured in this run)."""
    compiled = [r["x eager"] for r in rows if r["variant"].startswith("compiled")
                and r["x eager"] is not None]
    target = [r for r in rows if r["L"] == 196_608 and r["variant"] == "compiled-bf16"]
    mfu = target[0]["MFU %"] / 100 if full and target and target[0]["MFU %"] else None
    waits = [r["data wait %"] / 100 for r in rows]
    out = {
        "mfu_bf16_compiled_196608": mfu,
        "compiled_speedup_min": round(min(compiled), 3) if compiled else None,
        "data_wait_max": round(max(waits), 4) if waits else None,
    }
    out["met"] = {
        "mfu_bf16_compiled_196608": None if mfu is None
        else mfu >= GOALS["mfu_bf16_compiled_196608"],
        "compiled_speedup": None if not compiled else min(compiled) >= GOALS["compiled_speedup"],
        "data_wait": None if not waits else max(waits) < GOALS["data_wait"],
    }
    return out


def run(args) -> dict:
    lengths = [int(x) for x in args.lengths.split(",")] if args.lengths else list(
        FULL_LENGTHS if args.full else TINY_LENGTHS)
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}: choose from "
                         f"{', '.join(VARIANTS)}")
    stored = 196_608 if max(lengths) > 49_152 else 49_152
    if max(lengths) > stored:
        raise SystemExit(f"--lengths up to {stored:,} bp")
    workdir = build_shards(stored)
    peak = args.peak_tflops if args.peak_tflops is not None else (
        989.0 if args.device.startswith("cuda") else None)
    rows = []
    for length in lengths:
        flops = forward_flops(args.full, length)
        batch = args.batch_size or (FULL_BATCH.get(length, 1) if args.full else 8)
        for variant in variants:
            mode, precision = variant.split("-")
            spec = {"workdir": str(workdir), "config": str(CONFIG), "device": args.device,
                    "length": length, "compile": mode == "compiled", "precision": precision,
                    "full": args.full, "batch_size": batch, "warmup": args.warmup,
                    "steps": args.steps, "threads": args.threads}
            print(f"{length:,} bp, {variant}: {args.warmup} warm-up + {args.steps} timed "
                  f"steps of {batch} pairs ...", flush=True)
            with Load() as load:
                m = run_worker([str(Path(__file__).resolve()), "--worker", json.dumps(spec)])
            rows.append(row_from(length, variant, {**m, "batch_size": batch}, flops, peak,
                                 load.others))
    add_ratios(rows)
    return {"device": args.device, "full": args.full, "peak_tflops": peak,
            "warmup": args.warmup, "steps": args.steps, "rows": rows,
            "goals": goals(rows, args.full), "gpu": _gpu_name(args.device)}


def _gpu_name(device: str) -> str | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.get_device_name(torch.device(device))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Training-step throughput: eager vs compiled, fp32 "
                                            "vs bf16, data wait and MFU.")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument("--full", action="store_true",
                   help="the full Enformer at 49,152 and 196,608 bp (default: the tiny model "
                        "at 4,096 bp)")
    p.add_argument("--lengths", help="comma-separated window lengths (multiples of 128)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="comma-separated of %(default)s")
    p.add_argument("--batch-size", type=int,
                   help="pairs per step (default: 8 tiny; full: 4 at 49,152, 1 at 196,608)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation)")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--threads", type=int, help="torch threads per worker (default: torch's)")
    p.add_argument("--peak-tflops", type=float,
                   help="device peak TFLOP/s for MFU (default with cuda: 989, H100/H200 dense "
                        "bf16)")
    p.add_argument("--no-record", action="store_true", help="do not append a result line")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))), flush=True)
        return 0
    result = run(args)
    print_table(result["rows"], COLUMNS)
    g = result["goals"]
    print(f"Goals: MFU bf16 compiled at 196,608 bp >= 40 %: {g['mfu_bf16_compiled_196608']} "
          f"(met: {g['met']['mfu_bf16_compiled_196608']}); compiled >= 1.3x eager: "
          f"{g['compiled_speedup_min']} (met: {g['met']['compiled_speedup']}); data wait "
          f"< 5 %: {g['data_wait_max']} (met: {g['met']['data_wait']})", flush=True)
    if not args.no_record:
        print(f"Appended to {append_result('train_throughput', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
