"""Joint-training step throughput beside the pairwise-only step, and the data wait with all
three streams (personal pairs + Enformer records at 196,608 bp + MPRA pairs).

    python benchmarks/joint_step.py                       # CPU, tiny model (dim 48, depth 1)
    python benchmarks/joint_step.py --device cuda --full  # GPU, the full Enformer trunk

Data: the joint test study (tests/joint_data.py: the real chr22 demo's 4 genes, Basenji2-format
records of real chr22 sequence, MPRA tables of real chr22 oligos), built once under --workdir.
Each variant times ``--steps`` optimizer steps of ``train.loop.train_step`` after ``--warmup``
untimed ones, mixing = "all" (every stream every micro-step, the most data per step): step
seconds, items per second of the personal stream and the share of the step spent waiting for
batches (``data_wait``). Prints a table and appends one JSON line to
``benchmarks/results/joint_step.jsonl`` (``--no-record``: not).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import append_result, print_table  # noqa: E402 - after the path


def measure(workdir: Path, config: Path, terms: dict, args) -> dict:
    # imported here so that --help stays instant
    import torch

    from hapflow.layout import Workdir
    from tests.train_demo import load_train_study
    from train.data import build_streams, forever
    from train.distributed import Dist
    from train.joint import joint_heads
    from train.loop import build_trainer, train_step

    overrides = {"train": {"terms": terms, "mixing": "all", "effective_batch": args.batch_size,
                           "enformer_batch_size": 1, "mpra_batch_size": 64,
                           "precision": "bf16" if args.device == "cuda" else "fp32"},
                 "loader": {"batch_size": args.batch_size, "num_workers": args.workers,
                            "epoch_batches": 1000}}
    if args.full:
        overrides["model"] = {"dim": 1536, "depth": 11, "heads": 8, "attn_dim_key": 64,
                              "dim_divisible_by": 128, "n_bins": 10}
        overrides["loader"]["length"] = 49_152
    study = load_train_study(config, overrides)
    study = dataclasses.replace(study, train=dataclasses.replace(study.train, device=args.device))
    device = torch.device(args.device)
    d = Dist(rank=0, world_size=1, local_rank=0, device=device)
    streams = build_streams(workdir / "shards", study.loader, study.train, d, Workdir(workdir))
    t = build_trainer(study, streams.length, 10_000, d, joint_heads(streams))
    its = {s: forever(ld) for s, ld in streams.train.items()}

    def groups():
        yield {s: next(it) for s, it in its.items()}

    for _ in range(args.warmup):
        train_step(t, groups(), 1, study.train, d)
    seconds = wait = 0.0
    for _ in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = train_step(t, groups(), 1, study.train, d)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
        wait += out["data_wait"]
    return {"streams": list(streams.train), "step_s": round(seconds / args.steps, 4),
            "pairs_per_s": round(args.batch_size * args.steps / seconds, 2),
            "data_wait_pct": round(100 * wait / seconds, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--full", action="store_true", help="the full Enformer trunk (GPU)")
    p.add_argument("--workdir", default=str(ROOT / "benchmarks" / "_cache" / "joint_work"))
    p.add_argument("--batch-size", type=int, default=4, help="pairs per step")
    p.add_argument("--workers", type=int, default=1, help="[loader] num_workers")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--no-record", action="store_true", help="do not append a result line")
    args = p.parse_args(argv)
    # imported here so that --help stays instant
    import torch

    from tests.joint_data import joint_study

    workdir, config = joint_study(Path(args.workdir))
    result = {"device": args.device, "full": args.full, "threads": torch.get_num_threads(),
              "batch_size": args.batch_size}
    result["pairwise"] = measure(workdir, config, {"pairwise_regression": 1.0}, args)
    result["joint"] = measure(workdir, config, {"pairwise_regression": 1.0,
                                                "enformer_human": 0.5, "mpra": 0.1}, args)
    result["joint_vs_pairwise_step"] = round(result["joint"]["step_s"]
                                             / result["pairwise"]["step_s"], 2)
    rows = [{"step": name, **{k: v for k, v in result[name].items() if k != "streams"},
             "streams": ", ".join(result[name]["streams"])} for name in ("pairwise", "joint")]
    print_table(rows, ["step", "step_s", "pairs_per_s", "data_wait_pct", "streams"])
    print(f"joint step / pairwise step: {result['joint_vs_pairwise_step']}x; "
          f"data wait with all three streams: {result['joint']['data_wait_pct']} % (goal < 5 %)")
    if not args.no_record:
        print(f"appended to {append_result('joint_step', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
