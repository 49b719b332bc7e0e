"""``python -m icdlib.data build|check|prepare|photos``: build the embedded benchmark (or one from a folder
of photos: ``build --photos``), check a DISC21 folder, lay out the DISC21 download flat, or fetch Debian's
free photographs."""

import sys

from icdlib.data.build import main

if __name__ == "__main__":
    sys.exit(main())
