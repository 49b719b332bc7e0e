"""``python -m icdlib.profile NAME [--set key=value]``: switch params.yaml to a profile.

The implementation is :mod:`icdlib.pipeline.profile`.
"""

import sys

from icdlib.pipeline.profile import apply_profile, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
