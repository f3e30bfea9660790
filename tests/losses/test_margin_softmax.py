"""ArcFace, CosFace and sub-center ArcFace against explicit loops, gradcheck, low precision and PML."""

from __future__ import annotations

import math

import pytest
import torch

from deepmetric.errors import ConfigError, InputError
from deepmetric.functional.margin_softmax import (
    arcface_loss,
    arcface_target,
    cosface_loss,
    subcenter_arcface_loss,
)
from deepmetric.losses import build_loss
from deepmetric.losses.contracts import ClassifierLoss, find_classifier
from deepmetric.losses.margin_softmax import ArcFaceLoss, CosFaceLoss, SubCenterArcFaceLoss


def cos(u, v):
    return (u * v).sum() / torch.sqrt((u * u).sum() * (v * v).sum())


def arc_phi(c, m, easy=False):
    """Reference target logit, through acos (the implementation uses the sqrt identity)."""
    theta = torch.acos(c)
    if easy:
        return torch.cos(theta + m) if c > 0 else c
    if theta + m < math.pi:
        return torch.cos(theta + m)
    return c - m * math.sin(m)


def loop_loss(x, w, labels, scale, phi, subcenters=1):
    """Slow reference: one sample and one class at a time."""
    n, num_classes = x.shape[0], w.shape[0] // subcenters
    total = x.new_zeros(())
    for i in range(n):
        class_cos = []
        for c in range(num_classes):
            sub = [cos(x[i], w[c * subcenters + k]) for k in range(subcenters)]
            class_cos.append(torch.stack(sub).max())
        y = int(labels[i])
        logits = [scale * (phi(class_cos[c]) if c == y else class_cos[c]) for c in range(num_classes)]
        denom = sum(torch.exp(z) for z in logits)
        total = total - torch.log(torch.exp(logits[y]) / denom)
    return total / n


def data(n=9, dim=5, num_classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 0, 2, 1][:n])  # class 3 never appears
    return x, labels


CASES = [
    ("arcface", {"scale": 8.0, "margin": 0.5}, lambda c: arc_phi(c, 0.5), 1),
    ("arcface", {"scale": 8.0, "margin": 0.3, "easy_margin": True}, lambda c: arc_phi(c, 0.3, True), 1),
    ("cosface", {"scale": 8.0, "margin": 0.35}, lambda c: c - 0.35, 1),
    ("subcenter_arcface", {"scale": 8.0, "margin": 0.5, "subcenters": 3}, lambda c: arc_phi(c, 0.5), 3),
]


@pytest.mark.parametrize("name,params,phi,k", CASES, ids=["arcface", "easy", "cosface", "subcenter"])
def test_value_and_gradients_match_loop(name, params, phi, k) -> None:
    torch.manual_seed(0)
    loss = build_loss(name, num_classes=4, embedding_dim=5, **params).double()
    x, labels = data()
    a = x.clone().requires_grad_(True)
    out = loss(a, labels)
    out.backward()
    w = loss.weight.detach().clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    ref = loop_loss(b, w, labels, params["scale"], phi, k)
    ref.backward()
    assert out.dtype == torch.float64
    assert out.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(a.grad, b.grad, rtol=1e-7, atol=1e-11)
    assert torch.allclose(loss.weight.grad, w.grad, rtol=1e-7, atol=1e-11)


def test_theta_plus_margin_past_pi_uses_the_linear_fallback() -> None:
    """Samples pointing AWAY from their class weight (theta + m > pi) get cos(theta) - m sin(m),
    loop-checked, with the target logit non-increasing in theta over [0, pi]."""
    torch.manual_seed(1)
    loss = ArcFaceLoss(num_classes=3, embedding_dim=4, scale=4.0, margin=0.5).double()
    w = loss.weight.detach()
    labels = torch.tensor([0, 1, 2, 0])
    x = -w[labels] + 0.05 * torch.randn(4, 4, dtype=torch.float64)  # theta close to pi
    c = torch.stack([cos(x[i], w[labels[i]]) for i in range(4)])
    assert (c < math.cos(math.pi - 0.5)).all()
    a = x.clone().requires_grad_(True)
    out = loss(a, labels)
    out.backward()
    wr = w.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    ref = loop_loss(b, wr, labels, 4.0, lambda v: arc_phi(v, 0.5))
    ref.backward()
    assert out.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(a.grad, b.grad, rtol=1e-7, atol=1e-11)
    # non-increasing target logit over the whole angle range; the easy margin is so on each
    # side of pi/2 but steps UP there (from -sin m to 0), as in the reference code
    theta = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    phi = arcface_target(torch.cos(theta), 0.5)
    assert (phi[1:] <= phi[:-1] + 1e-12).all()
    easy = arcface_target(torch.cos(theta), 0.5, easy_margin=True)
    rises = (easy[1:] > easy[:-1] + 1e-12).nonzero().flatten()
    assert rises.numel() == 1 and abs(theta[int(rises[0])].item() - math.pi / 2) < 2e-3
    # the fallback branch itself: cos(theta) - m sin(m)
    cos_far = torch.tensor([-0.95, -0.99], dtype=torch.float64)
    assert torch.allclose(arcface_target(cos_far, 0.5), cos_far - 0.5 * math.sin(0.5))
    # easy margin: no margin where cos <= 0
    assert torch.equal(arcface_target(cos_far, 0.5, easy_margin=True), cos_far)


