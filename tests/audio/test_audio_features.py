"""Audio loading, log-mel features and SpecAugment against direct numpy computations."""

import math
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from deepmetric.data.audio_io import load_wav
from deepmetric.errors import DataError
from deepmetric.functional.audio import (
    hz_to_mel,
    log_mel_spectrogram,
    mel_filterbank,
    mel_to_hz,
    normalize_utterance,
    spec_augment,
)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def test_mel_scale_round_trip_and_known_value():
    assert float(hz_to_mel(1000.0)) == pytest.approx(2595 * math.log10(1 + 1000 / 700))
    assert float(mel_to_hz(hz_to_mel(3210.0))) == pytest.approx(3210.0)


def test_filterbank_matches_explicit_triangles():
    n_fft, n_mels, rate = 256, 10, 8000
    fb = mel_filterbank(n_fft, n_mels, rate).double().numpy()
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    inv = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    pts = inv(np.linspace(mel(0), mel(rate / 2), n_mels + 2))
    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    for b in range(n_mels):
        for k, f in enumerate(freqs):
            lo, c, hi = pts[b], pts[b + 1], pts[b + 2]
            ref = (f - lo) / (c - lo) if lo <= f <= c else (hi - f) / (hi - c) if c < f <= hi else 0.0
            assert fb[b, k] == pytest.approx(max(ref, 0.0), abs=1e-6)


@pytest.mark.parametrize("tone_hz", [300.0, 1200.0, 3000.0])
def test_tone_peaks_in_the_right_mel_band(tone_hz):
    rate, n_mels = 8000, 40
    t = np.arange(rate) / rate
    wave_ = torch.tensor(0.5 * np.sin(2 * np.pi * tone_hz * t), dtype=torch.float32)
    feats = log_mel_spectrogram(wave_, rate, n_mels=n_mels)
    assert feats.shape == (1 + rate // 80, n_mels)
    # direct numpy reference: the band whose centre frequency is nearest the tone
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    inv = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    centres = inv(np.linspace(mel(0), mel(rate / 2), n_mels + 2))[1:-1]
    expected = int(np.argmin(np.abs(centres - tone_hz)))
    peak = int(feats[10:-10].mean(dim=0).argmax())
    assert abs(peak - expected) <= 1


def test_log_mel_matches_numpy_power_spectrum():
    rate = 8000
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4000).astype(np.float32) * 0.1
    feats = log_mel_spectrogram(torch.from_numpy(x), rate, n_mels=20, win_ms=32, hop_ms=16)
    win, hop, n_fft = 256, 128, 256
    padded = np.pad(x, n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann, as torch
    frame = 7
    seg = padded[frame * hop: frame * hop + n_fft] * window
    power = np.abs(np.fft.rfft(seg)) ** 2
    ref = np.log(mel_filterbank(n_fft, 20, rate).double().numpy() @ power + 1e-6)
    np.testing.assert_allclose(feats[frame].double().numpy(), ref, rtol=1e-3, atol=1e-3)


def test_normalize_and_specaugment():
    torch.manual_seed(0)
    feats = torch.randn(50, 8) * 3 + 2
    norm = normalize_utterance(feats)
    assert torch.allclose(norm.mean(0), torch.zeros(8), atol=1e-5)
    assert torch.allclose(norm.std(0, unbiased=False), torch.ones(8), atol=1e-3)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = spec_augment(norm, time_masks=2, time_width=5, freq_masks=1, freq_width=3, generator=g1)
    b = spec_augment(norm, time_masks=2, time_width=5, freq_masks=1, freq_width=3, generator=g2)
    assert torch.equal(a, b)
    assert a.shape == norm.shape and not torch.equal(norm, spec_augment(norm, 3, 10, 3, 4))


def test_load_wav_resamples_and_reports_bad_files(tmp_path):
    rate = 16000
    t = np.arange(rate // 2) / rate
    write_wav(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * t), rate)
    wave_, out_rate = load_wav(tmp_path / "tone.wav", 8000)
    assert out_rate == 8000 and wave_.shape == (4000,)
    spectrum = np.abs(np.fft.rfft(wave_.numpy()))
    assert np.argmax(spectrum) * 8000 / 4000 == pytest.approx(440, abs=4)
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000WAVEjunkjunk")
    with pytest.raises(DataError, match="bad.wav"):
        load_wav(tmp_path / "bad.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_wav(tmp_path / "empty.wav")
    with pytest.raises(DataError, match="not found"):
        load_wav(tmp_path / "missing.wav")
