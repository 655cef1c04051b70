"""Evaluation protocols on a frozen backbone: features, a linear probe, k-nearest neighbours, retrieval.

Beside fine-tuning (every layer trained on the labelled images), these measure the features a
pre-training produced without changing them:

- :func:`~hebbopt.evaluation.features.extract_features`: the frozen backbone's flattened
  pre-classifier features, computed once;
- :func:`~hebbopt.evaluation.features.estimate_norm_statistics`: a random start's BatchNorm
  statistics, from one pass over the images;
- :func:`~hebbopt.evaluation.linear.linear_probe`: SoftHebb's linear classifier (dropout → Linear,
  Adam, lr halved at milestones);
- :func:`~hebbopt.evaluation.neighbours.knn`: k-nearest neighbours on cosine similarity, majority
  vote;
- :func:`~hebbopt.evaluation.neighbours.retrieval`: each test image queries the training set
  (precision@k and mAP);

and the sweep's outputs (:mod:`hebbopt.evaluation.report`: the table, the choice of settings on
validation, the plot). Everything here is pure: tensors in, numbers out; no run folders (the sweep,
:func:`~hebbopt.sweeps.semisup.semisup`, records and resumes them). Features, statistics or a
training loss that are not finite raise ``FloatingPointError``: nothing computed on NaN comes back
as a result.
"""

from hebbopt.evaluation.features import estimate_norm_statistics, extract_features
from hebbopt.evaluation.linear import (
    MILESTONES,
    NORMALIZE,
    dropout_,
    feature_scaler,
    linear_probe,
    milestones,
)
from hebbopt.evaluation.neighbours import knn, retrieval

__all__ = [
    "MILESTONES",
    "NORMALIZE",
    "dropout_",
    "estimate_norm_statistics",
    "extract_features",
    "feature_scaler",
    "knn",
    "linear_probe",
    "milestones",
    "retrieval",
]
