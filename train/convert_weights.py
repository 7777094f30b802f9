"""Convert an Enformer weights folder to safetensors: ``python -m train.convert_weights``.

Examples
--------
The official weights (downloaded once on a machine with internet)::

    huggingface-cli download EleutherAI/enformer-official-rough --local-dir weights/official
    python -m train.convert_weights weights/official weights/enformer

Reads ``SRC/config.json`` and ``SRC/pytorch_model.bin`` (with ``torch.load(weights_only=True)``:
tensors only, nothing executed) or ``SRC/model.safetensors``, checks the weights against the
config strictly, and writes ``OUT/model.safetensors`` (each tensor once) and ``OUT/config.json``
atomically, then reads them back and checks every tensor. Same input, same bytes. Point
``[model] weights`` at OUT with ``source = "pretrained"``.
"""

from __future__ import annotations

import argparse
import logging
import sys


def parse_args(argv=None) -> argparse.Namespace:
    from hapflow.cli import add_common_arguments, make_parser

    p = make_parser("python -m train.convert_weights",
                    "Convert Enformer weights (Hugging Face layout) to model.safetensors + "
                    "config.json, and check the round trip tensor by tensor.",
                    next_step='point [model] weights at OUT_DIR with source = "pretrained"')
    p.add_argument("src", metavar="SRC_DIR", help="folder with config.json and "
                   "pytorch_model.bin or model.safetensors")
    p.add_argument("out", metavar="OUT_DIR", help="folder to write (created if needed)")
    add_common_arguments(p, (), config=False, workdir=False)
    return p.parse_args(argv)


def convert(src, out) -> dict:
    """Convert ``src`` into ``out`` and verify the round trip; returns a summary dict.

    Raises
    ------
    train.weights.WeightsError
        Unusable input, or an output that does not read back identically.
    """
    import torch

    from train.weights import (
        WeightsError,
        canonical_state_dict,
        find_weights_file,
        load_enformer,
        read_hf_config,
        read_state_dict,
        save_hf_directory,
    )

    hparams = read_hf_config(src)
    source = find_weights_file(src)
    model = load_enformer(src)
    target = save_hf_directory(model, hparams, out, fmt="safetensors")
    expected = canonical_state_dict(model)
    written = read_state_dict(target)
    bad = [k for k in expected if k not in written or not torch.equal(expected[k], written[k])]
    if bad or set(written) != set(expected):
        raise WeightsError(f"{target} does not read back as written ({len(bad)} tensors differ)")
    return {"source": str(source), "target": str(target), "tensors": len(expected),
            "parameters": sum(t.numel() for t in expected.values())}


def _main(argv=None) -> int:
    args = parse_args(argv)
    from hapflow.cli import setup_logging

    setup_logging(args.quiet)
    summary = convert(args.src, args.out)
    logging.info("wrote %s: %d tensors, %s parameters, from %s", summary["target"],
                 summary["tensors"], f"{summary['parameters']:,}", summary["source"])
    return 0


def main(argv=None) -> int:
    """``python -m train.convert_weights SRC OUT``: see the module docstring."""
    from hapflow.cli import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
