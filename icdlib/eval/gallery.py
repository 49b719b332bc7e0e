"""``index.html`` of a search: each query beside its top matches, as thumbnails with scores.

The page is self-contained: every thumbnail is an inline ``data:image/jpeg;base64`` URI
and the style sheet is inline, so it opens from disk in any browser without a server and
can be mailed or archived as one file. Ids and paths are HTML-escaped (file names are
user input). Queries are listed by their best score, highest first; at most
``max_queries`` are shown so that a million-query run still gives a page a browser opens.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from icdlib.data import load_image

THUMB_SIDE = 160  # px, longer side of a thumbnail: readable, ~5 kB as JPEG

STYLE = """
body { font-family: sans-serif; margin: 1em; background: #fafafa; color: #222; }
h1 { font-size: 1.3em; } p.meta { color: #555; font-size: 0.9em; }
div.query { display: flex; gap: 10px; align-items: flex-start; padding: 8px 0; border-bottom: 1px solid #ddd; }
figure { margin: 0; width: 170px; text-align: center; font-size: 0.75em; word-break: break-all; }
figure img { max-width: 160px; max-height: 160px; border: 3px solid transparent; display: block; margin: auto; }
figure.q img { border-color: #333; }
figure.copy img { border-color: #d62728; }
figure .score { font-weight: bold; font-size: 1.1em; }
.missing { width: 160px; height: 100px; background: #eee; display: flex; align-items: center; justify-content: center; }
"""


def thumbnail_uri(path: str | Path, side: int = THUMB_SIDE) -> str:
    """A JPEG ``data:`` URI of ``path`` shrunk to at most ``side`` px (aspect kept).

    Raises ``FileNotFoundError`` or ``ValueError`` naming the file (:func:`icdlib.data.load_image`).
    """
    img = load_image(path)
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(css: str, path: Path | None, caption: str, cache: dict) -> str:
    if path is not None and path not in cache:
        try:
            cache[path] = thumbnail_uri(path)
        except (FileNotFoundError, ValueError):
            cache[path] = None
    uri = cache.get(path) if path is not None else None
    img = (f'<img src="{uri}" alt="{html.escape(str(path.name))}">' if uri
           else '<div class="missing">image not readable</div>')
    return f'<figure class="{css}">{img}<figcaption>{caption}</figcaption></figure>'


def write_gallery(path: str | Path, matches: pd.DataFrame, query_paths: dict[str, Path],
                  reference_paths: dict[str, Path] | None, threshold: float | None = None,
                  title: str = "icdlib search", note: str = "", max_queries: int = 200) -> Path:
    """Write the search's ``index.html``.

    Args:
        matches: ``query_id, reference_id, score, rank`` (rank 1 = best of its query).
        query_paths, reference_paths: id -> image file (a missing or unreadable file shows
            as a grey box; ``reference_paths`` None: no reference thumbnails).
        threshold: matches scored >= it get a red frame ("copy"); None: no frames.
        note: one line under the title (e.g. where the threshold comes from).
        max_queries: queries shown, best first (0: all).
    Returns:
        ``path``.
    """
    best = matches.groupby("query_id", sort=False)["score"].max().sort_values(ascending=False, kind="stable")
    order = list(best.index)
    order += [q for q in query_paths if q not in best.index]  # queries with no match at all
    shown = order[:max_queries] if max_queries else order
    sub = matches[matches["query_id"].isin(set(shown))]  # group only what is shown: 1M queries stay cheap
    by_query = {q: g.sort_values("rank") for q, g in sub.groupby("query_id", sort=False)}
    cache: dict = {}
    rows = []
    for q in tqdm(shown, desc="index.html", unit="query"):
        cells = [_figure("q", query_paths.get(q), f"query<br>{html.escape(q)}", cache)]
        for m in by_query.get(q, pd.DataFrame()).itertuples():
            copy = threshold is not None and m.score >= threshold
            ref = reference_paths.get(m.reference_id) if reference_paths is not None else None
            caption = (f'<span class="score">{m.score:.3f}</span> #{m.rank}<br>{html.escape(m.reference_id)}')
            cells.append(_figure("copy" if copy else "r", ref, caption, cache))
        rows.append(f'<div class="query" data-query="{html.escape(q)}">' + "".join(cells) + "</div>")
    n_copies = 0 if threshold is None else int((best >= threshold).sum())
    meta = [f"{len(order)} queries, {len(matches)} matches; showing {len(shown)} queries, best score first."]
    if threshold is not None:
        meta.append(f"Red frame: score &ge; {threshold:.4f} ({n_copies} queries have one).")
    if note:
        meta.append(html.escape(note))
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            + "".join(f'<p class="meta">{m}</p>' for m in meta) + "\n" + "\n".join(rows) + "\n</body></html>\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
