"""The preamble every notebook shares, as one call: ``P = setup(params_file)``.

A stage notebook's first code cell (tagged ``parameters`` for papermill) holds literals
only; the next one calls :func:`setup`, which picks the plotly renderer and finds the
params file, so no notebook repeats either.
"""

from __future__ import annotations

from pathlib import Path

from icdlib.params import locate

# Interactive figures in JupyterLab that also survive in a saved notebook (papermill's output,
# ``reports/notebooks/``): the mimetype bundle for the live kernel, a CDN-linked HTML copy for readers.
RENDERER = "plotly_mimetype+notebook_connected"


def setup(params_file: str | Path | None = None) -> Path | None:
    """Set up a notebook: plotly's default renderer, and the params file it reads.

    Args:
        params_file: the notebook's ``params_file`` parameter (usually ``"params.yaml"``),
            found as :func:`icdlib.params.locate` finds it: ``ICDLIB_PARAMS`` wins (the test
            suite's tiny profile), else the path as given or in a parent folder (a notebook
            runs from ``notebooks/``). ``None`` for a notebook that reads no params file
            (the explorer).

    Returns:
        The params file's absolute path, or ``None`` when ``params_file`` is ``None``.

    Raises:
        FileNotFoundError: naming the file, when it is in none of those places.
    """
    import plotly.io as pio  # the viz extra: imported where a notebook needs it

    pio.renderers.default = RENDERER
    return None if params_file is None else locate(params_file)
