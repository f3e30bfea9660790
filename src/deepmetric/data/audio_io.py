"""Reading WAV files into mono float waveforms at a chosen sample rate.

Uses ``soundfile`` (extra ``deepmetric[audio]``) when installed, which reads WAV, FLAC and OGG;
otherwise falls back to Python's standard-library ``wave`` module for PCM WAV. Resampling uses a
polyphase filter (:func:`scipy.signal.resample_poly`), so any input rate works.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from deepmetric.errors import DataError


def _read_with_soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile

    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return data.mean(axis=1), int(rate)


def _read_with_wave(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as handle:
        rate, width, channels = handle.getframerate(), handle.getsampwidth(), handle.getnchannels()
        raw = handle.readframes(handle.getnframes())
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width in (2, 4):
        dtype = np.int16 if width == 2 else np.int32
        data = np.frombuffer(raw, dtype=dtype).astype(np.float32) / float(np.iinfo(dtype).max + 1)
    elif width == 3:
        bytes_ = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = bytes_[:, 0] | (bytes_[:, 1] << 8) | (bytes_[:, 2] << 16)
        data = (np.where(ints >= 1 << 23, ints - (1 << 24), ints) / float(1 << 23)).astype(np.float32)
    else:
        raise ValueError(f"unsupported sample width {width}")
    return data.reshape(-1, channels).mean(axis=1), rate


def resample(waveform: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample a 1-D waveform from ``source_rate`` to ``target_rate`` Hz (polyphase, anti-aliased)."""
    if source_rate == target_rate:
        return waveform
    from scipy.signal import resample_poly

    g = math.gcd(source_rate, target_rate)
    return resample_poly(waveform, target_rate // g, source_rate // g).astype(np.float32)


def load_wav(path: str | Path, sample_rate: int | None = None) -> tuple[Tensor, int]:
    """Load an audio file as a mono float32 waveform in [-1, 1].

    Returns ``(waveform (samples,), rate)``; with ``sample_rate`` given, the waveform is resampled
    to it. A missing, empty or unreadable file raises :class:`DataError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file not found: {path}; check the dataset root or manifest path")
    if path.stat().st_size == 0:
        raise DataError(f"audio file is empty: {path}; re-copy it or remove it from the dataset")
    try:
        try:
            data, rate = _read_with_soundfile(path)
        except ImportError:
            data, rate = _read_with_wave(path)
    except Exception as exc:  # noqa: BLE001 - every decoder failure means the same to the user
        raise DataError(
            f"cannot decode audio file {path} ({type(exc).__name__}: {exc}); "
            "the file is corrupt or not a supported audio format (WAV/FLAC/OGG)"
        ) from exc
    if data.size == 0:
        raise DataError(f"audio file has no samples: {path}; remove it from the dataset")
    if sample_rate is not None:
        data, rate = resample(data, rate, sample_rate), sample_rate
    return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), rate
