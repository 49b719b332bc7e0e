"""``python -m icdlib.evaluate``: evaluate descriptors, matchers or hash baselines on a DISC21 folder.

The implementation is :mod:`icdlib.eval.engine`, the engine the pipeline uses too.
"""

import sys

from icdlib.eval.cli import main
from icdlib.eval.engine import EvalResult, evaluate_benchmark  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
