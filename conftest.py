"""Repository-level pytest hooks.

When the notebooks run under nbmake (``pytest --nbmake notebooks``), every notebook
reads its params from ``ICDLIB_PARAMS``: here a copy of params.yaml with the ``tiny``
profile applied, in a fresh temporary folder, so data, checkpoints and reports of the
test run never touch the working tree.
"""

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def pytest_configure(config):
    if not getattr(config.option, "nbmake", False) or os.environ.get("ICDLIB_PARAMS"):
        return
    from icdlib.pipeline.profile import apply_profile

    tmp = Path(tempfile.mkdtemp(prefix="icdlib-notebooks-"))
    out = tmp / "params.yaml"
    apply_profile(ROOT / "params.yaml", "tiny", [], profiles_dir=ROOT / "profiles", out_path=out)
    os.environ["ICDLIB_PARAMS"] = str(out)
