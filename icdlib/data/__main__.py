"""``python -m icdlib.data build|check|prepare``: build the embedded benchmark, check a DISC21 folder, or lay
out the DISC21 download flat."""

import sys

from icdlib.data.build import main

if __name__ == "__main__":
    sys.exit(main())
