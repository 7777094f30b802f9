"""A run's batch streams: one loader per stream its loss terms read, plus validation.

Every loss term reads one batch stream (:data:`train.losses.STREAMS`: a loader mode and its
settings). A run reads the strategy's stream, which defines an epoch, and one batch of every
other configured term's stream per micro-step, epoch after epoch. Validation reads the
strategy's stream on the validation individuals (its loss) and every validation sample once
(per-gene Pearson r).

Data-loader iterators are created without touching the global torch RNG
(:func:`rng_neutral`): torch draws a base seed there, while hapflow's workers seed themselves
from (seed, epoch, rank, worker), so dropout draws do not depend on where a run was resumed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from hapflow.sections import LoaderConfig, TrainConfig
from loader import ShardLoader, make_loader
from train.distributed import Dist
from train.losses import STREAMS, TERMS

__all__ = ["Streams", "build_streams", "stream_loader", "rng_neutral", "forever"]


@dataclass
class Streams:
    """The loaders of one run on one rank.

    Attributes
    ----------
    main : str
        The strategy's stream: its epochs are the run's epochs.
    train : dict of str to ShardLoader
        Every stream the configured terms read, the main one first, then by name.
    val : ShardLoader
        The main stream on the validation individuals (the validation loss).
    eval : ShardLoader
        Every validation sample once, in eval mode (per-gene Pearson r).
    """

    main: str
    train: dict[str, ShardLoader]
    val: ShardLoader
    eval: ShardLoader

    @property
    def length(self) -> int:
        """L, the window (bp) the loaders yield and the model reads."""
        return self.train[self.main].window.length

    def micro_batches(self, batches: Iterator[dict], others: dict[str, Iterator[dict]],
                      n: int, end_of_epoch: bool) -> Iterator[dict[str, dict]]:
        """``n`` micro-batch groups ``{stream: batch}``: a batch of the main stream (from
        ``batches``, the epoch's iterator) and one of every other stream (``others``).

        With ``end_of_epoch``, the main stream's epoch is closed once the last group has been
        taken (the loader then stands at the next epoch, as a checkpoint must record it).
        """
        for _ in range(n):
            yield {self.main: next(batches), **{s: next(it) for s, it in others.items()}}
        if end_of_epoch:
            assert next(batches, None) is None, "the loader yielded more than len()"


def build_streams(shards: Path, loader_cfg: LoaderConfig, cfg: TrainConfig, d: Dist) -> Streams:
    """The train loaders of every stream ``cfg``'s terms read, and the validation loaders."""
    main = TERMS[cfg.strategy].stream
    names = [main] + sorted({TERMS[t].stream for t in cfg.loss_terms} - {main})
    train = {s: stream_loader(shards, s, "train", loader_cfg, cfg, d) for s in names}
    val = stream_loader(shards, main, "val", loader_cfg, cfg, d)
    every = make_loader(shards, split="val", mode="eval", config=loader_cfg, rank=d.rank,
                        world_size=d.world_size)
    return Streams(main=main, train=train, val=val, eval=every)


def stream_loader(shards: Path, stream: str, split: str, loader_cfg: LoaderConfig,
                  cfg: TrainConfig, d: Dist) -> ShardLoader:
    """The loader of one batch stream on one split (train mode becomes eval off ``train``)."""
    spec = STREAMS[stream]
    extra = {k: getattr(cfg, v) for k, v in spec.get("from_train", {}).items()}
    mode = spec["mode"]
    if split != "train" and mode == "train":
        mode = "eval"
    return make_loader(shards, split=split, mode=mode,
                       config=dataclasses.replace(loader_cfg, **extra), rank=d.rank,
                       world_size=d.world_size)


def rng_neutral(iterable: Iterable) -> Iterator:
    """Iterate ``iterable`` without letting the creation of its DataLoader iterator draw from
    the global torch RNG (torch draws a base seed there; hapflow's workers seed themselves from
    (seed, epoch, rank, worker)), so dropout streams do not depend on where a run resumed."""
    state = torch.get_rng_state()
    it = iter(iterable)
    try:
        first = next(it)
    except StopIteration:
        return
    finally:
        torch.set_rng_state(state)
    yield first
    yield from it


def forever(loader: Iterable) -> Iterator:
    """A secondary stream's batches, epoch after epoch."""
    while True:
        yield from rng_neutral(loader)
