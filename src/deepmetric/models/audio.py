"""Utterance embedding network for spoken-word metric learning.

A reconstruction of the embedding network of Takashima et al., "Dysarthric Speech Recognition
Based on Deep Metric Learning", Interspeech 2020 (only the abstract was available; see
METHODS.md section 6): a small 2-D CNN over time x frequency (optionally with residual blocks,
He et al., "Deep Residual Learning for Image Recognition", CVPR 2016), optionally a bidirectional
GRU, then temporal pooling (masked mean, attention, or mean + standard deviation "statistics
pooling" as in the x-vectors of Snyder et al., ICASSP 2018) and a linear projection to an
L2-normalised embedding. The TDNN (x-vector) frame encoder is
:class:`deepmetric.models.audio_tdnn.TDNNEmbedder`, a subclass sharing pooling, head and contract.

Padding is never seen: every layer's output is re-zeroed beyond each utterance's length, the
convolutions keep time resolution (frequency is pooled, time is not), the GRU runs on packed
sequences and pooling is masked. In eval mode the embedding of an utterance is therefore the
same whether it is padded or not (in train mode BatchNorm's batch statistics depend on the
whole batch, as always).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def time_mask(lengths: Tensor, max_frames: int) -> Tensor:
    """Boolean ``(B, max_frames)`` mask, True on the valid frames of each utterance."""
    return torch.arange(max_frames, device=lengths.device)[None, :] < lengths[:, None]


class AttentionPooling(nn.Module):
    r"""Attention-weighted temporal pooling: :math:`\sum_t \mathrm{softmax}_t(w^\top \tanh(V h_t)) h_t`
    over valid frames only."""

    def __init__(self, dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, frames: Tensor, mask: Tensor) -> Tensor:
        logits = self.score(frames).squeeze(-1).masked_fill(~mask, float("-inf"))
        return (torch.softmax(logits, dim=1).unsqueeze(-1) * frames).sum(dim=1)


def masked_mean(frames: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``frames (B, T, D)`` over the valid frames given by ``mask (B, T)``."""
    weights = mask.to(frames.dtype).unsqueeze(-1)
    return (frames * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def masked_mean_std(frames: Tensor, mask: Tensor, eps: float = 1e-5) -> Tensor:
    r"""Statistics pooling: ``[mean, std]`` ``(B, 2D)`` of ``frames (B, T, D)`` over the valid
    frames of ``mask (B, T)`` (Snyder et al., "X-Vectors: Robust DNN Embeddings for Speaker
    Recognition", ICASSP 2018). The standard deviation is the population one,
    :math:`\sqrt{\max(\mathrm{E}[(x-\mu)^2], 0) + \epsilon}` (an utterance of one frame gets
    :math:`\sqrt{\epsilon}`, and the gradient stays finite)."""
    weights = mask.to(frames.dtype).unsqueeze(-1)
    count = weights.sum(dim=1).clamp_min(1.0)
    mean = (frames * weights).sum(dim=1) / count
    var = (((frames - mean.unsqueeze(1)) ** 2) * weights).sum(dim=1) / count
    return torch.cat([mean, torch.sqrt(var.clamp_min(0.0) + eps)], dim=1)


#: temporal pooling names of the audio models ("avg" is an alias of "mean")
POOLINGS = ("mean", "attention", "stats")


def check_pooling(pooling: str) -> str:
    """The canonical pooling name (``"avg"`` -> ``"mean"``); an unknown one is a ValueError."""
    pooling = "mean" if pooling == "avg" else pooling
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be 'mean' (alias 'avg'), 'attention' or 'stats', got '{pooling}'")
    return pooling


class ResidualBlock2d(nn.Module):
    """Two 3 x 3 convolutions with BatchNorm and an identity (or 1 x 1 projection) shortcut,
    ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))`` (He et al., CVPR 2016). Padding frames
    are re-zeroed after the first convolution (``mask (B, 1, T, 1)``) so they never leak into
    the second one; the caller re-zeroes the output."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = (
            nn.Identity() if in_ch == out_ch
            else nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=False), nn.BatchNorm2d(out_ch))
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x))) * mask
        return F.relu(self.norm2(self.conv2(y)) + self.shortcut(x))


class UtteranceEmbedder(nn.Module):
    """``forward(features (B, T, n_mels), lengths (B,)) -> embeddings (B, embedding_dim)``.

    Args:
        n_mels: log-mel bands of the input features (the data loader's ``n_mels``).
        channels: output channels of the 2-D convolution blocks; each block keeps the time
            resolution and halves the frequency bands (max-pooling 1 x 2).
        embedding_dim: size of the embedding.
        recurrent: a bidirectional GRU (packed sequences) over the CNN's frames before pooling.
        rnn_hidden: hidden size of each GRU direction.
        pooling: ``"mean"`` (alias ``"avg"``; masked mean over valid frames), ``"attention"``
            (:class:`AttentionPooling`) or ``"stats"`` (masked mean and standard deviation,
            :func:`masked_mean_std`, which doubles the pooled size).
        normalize: L2-normalise the embedding.
        dropout: dropout before the linear embedding layer.
        residual: each block is a :class:`ResidualBlock2d` (two convolutions and a shortcut)
            instead of one convolution + BatchNorm + ReLU.
    """

    def __init__(
        self,
        n_mels: int = 40,
        channels: Sequence[int] = (32, 64, 128),
        embedding_dim: int = 128,
        recurrent: bool = False,
        rnn_hidden: int = 128,
        pooling: str = "mean",
        normalize: bool = True,
        dropout: float = 0.1,
        residual: bool = False,
    ) -> None:
        super().__init__()
        pooling = check_pooling(pooling)
        blocks: list[nn.Module] = []
        in_ch, bands = 1, n_mels
        for out_ch in channels:
            if residual:
                blocks.append(ResidualBlock2d(in_ch, out_ch))
            else:
                blocks.append(nn.ModuleDict({
                    "conv": nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
                    "norm": nn.BatchNorm2d(out_ch),
                }))
            in_ch, bands = out_ch, max(1, bands // 2)
        self.blocks = nn.ModuleList(blocks)
        self.residual = residual
        frame_dim = in_ch * bands
        self.rnn = nn.GRU(frame_dim, rnn_hidden, batch_first=True, bidirectional=True) if recurrent else None
        frame_dim = 2 * rnn_hidden if recurrent else frame_dim
        self._init_pooling_head(frame_dim, embedding_dim, pooling, normalize, dropout, n_mels)

    def _init_pooling_head(
        self, frame_dim: int, embedding_dim: int, pooling: str, normalize: bool, dropout: float, n_mels: int
    ) -> None:
        """Pooling, dropout and the linear embedding layer after a frame encoder of ``frame_dim``
        features per frame (shared with the subclasses' encoders)."""
        pooling = check_pooling(pooling)
        self.pooling = pooling
        self.pool = AttentionPooling(frame_dim) if pooling == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * frame_dim if pooling == "stats" else frame_dim, embedding_dim)
        self.embedding_dim, self.normalize, self.n_mels = embedding_dim, normalize, n_mels

    def train_transform(self):  # noqa: ANN201 - a feature transform, see deepmetric.data.speech
        """SpecAugment masking for training batches (the trainer passes it to the dataset)."""
        from deepmetric.data.speech import SpecAugment

        return SpecAugment()

    def eval_transform(self) -> None:
        """No transform at evaluation."""
        return None

    def frame_features(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Per-frame features ``(B, T, D)`` and the valid-frame mask ``(B, T)``."""
        mask = time_mask(lengths, features.shape[1])
        x = features.unsqueeze(1) * mask[:, None, :, None]
        for block in self.blocks:
            if isinstance(block, ResidualBlock2d):
                x = block(x, mask[:, None, :, None])
            else:
                x = F.relu(block["norm"](block["conv"](x)))  # type: ignore[index]
            x = F.max_pool2d(x, kernel_size=(1, 2)) if x.shape[-1] > 1 else x
            x = x * mask[:, None, :, None]
        frames = x.permute(0, 2, 1, 3).flatten(2)  # (B, T, C * bands)
        if self.rnn is not None:
            packed = nn.utils.rnn.pack_padded_sequence(
                frames, lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            out, _ = self.rnn(packed)
            frames, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=mask.shape[1])
        return frames, mask

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Embeddings ``(B, embedding_dim)`` of ``features (B, T, n_mels)``; ``lengths (B,)`` are
        the valid frames of each utterance (None: all ``T``)."""
        if features.dim() != 3 or features.shape[-1] != self.n_mels:
            raise ValueError(
                f"expected features (batch, frames, {self.n_mels}), got {tuple(features.shape)}"
            )
        if lengths is None:
            lengths = torch.full((features.shape[0],), features.shape[1], dtype=torch.long, device=features.device)
        frames, mask = self.frame_features(features, lengths)
        if self.pool is not None:
            pooled = self.pool(frames, mask)
        elif self.pooling == "stats":
            pooled = masked_mean_std(frames, mask)
        else:
            pooled = masked_mean(frames, mask)
        emb = self.head(self.dropout(pooled))
        return F.normalize(emb, dim=1) if self.normalize else emb
