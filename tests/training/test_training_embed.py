"""embed() on tuple inputs with a custom collate, and query/gallery evaluation via is_query."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from deepmetric.config import EvalConfig
from deepmetric.errors import ConfigError, DataError
from deepmetric.training import embed, evaluate
from deepmetric.training.evaluate import metrics_of, select_value


class VariableLength(Dataset):
    """Item i is a (length_i x 2) sequence of the value i; collate pads and returns lengths."""

    def __init__(self) -> None:
        self.labels = [i % 3 for i in range(7)]

    def __len__(self) -> int:
        return 7

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return torch.full((1 + i % 4, 2), float(i)), self.labels[i]

    @staticmethod
    def collate_fn(batch: list[tuple[Tensor, int]]) -> tuple[tuple[Tensor, Tensor], Tensor]:
        lengths = torch.tensor([x.shape[0] for x, _ in batch])
        padded = torch.zeros(len(batch), int(lengths.max()), 2)
        for j, (x, _) in enumerate(batch):
            padded[j, : x.shape[0]] = x
        return (padded, lengths), torch.tensor([y for _, y in batch])


class MeanOverTime(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.scale * x.sum(dim=1) / lengths[:, None]


def test_embed_passes_collated_tuples_and_keeps_order() -> None:
    model = MeanOverTime()
    model.train()
    embeddings, labels = embed(model, VariableLength(), batch_size=3)
    # the mean of a constant sequence is the constant: row i is (i, i) whatever its length
    assert torch.equal(embeddings, torch.arange(7.0)[:, None].repeat(1, 2))
    assert labels.tolist() == [i % 3 for i in range(7)]
    assert model.training  # mode restored
    with pytest.raises(DataError, match="empty"):
        embed(model, [], batch_size=2)


def test_is_query_splits_queries_from_gallery(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake(embeddings: Tensor, labels: Tensor, query_embeddings: Tensor | None = None,
             query_labels: Tensor | None = None, k_values: Any = (1,)) -> dict[str, float]:
        seen.update(gallery=labels.tolist(), queries=None if query_labels is None else query_labels.tolist(),
                    k_values=k_values)
        return {"recall@1": 0.5, "note": "x"}  # non-numeric values are dropped

    monkeypatch.setattr(evaluate, "EVALUATOR", fake)
    emb = torch.eye(4)
    labels = torch.tensor([0, 1, 2, 3])
    out = metrics_of(emb, labels, EvalConfig(k_values=[1, 3]), is_query=[True, False, True, False])
    assert out == {"recall@1": 0.5}
    assert seen == {"gallery": [1, 3], "queries": [0, 2], "k_values": (1, 3)}
    metrics_of(emb, labels, EvalConfig())
    assert seen["queries"] is None and seen["gallery"] == [0, 1, 2, 3]


def test_select_metric_missing_names_closest() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'map@r'"):
        select_value({"map@r": 0.2, "recall@1": 0.5}, EvalConfig(select_metric="mapr"))
    assert select_value({"loss": 0.1}, EvalConfig(select_metric="loss", select_mode="min")) == 0.1
