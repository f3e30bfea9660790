"""Embedder: shapes, normalisation, pooling against explicit loops, frozen BatchNorm, transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from deepmetric.errors import ConfigError, InputError
from deepmetric.models import AvgPool, GeM, MaxPool, create_embedder


@pytest.fixture(scope="module")
def embedder():
    torch.manual_seed(0)
    return create_embedder("tf_efficientnet_lite0", pretrained=False, embedding_dim=16, image_size=64)


def test_output_shape_and_unit_norm(embedder):
    embedder.eval()
    out = embedder(torch.randn(3, 3, 64, 64))
    assert out.shape == (3, 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    assert embedder.input_size == (3, 64, 64)
    assert embedder.feature_dim == 1280 and embedder.embedding_dim == 16
    assert len(embedder.mean) == 3 and len(embedder.std) == 3


def test_no_head_and_no_normalisation_give_raw_pooled_features():
    model = create_embedder("test_efficientnet", pretrained=False, embedding_dim=None, normalize=False, image_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, model.feature_dim) and model.embedding_dim == model.feature_dim
    with torch.no_grad():
        fmap = model.backbone.forward_features(x)
    assert torch.allclose(out, fmap.mean(dim=(2, 3)), atol=1e-6)


def _loop_pool(x, kind, p=3.0, eps=1e-6):
    b, c = x.shape[:2]
    out = torch.empty(b, c, dtype=x.dtype)
    for i in range(b):
        for j in range(c):
            values = [float(v) for v in x[i, j].flatten()]
            if kind == "avg":
                out[i, j] = sum(values) / len(values)
            elif kind == "max":
                out[i, j] = max(values)
            else:
                out[i, j] = (sum(max(v, eps) ** p for v in values) / len(values)) ** (1.0 / p)
    return out


def test_poolings_match_explicit_loops():
    torch.manual_seed(1)
    x = torch.rand(2, 3, 4, 5, dtype=torch.float64) - 0.2
    assert torch.allclose(AvgPool()(x), _loop_pool(x, "avg"))
    assert torch.allclose(MaxPool()(x), _loop_pool(x, "max"))
    gem = GeM(p=2.5).double()
    assert torch.allclose(gem(x), _loop_pool(x, "gem", p=2.5))
    # token sequences (B, N, C) pool over N
    tokens = x.flatten(2).transpose(1, 2)
    assert torch.allclose(AvgPool()(tokens), _loop_pool(x, "avg"))
    with pytest.raises(InputError, match="feature map"):
        AvgPool()(torch.zeros(2, 3))


def test_gem_limits_and_gradient():
    x = torch.rand(2, 4, 3, 3, dtype=torch.float64) + 0.1
    assert torch.allclose(GeM(p=1.0).double()(x), x.mean(dim=(2, 3)))
    assert torch.allclose(GeM(p=200.0).double()(x), x.amax(dim=(2, 3)), rtol=2e-2)
    gem = GeM(p=3.0).double()
    assert torch.autograd.gradcheck(lambda inp, p: ((inp.flatten(2) ** p).mean(-1)) ** (1 / p),
                                    (x.clone().requires_grad_(), torch.tensor(3.0, dtype=torch.float64, requires_grad=True)))
    out = gem(x.clone().requires_grad_())
    out.sum().backward()
    assert gem.p.grad is not None and torch.isfinite(gem.p.grad) and gem.p.grad != 0
    # our module's gradient equals the explicit formula's
    xr = x.clone().requires_grad_()
    pr = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    ((xr.flatten(2) ** pr).mean(-1) ** (1 / pr)).sum().backward()
    assert torch.allclose(gem.p.grad, pr.grad)
    with pytest.raises(ConfigError):
        GeM(p=0.5)


def test_gem_embedder_learns_p():
    model = create_embedder("test_efficientnet", pretrained=False, pooling="gem", embedding_dim=8, image_size=32)
    model(torch.rand(4, 3, 32, 32)).pow(2).sum(dim=0)[0].backward()
    assert model.pool.p.grad is not None and model.pool.p.grad != 0
    assert any(p is model.pool.p for p in model.head_parameters())


def test_unknown_pooling_is_a_config_error():
    with pytest.raises(ConfigError, match="Did you mean 'gem'"):
        create_embedder(pretrained=False, pooling="gen", image_size=32)


def test_freeze_bn_keeps_running_statistics_in_train_mode():
    torch.manual_seed(0)
    # timm's tiny test network: same BatchNorm layers, a fraction of the cost
    model = create_embedder("test_efficientnet", pretrained=False, embedding_dim=8, image_size=32, freeze_bn=True).train()
    bn = model.backbone.bn1
    before = (bn.running_mean.clone(), bn.running_var.clone())
    model(torch.randn(4, 3, 32, 32) * 3 + 1).sum().backward()
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert bn.weight.grad is not None  # affine parameters still learn
    assert model.head.linear.training  # the rest is in train mode

    model.set_freeze_bn(False)
    model(torch.randn(4, 3, 32, 32) * 3 + 1)
    assert not torch.equal(bn.running_mean, before[0])


def test_parameter_groups_partition_the_parameters(embedder):
    backbone = {id(p) for p in embedder.backbone_parameters()}
    head = {id(p) for p in embedder.head_parameters()}
    assert backbone and head and not backbone & head
    assert backbone | head == {id(p) for p in embedder.parameters()}


@pytest.mark.parametrize("mode,size", [("L", (50, 70)), ("RGB", (90, 40)), ("1", (33, 33))])
def test_transforms_produce_the_declared_input_size(embedder, mode, size):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, size[::-1] + ((3,) if mode == "RGB" else ()),
                                                                dtype=np.uint8)).convert(mode)
    for transform in (embedder.train_transform(), embedder.eval_transform()):
        out = transform(image)
        assert tuple(out.shape) == embedder.input_size and out.dtype == torch.float32


def test_eval_transform_normalises_with_the_declared_mean_and_std(embedder):
    out = embedder.eval_transform()(Image.new("RGB", (80, 80), (255, 0, 128)))
    expected = [(v / 255 - m) / s for v, m, s in zip((255, 0, 128), embedder.mean, embedder.std)]
    assert torch.allclose(out.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-2)


def test_one_channel_embedder_and_transform():
    model = create_embedder("test_efficientnet", pretrained=False, in_chans=1, image_size=32, embedding_dim=4).eval()
    image = Image.new("RGB", (40, 40), (10, 200, 30))
    x = model.eval_transform()(image)
    assert x.shape == (1, 32, 32)
    assert model(x[None]).shape == (1, 4)
