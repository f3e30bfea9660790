"""Proxy-Anchor loss against an explicit per-proxy loop (Kim et al., CVPR 2020)."""

from __future__ import annotations

import math

import pytest
import torch

from deepmetric.errors import ConfigError, InputError
from deepmetric.functional.distances import cosine_similarity_matrix
from deepmetric.functional.proxy_anchor import proxy_anchor_loss
from deepmetric.losses import build_loss
from deepmetric.losses.proxy_anchor import ProxyAnchorLoss


def loop_loss(x, proxies, labels, margin=0.1, alpha=32.0):
    """Slow reference: one proxy at a time, sums written out sample by sample."""
    def cos(u, v):
        return (u * v).sum() / torch.sqrt((u * u).sum() * (v * v).sum())

    num_classes, n = proxies.shape[0], x.shape[0]
    pos_terms, neg_terms = [], []
    for p in range(num_classes):
        pos = [i for i in range(n) if labels[i] == p]
        neg = [i for i in range(n) if labels[i] != p]
        if pos:
            acc = sum(torch.exp(-alpha * (cos(x[i], proxies[p]) - margin)) for i in pos)
            pos_terms.append(torch.log(1 + acc))
        acc = sum((torch.exp(alpha * (cos(x[i], proxies[p]) + margin)) for i in neg), x.new_zeros(()))
        neg_terms.append(torch.log(1 + acc))
    return sum(pos_terms) / len(pos_terms) + sum(neg_terms) / num_classes


def make(seed=0, num_classes=5, dim=4):
    torch.manual_seed(seed)
    loss = ProxyAnchorLoss(num_classes=num_classes, embedding_dim=dim, alpha=8.0).double()
    labels = torch.tensor([0, 0, 0, 1, 1, 3, 3, 3])  # classes 2 and 4 have no sample
    x = torch.randn(len(labels), dim, dtype=torch.float64)
    return loss, x, labels


@pytest.mark.parametrize("seed", [0, 1])
def test_value_and_gradients_match_loop(seed: int) -> None:
    loss, x, labels = make(seed)
    a = x.clone().requires_grad_(True)
    ours = loss(a, labels)
    ours.backward()
    p = loss.proxies.detach().clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    ref = loop_loss(b, p, labels, alpha=8.0)
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(a.grad, b.grad, rtol=1e-8, atol=1e-12)
    assert torch.allclose(loss.proxies.grad, p.grad, rtol=1e-8, atol=1e-12)


def test_proxies_are_parameters_and_learn() -> None:
    loss, x, labels = make(2)
    names = [n for n, _ in loss.named_parameters()]
    assert names == ["proxies"] and loss.proxies.shape == (5, 4)
    opt = torch.optim.SGD(loss.parameters(), lr=0.5)
    before = loss(x, labels).item()
    for _ in range(20):
        opt.zero_grad()
        loss(x, labels).backward()
        opt.step()
    assert loss(x, labels).item() < before


def test_gradcheck_float64() -> None:
    _, x, labels = make(3)
    proxies = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    x.requires_grad_(True)

    def f(e, p):
        return proxy_anchor_loss(cosine_similarity_matrix(e, p), labels, margin=0.1, alpha=4.0)

    assert torch.autograd.gradcheck(f, (x, proxies))


def test_one_class_batch_and_extreme_alpha_are_finite() -> None:
    torch.manual_seed(4)
    loss = ProxyAnchorLoss(num_classes=3, embedding_dim=4, alpha=1e4).double()
    x = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.zeros(4, dtype=torch.long)
    out = loss(x, labels)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all()
    assert torch.isfinite(loss.proxies.grad).all()
    # proxy 0 has no negative sample: its negative term is 0; the (overflow-prone) loop agrees
    # at a moderate alpha
    moderate = proxy_anchor_loss(cosine_similarity_matrix(x, loss.proxies), labels, alpha=8.0)
    ref = loop_loss(x.detach(), loss.proxies.detach(), labels, alpha=8.0)
    assert moderate.item() == pytest.approx(ref.item(), rel=1e-10)


def test_duplicate_embeddings_and_zero_proxy_finite() -> None:
    loss = ProxyAnchorLoss(num_classes=2, embedding_dim=3)
    with torch.no_grad():
        loss.proxies[1] = 0.0
    x = torch.tensor([[1.0, 0.0, 0.0]] * 3, requires_grad=True)
    out = loss(x, torch.tensor([0, 1, 1]))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all()


def test_kaiming_fan_out_init() -> None:
    torch.manual_seed(5)
    loss = ProxyAnchorLoss(num_classes=400, embedding_dim=256)
    assert loss.proxies.std().item() == pytest.approx(math.sqrt(2.0 / 400), rel=0.05)


def test_bad_labels_and_sizes() -> None:
    loss = ProxyAnchorLoss(num_classes=3, embedding_dim=4)
    x = torch.randn(3, 4)
    with pytest.raises(InputError, match="num_classes"):
        loss(x, torch.tensor([0, 1, 3]))
    with pytest.raises(InputError, match="remap"):
        loss(x, torch.tensor([-1, 1, 2]))
    with pytest.raises(ConfigError, match="num_classes"):
        ProxyAnchorLoss(num_classes=0, embedding_dim=4)
    with pytest.raises(ConfigError, match="alpha"):
        ProxyAnchorLoss(num_classes=3, embedding_dim=4, alpha=-1.0)


def test_build_loss() -> None:
    loss = build_loss("proxy_anchor", num_classes=7, embedding_dim=5, margin=0.2, alpha=16.0)
    assert isinstance(loss, ProxyAnchorLoss) and loss.proxies.shape == (7, 5)
    assert loss.margin == 0.2 and loss.alpha == 16.0
    assert loss.logits(torch.randn(2, 5)).shape == (2, 7)
