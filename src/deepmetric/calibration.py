r"""Calibrated matching: pick a score threshold on a run's validation split, then say
"match" / "no match" / "unknown" for new queries against a gallery.

Calibration (``deepmetric calibrate RUN``, :func:`calibrate_run`): the run's model embeds its
VALIDATION split (carved from the training classes, never the test split); every unordered
pair of validation items is a genuine (same label) or impostor pair, scored in the run's
``eval.metric`` (cosine similarity, or Euclidean distance); see
:mod:`deepmetric.evaluation.verification` (a seeded subset above ``max_pairs``). The threshold
is the operating point (a threshold equal to one of the scores) that

* ``far=x``: has the largest TAR (recall of genuine pairs) among those whose FAR (accepted
  impostor pairs / impostor pairs) is <= x;
* ``precision=p``: has the largest TAR among those whose pair precision, TP / (TP + FP) over
  the validation pairs, is >= p. Precision depends on the share of genuine pairs in the
  population (here: among all validation pairs); a gallery with another class balance has
  another precision at the same threshold.

The result (threshold, rule, rates at it, pair counts) is written to ``RUN/calibration.json``
(:class:`CalibrationFile`, strict schema, written atomically).

Matching (:func:`match`, ``deepmetric search GALLERY QUERIES --match``): a pair is ACCEPTED
when its score is at least as close as the threshold (similarity >= t, or distance <= t).

* ``"unknown"``: the nearest gallery item is not accepted: the query resembles no one enrolled;
* ``"match"``: without a claimed identity, the nearest gallery item is accepted (the query is
  identified as its label); with a claimed identity (1:1 verification), the nearest gallery item
  OF THE CLAIMED LABEL is accepted;
* ``"no match"`` (only with a claimed identity): some gallery item is accepted but none of the
  claimed label (or the claimed label is not in the gallery).

The calibrated FAR is per PAIR. Identification against a gallery of G items of other identities
accepts an unknown query when ANY of them passes, which happens up to about G x FAR of the time:
calibrate with a FAR well below 1 / G for open-set identification.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from deepmetric.errors import ConfigError, DataError
from deepmetric.evaluation.verification import (
    DEFAULT_MAX_PAIRS,
    RocCurve,
    check_rate,
    roc_curve,
)
from deepmetric.run_files import CALIBRATION_FILE, CalibrationFile, load_calibration

__all__ = [
    "CALIBRATION_FILE",
    "DECISIONS",
    "Calibration",
    "CalibrationFile",
    "MatchResult",
    "calibrate_embeddings",
    "calibrate_run",
    "choose_threshold",
    "load_calibration",
    "match",
]

DECISIONS = ("match", "no match", "unknown")


Calibration = CalibrationFile  # the in-memory result is the file's model


def _accept_rule(metric: str) -> Literal["similarity >= threshold", "distance <= threshold"]:
    return "similarity >= threshold" if metric == "cosine" else "distance <= threshold"


def choose_threshold(curve: RocCurve, far: float | None = None, precision: float | None = None) -> int:
    """Index of the ROC point that meets the target (module docstring); one-line
    :class:`DataError` when no threshold accepting a genuine pair meets it."""
    if (far is None) == (precision is None):
        raise ConfigError("give exactly one target: far=X or precision=P (each strictly between 0 and 1)")
    if far is not None:
        far = check_rate(far, "far")
        j = int(np.searchsorted(curve.fpr, far, side="right")) - 1
        if curve.tpr[j] == 0:
            raise DataError(
                f"no threshold accepts a genuine validation pair at FAR <= {far:g} (the closest pairs are "
                f"impostors; {curve.n_impostor_used} impostor pairs give a FAR resolution of "
                f"{1 / curve.n_impostor_used:.2g}); raise --far or validate on more data"
            )
        return j
    assert precision is not None
    precision = check_rate(precision, "precision")
    prec = curve.precision()
    ok = np.flatnonzero((prec >= precision) & (curve.tpr > 0))
    if ok.size == 0:
        best = float(np.nanmax(prec)) if np.isfinite(prec).any() else float("nan")
        raise DataError(
            f"no threshold reaches pair precision {precision:g} on the validation pairs (at most "
            f"{best:.4g}); lower --precision or use --far"
        )
    return int(ok[np.argmax(curve.tpr[ok])])


def calibrate_embeddings(
    embeddings: Any,
    labels: Any,
    *,
    metric: str = "cosine",
    far: float | None = None,
    precision: float | None = None,
    max_pairs: int = DEFAULT_MAX_PAIRS,
    seed: int = 0,
    split: str = "val",
    checkpoint: str = "",
) -> CalibrationFile:
    """The calibration of a labelled embedding set (every unordered pair; see the module docstring).

    One-line errors: a rate outside (0, 1) (:class:`ConfigError`), no genuine or no impostor
    pair, or no threshold meeting the target (:class:`DataError`).
    """
    if far is None and precision is None:
        far = 1e-3
    if far is not None and precision is not None:
        raise ConfigError("give either far or precision, not both")
    rate = check_rate(far if far is not None else precision, "far" if far is not None else "precision")
    curve = roc_curve(embeddings, labels, metric=metric, max_pairs=max_pairs, seed=seed)
    j = choose_threshold(curve, far=far, precision=precision)
    prec = float(curve.precision()[j])
    lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    notes = []
    if far is not None and far < 1.0 / curve.n_impostor_used:
        notes.append(
            f"FAR {far:g} is below the resolution 1/{curve.n_impostor_used} of the impostor pairs used: "
            "the threshold is the strictest that still accepts a genuine pair"
        )
    if curve.sampled:
        notes.append(f"rates estimated on a seeded sample of {curve.n_genuine_used + curve.n_impostor_used} pairs")
    return CalibrationFile(
        metric=metric,  # type: ignore[arg-type]
        accept=_accept_rule(metric),
        threshold=float(curve.thresholds[j]),
        target="far" if far is not None else "precision",
        target_value=rate,
        far=float(curve.fpr[j]),
        tar=float(curve.tpr[j]),
        frr=float(1.0 - curve.tpr[j]),
        precision=prec,
        recall=float(curve.tpr[j]),
        split=split,
        checkpoint=checkpoint,
        n_items=int(lab.shape[0]),
        n_classes=int(np.unique(lab).size),
        n_genuine_pairs=curve.n_genuine,
        n_impostor_pairs=curve.n_impostor,
        n_pairs_used=curve.n_genuine_used + curve.n_impostor_used,
        pairs_sampled=curve.sampled,
        max_pairs=int(max_pairs),
        seed=int(seed),
        notes=notes,
    )


def calibrate_run(
    source: str | Path,
    *,
    far: float | None = None,
    precision: float | None = None,
    device: str = "auto",
    max_pairs: int = DEFAULT_MAX_PAIRS,
    seed: int = 0,
    progress: bool = False,
    write: bool = True,
) -> tuple[CalibrationFile, Path]:
    """Calibrate a run (folder or checkpoint inside one) on its validation split and write
    ``RUN/calibration.json``; returns ``(calibration, path)``.

    One-line errors: a run without a validation split (``data.val_fraction`` 0), a rate outside
    (0, 1), no genuine pair in the validation split, no threshold meeting the target.
    """
    if far is None and precision is None:
        far = 1e-3
    if far is not None and precision is not None:
        raise ConfigError("give either --far or --precision, not both")
    check_rate(far if far is not None else precision, "far" if far is not None else "precision")
    from deepmetric.inference import resolve_model_source
    from deepmetric.training import embed, load_trained
    from deepmetric.training.builders import build_datasets
    from deepmetric.training.seed import resolve_device

    run_dir, which = resolve_model_source(source)
    from deepmetric.config import load_config

    config = load_config(run_dir / "config.yaml")
    if config.data.val_fraction <= 0:
        raise DataError(
            f"run '{run_dir}' has no validation split (data.val_fraction is 0), and calibrating on the test "
            "split would bias its results; retrain with data.val_fraction=0.2"
        )
    dev = resolve_device(device)
    model, _, config = load_trained(run_dir, which=which, device=dev, with_loss=False)
    splits = build_datasets(config, model)
    if splits.val is None or len(splits.val) == 0:
        raise DataError(f"run '{run_dir}' has an empty validation split; retrain with data.val_fraction=0.2")
    embeddings, labels = embed(model, splits.val, batch_size=config.eval.batch_size, device=dev, progress=progress)
    calibration = calibrate_embeddings(
        embeddings, labels, metric=config.eval.metric, far=far, precision=precision,
        max_pairs=max_pairs, seed=seed, split="val", checkpoint=which,
    )
    path = run_dir / CALIBRATION_FILE
    if write:
        from deepmetric.run_files import write_run_file

        write_run_file(calibration, path)
    return calibration, path


# ------------------------------------------------------------------------------------ matching


@dataclass(frozen=True)
class MatchResult:
    """The decision for one query.

    ``label``/``score``/``index``: the nearest gallery item overall; ``claimed_score``: the score
    of the nearest item of the claimed label (None without a claim, or when the label is absent).
    """

    decision: str
    label: Any
    score: float
    index: int
    claimed: Any = None
    claimed_score: float | None = None


def _accepts(score: np.ndarray, calibration: CalibrationFile) -> np.ndarray:
    return score >= calibration.threshold if calibration.metric == "cosine" else score <= calibration.threshold


def match(
    queries: Any,
    gallery: Any,
    gallery_labels: Sequence[Any] | np.ndarray,
    calibration: CalibrationFile | str | Path,
    *,
    claimed_labels: Sequence[Any] | np.ndarray | None = None,
) -> list[MatchResult]:
    """"match" / "no match" / "unknown" for every query row (module docstring).

    Args:
        queries: Q x D embeddings (numpy or torch), embedded by the calibrated run's model.
        gallery: G x D embeddings; ``gallery_labels`` their G labels (any hashable values).
        calibration: a :class:`CalibrationFile`, or a run folder / calibration.json to load.
        claimed_labels: optional claimed identity per query (1:1 verification).
    """
    from deepmetric.evaluation.knn import knn_search

    cal = calibration if isinstance(calibration, CalibrationFile) else load_calibration(calibration)
    q = np.asarray(queries.detach().cpu() if isinstance(queries, torch.Tensor) else queries, dtype=np.float32)
    g = np.asarray(gallery.detach().cpu() if isinstance(gallery, torch.Tensor) else gallery, dtype=np.float32)
    labels = np.asarray(gallery_labels)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise DataError(
            f"queries ({q.shape}) and gallery ({g.shape}) must be 2-D with the same width; embed both "
            "with the calibrated run's model"
        )
    if g.shape[0] == 0 or labels.shape[0] != g.shape[0]:
        raise DataError(f"the gallery needs one label per embedding and at least one item, got {g.shape[0]} "
                        f"embeddings and {labels.shape[0]} labels")
    if q.shape[0] == 0:
        return []
    idx, scores = knn_search(q, g, 1, metric=cal.metric)
    nearest, best = idx[:, 0], scores[:, 0]
    known = _accepts(best, cal)
    claims = None if claimed_labels is None else np.asarray(claimed_labels)
    claimed_scores = np.full(q.shape[0], np.nan)
    if claims is not None:
        if claims.shape[0] != q.shape[0]:
            raise DataError(f"claimed_labels has {claims.shape[0]} entries for {q.shape[0]} queries; give one per query")
        for value in np.unique(claims):
            rows = np.flatnonzero(claims == value)
            members = np.flatnonzero(labels == value)
            if members.size == 0:
                continue
            _, s = knn_search(q[rows], g[members], 1, metric=cal.metric)
            claimed_scores[rows] = s[:, 0]
    out = []
    for i in range(q.shape[0]):
        has_claim = claims is not None
        claimed_ok = has_claim and np.isfinite(claimed_scores[i]) and bool(_accepts(claimed_scores[i], cal))
        if not known[i]:
            decision = "unknown"
        elif not has_claim:
            decision = "match"
        else:
            decision = "match" if claimed_ok else "no match"
        out.append(MatchResult(
            decision=decision,
            label=labels[nearest[i]].item() if hasattr(labels[nearest[i]], "item") else labels[nearest[i]],
            score=float(best[i]),
            index=int(nearest[i]),
            claimed=None if claims is None else (claims[i].item() if hasattr(claims[i], "item") else claims[i]),
            claimed_score=None if not np.isfinite(claimed_scores[i]) else float(claimed_scores[i]),
        ))
    return out
