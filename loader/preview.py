"""Stream a few batches of a study's shards and report what training would see:
``python -m loader.preview``.

Example (after ``python -m prep.shard --config configs/demo.toml --workdir work/demo``)::

    python -m loader.preview --config configs/demo.toml --workdir work/demo --split train \\
        --mode train --batches 50

Prints the batch shapes, the one-hot tensor built on the device, samples/s, and how many
distinct genes a batch holds on average (BatchNorm sees near-identical sequences when a batch
holds few; ``gene`` mode batches hold one by design). ``--set loader.KEY=VALUE`` overrides the
config file, e.g. ``--set loader.lanes=1``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time


def preview(source, split: str, mode: str, batches: int, config, device: str = "cpu") -> dict:
    """Iterate up to ``batches`` batches of ``make_loader(source, split, mode)``.

    Returns a summary dict: batches, samples (valid), seconds, samples/s, shapes, genes seen,
    genes_per_batch (mean distinct genes among a batch's valid samples), batches_per_epoch.
    """
    import torch

    from loader import make_loader, to_one_hot

    loader = make_loader(source, split=split, mode=mode, config=config)
    seq_key = "seq_a" if mode == "pairwise" else "seq"
    n_batches = n_samples = 0
    genes: set[str] = set()
    per_batch: list[int] = []  # distinct genes among each batch's valid samples
    shapes: dict[str, list] = {}
    start = time.perf_counter()
    for batch in loader:
        seq = batch[seq_key]  # (B, 2, L) uint8 codes
        if not shapes:
            x = to_one_hot(seq, torch.float32, torch.device(device))  # (B, 2, L, 4)
            shapes = {"seq": list(seq.shape), "one_hot": list(x.shape)}
        valid = batch["valid"].tolist()
        n_samples += sum(valid)
        batch_genes = {g for g, ok in zip(batch["gene"], valid, strict=True) if ok}
        genes.update(batch_genes)
        per_batch.append(len(batch_genes))
        n_batches += 1
        if n_batches >= batches:
            break
    seconds = time.perf_counter() - start
    return {"batches": n_batches, "samples": n_samples, "seconds": round(seconds, 2),
            "samples/s": round(n_samples / max(seconds, 1e-9), 1), "shapes": shapes,
            "genes": len(genes), "genes_per_batch": round(sum(per_batch) / max(n_batches, 1), 2),
            "batches_per_epoch": len(loader)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loader.preview", description=__doc__.split("\n")[0])
    p.add_argument("--config", help="study TOML ([loader] section)")
    p.add_argument("--workdir", required=True, help="study working directory (reads DIR/shards)")
    p.add_argument("--split", default="train", choices=["train", "val", "test"])
    p.add_argument("--mode", default="train", choices=["train", "eval", "pairwise", "gene"])
    p.add_argument("--batches", type=int, default=50, help="stop after this many batches")
    p.add_argument("--num-workers", type=int, help="override [loader] num_workers")
    p.add_argument("--device", default="cpu", help="where one-hot is built (cpu, cuda)")
    p.add_argument("--set", action="append", default=[], metavar="loader.KEY=VALUE",
                   help="override a [loader] setting (repeatable)")
    p.add_argument("--quiet", action="store_true", help="only warnings and errors")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(message)s")
    from pathlib import Path

    from loader.config import LoaderConfig
    from prep.config import ConfigError, load_config
    from prep.shard import split_overrides
    from prep.shard_format import ShardFormatError

    try:
        overrides = split_overrides(args.set, ("loader",))["loader"]
        if args.num_workers is not None:
            overrides["num_workers"] = args.num_workers
        config = load_config(LoaderConfig, args.config, "loader", overrides)
        summary = preview(Path(args.workdir) / "shards", args.split, args.mode, args.batches,
                          config, args.device)
    except (ConfigError, ShardFormatError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Streamed {summary['batches']} {args.mode} batches of the {args.split} split "
          f"({summary['samples']} samples, {summary['genes']} genes, "
          f"{summary['genes_per_batch']} distinct genes per batch) in {summary['seconds']} s: "
          f"{summary['samples/s']} samples/s; seq {summary['shapes'].get('seq')} uint8 -> "
          f"one-hot {summary['shapes'].get('one_hot')} on {args.device}; "
          f"{summary['batches_per_epoch']} batches per epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
