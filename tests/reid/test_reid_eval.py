"""Re-ID CMC/mAP with same-camera exclusion, k-reciprocal re-ranking, temporal pooling, the tracklet model."""

import math

import numpy as np
import pytest
import torch

from deepmetric.errors import ConfigError, InputError
from deepmetric.evaluation.reid import evaluate_reid, k_reciprocal_rerank
from deepmetric.models.contracts import EMBEDDING, MultiOutputModel, embedding_of
from deepmetric.models.temporal import TemporalPooling, TrackletModel, create_tracklet_model


def test_hand_made_example_excludes_same_camera_matches() -> None:
    # one query: identity 1, camera 0. Gallery sorted by distance:
    # g0: id 1 cam 0 (same id + same cam -> excluded), g1: id 2 cam 1, g2: id 1 cam 1 (match),
    # g3: id -1 (junk, excluded), g4: id 3 cam 0, g5: id 1 cam 2 (match)
    dist = np.array([[0.1, 0.2, 0.3, 0.35, 0.4, 0.5]])
    res = evaluate_reid(dist, [1], [1, 2, 1, -1, 3, 1], [0], [0, 1, 1, 0, 0, 2], ranks=(1, 2, 5))
    # valid ranking: g1 (miss), g2 (hit, rank 2), g4 (miss), g5 (hit, rank 4)
    assert res["cmc@1"] == 0.0 and res["cmc@2"] == 1.0 and res["cmc@5"] == 1.0
    assert res["map"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert res["n_queries_without_match"] == 0


def reference_reid(dist, qi, gi, qc, gc, ranks):
    cmc = {k: 0 for k in ranks}
    aps = []
    for q in range(dist.shape[0]):
        items = sorted(range(dist.shape[1]), key=lambda j: (dist[q, j], j))
        kept = [j for j in items if not (gi[j] == qi[q] and gc[j] == qc[q]) and gi[j] != -1]
        hits = [r for r, j in enumerate(kept, start=1) if gi[j] == qi[q]]
        if not hits:
            continue
        for k in ranks:
            cmc[k] += hits[0] <= k
        aps.append(sum((n + 1) / r for n, r in enumerate(hits)) / len(hits))
    return {f"cmc@{k}": cmc[k] / len(aps) for k in ranks}, float(np.mean(aps)), dist.shape[0] - len(aps)


def test_random_example_against_explicit_loop() -> None:
    rng = np.random.default_rng(0)
    dist = rng.integers(0, 5, size=(15, 40)).astype(float)  # many ties
    qi, gi = rng.integers(0, 6, 15), rng.integers(-1, 6, 40)
    qc, gc = rng.integers(0, 3, 15), rng.integers(0, 3, 40)
    res = evaluate_reid(dist, qi, gi, qc, gc, ranks=(1, 5, 10))
    cmc, m_ap, skipped = reference_reid(dist, qi, gi, qc, gc, (1, 5, 10))
    for key, value in cmc.items():
        assert res[key] == pytest.approx(value)
    assert res["map"] == pytest.approx(m_ap) and res["n_queries_without_match"] == skipped


def test_errors() -> None:
    with pytest.raises(InputError, match="one entry per item"):
        evaluate_reid(np.zeros((2, 3)), [1, 2], [1, 2], [0, 0], [0, 1, 1])
    with pytest.raises(InputError, match="NaN"):
        evaluate_reid(np.full((1, 2), np.nan), [1], [1, 2], [0], [1, 1])
    with pytest.raises(InputError, match="no query has a correct match"):
        evaluate_reid(np.zeros((1, 2)), [1], [1, 2], [0], [0, 1])


def reference_rerank(q, g, k1, k2, lam):
    x = torch.cat([q, g]).double().numpy()
    n, nq = len(x), len(q)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    d = d / d.max(axis=1, keepdims=True)
    order = [sorted(range(n), key=lambda j: (d[i, j], j)) for i in range(n)]

    def knn(i, k):
        return set(order[i][: k + 1])

    def recip(i, k):
        return {j for j in knn(i, k) if i in knn(j, k)}

    v = np.zeros((n, n))
    for i in range(n):
        r = recip(i, k1)
        exp = set(r)
        for j in r:
            c = recip(j, int(round(k1 / 2)))
            if len(c & r) > 2 / 3 * len(c):
                exp |= c
        for j in exp:
            v[i, j] = math.exp(-d[i, j])
        v[i] /= v[i].sum()
    v = np.stack([v[order[i][:k2]].mean(0) for i in range(n)])
    out = np.zeros((nq, n - nq))
    for a in range(nq):
        for b in range(n - nq):
            mn, mx = np.minimum(v[a], v[nq + b]).sum(), np.maximum(v[a], v[nq + b]).sum()
            out[a, b] = (1 - lam) * (1 - mn / mx) + lam * d[a, nq + b]
    return out


def test_rerank_matches_explicit_reference() -> None:
    torch.manual_seed(0)
    centers = torch.randn(3, 4) * 3
    q = centers[torch.tensor([0, 1, 2])] + 0.5 * torch.randn(3, 4)
    g = centers[torch.arange(12) % 3] + 0.5 * torch.randn(12, 4)
    got = k_reciprocal_rerank(q.double(), g.double(), k1=4, k2=2, lambda_value=0.3)
    np.testing.assert_allclose(got.numpy(), reference_rerank(q, g, 4, 2, 0.3), atol=1e-9)
    plain = k_reciprocal_rerank(q.double(), g.double(), k1=4, k2=2, lambda_value=1.0)
    x = torch.cat([q, g]).double()
    d = torch.cdist(x, x)
    np.testing.assert_allclose(plain.numpy(), (d / d.max(1, keepdim=True).values)[:3, 3:].numpy(), atol=1e-9)


def test_temporal_pooling_properties() -> None:
    torch.manual_seed(0)
    frames = torch.randn(2, 5, 3)
    mean_pool = TemporalPooling(3, "mean")
    perm = torch.randperm(5)
    assert torch.allclose(mean_pool(frames), frames.mean(1), atol=1e-6)
    assert torch.allclose(mean_pool(frames[:, perm]), mean_pool(frames), atol=1e-6)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    assert torch.allclose(mean_pool(frames, mask)[1], frames[1, :2].mean(0), atol=1e-6)
    att = TemporalPooling(3, "attention")
    w = att.frame_weights(frames, mask)
    assert torch.allclose(w.sum(1), torch.ones(2)) and (w[1, 2:] == 0).all()
    scores = att.quality(frames[0]).squeeze(-1)
    assert torch.allclose(att(frames)[0], (torch.softmax(scores, 0)[:, None] * frames[0]).sum(0), atol=1e-6)
    # attention pooling is also order invariant (weights move with their frames)
    assert torch.allclose(att(frames[:, perm]), att(frames), atol=1e-6)


class CountingFrames(torch.nn.Module):
    """A frame model that records how many frames it embedded."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 6))
        self.seen = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen += images.shape[0]
        return torch.nn.functional.normalize(self.layer(images), dim=1)


def test_tracklet_model_outputs_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    model = TrackletModel(CountingFrames(), 6, temporal="attention")
    assert isinstance(model, MultiOutputModel) and model.output_dims == {"frame": 6, "tracklet": 6}
    clips = torch.randn(2, 3, 3, 4, 4)
    out = model(clips)
    assert set(out) == {"frame", "tracklet", EMBEDDING} and out[EMBEDDING] is out["tracklet"]
    assert out["tracklet"].shape == (2, 6) and out["frame"].shape == (2, 3, 6)
    assert torch.equal(embedding_of(model, out), out["tracklet"])
    assert torch.allclose(out["tracklet"].norm(dim=1), torch.ones(2), atol=1e-5)
    (out["tracklet"].sum() + out["frame"].sum()).backward()
    assert model.pool.quality.weight.grad is not None and model.frame_model.layer[1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("temporal", ["mean", "attention"])
def test_masked_batch_embeds_only_valid_frames_and_equals_one_by_one(temporal: str) -> None:
    torch.manual_seed(0)
    model = TrackletModel(CountingFrames(), 6, temporal=temporal).eval()
    if temporal == "attention":
        torch.nn.init.normal_(model.pool.quality.weight, std=3.0)
    lengths = [4, 1, 3]
    clips = torch.randn(3, 4, 3, 4, 4)
    mask = torch.tensor([[t < n for t in range(4)] for n in lengths])
    clips[~mask] = 1e6  # padding content must not matter
    with torch.no_grad():
        out = model(clips, mask)
        assert model.frame_model.seen == sum(lengths)  # padding never reaches the frame network
        for i, n in enumerate(lengths):  # explicit reference: one tracklet at a time, its own frames only
            f = torch.stack([model.frame_model(clips[i, t][None])[0] for t in range(n)])
            if temporal == "mean":
                pooled = f.mean(0)
            else:
                scores = torch.stack([model.pool.quality(row).squeeze() for row in f])
                w = torch.exp(scores - scores.max())
                pooled = (w[:, None] * f).sum(0) / w.sum()
            torch.testing.assert_close(out["tracklet"][i], torch.nn.functional.normalize(pooled, dim=0),
                                       atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out["frame"][i, :n], f, atol=1e-6, rtol=0)
            assert not out["frame"][i, n:].any()
    chunked = TrackletModel(model.frame_model, 6, temporal=temporal, frame_batch=2).eval()
    chunked.pool.load_state_dict(model.pool.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(chunked(clips, mask)["tracklet"], out["tracklet"], atol=1e-6, rtol=0)


def test_tracklet_builder_groups_transforms_and_errors() -> None:
    model = create_tracklet_model("test_efficientnet", pretrained=False, embedding_dim=5, temporal="mean")
    assert model.embedding_dim == 5 and model.pool.quality is None
    backbone = {id(p) for p in model.backbone_parameters()}
    head = {id(p) for p in model.head_parameters()}
    assert backbone and head and not backbone & head and backbone | head == {id(p) for p in model.parameters()}
    train, evaluate = model.train_transform(), model.eval_transform()
    assert train.train is True and evaluate.train is False and train.mean == tuple(model.frame_model.mean)
    out = model(torch.randn(2, 3, 3, 16, 8))
    assert out["frame"].shape == (2, 3, 5)
    with pytest.raises(ConfigError, match="temporal"):
        create_tracklet_model("test_efficientnet", pretrained=False, temporal="max")
    with pytest.raises(InputError, match="clips must be"):
        model(torch.randn(2, 3, 16, 8))
    with pytest.raises(InputError, match="at least one valid frame"):
        model(torch.randn(2, 3, 3, 16, 8), torch.tensor([[True, False, False], [False, False, False]]))
