"""``python -m icdlib.metrics``: ISC21 uAP, RP90 and mAP of a predictions CSV.

The implementation is :mod:`icdlib.eval.metrics`; its public names are importable from here.
"""

import sys

from icdlib.eval.metrics import (  # noqa: F401  (the public names of this command's module)
    GroundTruthMatch, Metrics, PrCurve, PredictedMatch, evaluate, evaluate_arrays, evaluate_files, main,
    pr_curve, read_ground_truth, read_predictions, write_predictions,
)

if __name__ == "__main__":
    sys.exit(main())
