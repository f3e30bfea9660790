"""Normalised softmax and Hybrid (metric + cross-entropy) against explicit loops."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deepmetric.errors import ConfigError, InputError
from deepmetric.losses import build_loss
from deepmetric.losses.classification import Hybrid, NormalizedSoftmaxLoss, predict
from deepmetric.losses.multi_similarity import MultiSimilarityLoss
from deepmetric.losses.proxy_anchor import ProxyAnchorLoss


def loop_normalized_softmax(x, w, labels, temperature):
    total = x.new_zeros(())
    for i in range(x.shape[0]):
        cos = [(x[i] * w[c]).sum() / (x[i].norm() * w[c].norm()) for c in range(w.shape[0])]
        logits = [c / temperature for c in cos]
        denom = sum(torch.exp(z) for z in logits)
        total = total - torch.log(torch.exp(logits[int(labels[i])]) / denom)
    return total / x.shape[0]


def loop_cross_entropy(logits, labels):
    total = logits.new_zeros(())
    for i in range(logits.shape[0]):
        row = logits[i]
        total = total - (row[int(labels[i])] - torch.log(torch.exp(row).sum()))
    return total / logits.shape[0]


def data(n=7, dim=4, num_classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2][:n])  # class 3 never appears
    return x, labels


def test_normalized_softmax_value_and_gradients_match_loop() -> None:
    torch.manual_seed(0)
    loss = NormalizedSoftmaxLoss(num_classes=4, embedding_dim=4, temperature=0.5).double()
    x, labels = data()
    a = x.clone().requires_grad_(True)
    out = loss(a, labels)
    out.backward()
    w = loss.weight.detach().clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    ref = loop_normalized_softmax(b, w, labels, 0.5)
    ref.backward()
    assert out.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(a.grad, b.grad, rtol=1e-8, atol=1e-12)
    assert torch.allclose(loss.weight.grad, w.grad, rtol=1e-8, atol=1e-12)


def test_normalized_softmax_gradcheck_and_scale_invariance() -> None:
    torch.manual_seed(1)
    loss = NormalizedSoftmaxLoss(num_classes=3, embedding_dim=4, temperature=0.3).double()
    x, labels = data(n=5, seed=1)
    labels = labels.clamp_max(2)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (x,))
    # cosine logits: rescaling embeddings or weights changes nothing
    with torch.no_grad():
        base = loss(x, labels)
        assert loss(3.0 * x, labels).item() == pytest.approx(base.item(), rel=1e-12)
        loss.weight.mul_(7.0)
        assert loss(x, labels).item() == pytest.approx(base.item(), rel=1e-12)


def test_normalized_softmax_parameters_predict_and_errors() -> None:
    loss = build_loss("normalized_softmax", num_classes=4, embedding_dim=4, temperature=0.1)
    assert isinstance(loss, NormalizedSoftmaxLoss) and loss.temperature == 0.1
    assert [n for n, _ in loss.named_parameters()] == ["weight"]
    # row norms start near 1
    assert loss.weight.norm(dim=1).mean().item() == pytest.approx(1.0, abs=0.5)
    x = loss.weight.detach()[[2, 0, 3]] * 5.0  # each row points at one class weight
    assert predict(loss, x).tolist() == [2, 0, 3]
    out = loss(torch.zeros(2, 4), torch.tensor([0, 1]))  # zero embeddings: uniform softmax
    assert out.item() == pytest.approx(math.log(4), rel=1e-6)
    with pytest.raises(InputError, match="num_classes"):
        loss(torch.randn(2, 4), torch.tensor([0, 4]))
    with pytest.raises(ConfigError, match="temperature"):
        NormalizedSoftmaxLoss(num_classes=4, embedding_dim=4, temperature=0.0)
    with pytest.raises(ConfigError, match="embedding_dim"):
        NormalizedSoftmaxLoss(num_classes=4, embedding_dim=0)


def test_hybrid_value_and_gradients_match_sum_of_parts() -> None:
    torch.manual_seed(2)
    metric = MultiSimilarityLoss(mining=False)
    hybrid = Hybrid(metric, ce_weight=0.7, num_classes=4, embedding_dim=4).double()
    x, labels = data(seed=2)
    a = x.clone().requires_grad_(True)
    out = hybrid(a, labels)
    out.backward()
    weight = hybrid.classifier.weight.detach().clone().requires_grad_(True)
    bias = hybrid.classifier.bias.detach().clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    ref = metric(b, labels) + 0.7 * loop_cross_entropy(b @ weight.T + bias, labels)
    ref.backward()
    assert out.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(a.grad, b.grad, rtol=1e-8, atol=1e-12)
    assert torch.allclose(hybrid.classifier.weight.grad, weight.grad, rtol=1e-8, atol=1e-12)
    assert torch.allclose(hybrid.classifier.bias.grad, bias.grad, rtol=1e-8, atol=1e-12)
    terms = hybrid.terms(x, labels)
    assert set(terms) == {"metric", "ce"}


def test_hybrid_owns_metric_loss_and_classifier_parameters() -> None:
    proxy = ProxyAnchorLoss(num_classes=4, embedding_dim=4)
    head = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))
    hybrid = Hybrid(proxy, classifier=head)
    params = list(hybrid.parameters())
    assert params[0] is proxy.proxies
    assert {id(p) for p in params} == {id(proxy.proxies)} | {id(p) for p in head.parameters()}
    x, labels = torch.randn(7, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3])
    hybrid(x, labels).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    assert hybrid.logits(x).shape == (7, 4)
    assert predict(hybrid, x).tolist() == head(x).argmax(1).tolist()


def test_hybrid_zero_ce_weight_is_the_metric_loss_alone() -> None:
    metric = MultiSimilarityLoss()
    hybrid = Hybrid(metric, ce_weight=0.0, num_classes=3, embedding_dim=4)
    x, labels = data(n=6, seed=3)
    x = x.float()
    assert hybrid(x, labels).item() == metric(x, labels).item()


def test_hybrid_errors_name_the_fix() -> None:
    with pytest.raises(ConfigError, match="num_classes and embedding_dim"):
        Hybrid(MultiSimilarityLoss())
    with pytest.raises(ConfigError, match="num_classes and embedding_dim"):
        Hybrid(MultiSimilarityLoss(), num_classes=3)
    with pytest.raises(ConfigError, match="ce_weight"):
        Hybrid(MultiSimilarityLoss(), ce_weight=-1.0, num_classes=3, embedding_dim=4)
    with pytest.raises(ConfigError, match="nn.Module"):
        Hybrid(lambda e, y: e.sum(), num_classes=3, embedding_dim=4)  # type: ignore[arg-type]
    hybrid = Hybrid(MultiSimilarityLoss(), num_classes=3, embedding_dim=4)
    with pytest.raises(InputError, match="num_classes"):
        hybrid(torch.randn(3, 4), torch.tensor([0, 1, 5]))
    bad = Hybrid(MultiSimilarityLoss(), classifier=nn.Flatten(0))
    with pytest.raises(InputError, match="classifier"):
        bad(torch.randn(3, 4), torch.tensor([0, 1, 1]))
    with pytest.raises(ConfigError, match="logits"):
        predict(MultiSimilarityLoss(), torch.randn(2, 4))  # type: ignore[arg-type]
