"""Re-identification (``eval.protocol: reid``): CMC and mAP of query tracklets against a gallery.

On a split that marks queries and cameras (``is_query`` and ``cameras`` per item; the test split
of every re-ID loader, :mod:`deepmetric.data.reid_datasets`):

* ``cmc@k`` for every k of ``eval.k_values`` and ``map``, with the gallery ranked by
  :func:`~deepmetric.evaluation.reid.reid_distance` (``eval.metric``) and the Market-1501 / MARS
  rules of :func:`~deepmetric.evaluation.reid.evaluate_reid`: gallery items of the query's
  identity AND camera are excluded, identity -1 is junk (ignored), 0 (distractors) stays as a
  negative; identities are the split's ``persons`` (its ``labels`` when it has none);
  ``n_queries_without_match`` counts the queries left out for lack of a valid match;
* with ``eval.rerank`` also ``rerank/cmc@k`` and ``rerank/map`` after k-reciprocal re-ranking
  (Zhong et al., CVPR 2017; ``eval.rerank_k1``, ``eval.rerank_k2``, ``eval.rerank_lambda``);
* plus the retrieval metrics of :class:`RetrievalProtocol` (queries against the gallery, same
  camera NOT excluded), so ``eval.select_metric`` may be ``map@r`` or ``recall@1`` as well as
  ``cmc@1`` or ``map``.

On a split without ``is_query`` or ``cameras`` -- the validation split that the trainer carves
from the training identities -- only the retrieval metrics (leave-one-out) are returned, so
select checkpoints by a retrieval metric (``map@r``).

:meth:`ReIDProtocol.write_artifacts` writes ``cmc.csv`` (rank, CMC) up to rank 50 of the final
test evaluation.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from deepmetric.config import EvalConfig
from deepmetric.errors import DataError
from deepmetric.evaluation.reid import evaluate_reid, k_reciprocal_rerank, reid_distance
from deepmetric.training.eval_protocols.base import EvalInputs
from deepmetric.training.eval_protocols.retrieval import RetrievalProtocol

__all__ = ["CMC_FILE", "ReIDProtocol", "query_gallery"]

#: the CMC curve of the final test evaluation, in the run folder
CMC_FILE = "cmc.csv"
#: the longest CMC curve written
CMC_RANKS = 50


def query_gallery(inputs: EvalInputs) -> tuple[Tensor, list[int], list[int]] | None:
    """(is_query mask, identities, cameras) of ``inputs.dataset``, or None when it lacks
    ``is_query`` or ``cameras``."""
    dataset = inputs.dataset
    is_query = getattr(dataset, "is_query", None)
    cameras = getattr(dataset, "cameras", None)
    if is_query is None or cameras is None:
        return None
    mask = torch.as_tensor(list(is_query), dtype=torch.bool)
    persons = getattr(dataset, "persons", None)
    if persons is None:
        persons = getattr(dataset, "labels", None)
    if persons is None or len(persons) != len(mask) or len(cameras) != len(mask):
        raise DataError(
            f"{type(dataset).__name__} marks queries but its persons/labels and cameras do not have one entry per "
            "item; a re-ID split needs is_query, cameras and persons (or labels) of equal length"
        )
    if not bool(mask.any()) or bool(mask.all()):
        raise DataError(
            f"the re-ID split has {int(mask.sum())} queries and {int((~mask).sum())} gallery items; it needs both"
        )
    return mask, [int(p) for p in persons], [int(c) for c in cameras]


class ReIDProtocol:
    """CMC / mAP (and retrieval metrics) of a split; see the module docstring."""

    def __init__(self, config: EvalConfig) -> None:
        self.config = config
        self.retrieval = RetrievalProtocol(config)

    def _reid(self, inputs: EvalInputs, ranks: Sequence[int], rerank: bool) -> dict[str, float] | None:
        split = query_gallery(inputs)
        if split is None:
            return None
        mask, persons, cameras = split
        embeddings, _ = inputs.embeddings()
        query, gallery = embeddings[mask], embeddings[~mask]
        q_ids = [p for p, m in zip(persons, mask.tolist()) if m]
        g_ids = [p for p, m in zip(persons, mask.tolist()) if not m]
        q_cams = [c for c, m in zip(cameras, mask.tolist()) if m]
        g_cams = [c for c, m in zip(cameras, mask.tolist()) if not m]
        ids = (q_ids, g_ids, q_cams, g_cams)
        plain = evaluate_reid(reid_distance(query, gallery, self.config.metric), *ids, ranks=ranks)
        metrics = {k: v for k, v in plain.items() if k != "n_queries"}
        if rerank:
            c = self.config
            distances = k_reciprocal_rerank(query, gallery, c.rerank_k1, c.rerank_k2, c.rerank_lambda)
            reranked = evaluate_reid(distances, *ids, ranks=ranks)
            metrics.update({f"rerank/{k}": v for k, v in reranked.items() if k.startswith("cmc@") or k == "map"})
        return metrics

    def evaluate(self, inputs: EvalInputs) -> dict[str, float]:
        metrics = self.retrieval.evaluate(inputs)
        reid = self._reid(inputs, self.config.k_values, self.config.rerank)
        if reid is not None:
            metrics.update(reid)
        return metrics

    def write_artifacts(self, inputs: EvalInputs, run_dir: Path) -> None:
        """``cmc.csv``: rank, CMC (plain distances) for ranks 1..min(50, gallery size)."""
        split = query_gallery(inputs)
        if split is None:
            return
        n_gallery = int((~split[0]).sum())
        ranks = list(range(1, min(CMC_RANKS, n_gallery) + 1))
        curve = self._reid(inputs, ranks, rerank=False)
        assert curve is not None
        with (Path(run_dir) / CMC_FILE).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["rank", "cmc"])
            writer.writerows([k, round(curve[f"cmc@{k}"], 6)] for k in ranks)
