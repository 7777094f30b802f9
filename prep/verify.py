"""Verify a study's shards: ``python -m prep.verify DIR/shards``.

Examples
--------
::

    python -m prep.verify work/demo/shards            # everything
    python -m prep.verify work/demo/shards --quick    # sha256 of files and the tables only
    python -m prep.verify --workdir work/demo --split train

Checks ``meta.json`` and ``build.json``, the manifest against them and ``targets.json``, every
shard's size and sha256 and (unless ``--quick``) every member of every shard; every problem is
reported, each naming the file and member (the checks: :mod:`prep.verification`). Exit status
0 when everything verifies, 1 when a problem was found, 2 on bad arguments. The loader runs the
same checks on request (``make_loader(..., verify=True)``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from hapflow.command import Call, Command, Option, run_command

COMMAND = Command(
    prog="python -m prep.verify",
    summary="Verify a study's shards: file checksums against meta.json, the tables, and (unless "
            "--quick) every member of every shard. Exit status 0: all verified, 1: problems "
            "found (each named), 2: bad arguments.",
    config="optional",
    workdir="study working directory (verifies DIR/shards)",
    workdir_required=False,
    options=(
        Option("shards", nargs="?", metavar="SHARDS_DIR",
               help="the shards folder (DIR/shards)"),
        Option("--split", repeat=True, choices=("train", "val", "test"),
               help="only this split (repeatable; default: every split)"),
        Option("--quick", switch=True,
               help="file checksums and tables only; do not decode the members"),
    ),
    next_step="python -m train.run --config C --workdir DIR (or rebuild what failed: python -m "
              "prep.shard ... --overwrite)",
    doc=None,
)


def run(call: Call) -> int:
    # imported here so that --help stays instant
    from prep.verification import verify_shards

    args = call.args
    if bool(args.shards) == bool(call.workdir):
        raise ValueError("give the shards folder or --workdir DIR (one of them)")
    shards = Path(args.shards) if args.shards else call.workdir.shards
    if not shards.is_dir():
        raise FileNotFoundError(f"shards folder {shards} does not exist (run python -m "
                                "prep.shard first)")
    report = verify_shards(shards, splits=args.split, deep=not args.quick)
    if not report.ok:
        print(report.summary(), file=sys.stderr)
        return 1
    if not args.quiet:
        print(report.summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m prep.verify``: see the module docstring."""
    return run_command(COMMAND, run, argv)


if __name__ == "__main__":
    sys.exit(main())
