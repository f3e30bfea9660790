"""Verification metrics: pair enumeration against explicit loops, the ROC against
sklearn.metrics.roc_curve (exact points), EER against brentq on the interpolated ROC, TAR@FAR /
FNMR@FMR against sklearn's curve, blocked == unblocked, the seeded pair sample, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from deepmetric.errors import ConfigError, DataError
from deepmetric.evaluation.verification import (
    equal_error_rate,
    fnmr_at_fmr,
    pair_scores,
    roc_curve,
    roc_from_scores,
    tar_at_far,
    verification_metrics,
)


def _data(n: int, d: int, classes: int, seed: int, quantize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centers = rng.normal(size=(classes, d))
    x = centers[y] + 0.8 * rng.normal(size=(n, d))
    if quantize:  # many exactly tied scores
        x = np.round(x)
    return x.astype(np.float64), y


def _loop_scores(q, ql, g, gl, metric, symmetric):
    gen, imp = [], []
    for i in range(len(q)):
        for j in range(len(g)):
            if symmetric and j <= i:
                continue
            if metric == "cosine":
                s = float(q[i] @ g[j] / (np.linalg.norm(q[i]) * np.linalg.norm(g[j])))
            else:
                s = float(np.linalg.norm(q[i] - g[j]))
            (gen if ql[i] == gl[j] else imp).append(s)
    return np.sort(gen), np.sort(imp)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_pairs_match_explicit_loop_in_any_block_size(metric, symmetric) -> None:
    g, gl = _data(23, 4, 4, seed=1)
    q, ql = (g, gl) if symmetric else _data(11, 4, 5, seed=2)
    gen, imp = _loop_scores(q, ql, g, gl, metric, symmetric)
    for block in (1, 5, 64):
        ps = pair_scores(g, gl, None if symmetric else q, None if symmetric else ql, metric=metric, block_size=block)
        assert ps.n_genuine == gen.size and ps.n_impostor == imp.size and not ps.sampled
        np.testing.assert_allclose(np.sort(ps.genuine), gen, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.sort(ps.impostor), imp, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("quantize", [False, True])
def test_roc_points_equal_sklearn(metric, quantize) -> None:
    x, y = _data(40, 3, 5, seed=3, quantize=quantize)
    ps = pair_scores(x, y, metric=metric, block_size=7)
    curve = roc_from_scores(ps.genuine, ps.impostor, ps.higher_is_closer)
    truth = np.r_[np.ones(ps.genuine.size), np.zeros(ps.impostor.size)]
    score = np.r_[ps.genuine, ps.impostor]
    key = score if metric == "cosine" else -score
    fpr, tpr, thr = sk_roc_curve(truth, key, drop_intermediate=False)
    np.testing.assert_array_equal(curve.fpr, fpr)
    np.testing.assert_array_equal(curve.tpr, tpr)
    native = thr if metric == "cosine" else -thr
    np.testing.assert_array_equal(curve.thresholds[1:], native[1:])
    assert curve.thresholds[0] == (np.inf if metric == "cosine" else -np.inf)
    assert curve.auc() == pytest.approx(roc_auc_score(truth, key), abs=1e-12)
    # the thresholds reproduce the rates on the scores
    for i in range(1, len(curve.fpr)):
        assert curve.accepts(ps.genuine, curve.thresholds[i]).mean() == curve.tpr[i]
        assert curve.accepts(ps.impostor, curve.thresholds[i]).mean() == curve.fpr[i]

    # EER: brentq on sklearn's interpolated ROC
    fpr_d, tpr_d, _ = sk_roc_curve(truth, key)
    expected = brentq(lambda r: 1.0 - r - interp1d(fpr_d, tpr_d)(r), 0.0, 1.0)
    eer, eer_thr = equal_error_rate(curve)
    assert eer == pytest.approx(expected, abs=1e-9)
    i = int(np.flatnonzero(curve.thresholds == eer_thr)[0])
    assert curve.fpr[i] >= 1.0 - curve.tpr[i] and curve.fpr[i - 1] < 1.0 - curve.tpr[i - 1]

    # TAR@FAR: the best achievable point of sklearn's curve with FPR <= x
    for far in (0.01, 0.05, 0.2, 0.5):
        ok = fpr <= far
        point = tar_at_far(curve, far)
        assert point.tar == tpr[ok].max() and point.far <= far
        assert fnmr_at_fmr(curve, far) == 1.0 - tpr[ok].max()


def test_query_gallery_curve_and_metrics_dict() -> None:
    g, gl = _data(30, 5, 4, seed=4)
    q, ql = _data(12, 5, 6, seed=5)
    out = verification_metrics(g, gl, q, ql, metric="euclidean", far_targets=(0.1, 0.25))
    curve = roc_curve(g, gl, q, ql, metric="euclidean")
    assert out["eer"] == equal_error_rate(curve)[0]
    assert out["tar@far=0.1"] == tar_at_far(curve, 0.1).tar
    assert out["fnmr@fmr=0.25"] == pytest.approx(1 - out["tar@far=0.25"])
    assert out["threshold@far=0.1"] == tar_at_far(curve, 0.1).threshold
    assert out["n_genuine_pairs"] + out["n_impostor_pairs"] == 30 * 12 and out["pairs_sampled"] == 0.0


def test_sampled_pairs_are_seeded_and_unbiased_per_kind() -> None:
    x, y = _data(400, 4, 10, seed=6)
    full = roc_curve(x, y)
    n_pairs = full.n_genuine + full.n_impostor
    a = pair_scores(x, y, max_pairs=20_000, seed=1, block_size=128)
    b = pair_scores(x, y, max_pairs=20_000, seed=1, block_size=128)
    c = pair_scores(x, y, max_pairs=20_000, seed=2, block_size=128)
    assert a.sampled and a.n_genuine + a.n_impostor == n_pairs
    np.testing.assert_array_equal(a.genuine, b.genuine)
    np.testing.assert_array_equal(a.impostor, b.impostor)
    assert not np.array_equal(a.impostor, c.impostor)
    kept = a.genuine.size + a.impostor.size
    assert abs(kept - 20_000) < 600  # Bernoulli draws: about the budget
    assert a.genuine.size >= min(full.n_genuine, 10_000) * 0.9  # genuine pairs are not starved
    sampled = roc_from_scores(a.genuine, a.impostor, True, a.n_genuine, a.n_impostor)
    assert equal_error_rate(sampled)[0] == pytest.approx(equal_error_rate(full)[0], abs=0.02)
    assert tar_at_far(sampled, 0.1).tar == pytest.approx(tar_at_far(full, 0.1).tar, abs=0.03)


def test_precision_uses_population_counts() -> None:
    curve = roc_from_scores(np.array([0.9, 0.8]), np.array([0.85, 0.1, 0.0, -0.5]), True, n_genuine=2, n_impostor=40)
    # at threshold 0.8: TAR 1, FAR 1/4 of 40 impostors = 10 -> precision 2 / 12
    i = int(np.flatnonzero(curve.thresholds == 0.8)[0])
    assert curve.precision()[i] == pytest.approx(2 / 12)
    assert np.isnan(curve.precision()[0])


def test_one_line_errors() -> None:
    x = np.random.default_rng(0).normal(size=(5, 3))
    with pytest.raises(DataError, match="no genuine pair") as info:
        verification_metrics(x, np.arange(5))
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="no genuine pair"):
        verification_metrics(x, np.arange(5), x[:2], np.array([7, 8]))
    with pytest.raises(DataError, match="no impostor pair"):
        verification_metrics(x, np.zeros(5, dtype=int))
    for bad in (0.0, 1.0, -0.1, 2.0):
        with pytest.raises(ConfigError, match="between 0 and 1"):
            verification_metrics(x, np.array([0, 0, 1, 1, 2]), far_targets=(bad,))
    with pytest.raises(ConfigError):
        pair_scores(x, np.array([0, 0, 1, 1, 2]), metric="dot")


def test_float32_torch_input_and_bounded_blocks() -> None:
    x, y = _data(300, 8, 6, seed=7)
    t = torch.from_numpy(x).float()
    a = roc_curve(t, torch.from_numpy(y), block_size=64)
    b = roc_curve(t, torch.from_numpy(y), block_size=4096)
    # block boundaries may change float32 round-off (and so ties), not the curve's shape
    assert a.n_genuine == b.n_genuine and a.n_impostor == b.n_impostor
    assert equal_error_rate(a)[0] == pytest.approx(equal_error_rate(b)[0], abs=1e-4)
    assert a.auc() == pytest.approx(b.auc(), abs=1e-6)
