"""OSM+CAA loss against an explicit double loop over unordered pairs, plus its properties."""

from __future__ import annotations

import math

import pytest
import torch

from deepmetric.errors import ConfigError, InputError
from deepmetric.functional.distances import euclidean_distance_matrix
from deepmetric.functional.masks import label_masks
from deepmetric.functional.osm_caa import osm_caa_weights, weighted_contrastive_loss
from deepmetric.losses import build_loss
from deepmetric.losses.osm_caa import OSMCAALoss


def reference_loss(
    x, y, weight, bias, alpha=1.2, sigma=0.8, lam=0.5, ce_weight=1.0, osm_form="paper",
    caa_form="prob", use_osm=True, use_caa=True, detach_weights=True,
):
    """Slow explicit loop: per-sample attention, then every pair i < j once."""
    n = x.shape[0]
    probs = []
    for i in range(n):
        logits = weight @ x[i] + bias
        probs.append(torch.exp(logits[y[i]]) / torch.exp(logits).sum())

    def att(i):
        if not use_caa:
            return torch.tensor(1.0, dtype=x.dtype)
        p = probs[i].detach() if detach_weights else probs[i]
        if caa_form == "prob":
            return p
        return torch.exp(-((p - 1.0) ** 2) / (2 * 0.68**2))

    num_p = den_p = num_n = den_n = torch.tensor(0.0, dtype=x.dtype)
    for i in range(n):
        for j in range(i + 1, n):
            d = torch.sqrt(((x[i] - x[j]) ** 2).sum())
            dw = d.detach() if detach_weights else d
            a = torch.minimum(att(i), att(j))
            if y[i] == y[j]:
                if use_osm:
                    s = torch.exp(-dw**2 / (sigma**2 if osm_form == "paper" else 2 * sigma**2))
                else:
                    s = torch.tensor(1.0, dtype=x.dtype)
                num_p = num_p + s * a * d**2
                den_p = den_p + s * a
            else:
                s = torch.clamp(alpha - dw, min=0.0) if use_osm else torch.tensor(1.0, dtype=x.dtype)
                num_n = num_n + s * a * torch.clamp(alpha - d, min=0.0) ** 2
                den_n = den_n + s * a
    lp = 0.5 * num_p / den_p if den_p > 0 else torch.tensor(0.0, dtype=x.dtype)
    ln = 0.5 * num_n / den_n if den_n > 0 else torch.tensor(0.0, dtype=x.dtype)
    ce = -sum(torch.log(p) for p in probs) / n
    return (1 - lam) * lp + lam * ln + ce_weight * ce


