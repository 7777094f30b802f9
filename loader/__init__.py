"""hapflow's data loader: WebDataset shards of haplotypes -> batches for Enformer fine-tuning.

    from loader import make_loader, to_one_hot
    loader = make_loader("work/demo/shards", split="train", mode="train", batch_size=8)

The package, from the batches down (each module's docstring says more):

* :mod:`loader.dataloader` — :func:`make_loader`, :class:`ShardLoader`: the modes, batch
  contents, epochs, resume, the DataLoader workers;
* :mod:`loader.plan` — which samples (or pairs) each rank loads in an epoch, per mode;
  :mod:`loader.order` — the seeded reading order and its lanes; :mod:`loader.ranks` — how an
  epoch's items are dealt to ranks and workers;
* :mod:`loader.stages` — the worker pipeline: which genes each batch needs and when, then per
  batch one numba call that writes every window (shift, crop, reverse complement fused) straight
  into the batch buffer, and the batch's targets and ids; :mod:`loader.records` — gene records
  read from their shards and verified; :mod:`loader.pool` — the genes in flight;
  :mod:`loader.augment` — the batch window and the augmentation draws;
* :mod:`loader.sources` — where shards and the manifest come from (folders, patterns, URLs),
  and the split index (shard format 3: :mod:`prep.gene_record`);
* :mod:`loader.device` — one-hot and reverse complement on the training device;
  :mod:`loader.distributed` — rank discovery and gathering predictions across ranks;
* :mod:`loader.probe` — stream a few batches and measure them (``python -m loader.preview``).

Settings: :class:`hapflow.sections.LoaderConfig` (TOML ``[loader]``).

The names below are imported lazily, when first used, so that ``import loader.plan`` (or
order, ranks, sources, stages, records, pool, augment) does not import torch: worker pipelines
and plans are tested, and ``python -m loader.preview --help`` runs, without it.
"""

from importlib import import_module

MODES = ("train", "eval", "pairwise", "gene")
"""The loader's modes (:mod:`loader.dataloader` describes each). Defined here, torch-free, so
that ``python -m loader.preview`` lists them without importing the loader."""

_EXPORTS = {
    "ShardLoader": "loader.dataloader",
    "make_loader": "loader.dataloader",
    "to_one_hot": "loader.device",
    "reverse_complement": "loader.device",
    "reverse_complement_one_hot": "loader.device",
    "average_forward_rc": "loader.device",
    "gather_predictions": "loader.distributed",
    "merge_batches": "loader.distributed",
    "rank_and_world": "loader.distributed",
    "ShardFormatError": "prep.shard_format",
}

__all__ = ["MODES", *_EXPORTS]


def __getattr__(name: str):
    """The lazy exports of :data:`_EXPORTS` (see the module docstring)."""
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'loader' has no attribute {name!r}")
