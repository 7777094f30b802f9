"""hapflow's data loader: WebDataset shards of haplotypes -> batches for Enformer fine-tuning.

    from loader import make_loader, to_one_hot
    loader = make_loader("work/demo/shards", split="train", mode="train", batch_size=8)

See :mod:`loader.dataloader` for the modes and batch contents, :mod:`loader.sources` for the
sources it reads, :class:`hapflow.sections.LoaderConfig` for the settings (TOML ``[loader]``).
Names are imported lazily: ``import loader.plan`` (or sources, stages, augment, config) does
not import torch.
"""

from importlib import import_module

_EXPORTS = {
    "MODES": "loader.dataloader",
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

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'loader' has no attribute {name!r}")
