"""ProxyNCA++ (Teh et al., ECCV 2020) against an explicit loop on squared distances, and PML."""

from __future__ import annotations

import math

import pytest
import torch

from deepmetric.errors import ConfigError, InputError
from deepmetric.functional.proxy_nca import proxy_nca_pp_loss
from deepmetric.losses import build_loss
from deepmetric.losses.contracts import ClassifierLoss, find_classifier
from deepmetric.losses.proxy_nca import ProxyNCAPPLoss


def loop_loss(x, proxies, labels, temperature):
    """Slow reference: squared Euclidean distances of the normalised vectors, one proxy at a
    time, the positive proxy in the denominator."""
    total = x.new_zeros(())
    for i in range(x.shape[0]):
        xi = x[i] / torch.sqrt((x[i] * x[i]).sum())
        dists = []
        for c in range(proxies.shape[0]):
            pc = proxies[c] / torch.sqrt((proxies[c] * proxies[c]).sum())
            dists.append(((xi - pc) ** 2).sum())
        denom = sum(torch.exp(-d / temperature) for d in dists)
        total = total - torch.log(torch.exp(-dists[int(labels[i])] / temperature) / denom)
    return total / x.shape[0]


def make(seed=0, num_classes=5, dim=4, temperature=1 / 9):
    torch.manual_seed(seed)
    loss = ProxyNCAPPLoss(num_classes=num_classes, embedding_dim=dim, temperature=temperature).double()
    labels = torch.tensor([0, 0, 1, 1, 1, 3, 3, 2])  # class 4 has no sample
    x = torch.randn(len(labels), dim, dtype=torch.float64)
    return loss, x, labels


@pytest.mark.parametrize("temperature", [1 / 9, 0.5])
def test_value_and_gradients_match_loop(temperature: float) -> None:
    loss, x, labels = make(temperature=temperature)
    a = x.clone().requires_grad_(True)
    out = loss(a, labels)
    out.backward()
    p = loss.proxies.detach().clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    ref = loop_loss(b, p, labels, temperature)
    ref.backward()
    assert out.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(a.grad, b.grad, rtol=1e-7, atol=1e-11)
    assert torch.allclose(loss.proxies.grad, p.grad, rtol=1e-7, atol=1e-11)


def test_gradcheck_float64() -> None:
    _, x, labels = make(1)
    x.requires_grad_(True)
    proxies = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e, p: proxy_nca_pp_loss(e, p, labels, 1 / 9), (x, proxies))


def test_degenerate_batches_and_zero_vectors() -> None:
    loss = ProxyNCAPPLoss(num_classes=3, embedding_dim=4)
    cases = {
        "one class": (torch.randn(4, 4), torch.zeros(4, dtype=torch.long)),
        "duplicates": (torch.ones(4, 4), torch.tensor([0, 0, 1, 2])),
        "single sample": (torch.randn(1, 4), torch.tensor([2])),
        "on the proxies": (loss.proxies.detach().clone(), torch.tensor([0, 1, 2])),
    }
    for what, (x, labels) in cases.items():
        x = x.clone().requires_grad_(True)
        loss.zero_grad()
        out = loss(x, labels)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(x.grad).all(), what
        assert torch.isfinite(loss.proxies.grad).all(), what
    # a zero embedding: uniform softmax over the proxies, zero gradient
    z = torch.zeros(2, 4, requires_grad=True)
    out = loss(z, torch.tensor([0, 1]))
    out.backward()
    assert out.item() == pytest.approx(math.log(3), rel=1e-6)
    assert torch.equal(z.grad, torch.zeros_like(z))
    empty = loss(torch.zeros(0, 4, requires_grad=True), torch.zeros(0, dtype=torch.long))
    assert empty.item() == 0.0


def test_low_temperature_is_stable() -> None:
    loss = ProxyNCAPPLoss(num_classes=4, embedding_dim=4, temperature=1e-3)
    x = torch.randn(8, 4, requires_grad=True)
    out = loss(x, torch.arange(8) % 4)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all()


def test_logits_classifier_contract_and_build() -> None:
    loss = build_loss("proxy_nca_pp", num_classes=6, embedding_dim=5)
    assert isinstance(loss, ProxyNCAPPLoss) and loss.temperature == pytest.approx(1 / 9)
    assert [n for n, _ in loss.named_parameters()] == ["proxies"] and loss.proxies.shape == (6, 5)
    assert isinstance(loss, ClassifierLoss) and loss.classifier_trained() and find_classifier(loss) is loss
    x = torch.randn(3, 5)
    # logits = -||x^ - p^||^2 / T
    xn = torch.nn.functional.normalize(x)
    pn = torch.nn.functional.normalize(loss.proxies.detach())
    expected = -torch.cdist(xn, pn) ** 2 * 9
    assert torch.allclose(loss.logits(x), expected, atol=1e-4)
    rows = loss.proxies.detach()[[4, 2, 0]] * 3.0
    assert loss.logits(rows).argmax(1).tolist() == [4, 2, 0]


def test_errors_name_the_fix() -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        build_loss("proxy_nca_pp")
    with pytest.raises(ConfigError, match="embedding_dim"):
        build_loss("proxy_nca_pp", num_classes=3)
    with pytest.raises(ConfigError, match="temperature"):
        ProxyNCAPPLoss(num_classes=3, embedding_dim=4, temperature=0.0)
    loss = ProxyNCAPPLoss(num_classes=3, embedding_dim=4)
    with pytest.raises(InputError, match=r"\[0, 3\)") as err:
        loss(torch.randn(2, 4), torch.tensor([0, 3]))
    assert "\n" not in str(err.value)


def test_agrees_with_pml_proxy_nca_with_softmax_scale_one_over_t() -> None:
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    loss, x, labels = make(2)
    pml = pml_losses.ProxyNCALoss(num_classes=5, embedding_size=4, softmax_scale=9).double()
    with torch.no_grad():
        pml.proxies.copy_(loss.proxies)
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    ours, theirs = loss(a, labels), pml(b, labels)
    ours.backward()
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-9)
    assert torch.allclose(a.grad, b.grad, rtol=1e-6, atol=1e-10)
    assert torch.allclose(loss.proxies.grad, pml.proxies.grad, rtol=1e-6, atol=1e-10)
