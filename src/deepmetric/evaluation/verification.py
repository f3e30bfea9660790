r"""Verification (1:1 matching) metrics of embeddings: ROC, EER, TAR@FAR and FNMR@FMR.

Every pair (query, gallery item) is a *genuine* pair when both share a label and an *impostor*
pair otherwise. A threshold :math:`t` accepts a pair when its score is at least as close as
:math:`t` (cosine similarity :math:`s \ge t`, or Euclidean distance :math:`d \le t`):

* TAR (true accept rate, = TPR = 1 - FNMR) = accepted genuine pairs / genuine pairs;
* FAR (false accept rate, = FPR = FMR) = accepted impostor pairs / impostor pairs;
* EER: the rate where FAR = FRR (= 1 - TAR), linearly interpolated between the two ROC points
  around the crossing (the usual ``brentq(lambda x: 1 - x - interp(x, fpr, tpr))``);
* TAR@FAR=x: the largest TAR of an operating point (a threshold equal to one of the scores) whose
  FAR is <= x, i.e. an achievable operating point, never interpolated; FNMR@FMR=x = 1 - TAR@FAR=x
  at that same point (the biometric names of the same quantities);
* AUC: area under the ROC (trapezoids, as :func:`sklearn.metrics.auc`).

Pairs. With a gallery: every (query, gallery) pair. Without one (``query_embeddings=None``):
every unordered pair i < j of the set (a sample is never paired with itself).

Bounded memory. Scores are computed in ``block_size`` x ``block_size`` blocks; only the KEPT
scores are stored (4 or 8 bytes each). When the number of pairs exceeds ``max_pairs`` a subset
is kept, sampled per kind so that both rates stay unbiased: genuine pairs are kept with
probability :math:`p_g = \min(1, k_g / n_g)`, impostor pairs with :math:`p_i = k_i / n_i`, each
pair independently (Bernoulli), where :math:`k_g = \min(n_g, \max(\text{max\_pairs}/2,
\text{max\_pairs} - n_i))` and :math:`k_i = \text{max\_pairs} - k_g`. The draws come from a torch
generator seeded with ``(seed, block number)``: the same data, ``seed``, ``max_pairs`` and
``block_size`` give the same subset. Below the budget every pair is used and the curve is exact:
identical to ``sklearn.metrics.roc_curve(y, score, drop_intermediate=False)`` on the same
scores (for distances, on the negated distances).

Thresholds are reported in the score's own unit (similarity or distance); the first ROC point
(accept nothing) has threshold :math:`+\infty` for similarities and :math:`-\infty` for distances.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from deepmetric.errors import ConfigError, DataError, InputError, unknown_name_message

__all__ = [
    "DEFAULT_MAX_PAIRS",
    "OperatingPoint",
    "PairScores",
    "RocCurve",
    "check_rate",
    "equal_error_rate",
    "fnmr_at_fmr",
    "pair_scores",
    "roc_curve",
    "roc_from_scores",
    "tar_at_far",
    "verification_metrics",
]

METRICS = ("cosine", "euclidean")
#: pairs kept at most (genuine + impostor); beyond, a seeded subset (module docstring)
DEFAULT_MAX_PAIRS = 10_000_000
#: rows/columns of one score block
DEFAULT_BLOCK = 2048


@dataclass(frozen=True)
class PairScores:
    """Scores of the kept genuine and impostor pairs, in the metric's unit."""

    genuine: np.ndarray
    impostor: np.ndarray
    n_genuine: int  #: genuine pairs in the whole population
    n_impostor: int  #: impostor pairs in the whole population
    higher_is_closer: bool  #: True for similarities, False for distances

    @property
    def sampled(self) -> bool:
        return self.genuine.size < self.n_genuine or self.impostor.size < self.n_impostor


@dataclass(frozen=True)
class OperatingPoint:
    """One threshold and its rates (estimated on the kept pairs)."""

    threshold: float
    tar: float
    far: float

    @property
    def fnmr(self) -> float:
        return 1.0 - self.tar


