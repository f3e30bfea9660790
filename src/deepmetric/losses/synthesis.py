r"""Symmetrical synthesis (Gu and Ko, AAAI 2020, arXiv 2001.11658) wrapping any pair loss."""

from __future__ import annotations

import math

from torch import Tensor, nn

from deepmetric.errors import ConfigError
from deepmetric.functional.masks import label_masks
from deepmetric.functional.synthesis import symmetrical_synthesis_matrix
from deepmetric.losses.base import MetricLoss, PairLoss


class SymmetricalSynthesis(MetricLoss):
    r"""Wrap a pair-based loss with symmetrical synthesis and hard-negative-pair mining.

    Gu and Ko, "Symmetrical Synthesis for Deep Metric Learning", AAAI 2020 (arXiv 2001.11658).

    For every positive pair :math:`(x_k, x_l)` the two symmetrical points
    :math:`x'_k = \beta(\alpha\,\mathrm{proj}_l(x_k) - x_k)` and
    :math:`x'_l = \beta(\alpha\,\mathrm{proj}_k(x_l) - x_l)` are synthesised (no parameters;
    gradients flow through them). The base loss then sees its usual N x N pair matrix in which
    every negative entry :math:`(i, j)` is the hardest (most similar / nearest, following the
    base loss's ``higher_is_closer``) of the four points :math:`\{x_j, x_{\nu(j)}, x'_j,
    x'_{\nu(j)}\}` of column :math:`j`'s pair as seen from anchor :math:`i`; positive entries keep
    their real values. The pair of sample :math:`j` is :math:`(j, \nu(j))`, :math:`\nu(j)` the
    next sample of its class in batch order (cyclic), so for K = 2 samples per class this is
    exactly the paper's four-point candidate set of each pair (see
    :mod:`deepmetric.functional.synthesis`). Loss value:
    ``base.matrix_loss(M~, pos_mask, neg_mask) + base.regularizer(embeddings)`` (the
    regulariser, e.g. N-pair's L2 penalty, is on the real embeddings).

    What each base loss then computes (anchors are always real samples; every row of the
    matrix is an anchor, so the entries a loss reads for a *positive* sample against a negative,
    :math:`\tilde M_{pn}`, are synthesised as well):

    * contrastive: the negative hinge acts on :math:`\tilde M_{ij}`; the contrastive loss reads
      every ordered entry, so a negative pair (i, j) contributes both "i vs the hardest of j's
      pair" and "j vs the hardest of i's pair";
    * triplet (all / semi-hard / hard): every triplet :math:`(a, p, n)` uses
      :math:`\tilde M_{an}`; semi-hard selection is made on the synthesised values;
    * lifted structure: the log-sum-exp over negatives of both :math:`i` and :math:`j` of each
      positive pair runs over :math:`\tilde M_{ik}` and :math:`\tilde M_{jl}`;
    * N-pair: the softmax over negatives uses :math:`\tilde S_{an}` (the official code's
      element-wise maximum over similarity matrices of {anchor, positive, S1, S2}; here only
      the candidate side is synthesised, anchors stay real);
    * angular: the term :math:`4\tan^2\!\alpha\,(\tilde S_{an} + \tilde S_{pn}) -
      2(1+\tan^2\!\alpha) S_{ap}` uses, for :math:`\tilde S_{an}` and :math:`\tilde S_{pn}`,
      the hardest candidate of :math:`n`'s pair for :math:`a` and for :math:`p` separately.
      That is :math:`\ge` choosing one candidate for both (the official code's element-wise
      maximum of whole angular matrices), i.e. at least as hard; it reduces to it when the
      same candidate is hardest for :math:`a` and :math:`p`.

    Args:
        base_loss: a :class:`~deepmetric.losses.base.PairLoss` (contrastive, triplet, lifted
            structure, N-pair, angular, multi-similarity, ranked list, ...). Losses that are not
            a function of one pair matrix raise :class:`ConfigError`: proxy and classifier
            losses, and pair losses whose ``compute`` adds more than ``matrix_loss`` +
            ``regularizer`` (e.g. OSM+CAA's attention and cross-entropy).
        alpha: projection scale :math:`\alpha` (> 0), default 2 (a mirror reflection).
        beta: output scale :math:`\beta` (> 0), default 1.
        enabled: if False the wrapper returns exactly ``base_loss(embeddings, labels)``
            (for ablations).

    Empty sets: synthesis never adds or removes pairs, so the empty-set behaviour is the base
    loss's. A sample alone in its class is its own pair; with alpha=2, beta=1 it is unchanged.
    """

    def __init__(
        self, base_loss: nn.Module, alpha: float = 2.0, beta: float = 1.0, enabled: bool = True
    ) -> None:
        super().__init__()
        if not isinstance(base_loss, PairLoss):
            raise ConfigError(
                f"symmetrical synthesis cannot wrap {type(base_loss).__name__}: it is not a "
                "pair-based loss (a deepmetric PairLoss computed from one pair matrix, such as "
                "contrastive, triplet, lifted_structure, npair, angular). Proxy and classifier "
                "losses have no positive pairs to reflect; drop `loss.synthesis` for this loss"
            )
        if type(base_loss).matrix_loss is PairLoss.matrix_loss:
            raise ConfigError(
                f"symmetrical synthesis cannot wrap {type(base_loss).__name__}: it does not "
                "implement matrix_loss(matrix, pos_mask, neg_mask); implement it or drop "
                "`loss.synthesis`"
            )
        if type(base_loss).compute is not PairLoss.compute and not base_loss.compute_is_matrix_loss:
            raise ConfigError(
                f"symmetrical synthesis cannot wrap {type(base_loss).__name__}: it computes more "
                "than matrix_loss(matrix, pos_mask, neg_mask) + regularizer(embeddings) (its own "
                "compute adds terms such as attention or a classifier), which the wrapper would "
                "silently drop; wrap a plain pair loss or drop `loss.synthesis`"
            )
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(
                    f"symmetrical synthesis needs {name} > 0 (finite), got {value}; use the "
                    "paper's alpha=2.0, beta=1.0"
                )
        self.base_loss: PairLoss = base_loss
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.enabled = bool(enabled)

    @property
    def higher_is_closer(self) -> bool:
        """The base loss's matrix kind: True for similarities, False for distances."""
        return self.base_loss.higher_is_closer

    def wrapped_losses(self) -> list[nn.Module]:
        return [self.base_loss]

    def synthesized_matrix(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The N x N matrix handed to the base loss (negatives replaced by the hardest of four)."""
        base = self.base_loss
        return symmetrical_synthesis_matrix(
            embeddings, labels, base.pair_matrix, base.higher_is_closer, self.alpha, self.beta
        )

    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        base = self.base_loss
        if not self.enabled:
            return base(embeddings, labels)
        real = base.pair_matrix(embeddings)
        pos_mask, neg_mask = label_masks(labels)
        matrix = symmetrical_synthesis_matrix(
            embeddings,
            labels,
            base.pair_matrix,
            base.higher_is_closer,
            self.alpha,
            self.beta,
            real=real,
            neg_mask=neg_mask,
        )
        return base.matrix_loss(matrix, pos_mask, neg_mask) + base.regularizer(embeddings)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, enabled={self.enabled}"
