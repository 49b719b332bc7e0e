"""icdlib.pipeline.slim: executed notebooks lose widget state and progress-bar bulk, keep figures."""

from __future__ import annotations

import json

import nbformat
import plotly.graph_objects as go
import pytest

from icdlib.pipeline import slim

VIEW = "application/vnd.jupyter.widget-view+json"


def _bar_state(desc: str, value: int, total: int) -> dict:
    """Saved ipywidgets state of one tqdm notebook bar: HBox(HTML, FloatProgress, HTML)."""
    ids = {k: f"{desc}-{k}" for k in ("box", "left", "bar", "right")}
    return {
        ids["box"]: {"model_name": "HBoxModel",
                     "state": {"children": [f"IPY_MODEL_{ids[k]}" for k in ("left", "bar", "right")]}},
        ids["left"]: {"model_name": "HTMLModel", "state": {"value": f"{desc}:\u2007100%"}},
        ids["bar"]: {"model_name": "FloatProgressModel", "state": {"value": value, "max": total}},
        ids["right"]: {"model_name": "HTMLModel", "state": {"value": f"\u2007{value}/{total}\u2007[00:01&lt;00:00]"}},
    }


def executed_notebook(n_points: int = 2000, state_mb: float = 3.0) -> nbformat.NotebookNode:
    """A notebook as papermill leaves it: a plotly figure, a tqdm widget bar, an interactive
    widget with megabytes of saved state, and a text bar redrawn with carriage returns."""
    fig = go.Figure(go.Scatter(x=list(range(n_points)), y=[i % 7 for i in range(n_points)]))
    figure = nbformat.v4.new_output("display_data", data={
        "application/vnd.plotly.v1+json": json.loads(fig.to_json()), "text/html": "<div>figure</div>"})
    bar = nbformat.v4.new_output("display_data", data={VIEW: {"model_id": "train-box", "version_major": 2},
                                                       "text/plain": "train:   0%|          | 0/40"})
    explorer = nbformat.v4.new_output("display_data", data={VIEW: {"model_id": "explorer", "version_major": 2},
                                                            "text/plain": "VBox(children=(HBox(...),))"})
    redraws = [nbformat.v4.new_output("stream", name="stderr", text=f"\rembed: {i}/100") for i in range(0, 101, 5)]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# stage"),
                nbformat.v4.new_code_cell("figure", outputs=[figure]),
                nbformat.v4.new_code_cell(
                    "train", outputs=[bar, *redraws, nbformat.v4.new_output("stream", name="stderr", text="\n")]),
                nbformat.v4.new_code_cell("explorer", outputs=[explorer])]
    state = _bar_state("train", 40, 40)
    state["explorer"] = {"model_name": "VBoxModel", "state": {"payload": "x" * int(state_mb * 1e6)}}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": state, "version_major": 2}}
    return nb


def test_slim_drops_widget_state_keeps_figures_and_progress_lines(tmp_path):
    path = tmp_path / "stage.ipynb"
    nbformat.write(executed_notebook(), path)
    before, after = slim.slim_file(path)
    assert before > 3e6 and after < 2e6
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert "widgets" not in nb.metadata
    figure = nb.cells[1].outputs[0]
    assert len(figure.data["application/vnd.plotly.v1+json"]["data"][0]["x"]) == 2000  # the figure is whole
    texts = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream"]
    assert not any(VIEW in o.get("data", {}) for c in nb.cells[1:] for o in c.outputs)
    # the bar's last saved line (counts from its texts, not twice), then the redraws as one final line
    assert nb.cells[2].outputs[0].text == "train: 100% 40/40 [00:01<00:00]\nembed: 100/100\n"
    assert len(nb.cells[2].outputs) == 1
    assert "interactive VBox widget" in nb.cells[3].outputs[0].text
    assert len(texts) == 2


def test_carriage_returns_keep_what_a_terminal_shows():
    assert slim.resolve_carriage_returns("\ra 1/3\ra 2/3\ra 3/3\nnext\r\n") == "a 3/3\nnext\n"
    assert slim.resolve_carriage_returns("plain\ntext") == "plain\ntext"


def test_a_bar_without_count_text_shows_value_over_max():
    state = _bar_state("x", 3, 8)
    state["x-right"]["state"]["value"] = ""
    assert slim.widget_text(state, "x-box") == "x: 100% 3/8"
    assert slim.widget_text(state, "missing") is None


def test_cli_slims_in_place_and_rejects_a_bad_file(tmp_path, capsys):
    good, bad = tmp_path / "a.ipynb", tmp_path / "b.ipynb"
    nbformat.write(executed_notebook(state_mb=0.1), good)
    bad.write_text("{not json")
    assert slim.main([str(good)]) == 0
    assert "a.ipynb:" in capsys.readouterr().out
    assert slim.main([str(bad)]) == 2
    assert "b.ipynb is not a readable notebook" in capsys.readouterr().err
    assert slim.main([str(tmp_path / "missing.ipynb")]) == 2


def test_a_notebook_still_too_heavy_is_warned_about(tmp_path, capsys):
    path = tmp_path / "big.ipynb"
    nbformat.write(executed_notebook(n_points=20000, state_mb=0), path)
    assert slim.main([str(path), "--max-mb", "0.1"]) == 0
    assert "still weighs" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["01_data", "02_pixtrace", "05_evaluate", "06_ablations"])
def test_every_stage_cmd_slims_the_notebook_it_writes(name):
    import yaml
    from pathlib import Path

    dvc = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["stages"]
    cmds = [str(s.get("do", s)["cmd"]) for s in dvc.values()]
    cmd = next(c for c in cmds if f"notebooks/{name}.ipynb " in c)
    out = f"${{paths.reports}}/notebooks/{name}.ipynb"
    assert "--log-output" in cmd and cmd.rstrip().endswith(f"python -m icdlib.pipeline.slim {out}")


def test_paths_under_the_project_are_cut_to_project_relative(tmp_path):
    root = tmp_path / "proj"
    nb = nbformat.v4.new_notebook()
    printed = nbformat.v4.new_output("execute_result", execution_count=1, data={
        "text/plain": f"{{'trunk': PosixPath('{root}/models/trunk.pt')}}"})
    log = nbformat.v4.new_output("stream", name="stderr", text=f"wrote {root}/runs/pairs\nroot {root}\n")
    other = nbformat.v4.new_output("stream", name="stdout", text=f"{root}x/elsewhere /data/disc21\n")
    nb.cells = [nbformat.v4.new_code_cell("paths", outputs=[printed, log]),
                nbformat.v4.new_code_cell("o", outputs=[other])]
    out = slim.slim_notebook(nb, root=root)
    assert out.cells[0].outputs[0]["data"]["text/plain"] == "{'trunk': PosixPath('models/trunk.pt')}"
    assert out.cells[0].outputs[1]["text"] == "wrote runs/pairs\nroot .\n"
    assert out.cells[1].outputs[0]["text"] == f"{root}x/elsewhere /data/disc21\n"  # not under the project: kept
    assert str(root) not in json.dumps(out.cells[0].outputs)
