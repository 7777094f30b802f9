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


def _check_device(device: str) -> None:
    """A device this build of torch can use, or a ValueError that says why not."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this torch build has no usable CUDA GPU "
                         f"(torch {torch.__version__}, cuda {torch.version.cuda}); use --device "
                         "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"--device {device!r}: use cpu, cuda or cuda:N")


def _main(argv=None) -> int:
    from hapflow.cli import add_common_arguments, make_parser, setup_logging

    p = make_parser("python -m loader.preview", __doc__.split("\n")[0].rstrip("."),
                    next_step="python -m train.run --config C --workdir DIR")
    add_common_arguments(p, ("loader",), config_required=False,
                         workdir_help="study working directory (reads DIR/shards)")
    p.add_argument("--split", default="train", choices=["train", "val", "test"],
                   help="split to stream")
    p.add_argument("--mode", default="train", choices=["train", "eval", "pairwise", "gene"],
                   help="loader mode")
    p.add_argument("--batches", type=int, default=50, metavar="N",
                   help="stop after this many batches, integer")
    p.add_argument("--num-workers", type=int, metavar="N",
                   help="override [loader] num_workers, integer")
    p.add_argument("--device", default="cpu", help="where one-hot is built: cpu, cuda, cuda:N")
    args = p.parse_args(argv)
    setup_logging(args.quiet)
    from pathlib import Path

    from hapflow.config import load_study, split_overrides

    overrides = split_overrides(args.set, ("loader",))
    if args.num_workers is not None:
        overrides["loader"]["num_workers"] = args.num_workers
    config = load_study(args.config, overrides, need=("loader",)).loader
    _check_device(args.device)
    shards = Path(args.workdir) / "shards"
    if not shards.is_dir():
        raise FileNotFoundError(f"{shards} does not exist: build the shards first with "
                                "python -m prep.shard --config C --workdir DIR")
    summary = preview(shards, args.split, args.mode, args.batches, config, args.device)
    print(f"Streamed {summary['batches']} {args.mode} batches of the {args.split} split "
          f"({summary['samples']} samples, {summary['genes']} genes, "
          f"{summary['genes_per_batch']} distinct genes per batch) in {summary['seconds']} s: "
          f"{summary['samples/s']} samples/s; seq {summary['shapes'].get('seq')} uint8 -> "
          f"one-hot {summary['shapes'].get('one_hot')} on {args.device}; "
          f"{summary['batches_per_epoch']} batches per epoch")
    return 0


def main(argv=None) -> int:
    """``python -m loader.preview``: see the module docstring; exit 2 on bad input."""
    from hapflow.cli import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