def test_gradcheck_float64() -> None:
    x, labels = data(n=6, seed=2)
    x.requires_grad_(True)
    w = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    w3 = torch.randn(12, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e, v: arcface_loss(e, v, labels, scale=4.0, margin=0.5), (x, w))
    assert torch.autograd.gradcheck(
        lambda e, v: arcface_loss(e, v, labels, scale=4.0, margin=0.5, easy_margin=True), (x, w)
    )
    assert torch.autograd.gradcheck(lambda e, v: cosface_loss(e, v, labels, scale=4.0, margin=0.35), (x, w))
    assert torch.autograd.gradcheck(
        lambda e, v: subcenter_arcface_loss(e, v, labels, num_classes=4, subcenters=3, scale=4.0), (x, w3)
    )


@pytest.mark.parametrize("name", ["arcface", "cosface", "subcenter_arcface"])
def test_degenerate_batches_are_finite(name: str) -> None:
    torch.manual_seed(3)
    loss = build_loss(name, num_classes=3, embedding_dim=4)
    w = loss.weight.detach()
    batches = {
        "one class": (torch.randn(5, 4), torch.zeros(5, dtype=torch.long)),
        "duplicates": (torch.ones(4, 4), torch.tensor([0, 0, 1, 2])),
        "zero vector": (torch.cat([torch.zeros(1, 4), torch.randn(3, 4)]), torch.tensor([0, 1, 2, 1])),
        "exactly on / opposite the class weight": (torch.cat([w[:2], -w[:2]]), torch.tensor([0, 1, 0, 1])),
        "single sample": (torch.randn(1, 4), torch.tensor([2])),
    }
    for what, (x, labels) in batches.items():
        x = x.clone().requires_grad_(True)
        loss.zero_grad()
        out = loss(x, labels)
        out.backward()
        assert torch.isfinite(out), what
        assert torch.isfinite(x.grad).all() and torch.isfinite(loss.weight.grad).all(), what
    # a zero embedding has cosine 0 to every class and no gradient
    x = torch.zeros(2, 4, requires_grad=True)
    loss(x, torch.tensor([0, 1])).backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert torch.equal(loss.logits(torch.zeros(1, 4)), torch.zeros(1, 3))
    # empty batch: 0, connected
    empty = loss(torch.zeros(0, 4, requires_grad=True), torch.zeros(0, dtype=torch.long))
    assert empty.item() == 0.0 and empty.requires_grad


def test_bfloat16_autocast_training_steps_stay_finite() -> None:
    torch.manual_seed(4)
    model = torch.nn.Linear(16, 8)
    for name in ("arcface", "subcenter_arcface", "cosface"):
        loss = build_loss(name, num_classes=5, embedding_dim=8)
        opt = torch.optim.SGD(list(model.parameters()) + list(loss.parameters()), lr=0.5)
        x = torch.randn(20, 16)
        labels = torch.arange(20) % 5
        for step in range(5):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                emb = model(x)
                assert emb.dtype == torch.bfloat16
                if step == 4:  # rows exactly on / opposite their class weights: cos rounds to +-1
                    emb = torch.cat([emb[:10], loss.weight[:5].to(torch.bfloat16).repeat(2, 1)
                                     * torch.tensor([1.0] * 5 + [-1.0] * 5).view(-1, 1)])
                out = loss(emb, labels)
            assert out.dtype == torch.float32 and torch.isfinite(out), (name, step)
            out.backward()
            opt.step()
            assert all(torch.isfinite(p).all() for p in loss.parameters()), (name, step)
            assert all(torch.isfinite(p).all() for p in model.parameters()), (name, step)


