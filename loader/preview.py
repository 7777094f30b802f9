"""Stream a few batches of a study's shards and report what training would see:
``python -m loader.preview``.

Example (after ``python -m prep.shard --config configs/demo.toml --workdir work/demo``)::

    python -m loader.preview --config configs/demo.toml --workdir work/demo --split train \\
        --mode train --batches 50

Prints the batch shapes, the one-hot tensor built on the device, samples/s, and how many
distinct genes a batch holds on average (BatchNorm sees near-identical sequences when a batch
holds few; ``gene`` mode batches hold one by design). Reads the ``[loader]`` section;
``--set loader.KEY=VALUE`` overrides it, e.g. ``--set loader.lanes=1``. The library:
:mod:`loader.probe`.
"""

from __future__ import annotations

import sys

from hapflow.command import Call, Command, Option, run_command
from hapflow.names import SPLITS
from loader import MODES

COMMAND = Command(
    prog="python -m loader.preview",
    summary="Stream a few batches of a study's shards and report what training would see: "
            "shapes, samples/s and distinct genes per batch.",
    reads=("loader",),
    config="optional",
    workdir="study working directory (reads DIR/shards)",
    options=(
        Option("--split", default="train", choices=SPLITS, help="split to stream"),
        Option("--mode", default="train", choices=MODES, help="loader mode"),
        Option("--batches", type=int, default=50, metavar="N",
               help="stop after this many batches, integer"),
        Option("--num-workers", type=int, metavar="N", setting="loader.num_workers",
               help="override [loader] num_workers, integer"),
        Option("--device", default="cpu", help="where one-hot is built: cpu, cuda, cuda:N"),
    ),
    next_step="python -m train.run --config C --workdir DIR",
    doc=None,
)


def run(call: Call) -> None:
    # imported here so that --help stays instant (the library imports torch)
    from loader.probe import run_preview

    args = call.args
    print(run_preview(call.study, call.workdir, split=args.split, mode=args.mode,
                      batches=args.batches, device=args.device))


def main(argv: list[str] | None = None) -> int:
    """``python -m loader.preview``: see the module docstring; exit 2 on bad input."""
    return run_command(COMMAND, run, argv)


if __name__ == "__main__":
    sys.exit(main())
