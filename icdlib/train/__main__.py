"""``python -m icdlib.train``: see :mod:`icdlib.train.cli`."""

import sys

from icdlib.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
