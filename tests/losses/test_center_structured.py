"""Center-based structured metric learning (Gong et al. 2019, a reconstruction): every term
against explicit loops, center updates ("sgd" gradients, "ema" moving averages), nearest-center
prediction against brute force, and the term switches."""

from __future__ import annotations

import math

import pytest
import torch

from deepmetric.errors import ConfigError, InputError
from deepmetric.functional.center_structured import (
    center_pull,
    center_push,
    center_structured_loss,
    ema_centers,
)
from deepmetric.losses import build_loss
from deepmetric.losses.center_structured import CenterStructuredLoss

DT = torch.float64


def _data(seed: int = 0, n_per: int = 2, k: int = 3, d: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(k).repeat(n_per)
    x = torch.randn(k * n_per, d, generator=g, dtype=DT) * 0.7
    centers = torch.randn(k, d, generator=g, dtype=DT) * 0.7
    return x, labels, centers


def _dist(a: list[float], b: list[float]) -> float:
    return math.sqrt(sum((p - q) ** 2 for p, q in zip(a, b)))


def _loop_pull(x: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor) -> float:
    rows, c = x.tolist(), centers.tolist()
    return sum(_dist(r, c[int(y)]) ** 2 for r, y in zip(rows, labels)) / len(rows)


def _loop_push(centers: torch.Tensor, margin: float) -> float:
    c = centers.tolist()
    k = len(c)
    vals = [max(0.0, margin - _dist(c[j], c[l])) ** 2 for j in range(k) for l in range(k) if j != l]
    return sum(vals) / len(vals)


def _loop_structured(x: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor, alpha: float) -> float:
    pts = x.tolist() + centers.tolist()
    lab = labels.tolist() + list(range(centers.shape[0]))
    n = len(pts)
    total, count = 0.0, 0
    for i in range(n):
        for j in range(i + 1, n):
            if lab[i] != lab[j]:
                continue
            s = sum(math.exp(alpha - _dist(pts[i], pts[k])) for k in range(n) if lab[k] != lab[i])
            s += sum(math.exp(alpha - _dist(pts[j], pts[l])) for l in range(n) if lab[l] != lab[j])
            jij = math.log(s) + _dist(pts[i], pts[j])
            total += max(0.0, jij) ** 2
            count += 1
    return total / (2 * count)


def _loop_ce(logits: torch.Tensor, labels: torch.Tensor) -> float:
    out = 0.0
    for row, y in zip(logits.tolist(), labels.tolist()):
        out += -(row[y] - math.log(sum(math.exp(v) for v in row)))
    return out / logits.shape[0]


def _loss(**kw: object) -> CenterStructuredLoss:
    torch.manual_seed(0)
    return CenterStructuredLoss(num_classes=3, embedding_dim=4, **kw).double()  # type: ignore[arg-type]


# ---------------------------------------------------------------- terms vs loops


def test_center_term_matches_loops() -> None:
    x, y, c = _data(1)
    torch.testing.assert_close(center_pull(x, y, c).item(), _loop_pull(x, y, c))
    for margin in (0.5, 1.0, 3.0):
        torch.testing.assert_close(center_push(c, margin).item(), _loop_push(c, margin))
    # centers farther apart than the margin do not repel
    assert center_push(c * 100, 1.0).item() == 0.0


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_structured_term_on_union_matches_loop(alpha: float) -> None:
    x, y, c = _data(2)
    torch.testing.assert_close(
        center_structured_loss(x, y, c, alpha).item(), _loop_structured(x, y, c, alpha)
    )


def test_total_and_each_term_match_loops() -> None:
    x, y, _ = _data(3)
    loss = _loss(lam_s=0.7, lam_c=0.3, ce_weight=1.3, alpha=1.0, center_margin=2.0)
    c = loss.centers.detach()
    ce = _loop_ce(loss.logits(x).detach(), y)
    s = _loop_structured(x, y, c, 1.0)
    cc = _loop_pull(x, y, c) + _loop_push(c, 2.0)
    terms = loss.terms(x, y)
    torch.testing.assert_close(terms["ce"].item(), ce)
    torch.testing.assert_close(terms["structured"].item(), s)
    torch.testing.assert_close(terms["center"].item(), cc)
    torch.testing.assert_close(loss(x, y).item(), 1.3 * ce + 0.7 * s + 0.3 * cc)


@pytest.mark.parametrize("only", ["ce", "structured", "center"])
def test_terms_switchable(only: str) -> None:
    x, y, _ = _data(4)
    flags = {"use_ce": only == "ce", "use_structured": only == "structured", "use_center": only == "center"}
    loss = _loss(lam_s=1.0, lam_c=1.0, ce_weight=1.0, **flags)
    c = loss.centers.detach()
    expected = {
        "ce": lambda: _loop_ce(loss.logits(x).detach(), y),
        "structured": lambda: _loop_structured(x, y, c, 1.0),
        "center": lambda: _loop_pull(x, y, c) + _loop_push(c, 1.0),
    }[only]()
    assert set(loss.terms(x, y)) == {only}
    torch.testing.assert_close(loss(x, y).item(), expected)


def test_gradcheck_features_and_centers() -> None:
    x, y, c = _data(5, d=3)

    def f(xx: torch.Tensor, cc: torch.Tensor) -> torch.Tensor:
        return center_structured_loss(xx, y, cc, 1.0) + center_pull(xx, y, cc) + center_push(cc, 1.5)

    assert torch.autograd.gradcheck(
        f, (x.clone().requires_grad_(True), c.clone().requires_grad_(True)), eps=1e-6, atol=1e-5
    )


# ---------------------------------------------------------------- center updates


def test_sgd_centers_receive_gradients() -> None:
    x, y, _ = _data(6)
    loss = _loss()
    assert [p is loss.centers for p in loss.center_parameters()] == [True]
    assert len(list(loss.classifier_parameters())) == 2
    xx = x.clone().requires_grad_(True)
    loss(xx, y).backward()
    assert loss.centers.grad is not None and loss.centers.grad.abs().sum() > 0
    assert loss.classifier.weight.grad is not None and loss.classifier.weight.grad.abs().sum() > 0
    assert torch.isfinite(xx.grad).all() and xx.grad.abs().sum() > 0
    # every center is a registered parameter, so .parameters() hands it to the optimizer
    assert any(p is loss.centers for p in loss.parameters())


def test_ema_centers_move_toward_batch_means() -> None:
    x, _, _ = _data(7)
    y = torch.tensor([0, 0, 1, 1, 0, 1])  # class 2 absent from the batch
    loss = _loss(center_update="ema", ema_momentum=0.75)
    assert list(loss.center_parameters()) == []
    assert not isinstance(loss.centers, torch.nn.Parameter)
    before = loss.centers.clone()
    loss.eval()
    loss(x, y)
    assert torch.equal(loss.centers, before)  # no update outside training
    loss.train()
    loss(x, y)
    after = loss.centers
    for k in (0, 1):
        mean = x[y == k].mean(dim=0)
        torch.testing.assert_close(after[k], 0.75 * before[k] + 0.25 * mean)
        assert (after[k] - mean).norm() < (before[k] - mean).norm()
    assert torch.equal(after[2], before[2])
    # functional form agrees with a loop over classes
    manual = before.clone()
    for k in (0, 1):
        manual[k] = 0.75 * before[k] + 0.25 * x[y == k].mean(dim=0)
    torch.testing.assert_close(ema_centers(before, x, y, 0.75), manual)


# ---------------------------------------------------------------- prediction


def test_nearest_center_prediction_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(8)
    loss = _loss()
    x = torch.randn(20, 4, generator=g, dtype=DT)
    c = loss.centers.detach().tolist()
    expected = []
    for row in x.tolist():
        dists = [_dist(row, ck) for ck in c]
        expected.append(min(range(len(c)), key=lambda k: dists[k]))
    assert loss.predict_nearest_center(x).tolist() == expected
    # points sitting on a center are predicted as that center's class
    assert loss.predict_nearest_center(loss.centers.detach()).tolist() == [0, 1, 2]


def test_softmax_prediction_is_argmax_of_head() -> None:
    g = torch.Generator().manual_seed(9)
    loss = _loss()
    x = torch.randn(10, 4, generator=g, dtype=DT)
    w, b = loss.classifier.weight.detach().tolist(), loss.classifier.bias.detach().tolist()
    expected = []
    for row in x.tolist():
        scores = [sum(a * c for a, c in zip(row, wk)) + bk for wk, bk in zip(w, b)]
        expected.append(max(range(3), key=lambda k: scores[k]))
    assert loss.predict_softmax(x).tolist() == expected


# ---------------------------------------------------------------- configuration and edge cases


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        CenterStructuredLoss(3, 4, use_ce=False, use_center=False, use_structured=False)
    with pytest.raises(ConfigError, match="Did you mean 'ema'"):
        CenterStructuredLoss(3, 4, center_update="emaa")
    with pytest.raises(ConfigError):
        CenterStructuredLoss(3, 4, ema_momentum=1.0)
    with pytest.raises(ConfigError):
        CenterStructuredLoss(3, 4, lam_c=-1.0)


def test_labels_out_of_range_is_input_error() -> None:
    loss = _loss()
    with pytest.raises(InputError, match="num_classes"):
        loss(torch.zeros(2, 4, dtype=DT), torch.tensor([0, 3]))


def test_registry_and_edge_cases_finite() -> None:
    loss = build_loss("center_structured", num_classes=3, embedding_dim=4)
    assert isinstance(loss, CenterStructuredLoss)
    loss = loss.double()
    torch.manual_seed(10)
    for labels in ([1, 1, 1, 1], [0, 1, 2, 0]):  # one class; mixed
        x = torch.randn(4, 4, dtype=DT, requires_grad=True)
        out = loss(x, torch.tensor(labels))
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(x.grad).all()
    dup = torch.ones(4, 4, dtype=DT, requires_grad=True)
    out = loss(dup, torch.tensor([0, 1, 0, 1]))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(dup.grad).all()
    one = CenterStructuredLoss(1, 4, use_structured=False).double()  # K = 1: no center pairs
    assert torch.isfinite(one(torch.randn(3, 4, dtype=DT), torch.zeros(3, dtype=torch.long)))
