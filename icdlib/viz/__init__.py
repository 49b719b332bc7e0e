"""Figures and the JupyterLab explorer.

* :mod:`icdlib.viz.figures`: static plotly figures (traces, patch overlaps, affinities);
* :mod:`icdlib.viz.chain_widgets` and :mod:`icdlib.viz.explorer`: the ipywidgets explorer.
"""
