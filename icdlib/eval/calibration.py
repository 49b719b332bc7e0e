"""Score calibration: the score at which a model's predictions reach a target precision.

An evaluation with ground truth gives the pooled PR curve (:class:`icdlib.eval.metrics.PrCurve`).
Its operating point at precision >= 0.9 (the one RP90 reports) turns into a threshold: on
that split, keeping the pairs scored at or above it keeps 90 % of them correct. The
threshold is stored beside the checkpoint whose scores it applies to, as
``<checkpoint>.calibration.json``, so ``python -m icdlib.search --threshold auto`` can use
it on new images. It is a property of one score kind on one split: a descriptor's plain
cosine differs from its score-normalised cosine, and a matcher's probability from its
Local-Crop-Ensembled one, so the file says which it is and what it was measured on.
The checkpoint file itself is left untouched; the JSON records the checkpoint's SHA-256,
and reading refuses a calibration whose checkpoint has changed since.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from icdlib.digest import file_sha256
from icdlib.eval.metrics import PrCurve

CALIBRATION_SUFFIX = ".calibration.json"
SCORE_KINDS = ("descriptor cosine", "descriptor cosine, score-normalised", "matcher probability",
               "matcher probability, LCE")


@dataclass(frozen=True)
class Calibration:
    """The operating point of one checkpoint's scores on one evaluation split.

    Attributes:
        threshold: the score at the last rank whose pooled precision is >= ``precision``
            (pairs scored >= threshold are called copies), or None when no rank reaches it.
        precision: the target precision, a fraction (0.9: the RP90 point).
        recall: the pooled recall at that rank (RP90 when ``precision`` is 0.9).
        score: which score the threshold applies to, one of :data:`SCORE_KINDS`.
        checkpoint: the checkpoint path as given; checkpoint_sha256: its content hash.
        data, split: the benchmark root and query split it was measured on.
        n_predictions, n_positives: size of the pooled list and of the ground truth.
        config: the resolved evaluation config (``eval_config.json``'s object).
    """

    threshold: float | None
    precision: float
    recall: float
    score: str
    checkpoint: str
    checkpoint_sha256: str
    data: str
    split: str
    n_predictions: int
    n_positives: int
    config: dict

    def describe(self) -> str:
        """One line: threshold, what it means, and where it was measured."""
        thr = "none reached" if self.threshold is None else f"{self.threshold:.4f}"
        return (f"score {thr} = precision {self.precision:.0%} (recall {self.recall:.1%}) for "
                f"{self.score} on split {self.split!r} of {self.data}, {self.n_predictions} predictions")


def threshold_at_precision(curve: PrCurve, precision: float = 0.9) -> tuple[float | None, float]:
    """``(threshold, recall)`` of the highest-recall rank with pooled precision >= ``precision``.

    The curve is sorted by score descending with pessimistic ties, so every pair scored
    above the returned threshold is within that rank. ``(None, 0.0)`` when no rank reaches
    the precision. At 0.9 this is the operating point of RP90.
    """
    if not 0.0 < precision <= 1.0:
        raise ValueError(f"threshold_at_precision: precision must be in (0, 1], got {precision}")
    ok = curve.precision >= precision
    if not ok.any():
        return None, 0.0
    best = int(np.argmax(np.where(ok, curve.recall, -1.0)))
    recall = float(curve.recall[best])
    if recall == 0.0:
        return None, 0.0
    return float(curve.thresholds[best]), recall


def calibration_path(checkpoint: str | Path) -> Path:
    """``<checkpoint>.calibration.json``, beside the checkpoint."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + CALIBRATION_SUFFIX)


def calibrate(curve: PrCurve, checkpoint: str | Path, score: str, info: dict,
              n_positives: int, precision: float = 0.9) -> Calibration:
    """The :class:`Calibration` of an evaluation's PR curve for ``checkpoint``'s scores.

    ``info`` is the evaluation's resolved config (``data`` and ``split`` keys are read).
    """
    if score not in SCORE_KINDS:
        raise ValueError(f"calibrate: score must be one of {SCORE_KINDS}, got {score!r}")
    threshold, recall = threshold_at_precision(curve, precision)
    return Calibration(threshold=threshold, precision=float(precision), recall=recall, score=score,
                       checkpoint=str(checkpoint), checkpoint_sha256=file_sha256(checkpoint),
                       data=str(info.get("data")), split=str(info.get("split")),
                       n_predictions=int(len(curve.precision)), n_positives=int(n_positives),
                       config=dict(info))


def write_calibration(cal: Calibration, path: str | Path | None = None) -> Path:
    """Write ``cal`` as JSON (default: :func:`calibration_path` of its checkpoint)."""
    path = Path(path) if path is not None else calibration_path(cal.checkpoint)
    path.write_text(json.dumps(asdict(cal), indent=2) + "\n")
    return path


def read_calibration(checkpoint: str | Path) -> Calibration:
    """The calibration stored beside ``checkpoint``.

    Raises:
        FileNotFoundError: no ``<checkpoint>.calibration.json`` (with the command that makes one).
        ValueError: the file is not a calibration, or the checkpoint changed since.
    """
    path = calibration_path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"no calibration for {checkpoint}: {path} does not exist; make it with "
            f"python -m icdlib.evaluate --data ROOT --descriptor CKPT [--matcher CKPT] --calibrate --out DIR")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a JSON calibration file ({e})") from e
    names = {f.name for f in fields(Calibration)}
    if not isinstance(raw, dict) or set(raw) != names:
        got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"{path}: calibration keys must be {sorted(names)}, got {got}")
    thr = raw["threshold"]
    if thr is not None and not (isinstance(thr, (int, float)) and np.isfinite(thr)):
        raise ValueError(f"{path}: threshold must be a finite number or null, got {thr!r}")
    if raw["score"] not in SCORE_KINDS:
        raise ValueError(f"{path}: score must be one of {SCORE_KINDS}, got {raw['score']!r}")
    cal = Calibration(**raw)
    if Path(checkpoint).is_file() and file_sha256(checkpoint) != cal.checkpoint_sha256:
        raise ValueError(f"{path} was measured on another version of {checkpoint} (SHA-256 differs); "
                         f"re-run python -m icdlib.evaluate ... --calibrate")
    return cal