@dataclass(frozen=True)
class RocCurve:
    """ROC points by decreasing threshold strictness: ``fpr`` and ``tpr`` non-decreasing.

    ``thresholds[i]`` accepts a pair when its score is >= it (similarities) or <= it (distances).
    ``n_genuine`` / ``n_impostor`` count the whole population; ``n_genuine_used`` /
    ``n_impostor_used`` the pairs the curve was computed from.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    higher_is_closer: bool
    n_genuine: int
    n_impostor: int
    n_genuine_used: int
    n_impostor_used: int

    @property
    def sampled(self) -> bool:
        return self.n_genuine_used < self.n_genuine or self.n_impostor_used < self.n_impostor

    def precision(self) -> np.ndarray:
        """Precision of every point on the population, TP / (TP + FP) with TP = TAR x genuine
        pairs and FP = FAR x impostor pairs (NaN where nothing is accepted)."""
        tp = self.tpr * self.n_genuine
        fp = self.fpr * self.n_impostor
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1.0), np.nan)

    def accepts(self, scores: np.ndarray, threshold: float) -> np.ndarray:
        """Boolean: which ``scores`` ``threshold`` accepts."""
        return scores >= threshold if self.higher_is_closer else scores <= threshold

    def auc(self) -> float:
        return float(np.trapezoid(self.tpr, self.fpr)) if hasattr(np, "trapezoid") else float(np.trapz(self.tpr, self.fpr))


def check_rate(value: float, name: str = "rate") -> float:
    """``value`` as a float, or a one-line :class:`ConfigError` unless 0 < value < 1."""
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number in (0, 1), got {value!r}") from None
    if not (0.0 < rate < 1.0):
        raise ConfigError(f"{name} must lie strictly between 0 and 1, got {value!r}; e.g. 1e-3")
    return rate


# ------------------------------------------------------------------------------------ pairs


def _checked(x: Any, y: Any, name: str) -> tuple[Tensor, Tensor]:
    from deepmetric.evaluation.metrics import as_tensor as _as_tensor
    from deepmetric.functional import check_embeddings

    emb = _as_tensor(x, name)
    lab = _as_tensor(y, f"{name} labels")
    check_embeddings(emb, lab, name=name)
    dtype = torch.float64 if emb.dtype == torch.float64 else torch.float32
    return emb.detach().to(dtype), lab.to(emb.device).long()


def _population(q_labels: Tensor, g_labels: Tensor | None) -> tuple[int, int]:
    """(genuine, impostor) pair counts: every query-gallery pair, or every i < j pair."""
    if g_labels is None:
        _, counts = torch.unique(q_labels, return_counts=True)
        n = q_labels.numel()
        genuine = int((counts * (counts - 1) // 2).sum())
        return genuine, n * (n - 1) // 2 - genuine
    if g_labels.numel() == 0 or q_labels.numel() == 0:
        return 0, 0
    classes, q_counts = torch.unique(q_labels, return_counts=True)
    g_classes, g_counts = torch.unique(g_labels, return_counts=True)
    pos = torch.searchsorted(g_classes, classes).clamp_max(g_classes.numel() - 1)
    hit = g_classes[pos] == classes
    genuine = int((q_counts * torch.where(hit, g_counts[pos], torch.zeros_like(q_counts))).sum())
    return genuine, q_labels.numel() * g_labels.numel() - genuine


def _score_blocks(
    queries: Tensor, gallery: Tensor | None, metric: str, block: int
) -> Iterator[tuple[int, int, int, Tensor]]:
    """``(block number, row start, column start, scores)`` over every block holding a pair
    (upper-triangle blocks only when ``gallery`` is None)."""
    from deepmetric.functional.distances import euclidean_distance_matrix

    symmetric = gallery is None
    g = queries if symmetric else gallery
    if metric == "cosine":
        qn, gn = F.normalize(queries, dim=1), F.normalize(g, dim=1)
    number = 0
    for r in range(0, queries.shape[0], block):
        for c in range(r if symmetric else 0, g.shape[0], block):
            if metric == "cosine":
                scores = qn[r : r + block] @ gn[c : c + block].T
            else:
                scores = euclidean_distance_matrix(queries[r : r + block], g[c : c + block])
            yield number, r, c, scores
            number += 1


def pair_scores(
    embeddings: Any,
    labels: Any,
    query_embeddings: Any = None,
    query_labels: Any = None,
    *,
    metric: str = "cosine",
    max_pairs: int = DEFAULT_MAX_PAIRS,
    seed: int = 0,
    block_size: int = DEFAULT_BLOCK,
) -> PairScores:
    """Scores of the genuine and impostor pairs (all, or the seeded subset of the module
    docstring when there are more than ``max_pairs``), computed block by block.

    ``embeddings``/``labels`` are the gallery; with ``query_embeddings`` every query is paired
    with every gallery item, without them every unordered pair of the gallery is used.
    Raises :class:`DataError` (one line) when there is no genuine or no impostor pair.
    """
    if metric not in METRICS:
        raise ConfigError(unknown_name_message("metric", metric, METRICS))
    if isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 2:
        raise ConfigError(f"max_pairs must be an integer >= 2, got {max_pairs!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ConfigError(f"block_size must be a positive integer, got {block_size!r}")
    gallery, g_labels = _checked(embeddings, labels, "embeddings")
    if query_embeddings is None:
        if query_labels is not None:
            raise InputError("query_labels given without query_embeddings; pass both or neither")
        queries, q_labels, gal, gal_labels = gallery, g_labels, None, None
    else:
        if query_labels is None:
            raise InputError("query_embeddings given without query_labels; pass both or neither")
        queries, q_labels = _checked(query_embeddings, query_labels, "query_embeddings")
        queries, q_labels = queries.to(gallery.device, gallery.dtype), q_labels.to(gallery.device)
        if queries.shape[1] != gallery.shape[1]:
            raise InputError(
                f"query_embeddings have {queries.shape[1]} dims but embeddings have {gallery.shape[1]}; "
                "embed both with the same model"
            )
        gal, gal_labels = gallery, g_labels
    n_gen, n_imp = _population(q_labels, gal_labels)
    if n_gen == 0:
        raise DataError(
            "no genuine pair: no query shares a label with any other item of the gallery, so TAR, "
            "EER and a matching threshold are undefined; use a split with at least 2 items of a class"
        )
    if n_imp == 0:
        raise DataError(
            "no impostor pair: every pair shares its label, so FAR is undefined; use a split with "
            "at least 2 classes"
        )
    if n_gen + n_imp <= max_pairs:
        p_gen = p_imp = 1.0
    else:
        keep_gen = min(n_gen, max(max_pairs // 2, max_pairs - n_imp))
        p_gen, p_imp = keep_gen / n_gen, (max_pairs - keep_gen) / n_imp
    gen_parts: list[Tensor] = []
    imp_parts: list[Tensor] = []
    symmetric = gal is None
    ref_labels = q_labels if symmetric else gal_labels
    assert ref_labels is not None
    with torch.no_grad():
        for number, r, c, scores in _score_blocks(queries, gal, metric, block_size):
            rows, cols = scores.shape
            same = q_labels[r : r + rows].view(-1, 1) == ref_labels[c : c + cols].view(1, -1)
            valid = None
            if symmetric and r == c:
                valid = torch.ones(rows, cols, dtype=torch.bool, device=scores.device).triu_(1)
            if p_gen < 1.0 or p_imp < 1.0:
                gen = torch.Generator(device="cpu").manual_seed(int(seed) * 1_000_003 + number)
                draw = torch.rand(rows, cols, generator=gen, dtype=torch.float64).to(scores.device)
                keep = torch.where(same, draw < p_gen, draw < p_imp)
                valid = keep if valid is None else valid & keep
            g_mask = same if valid is None else same & valid
            i_mask = ~same if valid is None else ~same & valid
            gen_parts.append(scores[g_mask].cpu())
            imp_parts.append(scores[i_mask].cpu())
    genuine = torch.cat(gen_parts).numpy()
    impostor = torch.cat(imp_parts).numpy()
    if genuine.size == 0 or impostor.size == 0:  # sampling kept none of a kind (tiny budgets)
        raise DataError(
            f"the pair sample (max_pairs={max_pairs}) kept no {'genuine' if genuine.size == 0 else 'impostor'} "
            "pair; raise max_pairs"
        )
    return PairScores(genuine, impostor, n_gen, n_imp, metric == "cosine")


# ------------------------------------------------------------------------------------ curve


def roc_from_scores(
    genuine: np.ndarray,
    impostor: np.ndarray,
    higher_is_closer: bool = True,
    n_genuine: int | None = None,
    n_impostor: int | None = None,
) -> RocCurve:
    """The exact ROC of the given pair scores (every distinct score is a threshold), the same
    points as ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``. ``n_genuine`` /
    ``n_impostor``: population sizes when the scores are a sample (default: their counts)."""
    gen = np.asarray(genuine).reshape(-1)
    imp = np.asarray(impostor).reshape(-1)
    if gen.size == 0:
        raise DataError("no genuine pair: TAR, EER and a matching threshold are undefined")
    if imp.size == 0:
        raise DataError("no impostor pair: FAR is undefined; use data with at least 2 classes")
    dtype = np.result_type(gen.dtype, imp.dtype, np.float32)
    keys = np.concatenate([gen, imp]).astype(dtype)
    if not higher_is_closer:
        keys = -keys
    truth = np.concatenate([np.ones(gen.size, dtype=np.int64), np.zeros(imp.size, dtype=np.int64)])
    order = np.argsort(-keys, kind="mergesort")
    keys, truth = keys[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(keys)), keys.size - 1]  # last index of every distinct key
    tps = np.cumsum(truth)[last]
    fps = last + 1 - tps
    tpr = np.r_[0.0, tps / gen.size]
    fpr = np.r_[0.0, fps / imp.size]
    thresholds = np.r_[np.inf, keys[last].astype(np.float64)]
    if not higher_is_closer:
        thresholds = -thresholds
    return RocCurve(
        fpr=fpr, tpr=tpr, thresholds=thresholds, higher_is_closer=higher_is_closer,
        n_genuine=int(n_genuine if n_genuine is not None else gen.size),
        n_impostor=int(n_impostor if n_impostor is not None else imp.size),
        n_genuine_used=int(gen.size), n_impostor_used=int(imp.size),
    )


def roc_curve(
    embeddings: Any,
    labels: Any,
    query_embeddings: Any = None,
    query_labels: Any = None,
    *,
    metric: str = "cosine",
    max_pairs: int = DEFAULT_MAX_PAIRS,
    seed: int = 0,
    block_size: int = DEFAULT_BLOCK,
) -> RocCurve:
    """ROC of the pairs of :func:`pair_scores` (same arguments)."""
    scores = pair_scores(
        embeddings, labels, query_embeddings, query_labels,
        metric=metric, max_pairs=max_pairs, seed=seed, block_size=block_size,
    )
    return roc_from_scores(scores.genuine, scores.impostor, scores.higher_is_closer, scores.n_genuine, scores.n_impostor)


def equal_error_rate(curve: RocCurve) -> tuple[float, float]:
    """``(EER, threshold)``: the interpolated rate where FAR = 1 - TAR, and the threshold of the
    first ROC point at or past the crossing (FAR >= FRR there)."""
    diff = (1.0 - curve.tpr) - curve.fpr  # FRR - FAR: 1 at the first point, -1 at the last
    i = int(np.argmax(diff <= 0))
    if i == 0:
        return 0.0, float(curve.thresholds[0])
    d0, d1 = diff[i - 1], diff[i]
    t = d0 / (d0 - d1) if d0 != d1 else 0.0
    eer = curve.fpr[i - 1] + t * (curve.fpr[i] - curve.fpr[i - 1])
    return float(eer), float(curve.thresholds[i])


def tar_at_far(curve: RocCurve, far: float) -> OperatingPoint:
    """The operating point with the largest TAR among those with FAR <= ``far`` (0 < far < 1)."""
    far = check_rate(far, "far")
    j = int(np.searchsorted(curve.fpr, far, side="right")) - 1  # fpr is non-decreasing
    return OperatingPoint(float(curve.thresholds[j]), float(curve.tpr[j]), float(curve.fpr[j]))


def fnmr_at_fmr(curve: RocCurve, fmr: float) -> float:
    """1 - TAR at the operating point of :func:`tar_at_far` (FMR = FAR, FNMR = 1 - TAR)."""
    return tar_at_far(curve, fmr).fnmr


def _rate_key(rate: float) -> str:
    return f"{rate:g}"


def verification_metrics(
    embeddings: Any,
    labels: Any,
    query_embeddings: Any = None,
    query_labels: Any = None,
    *,
    metric: str = "cosine",
    far_targets: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1),
    max_pairs: int = DEFAULT_MAX_PAIRS,
    seed: int = 0,
    block_size: int = DEFAULT_BLOCK,
) -> dict[str, float]:
    """EER (and its threshold), AUC, ``tar@far=X``, ``fnmr@fmr=X`` and ``threshold@far=X`` for
    every X in ``far_targets``, plus the pair counts and ``pairs_sampled`` (1.0 when a subset was
    used). Same pairs and arguments as :func:`pair_scores`."""
    targets = [check_rate(x, "far_targets entry") for x in far_targets]
    curve = roc_curve(
        embeddings, labels, query_embeddings, query_labels,
        metric=metric, max_pairs=max_pairs, seed=seed, block_size=block_size,
    )
    eer, eer_threshold = equal_error_rate(curve)
    out: dict[str, float] = {"eer": eer, "eer_threshold": eer_threshold, "roc_auc": curve.auc()}
    for x in targets:
        point = tar_at_far(curve, x)
        out[f"tar@far={_rate_key(x)}"] = point.tar
        out[f"fnmr@fmr={_rate_key(x)}"] = point.fnmr
        out[f"threshold@far={_rate_key(x)}"] = point.threshold
    out.update(
        n_genuine_pairs=float(curve.n_genuine), n_impostor_pairs=float(curve.n_impostor),
        n_pairs_used=float(curve.n_genuine_used + curve.n_impostor_used),
        pairs_sampled=1.0 if curve.sampled else 0.0,
    )
    return out