def test_float16_input_gives_finite_loss_and_gradient() -> None:
    torch.manual_seed(5)
    for name in ("arcface", "subcenter_arcface", "cosface"):
        loss = build_loss(name, num_classes=6, embedding_dim=8)
        x = (torch.randn(12, 8) * 30).half().requires_grad_(True)  # large norms: fine in float32
        x.data[0] = 0.0  # a zero row too
        labels = torch.arange(12) % 6
        out = loss(x, labels)
        out.backward()
        assert out.dtype == torch.float32 and torch.isfinite(out)
        assert x.grad.dtype == torch.float16 and torch.isfinite(x.grad).all()
        assert torch.isfinite(loss.weight.grad).all()
        # the same numbers in float32 give the same loss (float32 maths inside)
        assert out.item() == pytest.approx(loss(x.detach().float(), labels).item(), rel=1e-5)


def test_logits_are_unmargined_scaled_cosines_and_predict() -> None:
    torch.manual_seed(6)
    arc = ArcFaceLoss(num_classes=4, embedding_dim=5, scale=10.0)
    sub = SubCenterArcFaceLoss(num_classes=4, embedding_dim=5, scale=10.0, subcenters=2)
    x = torch.randn(7, 5)
    cosines = torch.nn.functional.normalize(x) @ torch.nn.functional.normalize(arc.weight).T
    assert torch.allclose(arc.logits(x), 10.0 * cosines, atol=1e-5)
    sub_cos = (torch.nn.functional.normalize(x) @ torch.nn.functional.normalize(sub.weight).T).view(7, 4, 2)
    assert torch.allclose(sub.logits(x), 10.0 * sub_cos.amax(2), atol=1e-5)
    for loss in (arc, sub, CosFaceLoss(num_classes=4, embedding_dim=5)):
        assert isinstance(loss, ClassifierLoss) and loss.classifier_trained()
        assert find_classifier(loss) is loss
    rows = arc.weight.detach()[[3, 1, 0]] * 4.0
    assert arc.logits(rows).argmax(1).tolist() == [3, 1, 0]


def test_errors_name_the_fix() -> None:
    for name in ("arcface", "cosface", "subcenter_arcface"):
        with pytest.raises(ConfigError, match="num_classes"):
            build_loss(name)
        with pytest.raises(ConfigError, match="embedding_dim"):
            build_loss(name, num_classes=3)
        loss = build_loss(name, num_classes=3, embedding_dim=4)
        for bad in ([0, 1, 3], [-1, 0, 1]):
            with pytest.raises(InputError, match=r"\[0, 3\)") as err:
                loss(torch.randn(3, 4), torch.tensor(bad))
            assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="radians"):
        ArcFaceLoss(num_classes=3, embedding_dim=4, margin=28.6)  # PML's degrees
    with pytest.raises(ConfigError, match="scale"):
        CosFaceLoss(num_classes=3, embedding_dim=4, scale=0.0)
    with pytest.raises(ConfigError, match="margin"):
        CosFaceLoss(num_classes=3, embedding_dim=4, margin=-0.1)
    with pytest.raises(ConfigError, match="subcenters"):
        SubCenterArcFaceLoss(num_classes=3, embedding_dim=4, subcenters=0)


def test_build_loss_defaults_and_parameters() -> None:
    arc = build_loss("arcface", num_classes=7, embedding_dim=5)
    assert (arc.scale, arc.margin, arc.easy_margin) == (64.0, 0.5, False)
    cosface = build_loss("cosface", num_classes=7, embedding_dim=5)
    assert (cosface.scale, cosface.margin) == (64.0, 0.35)
    sub = build_loss("subcenter_arcface", num_classes=7, embedding_dim=5)
    assert sub.subcenters == 3 and sub.weight.shape == (21, 5)
    for loss in (arc, cosface, sub):
        assert [n for n, _ in loss.named_parameters()] == ["weight"]


