"""eval.protocol=reid: CMC / mAP with same-camera exclusion and junk, re-ranking, the retrieval
metrics, the retrieval-only validation split, and the CMC curve file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deepmetric.config import EvalConfig
from deepmetric.evaluation.reid import evaluate_reid, k_reciprocal_rerank
from deepmetric.training.eval_protocols import EvalInputs, build_eval_protocol
from deepmetric.training.eval_protocols.reid import CMC_FILE, ReIDProtocol
from deepmetric.training.eval_protocols.retrieval import RetrievalProtocol


class Vectors(torch.utils.data.Dataset):
    """Items are given embeddings; optional re-ID attributes."""

    def __init__(self, x: torch.Tensor, persons: list[int], cameras: list[int] | None, is_query: list[bool] | None):
        self.x, self.persons = x, persons
        people = sorted(set(persons))
        self.labels = [people.index(p) for p in persons]
        if cameras is not None:
            self.cameras = cameras
        if is_query is not None:
            self.is_query = is_query

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.labels[i]


def fixture(seed: int = 0) -> Vectors:
    """8 queries (camera 0) and 30 gallery items: other cameras, same-camera copies, junk (-1), distractors (0)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(6, 4, generator=g)
    persons_q = [1, 2, 3, 4, 5, 1, 2, 3]
    persons_g = [1, 2, 3, 4, 5, 6] * 3 + [-1, -1, 0, 0] + persons_q
    cams_g = [1] * 6 + [2] * 6 + [0] * 6 + [1, 0, 2, 0] + [0] * 8
    ids = torch.tensor([max(p, 1) - 1 for p in persons_q + persons_g])
    x = centers[ids] + 0.8 * torch.randn(len(ids), 4, generator=g)
    x[len(persons_q) + 30 - 8:] = x[:8]  # exact copies of the queries in the query camera
    return Vectors(x, persons_q + persons_g, [0] * 8 + cams_g, [True] * 8 + [False] * 30)


def inputs(dataset: Vectors, config: EvalConfig) -> EvalInputs:
    return EvalInputs(model=nn.Identity(), loss=nn.Identity(), dataset=dataset, config=config, device=torch.device("cpu"))


def reference(dist: np.ndarray, qi, gi, qc, gc, ranks):
    """Explicit loop: rank the gallery, drop same identity + same camera and junk, score."""
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
    return {f"cmc@{k}": cmc[k] / len(aps) for k in ranks}, float(np.mean(aps))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_reid_metrics_equal_the_explicit_reference(metric: str) -> None:
    data = fixture()
    config = EvalConfig(protocol="reid", metric=metric, k_values=[1, 2, 5])
    protocol = build_eval_protocol(config)
    assert isinstance(protocol, ReIDProtocol)
    got = protocol.evaluate(inputs(data, config))
    q, g = data.x[:8].double(), data.x[8:].double()
    if metric == "euclidean":
        dist = np.array([[float(((a - b) ** 2).sum().sqrt()) for b in g] for a in q])
    else:
        dist = np.array([[1.0 - float(a @ b / (a.norm() * b.norm())) for b in g] for a in q])
    cmc, m_ap = reference(dist, data.persons[:8], data.persons[8:], data.cameras[:8], data.cameras[8:], (1, 2, 5))
    for key, value in cmc.items():
        assert got[key] == pytest.approx(value)
    assert got["map"] == pytest.approx(m_ap) and got["n_queries_without_match"] == 0
    # the retrieval metrics of the same split ride along (same-camera copies count there)
    retrieval = RetrievalProtocol(config).evaluate(inputs(data, config))
    assert {k: got[k] for k in retrieval} == retrieval and "map@r" in got
    assert retrieval["recall@1"] == 1.0 and got["cmc@1"] < 1.0  # the copies are excluded only by re-ID


def test_rerank_keys_and_values() -> None:
    data = fixture(1)
    config = EvalConfig(protocol="reid", k_values=[1, 5], rerank=True, rerank_k1=5, rerank_k2=2, rerank_lambda=0.4)
    got = ReIDProtocol(config).evaluate(inputs(data, config))
    dist = k_reciprocal_rerank(data.x[:8], data.x[8:], 5, 2, 0.4)
    expected = evaluate_reid(dist, data.persons[:8], data.persons[8:], data.cameras[:8], data.cameras[8:], ranks=[1, 5])
    assert got["rerank/cmc@1"] == expected["cmc@1"] and got["rerank/cmc@5"] == expected["cmc@5"]
    assert got["rerank/map"] == expected["map"]
    assert not any(k.startswith("rerank/") for k in ReIDProtocol(EvalConfig(protocol="reid")).evaluate(inputs(data, config)))


def test_split_without_queries_or_cameras_gets_retrieval_metrics_only() -> None:
    full = fixture()
    config = EvalConfig(protocol="reid", k_values=[1, 2])
    for cameras, is_query in ((full.cameras, None), (None, full.is_query)):
        data = Vectors(full.x, full.persons, cameras, is_query)
        got = ReIDProtocol(config).evaluate(inputs(data, config))
        assert got == RetrievalProtocol(config).evaluate(inputs(data, config))
        assert "cmc@1" not in got and "map" not in got
        ReIDProtocol(config).write_artifacts(inputs(data, config), Path("/nonexistent"))  # nothing to write


def test_cmc_curve_file(tmp_path: Path) -> None:
    data = fixture()
    config = EvalConfig(protocol="reid", k_values=[1, 5])
    protocol = ReIDProtocol(config)
    run = inputs(data, config)
    metrics = protocol.evaluate(run)
    protocol.write_artifacts(run, tmp_path)
    with (tmp_path / CMC_FILE).open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["rank"]) for r in rows] == list(range(1, 31))  # up to the gallery size (30 < 50)
    values = [float(r["cmc"]) for r in rows]
    assert values == sorted(values) and values[0] == pytest.approx(metrics["cmc@1"], abs=1e-6)
    assert values[4] == pytest.approx(metrics["cmc@5"], abs=1e-6) and values[-1] == 1.0
