"""Sweeps over starts, labelled shares, seeds and fine-tuning settings: the layer above the training
engine (:mod:`hebbopt.training`) and the evaluation protocols (:mod:`hebbopt.evaluation`).

- :func:`~hebbopt.sweeps.semisup.semisup`: one sweep, every finished cell recorded and resumed;
- :mod:`~hebbopt.sweeps.grid`: many sweeps as parallel jobs on one machine, one table;
- :mod:`~hebbopt.sweeps.records`: committed records, so a sweep resumes on another machine;
- :mod:`~hebbopt.sweeps.settings`: the folders of a grid of fine-tuning settings.
"""

from hebbopt.sweeps.semisup import semisup

__all__ = ["semisup"]
