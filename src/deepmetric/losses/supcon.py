r"""Supervised contrastive (Khosla et al., NeurIPS 2020) and NT-Xent (Chen et al., SimCLR, ICML
2020) loss modules; the formulas are in :mod:`deepmetric.functional.supcon`."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from deepmetric.errors import ConfigError
from deepmetric.functional.distances import cosine_similarity_matrix
from deepmetric.functional.supcon import check_two_view_layout, ntxent_loss, supcon_loss
from deepmetric.functional.validation import check_embeddings
from deepmetric.losses.base import MetricLoss, PairLoss


def _check_temperature(name: str, temperature: float, default: float) -> None:
    if not temperature > 0:
        raise ConfigError(f"{name} temperature must be > 0, got {temperature}; use {default}")


class SupConLoss(PairLoss):
    r"""Supervised contrastive loss, :math:`\mathcal L^{sup}_{out}` (mean over positives outside the log).

    .. math::

        L_i = -\frac{1}{|P_i|} \sum_{p \in P_i}
            \log \frac{e^{s_{ip} / \tau}}{\sum_{a \ne i} e^{s_{ia} / \tau}}, \qquad
        L = \operatorname{mean}_{i : P_i \ne \emptyset} L_i

    Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020 (arXiv 2004.11362), Eq. 2.

    Args:
        temperature: :math:`\tau` (> 0), default 0.1 (the paper's).

    A pair loss on the ``"cosine"`` matrix: ``matrix_loss(sim, pos_mask, neg_mask)``, the
    denominator over ``pos_mask | neg_mask``. Anchors without a positive in the batch are
    excluded; a batch with no positive pair gives 0 (never NaN). Give each sample's views the
    same label (e.g. a P x K batch, or :mod:`deepmetric.data.two_view` batches with class labels).
    PML's ``SupConLoss`` coincides except on degenerate batches (it averages over non-zero
    anchor losses, and gives 0 for a batch without negatives).
    """

    metric: ClassVar[str] = "cosine"

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        _check_temperature("supcon", temperature, "0.1 (the paper's)")
        self.temperature = float(temperature)

    def matrix_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        return supcon_loss(matrix, pos_mask, neg_mask, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class NTXentLoss(MetricLoss):
    r"""NT-Xent (SimCLR): each row's other view against every other row of a two-view batch.

    .. math::

        L = \frac{1}{2N} \sum_{i=1}^{2N} -\log
            \frac{e^{s_{i j(i)} / \tau}}{\sum_{k \ne i} e^{s_{ik} / \tau}},
        \qquad j(i) = (i + N) \bmod 2N

    Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML 2020 (arXiv 2002.05709); :math:`s` is the cosine similarity.

    Args:
        temperature: :math:`\tau` (> 0), default 0.5.

    **Layout.** The batch must be 2N rows: view a of item i at row i, view b at row N+i, as
    :func:`deepmetric.data.two_view.collate_two_views` lays it out. Labels are NOT used by the
    loss; they only validate the layout: ``labels[i] == labels[N+i]`` must hold (pass the
    items' class labels or item ids, twice). ``labels=None`` skips that check. An odd batch or
    mismatched labels is a one-line :class:`~deepmetric.errors.InputError` naming the layout.
    Other items of the same class are negatives (self-supervised). With item-id labels it is
    PML's ``NTXentLoss``; an empty batch gives 0.
    """

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        _check_temperature("ntxent", temperature, "0.5 (SimCLR's)")
        self.temperature = float(temperature)

    def forward(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:  # noqa: D401
        check_embeddings(embeddings, labels)
        check_two_view_layout(embeddings.shape[0], labels)
        return ntxent_loss(cosine_similarity_matrix(embeddings), self.temperature)

    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return self.forward(embeddings, labels)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


__all__ = ["NTXentLoss", "SupConLoss"]
