"""TDNN utterance embedder (x-vector style) for spoken-word metric learning (``model.name: audio_tdnn``).

A time-delay neural network: 1-D convolutions over the frames of the log-mel features, with the
mel bands as input channels and growing dilation, so each output frame sees a widening context
(Waibel et al., "Phoneme Recognition Using Time-Delay Neural Networks", IEEE TASSP 1989; Peddinti
et al., "A Time Delay Neural Network Architecture for Efficient Modeling of Long Temporal
Contexts", Interspeech 2015), followed by statistics pooling -- the mean and standard deviation of
the last layer over the valid frames -- and a linear embedding, as in the x-vector network of
Snyder et al., "X-Vectors: Robust DNN Embeddings for Speaker Recognition", ICASSP 2018. Layers
whose input and output widths match can add an identity shortcut (``residual``; He et al.,
CVPR 2016), which eases optimisation at short training budgets.

Contract: the same as :class:`deepmetric.models.audio.UtteranceEmbedder` (it is a subclass, so
the deployment code treats it as the audio model): ``forward(features (B, T, n_mels), lengths
(B,)) -> (B, embedding_dim)``, L2-normalised by default, SpecAugment as training transform.
Padding is never seen: the input and every layer's output are zeroed beyond each utterance's
length, and the convolutions zero-pad ("same" padding), so the frames near the end of an
utterance see zeros whether the batch is padded or not; pooling is masked. In eval mode an
utterance therefore has the same embedding padded or alone (BatchNorm in train mode uses batch
statistics, as always). Every operation is a convolution, an elementwise op or a masked
reduction, so the graph exports with a dynamic frame axis (ONNX and ``torch.export``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from deepmetric.models.audio import (
    AttentionPooling,
    UtteranceEmbedder,
    check_pooling,
    time_mask,
)

__all__ = ["TDNNEmbedder", "TDNNLayer"]


class TDNNLayer(nn.Module):
    """``relu(bn(conv1d(x)))`` over frames, ``(B, C_in, T) -> (B, C_out, T)``, with "same"
    zero padding (``dilation * (kernel_size - 1) / 2`` frames each side) and an optional
    identity shortcut (only when ``in_ch == out_ch``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, dilation: int, residual: bool) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"TDNN kernel sizes must be odd and >= 1 (a centred context), got {kernel_size}")
        if dilation < 1:
            raise ValueError(f"TDNN dilations must be >= 1, got {dilation}")
        self.conv = nn.Conv1d(in_ch, out_ch, kernel_size, dilation=dilation,
                              padding=dilation * (kernel_size - 1) // 2, bias=False)
        self.norm = nn.BatchNorm1d(out_ch)
        self.residual = residual and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm(self.conv(x)))
        return y + x if self.residual else y


class TDNNEmbedder(UtteranceEmbedder):
    """``forward(features (B, T, n_mels), lengths (B,)) -> embeddings (B, embedding_dim)``: a TDNN
    frame encoder, statistics pooling and a linear embedding (see the module docstring).

    Args:
        n_mels: log-mel bands of the input features (the input channels of the first layer).
        channels: output channels of the TDNN layers; the last one is the frame-level width that
            is pooled (x-vectors use a wider last layer: 512, 512, 512, 512, 1500).
        kernel_sizes: temporal kernel size (odd) of each layer; same length as ``channels``.
        dilations: temporal dilation of each layer; same length as ``channels``. The defaults
            (5, 3, 3, 1, 1) x (1, 2, 3, 1, 1) give each output frame a context of 15 frames
            (150 ms at a 10 ms hop), the x-vector's frame layers.
        embedding_dim: size of the embedding.
        pooling: ``"stats"`` (default; mean and standard deviation over the valid frames,
            doubling the pooled size), ``"mean"`` (alias ``"avg"``) or ``"attention"``.
        normalize: L2-normalise the embedding.
        dropout: dropout before the linear embedding layer.
        residual: identity shortcut around every layer whose input and output widths are equal.
    """

    def __init__(
        self,
        n_mels: int = 40,
        channels: Sequence[int] = (64, 64, 64, 64, 192),
        kernel_sizes: Sequence[int] = (5, 3, 3, 1, 1),
        dilations: Sequence[int] = (1, 2, 3, 1, 1),
        embedding_dim: int = 64,
        pooling: str = "stats",
        normalize: bool = True,
        dropout: float = 0.1,
        residual: bool = True,
    ) -> None:
        # The CNN's layers are not built: nn.Module's constructor, then this encoder, then the
        # pooling and head shared with UtteranceEmbedder.
        nn.Module.__init__(self)
        channels, kernel_sizes, dilations = list(channels), list(kernel_sizes), list(dilations)
        if not channels:
            raise ValueError("audio_tdnn needs at least one layer in channels")
        if not len(channels) == len(kernel_sizes) == len(dilations):
            raise ValueError(
                f"audio_tdnn channels, kernel_sizes and dilations must have the same length, got "
                f"{len(channels)}, {len(kernel_sizes)} and {len(dilations)}"
            )
        pooling = check_pooling(pooling)
        layers, in_ch = [], n_mels
        for out_ch, k, d in zip(channels, kernel_sizes, dilations):
            layers.append(TDNNLayer(in_ch, out_ch, k, d, residual))
            in_ch = out_ch
        self.layers = nn.ModuleList(layers)
        self.blocks = nn.ModuleList()  # no 2-D blocks (attributes UtteranceEmbedder code may read)
        self.rnn = None
        self.residual = residual
        self._init_pooling_head(in_ch, embedding_dim, pooling, normalize, dropout, n_mels)
        assert self.pool is None or isinstance(self.pool, AttentionPooling)

    def frame_features(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Per-frame features ``(B, T, channels[-1])`` and the valid-frame mask ``(B, T)``."""
        mask = time_mask(lengths, features.shape[1])
        keep = mask[:, None, :].to(features.dtype)
        x = features.transpose(1, 2) * keep  # (B, n_mels, T)
        for layer in self.layers:
            x = layer(x) * keep
        return x.transpose(1, 2), mask
