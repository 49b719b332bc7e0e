"""A benchmark's copy query beside its reference, with the query's exact trace.

Both benchmark builders (:mod:`icdlib.data.build`, the embedded one, and
:mod:`icdlib.data.photo_bench`, from photos) record every query's edit chain in
``manifest.json``, applied to a source of the reference's size. Replaying that chain on the
stored reference (:func:`icdlib.edits.apply`) gives the query's PixTrace trace exactly: the
trace depends on the chain and the source size only, not on the pixels (nor on the foreign
content pasted by composite edits). :func:`load_copy` returns the stored query (the pixels
the models scored), its stored reference and that trace; :func:`copy_figures` draws them
with :mod:`icdlib.viz.figures`; :class:`CopySource` is the explorer's ``benchmark`` source.

A DISC21 download has no manifest and no traces: these functions need a built benchmark.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from PIL import Image

from icdlib import edits
from icdlib.data import SPLIT_DIRS, load_image
from icdlib.params import build, project_root
from icdlib.pixtrace import Trace, transfer
from icdlib.viz import figures

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class CopyQuery:
    """One copy query of a built benchmark.

    Attributes:
        query_id, reference_id, split: as in the ground truth.
        query, reference: the stored images (RGB PIL, decoded JPEGs).
        trace: query frame -> reference frame (``trace.size == query.size``,
            ``trace.source_size == reference.size``).
        specs: the recorded edit chain; ``traced_fraction``: share of query pixels that trace.
        source: what the reference was made from (``photo:<path>`` or a procedural kind).
    """

    query_id: str
    reference_id: str
    split: str
    query: Image.Image
    reference: Image.Image
    trace: Trace
    specs: list[dict]
    traced_fraction: float
    source: str


def read_manifest(root: str | Path) -> dict[str, Any]:
    """A built benchmark's ``manifest.json``; ``FileNotFoundError`` naming it when absent."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: query traces need a benchmark built by icdlib "
                                "(python -m icdlib.data build), not a DISC21 download")
    return json.loads(path.read_text())


def copy_records(root: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Manifest records of the copy queries (those with a reference), in manifest order;
    only those of ``split`` when given."""
    return [q for q in read_manifest(root)["queries"]
            if q["reference_id"] is not None and (split is None or q["split"] == split)]


def typical_copy(root: str | Path, split: str | None = None) -> int:
    """Index (in :func:`copy_records` order) of the copy whose traced fraction is the median one."""
    records = copy_records(root, split)
    if not records:
        raise ValueError(f"{root}: no copy query" + (f" in split {split}" if split else ""))
    order = sorted(range(len(records)), key=lambda i: (records[i]["traced_fraction"], i))
    return order[(len(order) - 1) // 2]


def load_copy(root: str | Path, which: int | str = 0, split: str | None = None) -> CopyQuery:
    """Copy query ``which`` of a built benchmark: an index into :func:`copy_records` (of
    ``split``, when given) or a query id.

    Raises ``ValueError`` naming the index or id when there is no such copy query.
    """
    root = Path(root)
    manifest = read_manifest(root)
    records = copy_records(root, split)
    if isinstance(which, str):
        found = [r for r in records if r["query_id"] == which]
        if not found:
            raise ValueError(f"{root}: {which!r} is no copy query" + (f" of split {split}" if split else ""))
        rec = found[0]
    else:
        if not 0 <= int(which) < len(records):
            raise ValueError(f"{root}: copy query #{which} outside 0..{len(records) - 1}")
        rec = records[int(which)]
    reference = load_image(root / SPLIT_DIRS["reference"] / f"{rec['reference_id']}.jpg")
    query = load_image(root / SPLIT_DIRS[rec["split"]] / f"{rec['query_id']}.jpg")
    cfg = manifest.get("edit_config")
    config = build(edits.EditConfig, cfg, "manifest.json:edit_config") if isinstance(cfg, dict) else None
    _, trace = edits.apply(reference, rec["specs"], config=config)
    if trace.size != query.size:
        raise ValueError(f"{root}: replaying {rec['query_id']}'s chain gives {trace.size}, the stored query is "
                         f"{query.size}: the manifest does not match the images")
    return CopyQuery(rec["query_id"], rec["reference_id"], rec["split"], query, reference, trace,
                     rec["specs"], float(rec["traced_fraction"]), str(rec.get("source_kind", "")))


def copy_figures(copy: CopyQuery, grid: int = 8) -> dict[str, go.Figure]:
    """``{"pair": reference | query, "trace": the trace as a colour map, "correspondence":
    query points joined to the reference points they show}``."""
    ops = ", ".join(s["op"] for s in copy.specs)
    return {
        "pair": figures.images_figure([copy.reference, copy.query],
                                      [f"reference {copy.reference_id}", f"query {copy.query_id} ({ops})"]),
        "trace": figures.trace_figure(copy.trace, title=f"query {copy.query_id}"),
        "correspondence": figures.correspondence_figure(copy.query, copy.reference,
                                                        transfer(copy.trace, Trace(copy.reference.size)), grid),
    }


class CopySource:
    """The explorer's ``benchmark`` source: the copy query of a chosen benchmark folder and
    index, read once per choice, and its recorded chain handed to the chain editor once.

    Attributes:
        copy: the copy last read (None before the first); key: its ``(root, index)``.
    """

    def __init__(self):
        self.copy: CopyQuery | None = None
        self.key: tuple[str, int] | None = None
        self._shown: CopyQuery | None = None

    def get(self, root: str, index: int, name: str = "benchmark") -> CopyQuery:
        """Copy query ``index`` of the benchmark at ``root`` (relative: to the project root,
        :func:`icdlib.params.project_root`); ``name`` names it in the error for an empty root."""
        if not root:
            raise ValueError(f"explorer: no folder for benchmark {name!r} (VizConfig.embedded_root / real_photos_root)")
        if self.key != (root, int(index)):
            folder = Path(root) if Path(root).is_absolute() else project_root() / root
            self.copy, self.key = load_copy(folder, int(index)), (root, int(index))
        return self.copy

    def sync(self, editor: Any | None) -> CopyQuery | None:
        """With ``editor`` (a :class:`icdlib.viz.chain_widgets.ChainEditor`; None: another
        source is shown): the current copy, first setting the editor to its recorded chain
        when this copy was not the one shown last. Without: None."""
        copy = self.copy if editor is not None else None
        if copy is not None and copy is not self._shown:
            editor.set_specs(copy.specs)
        self._shown = copy
        return copy

    @staticmethod
    def recorded(copy: CopyQuery, specs: list[dict]) -> bool:
        """Whether ``specs`` is still ``copy``'s recorded chain (compared as JSON: tuples are lists)."""
        return json.dumps(specs, sort_keys=True) == json.dumps(copy.specs, sort_keys=True)
