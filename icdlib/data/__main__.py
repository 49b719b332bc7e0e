"""``python -m icdlib.data build|check``: build the embedded benchmark or check a DISC21 folder."""

import sys

from icdlib.data.build import main

if __name__ == "__main__":
    sys.exit(main())
