r"""Speech features: mel filterbank, log-mel spectrogram, per-utterance normalisation, SpecAugment.

Log-mel filterbank energies (Davis & Mermelstein 1980; the standard front end of speech
recognisers): a Hann-windowed STFT with window ``win_ms`` and hop ``hop_ms``, power spectrum
:math:`|X_t(f)|^2`, triangular filters equally spaced on the HTK mel scale
:math:`m(f) = 2595 \log_{10}(1 + f / 700)`, and :math:`\log(\epsilon + \sum_f H_b(f) |X_t(f)|^2)`.
Features are laid out time-major: ``(frames, n_mels)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def hz_to_mel(hz: Tensor | float) -> Tensor:
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_to_hz(mel: Tensor | float) -> Tensor:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (torch.as_tensor(mel, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> Tensor:
    """Triangular mel filters as an ``(n_mels, n_fft // 2 + 1)`` float32 matrix.

    Filter b rises linearly from mel point b to b+1 and falls to b+2, where the ``n_mels + 2``
    points are equally spaced in mel between ``f_min`` and ``f_max`` (default Nyquist).
    """
    f_max = sample_rate / 2.0 if f_max is None else f_max
    if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got {f_min}, {f_max}, {sample_rate}")
    bins = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    points = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64))
    lower, centre, upper = points[:-2, None], points[1:-1, None], points[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).to(torch.float32)


def log_mel_spectrogram(
    waveform: Tensor,
    sample_rate: int,
    n_mels: int = 40,
    win_ms: float = 25.0,
    hop_ms: float = 10.0,
    n_fft: int | None = None,
    f_min: float = 0.0,
    f_max: float | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """Log-mel filterbank features ``(frames, n_mels)`` of a 1-D waveform.

    ``n_fft`` defaults to the next power of two of the window length. Frames are centred
    (reflect padding), so a waveform of S samples gives ``1 + S // hop`` frames.
    """
    if waveform.dim() != 1:
        raise ValueError(f"waveform must be 1-D (samples,), got shape {tuple(waveform.shape)}")
    win = max(1, int(round(sample_rate * win_ms / 1000.0)))
    hop = max(1, int(round(sample_rate * hop_ms / 1000.0)))
    n_fft = n_fft or 2 ** math.ceil(math.log2(win))
    if waveform.numel() <= n_fft // 2:  # reflect padding needs more samples than half a frame
        waveform = torch.nn.functional.pad(waveform, (0, n_fft // 2 + 1 - waveform.numel()))
    window = torch.hann_window(win, dtype=waveform.dtype, device=waveform.device)
    spec = torch.stft(waveform, n_fft=n_fft, hop_length=hop, win_length=win, window=window,
                      center=True, pad_mode="reflect", return_complex=True)
    power = spec.abs().pow(2)  # (freq, frames)
    fbank = mel_filterbank(n_fft, n_mels, sample_rate, f_min, f_max).to(power)
    return torch.log(fbank @ power + eps).T.contiguous()


def normalize_utterance(features: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-utterance mean and variance normalisation of ``(frames, dims)`` features (per dim)."""
    mean = features.mean(dim=0, keepdim=True)
    std = features.std(dim=0, unbiased=False, keepdim=True)
    return (features - mean) / (std + eps)


def spec_augment(
    features: Tensor,
    time_masks: int = 2,
    time_width: int = 10,
    freq_masks: int = 2,
    freq_width: int = 8,
    generator: torch.Generator | None = None,
) -> Tensor:
    """SpecAugment-style masking (Park et al., Interspeech 2019), without time warping.

    Sets ``time_masks`` random spans of up to ``time_width`` frames and ``freq_masks`` spans of up
    to ``freq_width`` bands to the utterance mean (0 after :func:`normalize_utterance`).
    """
    out = features.clone()
    frames, bands = out.shape
    fill = out.mean()

    def draw(high: int) -> int:
        return int(torch.randint(0, max(1, high), (1,), generator=generator))

    for _ in range(time_masks):
        width = draw(min(time_width, frames) + 1)
        start = draw(frames - width + 1)
        out[start:start + width, :] = fill
    for _ in range(freq_masks):
        width = draw(min(freq_width, bands) + 1)
        start = draw(bands - width + 1)
        out[:, start:start + width] = fill
    return out
