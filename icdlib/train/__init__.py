"""Training: one loop for the descriptor and the matcher, on CPU or multi-GPU DDP.

* :mod:`icdlib.train.runs`: the ``train`` config, the arms and their resolution from params;
* :mod:`icdlib.train.loop`: :func:`train`, resumable and exact under DDP;
* :mod:`icdlib.train.inputs`: what a run reads (sources, kNN table, pair store, item order), and
  :func:`prepare`, which mines the table and builds the store ahead of time;
* :mod:`icdlib.train.objectives`: the losses of each model, weighted as the arm says;
* :mod:`icdlib.train.schedule`, :mod:`icdlib.train.distributed`, :mod:`icdlib.train.mining`:
  the step schedule, process-group helpers and kNN hard-negative tables.

``python -m icdlib.train --arm copynce --out runs/x`` is the command line.
"""

from icdlib.train.inputs import CHECKPOINT, prepare, training_images
from icdlib.train.loop import FINAL, train
from icdlib.train.runs import RunConfig, TrainConfig, apply_overrides, arm_names, parse_sets, resolve_run

__all__ = [
    "CHECKPOINT", "FINAL", "RunConfig", "TrainConfig", "apply_overrides", "arm_names", "parse_sets", "prepare",
    "resolve_run", "train", "training_images",
]
