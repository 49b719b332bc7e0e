"""Executed notebooks, kept light: figures stay, widget state and progress-bar bulk go.

Every ``dvc repro`` commits the executed notebooks under ``reports/notebooks/``. What
makes them heavy is not the figures but live-kernel state:

- ``metadata.widgets``: the saved state of every ipywidget (the PixTrace explorer's
  alone is ~30 MB). Without a kernel the widgets cannot run anyway, so it is dropped.
- widget-view outputs (``application/vnd.jupyter.widget-view+json``): they point into
  that state. Each one is replaced by a text output: a progress bar's final line
  (``"train copynce: 450/450"``, read from the state before it is dropped), or a note
  that an interactive widget was here.
- stream outputs: a progress bar redrawn with ``\\r`` leaves thousands of fragments.
  Consecutive fragments of one stream are merged and each line keeps what a terminal
  would finally show (the text after its last carriage return).

- absolute paths: the project folder of the machine that ran the notebook, wherever an
  output prints it (``PosixPath('/home/me/icd/models/trunk.pt')``), is cut to the
  project-relative path (``models/trunk.pt``); no machine's folders go into git.

Plotly figures (``application/vnd.plotly.v1+json`` and their ``text/html`` twin) are
otherwise left as they are. ::

    python -m icdlib.pipeline.slim reports/notebooks/02_pixtrace.ipynb [--max-mb 2]
"""

from __future__ import annotations

import argparse
import html
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import nbformat

from icdlib.params import project_root

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PROGRESS_MODELS = ("FloatProgressModel", "IntProgressModel")
TEXT_MODELS = ("HTMLModel", "LabelModel")
MAX_MB = 2.0  # what one executed notebook may weigh in git


def resolve_carriage_returns(text: str) -> str:
    """Each line as a terminal finally shows it: its last non-empty ``\\r`` segment."""
    lines = []
    for line in text.split("\n"):
        parts = [p for p in line.split("\r") if p]
        lines.append(parts[-1] if parts else "")
    return "\n".join(lines)


def _merge_streams(outputs: list) -> list:
    out: list = []
    for o in outputs:
        if o.get("output_type") == "stream" and out and out[-1].get("output_type") == "stream" \
                and out[-1].get("name") == o.get("name"):
            out[-1]["text"] += o["text"]
        else:
            out.append(o)
    for o in out:
        if o.get("output_type") == "stream":
            o["text"] = resolve_carriage_returns(o["text"])
    return out


def widget_text(states: dict[str, Any], model_id: str) -> str | None:
    """A progress bar's last saved line, from widget state; None for any other widget.

    A progress bar is a box whose children are text widgets and one progress widget
    (tqdm's layout: description and percentage, bar, counts and rate). The line is the
    texts joined, with ``value/max`` in place of the bar when no text holds the counts.
    """
    model = states.get(model_id, {})
    children = [str(c).removeprefix("IPY_MODEL_") for c in model.get("state", {}).get("children", [])]
    kinds = [states.get(c, {}).get("model_name") for c in children]
    if sum(k in PROGRESS_MODELS for k in kinds) != 1 or not all(k in PROGRESS_MODELS + TEXT_MODELS for k in kinds):
        return None
    parts, counts = [], ""
    for c, kind in zip(children, kinds):
        s = states[c].get("state", {})
        if kind in PROGRESS_MODELS:
            counts = f"{s.get('value', 0):g}/{s.get('max', 100):g}"
            parts.append(None)
        else:
            text = html.unescape(re.sub(r"<[^>]*>", "", str(s.get("value", ""))))
            parts.append(" ".join(text.replace("\u2007", " ").split()))  # tqdm pads with figure spaces
    has_counts = any(p and re.search(r"\d/\d", p) for p in parts)
    return " ".join(p for p in (q if q is not None else ("" if has_counts else counts) for q in parts) if p)


def relative_paths(obj: Any, root: str | Path) -> Any:
    """``obj`` (nested dicts, lists and strings) with every ``root/`` cut from its strings
    and a bare ``root`` made ``.`` (``root`` as given and resolved)."""
    roots = sorted({str(Path(root)), str(Path(root).resolve())}, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(r) for r in roots) + r"(/|\b)")

    def walk(x: Any) -> Any:
        if isinstance(x, str):
            return pattern.sub(lambda m: "" if m.group(1) == "/" else ".", x)
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, dict):
            return type(x)({k: walk(v) for k, v in x.items()})
        return x

    return walk(obj)


def slim_notebook(nb: nbformat.NotebookNode, root: str | Path | None = None) -> nbformat.NotebookNode:
    """Drop widget state and widget views (kept as text), collapse progress streams and make
    paths under ``root`` (default: the project, :func:`icdlib.params.project_root`) relative, in place."""
    root = project_root() if root is None else root
    states = nb.metadata.pop("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for o in cell.outputs:
            data = o.get("data", {})
            if WIDGET_VIEW in data:
                text, name = widget_text(states, str(data[WIDGET_VIEW].get("model_id", ""))), "stderr"
                if text is None:  # progress bars go where tqdm's text bars go; other widgets are noted
                    kind = str(data.get("text/plain", "widget")).split("(", 1)[0]
                    text = f"[interactive {kind} widget: open the notebook in JupyterLab and run it to use it]"
                    name = "stdout"
                o = nbformat.v4.new_output("stream", name=name, text=text + "\n")
            outputs.append(o)
        cell.outputs = [nbformat.from_dict(relative_paths(o, root)) for o in _merge_streams(outputs)]
    return nb


def slim_file(path: str | Path, out: str | Path | None = None) -> tuple[int, int]:
    """Slim the notebook at ``path`` (into ``out``, default in place); ``(bytes before, after)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"slim: no notebook at {path}")
    before = path.stat().st_size
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:  # nbformat raises several types for a corrupt file
        raise ValueError(f"slim: {path} is not a readable notebook: {e}") from e
    target = Path(out) if out is not None else path
    nbformat.write(slim_notebook(nb), target)
    return before, target.stat().st_size


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m icdlib.pipeline.slim", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="executed notebooks, rewritten in place")
    ap.add_argument("--max-mb", type=float, default=MAX_MB,
                    help=f"warn when a slimmed notebook is still heavier (default {MAX_MB:g} MB)")
    args = ap.parse_args(argv)
    for p in args.paths:
        try:
            before, after = slim_file(p)
        except (ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"{p}: {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB")
        if after > args.max_mb * 1e6:
            print(f"warning: {p} still weighs {after / 1e6:.2f} MB (> {args.max_mb:g} MB): "
                  "large figures? plot fewer points or save them under reports/ instead", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