def make_batch(seed=0, classes=3, per_class=3, dim=5):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(per_class)
    x = torch.randn(classes * per_class, dim, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    return x, y


def make_loss(dim=5, classes=3, seed=0, **kw):
    torch.manual_seed(seed)
    return OSMCAALoss(num_classes=classes, embedding_dim=dim, **kw).double()


OPTIONS = [
    {},
    {"osm_form": "gaussian", "caa_form": "gaussian"},
    {"use_osm": False},
    {"use_caa": False},
    {"use_osm": False, "use_caa": False, "ce_weight": 0.0},
    {"lam": 0.3, "alpha": 1.0, "sigma": 0.5, "ce_weight": 0.7},
]


@pytest.mark.parametrize("options", OPTIONS)
def test_value_and_gradient_match_loop(options):
    x, y = make_batch()
    loss_fn = make_loss(**options)
    x1 = x.clone().requires_grad_(True)
    out = loss_fn(x1, y)
    out.backward()
    x2 = x.clone().requires_grad_(True)
    w = loss_fn.classifier.weight.detach().clone().requires_grad_(True)
    b = loss_fn.classifier.bias.detach().clone().requires_grad_(True)
    ref = reference_loss(x2, y, w, b, **options)
    ref.backward()
    assert out.item() == pytest.approx(ref.item(), rel=1e-10, abs=1e-12)
    assert torch.allclose(x1.grad, x2.grad, rtol=1e-8, atol=1e-12)
    for param, ref_param in ((loss_fn.classifier.weight, w), (loss_fn.classifier.bias, b)):
        grad = param.grad if param.grad is not None else torch.zeros_like(param)
        assert torch.allclose(grad, ref_param.grad, rtol=1e-8, atol=1e-12)


def test_no_gradient_through_weights():
    """The gradient equals the detached-weight loop and differs from a loop that lets the
    gradient flow through the weights (so the comparison can fail)."""
    x, y = make_batch(seed=3)
    loss_fn = make_loss()
    x1 = x.clone().requires_grad_(True)
    loss_fn(x1, y).backward()
    w, b = loss_fn.classifier.weight.detach(), loss_fn.classifier.bias.detach()
    x2 = x.clone().requires_grad_(True)
    reference_loss(x2, y, w, b, detach_weights=False).backward()
    assert not torch.allclose(x1.grad, x2.grad, rtol=1e-4, atol=1e-6)
    # the classifier gets gradient only from the cross-entropy, not through the attention
    only_ce = make_loss(use_osm=True)
    only_ce.load_state_dict(loss_fn.state_dict())
    loss_fn.zero_grad()
    loss_fn(x, y).backward()
    logits = only_ce.classifier(x)
    torch.nn.functional.cross_entropy(logits, y).backward()
    assert torch.allclose(loss_fn.classifier.weight.grad, only_ce.classifier.weight.grad, atol=1e-12)


def test_gradcheck_with_constant_weights():
    x, y = make_batch(seed=5, classes=2, per_class=3, dim=4)
    pos, neg = label_masks(y)
    weights = osm_caa_weights(euclidean_distance_matrix(x), pos, neg, torch.rand(6, dtype=torch.float64))
    d = euclidean_distance_matrix(x)
    assert ((d - 1.2).abs() > 1e-3).all()  # away from the margin's kink

    def f(z):
        return weighted_contrastive_loss(euclidean_distance_matrix(z), pos, neg, weights.pos_weights, weights.neg_weights)

    assert torch.autograd.gradcheck(f, (x.clone().requires_grad_(True),))


def test_outlier_gets_low_attention_and_low_pair_weights():
    """A class-0 sample planted inside class 1's cluster: the classifier (set by hand to the
    class centres) gives it a low true-class probability, so its attention and every weight of
    its pairs fall below those of its classmates."""
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(3, 4, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    x = centres[y] + 0.08 * torch.randn(12, 4, generator=g, dtype=torch.float64)
    planted = 3
    x[planted] = centres[1] + 0.08 * torch.randn(4, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    mates = [0, 1, 2]

    loss_fn = make_loss(dim=4, classes=3)
    with torch.no_grad():
        loss_fn.classifier.weight.copy_(5.0 * centres)
        loss_fn.classifier.bias.zero_()
    loss_fn(x, y)
    w = loss_fn.last_weights()
    a = w.attention
    assert a[planted] < 0.1 < a[mates].min()

    def pair(m, i, j):
        return m[min(i, j), max(i, j)]

    planted_pos = [pair(w.pos_weights, planted, j) for j in mates]
    mate_pos = [pair(w.pos_weights, i, j) for i in mates for j in mates if i < j]
    assert max(planted_pos) < min(mate_pos)
    others = [j for j in range(12) if j != planted]
    assert all(pair(w.pair_attention, planted, j) <= a[planted] + 1e-15 for j in others)
    mate_att = [pair(w.pair_attention, i, j) for i in mates for j in range(12) if j != i and j != planted]
    assert max(pair(w.pair_attention, planted, j) for j in others) < min(mate_att)

    # the planted sample's negatives (class 1, right next to it) are hard: without CAA they
    # dominate the negative weights; with CAA they shrink by its attention
    no_caa = make_loss(dim=4, classes=3, use_caa=False)
    no_caa(x, y)
    w0 = no_caa.last_weights()
    for j in (4, 5, 6, 7):
        assert pair(w0.neg_weights, planted, j) > 0.5
        assert pair(w.neg_weights, planted, j) == pytest.approx(a[planted] * pair(w0.neg_weights, planted, j))
        assert pair(w.neg_weights, planted, j) < 0.1 * pair(w0.neg_weights, planted, j)


def test_infinite_sigma_without_attention_is_plain_positive_mean():
    """use_caa=False and sigma -> inf: every positive weight is 1, so L_P is the plain mean of
    d^2 / 2 over positive pairs; L_N keeps its OSM weights [alpha - d]_+. With use_osm=False as
    well the whole metric loss is the plain mean-form contrastive loss."""
    x, y = make_batch(seed=7, classes=3, per_class=4, dim=3)
    alpha, lam = 1.2, 0.3
    n = len(y)
    pos_d2, neg_terms, neg_osm = [], [], []
    for i in range(n):
        for j in range(i + 1, n):
            d = float(torch.linalg.norm(x[i] - x[j]))
            if y[i] == y[j]:
                pos_d2.append(d * d)
            else:
                neg_terms.append(max(alpha - d, 0.0) ** 2)
                neg_osm.append(max(alpha - d, 0.0))
    plain_p = 0.5 * sum(pos_d2) / len(pos_d2)
    plain_n = 0.5 * sum(neg_terms) / len(neg_terms)
    osm_n = 0.5 * sum(s * t for s, t in zip(neg_osm, neg_terms)) / sum(neg_osm)

    osm_only = make_loss(dim=3, use_caa=False, sigma=1e6, lam=lam, ce_weight=0.0)
    assert osm_only(x, y).item() == pytest.approx((1 - lam) * plain_p + lam * osm_n, rel=1e-9)
    plain = make_loss(dim=3, use_caa=False, use_osm=False, lam=lam, ce_weight=0.0)
    assert plain(x, y).item() == pytest.approx((1 - lam) * plain_p + lam * plain_n, rel=1e-12)


@pytest.mark.parametrize(
    "labels",
    [
        [0, 1, 2, 3, 4, 5],  # no positive pair
        [2, 2, 2, 2, 2, 2],  # one class: no negative pair
        [0, 0, 0, 1, 1, 1],  # negatives far outside the margin (see below)
    ],
)
def test_empty_sets_are_finite(labels):
    y = torch.tensor(labels)
    x = torch.zeros(6, 4, dtype=torch.float64)
    x[y == 0, 0] = 5.0
    x[y != 0, 1] = 5.0
    x[:2] += 0.01  # some spread
    loss_fn = make_loss(dim=4, classes=6)
    x.requires_grad_(True)
    out = loss_fn(x, y)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all()
    assert torch.isfinite(loss_fn.classifier.weight.grad).all()


def test_duplicates_and_empty_parts_are_zero():
    y = torch.tensor([0, 0, 1, 1])
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-3.0, 0.0], [-3.0, 0.0]], dtype=torch.float64, requires_grad=True)
    loss_fn = make_loss(dim=2, classes=2, ce_weight=0.0)
    out = loss_fn(x, y)  # positives at distance 0, negatives at 4 > alpha
    out.backward()
    assert out.item() == 0.0 and torch.isfinite(x.grad).all() and (x.grad == 0).all()


def test_registry_and_errors():
    loss = build_loss("osm_caa", num_classes=4, embedding_dim=8, alpha=1.0)
    assert isinstance(loss, OSMCAALoss)
    assert any(p.shape == (4, 8) for p in loss.parameters())
    with pytest.raises(ConfigError):
        OSMCAALoss(num_classes=4, embedding_dim=8, osm_form="nope")
    with pytest.raises(ConfigError):
        OSMCAALoss(num_classes=4, embedding_dim=8, lam=2.0)
    with pytest.raises(InputError, match="remap labels"):
        loss(torch.randn(3, 8), torch.tensor([0, 1, 4]))
    with pytest.raises(InputError, match="embedding_dim"):
        loss(torch.randn(3, 5), torch.tensor([0, 1, 2]))
    assert math.isfinite(loss(torch.randn(3, 8), torch.tensor([0, 1, 1])).item())
