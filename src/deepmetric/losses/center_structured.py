r"""Center-based structured metric learning (Gong et al., Remote Sensing 2019), a reconstruction."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepmetric.errors import ConfigError, unknown_name_message
from deepmetric.functional.center_structured import (
    center_pull,
    center_push,
    center_structured_loss,
    check_center_labels,
    ema_centers,
    nearest_center,
)
from deepmetric.losses.base import MetricLoss

CENTER_UPDATES = ("sgd", "ema")


class CenterStructuredLoss(MetricLoss):
    r"""Joint cross-entropy + center-based structured (lifted) + center loss.

    .. math::

        L = w_{CE}\, L_{CE} + \lambda_S\, L_S(\{f_i\} \cup \{c_k\}) + \lambda_C\, L_C

    * :math:`L_{CE}`: softmax cross-entropy of a linear classifier head owned by the loss
      (``nn.Linear(embedding_dim, num_classes)``) on the embeddings.
    * :math:`L_S`: the smooth lifted-structure loss (margin :math:`\alpha`) over the union of
      the batch features and all K class centers, each center labelled with its class.
    * :math:`L_C = \frac1N\sum_i\|f_i - c_{y_i}\|^2 + \frac{1}{K(K-1)}\sum_{j\ne k}
      [m_c - \|c_j - c_k\|]_+^2`.

    See :mod:`deepmetric.functional.center_structured` for the exact formulas.

    Gong, Zhong, Hu, Hua, "Joint Learning of the Center Points and Deep Metrics for Land-Use
    Classification in Remote Sensing", Remote Sensing 11(1):76, 2019. **A reconstruction**:
    only the abstract was available (project METHODS.md section 4); every knob is configurable.

    Args:
        num_classes: K, number of classes (labels must be 0..K-1); injected by the trainer.
        embedding_dim: D; injected by the trainer.
        lam_s: weight :math:`\lambda_S` of the structured term (>= 0), default 1.
        lam_c: weight :math:`\lambda_C` of the center term (>= 0), default 0.1.
        alpha: lifted-structure margin :math:`\alpha`, default 1.
        center_margin: :math:`m_c` (>= 0), the distance beyond which centers stop repelling.
        ce_weight: weight of the cross-entropy term (>= 0), default 1.
        use_structured, use_center, use_ce: switch each term on/off (ablations); at least one
            must stay on. A term switched off is not computed at all.
        center_update: ``"sgd"`` (centers are an ``nn.Parameter`` trained by the optimizer;
            see :meth:`center_parameters`) or ``"ema"`` (centers are a buffer, constant in the
            loss, moved after every training-mode forward toward the batch class means:
            :math:`c_k \leftarrow m c_k + (1-m)\bar f_k`).
        ema_momentum: :math:`m` in [0, 1) for ``"ema"``, default 0.9.

    Optimizer: give :meth:`center_parameters` their own parameter group with a learning rate
    about 10x the backbone's (the method's default), and :meth:`classifier_parameters` the head's
    learning rate. Under ``"ema"`` there are no center parameters (the push term of
    :math:`L_C` is then a constant).

    Prediction: :meth:`predict_softmax` (the classifier head) and
    :meth:`predict_nearest_center`; report both.

    Empty sets: a batch of one class still has feature-center positives; with K = 1 the push
    term is 0; every term is finite for duplicate embeddings.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        lam_s: float = 1.0,
        lam_c: float = 0.1,
        alpha: float = 1.0,
        center_margin: float = 1.0,
        ce_weight: float = 1.0,
        use_structured: bool = True,
        use_center: bool = True,
        use_ce: bool = True,
        center_update: str = "sgd",
        ema_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        if int(num_classes) < 1 or int(embedding_dim) < 1:
            raise ConfigError(
                f"center_structured needs num_classes >= 1 and embedding_dim >= 1, got "
                f"{num_classes} and {embedding_dim}; set them from the training classes and the "
                "model's embedding size"
            )
        knobs = {"lam_s": lam_s, "lam_c": lam_c, "ce_weight": ce_weight, "center_margin": center_margin}
        for name, value in knobs.items():
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"center_structured {name} must be a finite number >= 0, got {value}")
        if not math.isfinite(alpha):
            raise ConfigError(f"center_structured alpha must be finite, got {alpha}; use 1.0")
        if center_update not in CENTER_UPDATES:
            raise ConfigError(unknown_name_message("center_update", center_update, CENTER_UPDATES))
        if not 0.0 <= ema_momentum < 1.0:
            raise ConfigError(
                f"center_structured ema_momentum must be in [0, 1), got {ema_momentum}; use 0.9"
            )
        if not (use_structured or use_center or use_ce):
            raise ConfigError(
                "center_structured has every term switched off; keep at least one of "
                "use_structured, use_center, use_ce True"
            )
        self.num_classes = int(num_classes)
        self.embedding_dim = int(embedding_dim)
        self.lam_s = float(lam_s)
        self.lam_c = float(lam_c)
        self.alpha = float(alpha)
        self.center_margin = float(center_margin)
        self.ce_weight = float(ce_weight)
        self.use_structured = bool(use_structured)
        self.use_center = bool(use_center)
        self.use_ce = bool(use_ce)
        self.center_update = center_update
        self.ema_momentum = float(ema_momentum)

        # unit-norm random centers (the model head L2-normalises embeddings)
        self.centers: Tensor
        init = F.normalize(torch.randn(self.num_classes, self.embedding_dim), dim=1)
        if center_update == "sgd":
            self.centers = nn.Parameter(init)
        else:
            self.register_buffer("centers", init)
        self.classifier = nn.Linear(self.embedding_dim, self.num_classes)

    # ------------------------------------------------------------------ parameter groups

    def center_parameters(self) -> Iterator[nn.Parameter]:
        """The learnable centers (empty under ``center_update="ema"``); give them their own LR."""
        if isinstance(self.centers, nn.Parameter):
            yield self.centers

    def classifier_parameters(self) -> Iterator[nn.Parameter]:
        """The classifier head's weight and bias."""
        yield from self.classifier.parameters()

    # ------------------------------------------------------------------ loss

    def _centers_like(self, embeddings: Tensor) -> Tensor:
        return self.centers.to(device=embeddings.device, dtype=embeddings.dtype)

    def terms(self, embeddings: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """The unweighted enabled terms: ``{"ce", "structured", "center"}`` (those switched on)."""
        check_center_labels(labels, self.num_classes)
        centers = self._centers_like(embeddings)
        out: dict[str, Tensor] = {}
        if self.use_ce:
            out["ce"] = F.cross_entropy(self.logits(embeddings), labels)
        if self.use_structured:
            out["structured"] = center_structured_loss(embeddings, labels, centers, self.alpha)
        if self.use_center:
            out["center"] = center_pull(embeddings, labels, centers) + center_push(
                centers, self.center_margin
            )
        return out

    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        terms = self.terms(embeddings, labels)
        weights = {"ce": self.ce_weight, "structured": self.lam_s, "center": self.lam_c}
        total = sum(weights[name] * value for name, value in terms.items())
        if self.center_update == "ema" and self.training:
            self.update_centers(embeddings, labels)
        return total  # type: ignore[return-value]

    @torch.no_grad()
    def update_centers(self, embeddings: Tensor, labels: Tensor) -> None:
        """The ``"ema"`` update toward this batch's class means (called by training forwards)."""
        check_center_labels(labels, self.num_classes)
        features = embeddings.detach().to(self.centers)
        new = ema_centers(self.centers, features, labels.to(self.centers.device), self.ema_momentum)
        self.centers.copy_(new)

    # ------------------------------------------------------------------ prediction

    def logits(self, embeddings: Tensor) -> Tensor:
        """Classifier-head logits, N x K."""
        return self.classifier(embeddings)

    def classifier_trained(self) -> bool:
        """True when the cross-entropy term is on (``use_ce`` and ``ce_weight > 0``)."""
        return self.use_ce and self.ce_weight > 0

    def centers_trained(self) -> bool:
        """True when the centers move: EMA updates, or the structured or center term on."""
        return (
            self.center_update == "ema"
            or (self.use_structured and self.lam_s > 0)
            or (self.use_center and self.lam_c > 0)
        )

    def predict_softmax(self, embeddings: Tensor) -> Tensor:
        """Predicted class per row from the softmax head (argmax of the logits)."""
        return self.logits(embeddings).argmax(dim=1)

    def predict_nearest_center(self, embeddings: Tensor) -> Tensor:
        """Predicted class per row: the nearest class center (Euclidean; ties -> lowest index)."""
        return nearest_center(embeddings, self._centers_like(embeddings))

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, "
            f"lam_s={self.lam_s}, lam_c={self.lam_c}, alpha={self.alpha}, "
            f"center_margin={self.center_margin}, ce_weight={self.ce_weight}, "
            f"use_structured={self.use_structured}, use_center={self.use_center}, "
            f"use_ce={self.use_ce}, center_update='{self.center_update}', "
            f"ema_momentum={self.ema_momentum}"
        )
