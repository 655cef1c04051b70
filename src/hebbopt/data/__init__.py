"""Datasets for the recipes: image tensors in memory (small sets) or folders streamed from disk.

:func:`load_dataset` returns the train and test splits of a named dataset with the training
split's per-channel statistics; :func:`labelled_subset` draws the s % labelled subsets
("sample-efficiency regimes" of the paper).
"""

from hebbopt.data.datasets import DATASETS, ImageSplits, TensorImages, load_dataset
from hebbopt.data.regimes import REGIMES, labelled_subset, validation_split
from hebbopt.data.seeds import derive_seed

__all__ = [
    "DATASETS",
    "REGIMES",
    "ImageSplits",
    "TensorImages",
    "derive_seed",
    "labelled_subset",
    "load_dataset",
    "validation_split",
]
