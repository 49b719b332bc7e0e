"""The one reader of ISC21 CSV files (ground truth and predictions).

``data check``, ``python -m icdlib.metrics`` and ``evaluate`` all read through here, so
a file means the same everywhere. The rules:

- UTF-8, with or without a byte-order mark; LF or CRLF line ends; blank lines skipped.
- A header naming exactly the expected columns, in order:
  ``query_id,reference_id`` (ground truth), ``query_id,reference_id,score`` (predictions).
- Fields are separated by a bare comma. A field with spaces or tabs around it
  (``Q1, R2`` or ``Q1,R2 ``) is refused, naming the file and line: such a file was
  written in another layout, and read loosely its ids would match nothing and score 0.
- Ground truth: one row per (query, reference) copy pair, so a query that copies several
  references (a collage) has a row for each, and ISC21 counts every pair; a distractor
  query has one row with an empty ``reference_id``. A repeated row, and a query listed
  both as a distractor and with a reference, are refused. A reference written as
  ``None``, ``null`` or ``nan`` is refused (write the empty field).
- Predictions: non-empty ids and a finite score.

Every error is a ``ValueError`` (``FileNotFoundError`` for a missing file) whose message
starts with ``path:line``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

GT_COLUMNS = ("query_id", "reference_id")
PREDICTION_COLUMNS = ("query_id", "reference_id", "score")
NULL_WORDS = {"none", "null", "nan", "na", "n/a"}


def _rows(path: Path, columns: tuple[str, ...], what: str):
    """Yield ``(line, fields)`` of the data rows, after checking the header."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file not found")
    rows = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, strict=True)
            for row in reader:
                rows.append((reader.line_num, row))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: {what} CSV is not UTF-8 text ({e})") from None
    except csv.Error as e:
        raise ValueError(f"{path}:{len(rows) + 1}: {what} CSV cannot be parsed ({e})") from None
    lines = [(n, r) for n, r in rows if r and any(f != "" for f in r)]
    if not lines:
        raise ValueError(f"{path}: {what} CSV is empty; expected the header {','.join(columns)}")
    (n, header), data = lines[0], lines[1:]
    if tuple(header) != columns:
        hint = ""
        if len(header) == 1 and any(c in header[0] for c in ";\t "):
            hint = " (fields must be separated by a bare comma)"
        elif tuple(h.strip() for h in header) == columns:
            hint = " (no spaces around fields: separate them by a bare comma)"
        missing = [c for c in columns if c not in header]
        lacks = f"; it lacks column(s) {', '.join(missing)}" if missing else ""
        raise ValueError(
            f"{path}: bad header {','.join(header)!r} on line {n}{lacks}; a {what} CSV starts "
            f"with {','.join(columns)!r}{hint}"
        )
    for n, row in data:
        if len(row) != len(columns):
            raise ValueError(
                f"{path}:{n}: expected {len(columns)} fields ({','.join(columns)}), got {len(row)}: {row}"
            )
        for name, field in zip(columns, row):
            if field != field.strip():
                raise ValueError(
                    f"{path}:{n}: {name} {field!r} has spaces around it; ISC21 CSV fields are "
                    "separated by a bare comma (an empty reference_id marks a distractor)"
                )
        if row[0] == "":
            raise ValueError(f"{path}:{n}: empty query_id")
        yield n, row


def read_ground_truth(path: str | Path) -> list[tuple[str, str | None]]:
    """Rows ``(query_id, reference_id or None)`` of a ground-truth CSV, in file order.

    ``None`` marks a distractor (the empty field). A query may have several rows, one per
    reference it copies. Raises ``ValueError`` naming the file and line on a bad header, a
    field count, spaces around a field, an empty query id, a null word as reference, a
    repeated row, or a query that is both a distractor and a copy.
    """
    path = Path(path)
    out = []
    seen: dict[tuple[str, str], int] = {}  # (query, reference or "") -> line
    first: dict[str, tuple[int, str]] = {}  # query -> (line, reference or "") of its first row
    for n, (q, r) in _rows(path, GT_COLUMNS, "ground-truth"):
        if r.lower() in NULL_WORDS:
            raise ValueError(
                f"{path}:{n}: reference_id {r!r} for query {q}: a distractor's reference is the "
                "empty field (write 'query_id,')"
            )
        if (q, r) in seen:
            row = f"pair (query_id {q}, reference_id {r})" if r else f"distractor row {q} (empty reference_id)"
            raise ValueError(f"{path}:{n}: {row} appears twice (first on line {seen[q, r]}); list each once")
        line, ref = first.setdefault(q, (n, r))
        if (ref == "") != (r == ""):
            said = (f"has reference {r} but line {line} lists it as a distractor" if r else
                    f"is listed as a distractor but line {line} gives it reference {ref}")
            raise ValueError(f"{path}:{n}: query {q} {said}; a distractor (empty reference_id) has no copy row")
        seen[q, r] = n
        out.append((q, r or None))
    return out


def read_predictions(path: str | Path) -> list[tuple[str, str, float]]:
    """Rows ``(query_id, reference_id, score)`` of a predictions CSV, in file order.

    Raises ``ValueError`` naming the file and line on a bad header, a field count, spaces
    around a field, an empty id or a score that is not a finite number.
    """
    path = Path(path)
    out = []
    for n, (q, r, s) in _rows(path, PREDICTION_COLUMNS, "predictions"):
        if r == "":
            raise ValueError(f"{path}:{n}: empty reference_id for query {q}")
        try:
            score = float(s)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise ValueError(f"{path}:{n}: score {s!r} is not a finite number")
        out.append((q, r, score))
    return out