def test_drop_non_dominant_keeps_dominant_subcenter_and_flags_outliers() -> None:
    loss = SubCenterArcFaceLoss(num_classes=2, embedding_dim=3, subcenters=3).double()
    e = torch.eye(3, dtype=torch.float64)
    with torch.no_grad():  # class 0: sub-centers e0, e1, e2; class 1: e1, e2, -e0
        loss.weight.copy_(torch.stack([e[0], e[1], e[2], e[1], e[2], -e[0]]))
    x = torch.stack([
        e[0] + 0.1 * e[1], e[0] - 0.1 * e[2], e[0],  # class 0, nearest sub-center 0 (dominant)
        e[1],  # class 0, nearest sub-center 1: 90 degrees from the dominant one -> outlier
        e[2] + 0.2 * e[0], e[2], -e[1] + 0.01 * e[2],  # class 1: sub-center 1 (e2) dominant
    ])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    result = loss.drop_non_dominant(x, labels, threshold_degrees=75, inplace=False)
    assert result.dominant.tolist() == [0, 1]
    assert result.counts.tolist() == [[3, 1, 0], [0, 3, 0]]
    # loop: angle of each sample to its class's dominant sub-center
    dominant_rows = [loss.weight[0 * 3 + 0], loss.weight[1 * 3 + 1]]
    for i in range(7):
        c = cos(x[i], dominant_rows[int(labels[i])]).item()
        angle = math.degrees(math.acos(max(-1.0, min(1.0, c))))
        assert result.angles_degrees[i].item() == pytest.approx(angle, abs=1e-6)
        assert bool(result.outliers[i]) == (angle > 75)
    assert result.outlier_indices.tolist() == [3, 6]
    assert loss.subcenters == 3 and loss.weight.shape == (6, 3)  # inplace=False: unchanged
    kept = loss.drop_non_dominant(x, labels)  # default: drop in place
    assert loss.subcenters == 1 and loss.weight.shape == (2, 3)
    assert torch.equal(loss.weight.detach(), torch.stack([e[0], e[2]]))
    assert torch.equal(kept.centers, loss.weight.detach())
    # after dropping, it is plain ArcFace on the dominant centers
    plain = ArcFaceLoss(num_classes=2, embedding_dim=3).double()
    with torch.no_grad():
        plain.weight.copy_(loss.weight)
    assert loss(x, labels).item() == pytest.approx(plain(x, labels).item(), rel=1e-12)
    with pytest.raises(ConfigError, match="threshold_degrees"):
        loss.drop_non_dominant(x, labels, threshold_degrees=200)


# --------------------------------------------------------------------------------------------
# pytorch-metric-learning: same formulas (ArcFace margin in DEGREES there), same values


def _pml_pair(name, num_classes, dim, **ours):
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    loss = build_loss(name, num_classes=num_classes, embedding_dim=dim, **ours).double()
    if name == "arcface":
        pml = pml_losses.ArcFaceLoss(num_classes, dim, margin=math.degrees(loss.margin), scale=loss.scale)
    elif name == "cosface":
        pml = pml_losses.CosFaceLoss(num_classes, dim, margin=loss.margin, scale=loss.scale)
    else:
        pml = pml_losses.SubCenterArcFaceLoss(
            num_classes=num_classes, embedding_size=dim, margin=math.degrees(loss.margin),
            scale=loss.scale, sub_centers=loss.subcenters,
        )
    pml = pml.double()
    with torch.no_grad():
        pml.W.copy_(loss.weight.T)  # PML stores D x C (class-major sub-centers, as ours)
    return loss, pml


@pytest.mark.parametrize("name,params", [
    ("arcface", {}), ("arcface", {"margin": 0.3, "scale": 30.0}), ("cosface", {}),
    ("subcenter_arcface", {}), ("subcenter_arcface", {"subcenters": 2, "scale": 16.0}),
])
def test_agrees_with_pml(name, params) -> None:
    torch.manual_seed(7)
    loss, pml = _pml_pair(name, 6, 8, **params)
    x = torch.randn(24, 8, dtype=torch.float64)
    labels = torch.randint(0, 6, (24,))
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    ours, theirs = loss(a, labels), pml(b, labels)
    ours.backward()
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-9)
    assert torch.allclose(a.grad, b.grad, rtol=1e-6, atol=1e-10)
    assert torch.allclose(loss.weight.grad, pml.W.grad.T, rtol=1e-6, atol=1e-10)
    # prediction logits: PML's get_logits are the un-margined scaled cosines too
    assert torch.allclose(loss.logits(x), pml.get_logits(x), rtol=1e-9, atol=1e-9)


def test_subcenter_outliers_agree_with_pml() -> None:
    torch.manual_seed(8)
    loss, pml = _pml_pair("subcenter_arcface", 4, 6)
    x = torch.randn(40, 6, dtype=torch.float64)
    labels = torch.arange(40) % 4
    outliers, centers = pml.get_outliers(x, labels, threshold=75)
    ours = loss.drop_non_dominant(x, labels, threshold_degrees=75, inplace=False)
    assert sorted(outliers.tolist()) == ours.outlier_indices.tolist()
    assert torch.allclose(centers.T, ours.centers)
