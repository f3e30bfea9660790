"""DeMAL-CNN: an embedding network with mixed attention and a shared classifier.

Reconstruction of He et al., "Deep metric attention learning for skin lesion classification in
dermoscopy images", Complex & Intelligent Systems, 2022 (METHODS.md section 5). The paper's
triplet network has three weight-shared branches; here it is ONE network run on a batch that
stacks anchors, positives and negatives (see :class:`deepmetric.data.triplet_sampler.TripletBatchSampler`),
which is the same computation with a third of the code. The classifier shared by the three
branches belongs to the loss (:class:`deepmetric.losses.triplet_hybrid.TripletHybridLoss`), like
every loss-owned classifier in deepmetric, so the trainer optimises and checkpoints it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from torch import Tensor, nn

from deepmetric.models.attention import MixedAttention, insert_mixed_attention
from deepmetric.models.embedder import Embedder, create_embedder


class DeMALNet(nn.Module):
    """``forward(images) -> embeddings``.

    Parameter groups: the pretrained backbone (without the new attention blocks) versus the new
    parts (attention blocks, embedding head), so the new parts can learn faster.
    """

    def __init__(self, embedder: Embedder, attention: Sequence[MixedAttention]) -> None:
        super().__init__()
        self.embedder = embedder
        self.attention = nn.ModuleList(attention)
        self.embedding_dim = embedder.embedding_dim
        self.input_size, self.mean, self.std = embedder.input_size, embedder.mean, embedder.std

    def forward(self, images: Tensor) -> Tensor:
        return self.embedder(images)

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        new = {id(p) for p in self.attention.parameters()}
        return (p for p in self.embedder.backbone_parameters() if id(p) not in new)

    def head_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.attention.parameters()
        yield from self.embedder.head_parameters()

    def train_transform(self, **kwargs):  # noqa: ANN003, ANN201 - delegates
        return self.embedder.train_transform(**kwargs)

    def eval_transform(self):  # noqa: ANN201 - delegates
        return self.embedder.eval_transform()

    def attention_maps(self) -> list[Tensor]:
        """The spatial attention maps ``(B, 1, h, w)`` of the last forward pass, one per block."""
        return [a.last_spatial_map for a in self.attention if a.last_spatial_map is not None]


def create_demal(
    backbone: str = "tf_efficientnet_lite0",
    pretrained: bool | str | Path = "offline",
    embedding_dim: int = 128,
    attention_stages: Sequence[int] = (-2, -1),
    reduction: int = 16,
    kernel_size: int = 7,
    use_attention: bool = True,
    image_size: int | None = None,
    pooling: str = "avg",
    freeze_bn: bool = False,
) -> DeMALNet:
    """Build a DeMAL-CNN: ``create_embedder`` (weights loaded first), then mixed attention after
    ``attention_stages`` (timm ``feature_info`` indices); ``use_attention=False`` gives the plain
    CNN for ablations."""
    embedder = create_embedder(backbone, pretrained, embedding_dim, pooling, True, image_size, freeze_bn=freeze_bn)
    blocks = insert_mixed_attention(embedder.backbone, attention_stages, reduction, kernel_size) if use_attention else []
    return DeMALNet(embedder, blocks)
