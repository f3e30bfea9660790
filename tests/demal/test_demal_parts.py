"""DeMAL-CNN parts: mixed attention, triplet sampler, hybrid loss, medical metrics, loaders, Grad-CAM."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, balanced_accuracy_score, roc_auc_score

from deepmetric.data.skin_lesions import binarize, isic2016, isic2017, ph2
from deepmetric.data.triplet_sampler import TripletBatchSampler
from deepmetric.errors import DataError, InputError
from deepmetric.evaluation.heatmaps import grad_cam
from deepmetric.evaluation.medical import diagnostic_metrics, roc_curves
from deepmetric.losses.triplet_hybrid import TripletHybridLoss
from deepmetric.models.attention import ChannelAttention, MixedAttention, SpatialAttention, insert_mixed_attention

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def test_mixed_attention_shapes_and_maps():
    block = MixedAttention(32, reduction=16, kernel_size=7)
    x = torch.randn(2, 32, 9, 11)
    y = block(x)
    assert y.shape == x.shape and block.last_spatial_map.shape == (2, 1, 9, 11)
    torch.testing.assert_close(y, x)  # a freshly inserted block is the identity
    torch.nn.init.normal_(block.spatial.conv.weight, std=0.05)
    block(x)
    assert ((block.last_spatial_map > 0) & (block.last_spatial_map < 2)).all()
    with pytest.raises(ValueError, match="odd"):
        SpatialAttention(4)


def test_channel_attention_learns_to_suppress_a_channel():
    torch.manual_seed(0)
    att = ChannelAttention(4, reduction=2)
    opt = torch.optim.Adam(att.parameters(), lr=0.05)
    keep = torch.tensor([1.0, 1.0, 0.0, 1.0])[None, :, None, None]
    for _ in range(300):
        x = torch.randn(16, 4, 5, 5)
        loss = ((att(x) - x * keep) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = att.weights(torch.randn(64, 4, 5, 5)).mean(0)
    assert w[2] < 0.1 and (w[[0, 1, 3]] > 0.9).all()


def test_spatial_attention_learns_to_suppress_a_region():
    torch.manual_seed(0)
    att = SpatialAttention(3)
    opt = torch.optim.Adam(att.parameters(), lr=0.05)
    for _ in range(300):
        x = torch.randn(16, 3, 8, 8)
        bad = (x.mean(1, keepdim=True) < 0).float()  # suppress positions whose channel mean is negative
        loss = ((att(x) - x * (1 - bad)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.randn(32, 3, 8, 8)
    w, bad = att.weights(x), x.mean(1, keepdim=True) < -0.3
    good = x.mean(1, keepdim=True) > 0.3
    assert w[bad].mean() < 0.2 and w[good].mean() > 0.8


def test_insert_attention_into_timm_cnn():
    import timm

    net = timm.create_model("resnet18", pretrained=False, num_classes=0)
    blocks = insert_mixed_attention(net, stages=(-2, -1), reduction=16)
    assert len(blocks) == 2 and [b.channel.mlp[0].in_features for b in blocks] == [256, 512]
    out = net(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 512) and all(b.last_spatial_map is not None for b in blocks)


def test_triplet_sampler_valid_and_balanced():
    labels = [0] * 40 + [1] * 40 + [2] * 6  # class 2 (melanoma) is the minority
    sampler = TripletBatchSampler(labels, triplets_per_batch=6, batches_per_epoch=30, seed=1)
    anchor_counts = Counter()
    for batch in sampler:
        a, p, n = batch[:6], batch[6:12], batch[12:]
        assert all(labels[i] == labels[j] and i != j for i, j in zip(a, p))
        assert all(labels[i] != labels[k] for i, k in zip(a, n))
        assert 2 in {labels[i] for i in batch}
        anchor_counts.update(labels[i] for i in a)
    assert anchor_counts[0] == anchor_counts[1] == anchor_counts[2] == 60
    assert list(TripletBatchSampler(labels, 6, 3, seed=1)) == list(TripletBatchSampler(labels, 6, 3, seed=1))
    with pytest.raises(DataError, match="single sample"):
        TripletBatchSampler([0, 0, 1], 2)
    with pytest.raises(DataError, match="two classes"):
        TripletBatchSampler([0, 0, 0], 2)


def test_triplet_hybrid_loss_against_loop():
    torch.manual_seed(0)
    loss = TripletHybridLoss(num_classes=3, embedding_dim=4, margin=0.2, ce_weight=0.5).double()
    emb = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 1, 2, 0])
    value = loss(emb, labels)
    ref = 0.0
    for i in range(3):
        d_ap = torch.linalg.norm(emb[i] - emb[3 + i])
        d_an = torch.linalg.norm(emb[i] - emb[6 + i])
        ref = ref + torch.clamp(d_ap - d_an + 0.2, min=0) / 3
    logits = loss.classifier(emb)
    ces = [torch.nn.functional.cross_entropy(logits[b * 3:(b + 1) * 3], labels[b * 3:(b + 1) * 3]) for b in range(3)]
    ref = ref + 0.5 * sum(ces) / 3
    assert value.item() == pytest.approx(ref.item(), rel=1e-9)
    g1 = torch.autograd.grad(value, emb, retain_graph=True)[0]
    g2 = torch.autograd.grad(ref, emb)[0]
    torch.testing.assert_close(g1, g2)
    with pytest.raises(InputError, match="TripletBatchSampler"):
        loss(emb, torch.tensor([0, 1, 2, 1, 1, 2, 1, 2, 0]))


def test_medical_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    scores = rng.dirichlet(np.ones(3), 60)
    m = diagnostic_metrics(y, scores, ["common", "atypical", "melanoma"], positive_class=2)
    pred = scores.argmax(1)
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["auc"] == pytest.approx(roc_auc_score(y == 2, scores[:, 2]))
    assert m["average_precision"] == pytest.approx(average_precision_score(y == 2, scores[:, 2]))
    tp = np.sum((y == 2) & (pred == 2))
    assert m["sensitivity"] == pytest.approx(tp / np.sum(y == 2))
    assert m["specificity"] == pytest.approx(np.sum((y != 2) & (pred != 2)) / np.sum(y != 2))
    assert m["macro/auc"] == pytest.approx(roc_auc_score(y, scores, multi_class="ovr", average="macro"))
    assert set(roc_curves(y, scores)) == {0, 1, 2}
    with pytest.raises(InputError, match="N = 60"):
        diagnostic_metrics(y, scores[:5])


def _jpg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path)


def test_isic_and_ph2_loaders(tmp_path):
    for i in range(3):
        _jpg(tmp_path / "img" / f"ISIC_{i:07d}.jpg")
    (tmp_path / "gt16.csv").write_text("ISIC_0000000,benign\nISIC_0000001,malignant\nISIC_0000002,benign\n")
    d16 = isic2016(tmp_path / "gt16.csv", tmp_path / "img")
    assert d16.labels == [0, 1, 0] and d16.paths[1].name == "ISIC_0000001.jpg"
    (tmp_path / "gt17.csv").write_text(
        "image_id,melanoma,seborrheic_keratosis\nISIC_0000000,0.0,0.0\nISIC_0000001,1.0,0.0\nISIC_0000002,0.0,1.0\n"
    )
    d17 = isic2017(tmp_path / "gt17.csv", tmp_path / "img")
    assert d17.labels == [0, 2, 1] and d17.class_names[2] == "melanoma"
    (tmp_path / "bad.csv").write_text("ISIC_0000009,benign\n")
    with pytest.raises(DataError, match="ISIC_0000009"):
        isic2016(tmp_path / "bad.csv", tmp_path / "img")
    # original PH2 release layout
    rel = tmp_path / "PH2Dataset"
    for name in ["IMD003", "IMD058"]:
        _jpg(rel / "PH2 Dataset images" / name / f"{name}_Dermoscopic_Image" / f"{name}.bmp")
    (rel / "PH2_dataset.txt").write_text(
        "|| Name || Histological Diagnosis || Clinical Diagnosis || Asymmetry ||\n"
        "|| IMD003 ||                        ||         0          ||     0     ||\n"
        "|| IMD058 ||    Melanoma            ||         2          ||     2     ||\n"
    )
    d = ph2(tmp_path)
    assert d.labels == [0, 2] and binarize(d).labels == [0, 1]


@pytest.mark.skipif(not (SHARED / "ph2").is_dir(), reason="../shared/data/ph2 not available")
def test_ph2_shared_layout():
    d = ph2(SHARED / "ph2")
    assert Counter(d.labels) == {0: 80, 1: 80, 2: 40}


def test_grad_cam_finds_the_informative_region():
    # a fixed "model": class score = sum of channel 0 over the right half of the map
    conv = torch.nn.Conv2d(1, 1, 1, bias=False)
    torch.nn.init.ones_(conv.weight)
    model = torch.nn.Sequential(conv)

    def score_fn(maps):
        right = maps[:, :, :, 4:].sum(dim=(1, 2, 3))
        return torch.stack([-right, right], dim=1)

    images = torch.rand(2, 1, 8, 8)
    cam = grad_cam(model, conv, images, score_fn, target=torch.tensor([1, 1]))
    assert cam.shape == (2, 8, 8) and float(cam.max()) == pytest.approx(1.0)
    # gradient is uniform, so the map follows the activations (all positive here)
    torch.testing.assert_close(cam, images[:, 0] / images[:, 0].flatten(1).amax(1)[:, None, None])


def test_create_demal_parameter_groups_cover_the_model_once():
    from deepmetric.models.demal import create_demal

    net = create_demal(backbone="tf_efficientnet_lite0", pretrained=False, embedding_dim=16, image_size=64)
    groups = [list(net.backbone_parameters()), list(net.head_parameters())]
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))
    attention_ids = {id(p) for p in net.attention.parameters()}
    assert attention_ids and attention_ids <= {id(p) for p in groups[1]}
    emb = net.eval()(torch.randn(2, 3, 64, 64))
    assert emb.shape == (2, 16) and len(net.attention_maps()) == 2
    plain = create_demal(backbone="tf_efficientnet_lite0", pretrained=False, embedding_dim=16, use_attention=False)
    assert len(plain.attention) == 0
