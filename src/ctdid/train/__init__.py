"""Training ctdid's denoisers: paired datasets, patch sampling and the training loop.

:func:`make_pairs` writes a folder of low/normal-dose HU pairs (simulated phantoms and real
normal-dose slices with inserted noise) at a base dose;
:func:`ctdid.train.simulate_dataset.simulate_dataset` a folder of normal-dose slices with
low-dose images at several doses and noise realisations; :class:`PairPatchDataset` draws
augmented patches from it at any dose; :func:`train` fits a network from
:data:`ctdid.models.MODEL_FACTORIES` and writes weights, a model card, a learning curve and a
log, resuming from its checkpoint when interrupted.

Examples
--------
>>> from ctdid.train import TrainConfig, make_pairs, train
>>> make_pairs("pairs", n_phantoms=20, seed=0)                          # doctest: +SKIP
>>> train(TrainConfig(name="compact-ld25", dataset="pairs"), out_dir="run")  # doctest: +SKIP
"""

from ctdid.train.config import TrainConfig
from ctdid.train.dataset import PairPatchDataset, split_pairs
from ctdid.train.loop import TrainProgress, TrainResult, build_adapter, evaluate, train
from ctdid.train.pairs import (
    Pair,
    RealSource,
    insertion_pair,
    list_pairs,
    load_pair,
    make_pairs,
    phantom_pair,
    read_real_sources,
)

__all__ = [
    "Pair",
    "PairPatchDataset",
    "RealSource",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "build_adapter",
    "evaluate",
    "insertion_pair",
    "list_pairs",
    "load_pair",
    "make_pairs",
    "phantom_pair",
    "read_real_sources",
    "split_pairs",
    "train",
]
