"""Utterance embedding network for spoken-word metric learning.

A reconstruction of the embedding network of Takashima et al., "Dysarthric Speech Recognition
Based on Deep Metric Learning", Interspeech 2020 (only the abstract was available; see
METHODS.md section 6): a small 2-D CNN over time x frequency, optionally a bidirectional GRU,
then temporal pooling (masked mean, or attention) and a linear projection to an L2-normalised
embedding.

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


class UtteranceEmbedder(nn.Module):
    """``forward(features (B, T, n_mels), lengths (B,)) -> embeddings (B, embedding_dim)``."""

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
    ) -> None:
        super().__init__()
        pooling = "mean" if pooling == "avg" else pooling
        if pooling not in ("mean", "attention"):
            raise ValueError(f"pooling must be 'mean' (alias 'avg') or 'attention', got '{pooling}'")
        blocks, in_ch, bands = [], 1, n_mels
        for out_ch in channels:
            blocks.append(nn.ModuleDict({
                "conv": nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
                "norm": nn.BatchNorm2d(out_ch),
            }))
            in_ch, bands = out_ch, max(1, bands // 2)
        self.blocks = nn.ModuleList(blocks)
        frame_dim = in_ch * bands
        self.rnn = nn.GRU(frame_dim, rnn_hidden, batch_first=True, bidirectional=True) if recurrent else None
        frame_dim = 2 * rnn_hidden if recurrent else frame_dim
        self.pool = AttentionPooling(frame_dim) if pooling == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(frame_dim, embedding_dim)
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
            x = F.relu(block["norm"](block["conv"](x)))
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
        if features.dim() != 3 or features.shape[-1] != self.n_mels:
            raise ValueError(
                f"expected features (batch, frames, {self.n_mels}), got {tuple(features.shape)}"
            )
        if lengths is None:
            lengths = torch.full((features.shape[0],), features.shape[1], dtype=torch.long, device=features.device)
        frames, mask = self.frame_features(features, lengths)
        pooled = self.pool(frames, mask) if self.pool is not None else masked_mean(frames, mask)
        emb = self.head(self.dropout(pooled))
        return F.normalize(emb, dim=1) if self.normalize else emb
