"""Items -> model input, with the model's own evaluation transform; picklable for loader workers.

* :class:`ImagePreprocessor`: an item (see :mod:`deepmetric.deploy.items`) -> the image in the
  model's mode -> ``model.eval_transform()`` (resize, center crop, tensor, normalisation) ->
  ``(C, H, W)``; :meth:`~ImagePreprocessor.collate` stacks a batch.
* :class:`AudioPreprocessor`: a waveform or audio file -> log-mel features ``(frames, n_mels)``
  computed exactly as :class:`deepmetric.data.speech.SpeechDataset` computes them;
  :meth:`~AudioPreprocessor.collate` zero-pads a batch and returns ``(features, lengths)`` like
  :func:`deepmetric.data.speech.pad_collate` (at least :data:`MIN_FRAMES` frames, which does not
  change an embedding: the audio model ignores padding). A 2-D ``(frames, n_mels)`` array or tensor
  is taken as features already computed.

* :class:`TrackletPreprocessor`: a clip (a list of frames, see :mod:`deepmetric.deploy.items`) ->
  ``(n_frames, C, H, W)``, each frame through the run's evaluation frame pipeline
  (:func:`deepmetric.data.tracklets.frame_pipeline`: resize to the ``data.params`` height x width,
  then the model's ``eval_transform()``); :meth:`~TrackletPreprocessor.collate` pads a batch to
  its longest clip and returns ``(clips, mask)`` like :func:`deepmetric.data.tracklets.pad_tracklets`.

:func:`describe_image_transform`, :func:`audio_frontend` and :func:`tracklet_frontend` say the same
in the records of :mod:`deepmetric.deploy.manifest`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision import transforms as T

from deepmetric.deploy.items import as_clip, as_frame, as_image, as_waveform
from deepmetric.deploy.manifest import AudioInput, ImageInput, TrackletInput
from deepmetric.errors import ConfigError, InputError

__all__ = [
    "MIN_FRAMES",
    "AudioPreprocessor",
    "ImagePreprocessor",
    "TrackletPreprocessor",
    "audio_frontend",
    "describe_image_transform",
    "tracklet_frontend",
]

#: the fewest frames an audio batch is padded to (exported graphs specialise a single frame)
MIN_FRAMES = 2


def _mode_of(transform: Any, channels: int) -> str:
    for step in getattr(transform, "transforms", []):
        mode = getattr(step, "mode", None)
        if mode in ("RGB", "L"):
            return mode
    return "L" if channels == 1 else "RGB"


def _pair(size: Any) -> list[int]:
    size = [int(v) for v in (size if isinstance(size, (list, tuple)) else [size])]
    return size * 2 if len(size) == 1 else size


def describe_image_transform(transform: Any, input_size: Sequence[int]) -> ImageInput:
    """The :class:`ImageInput` record of a model's evaluation transform (a torchvision ``Compose``
    of mode conversion, ``Resize``, ``CenterCrop``, ``ToTensor`` and ``Normalize``)."""
    channels, height, width = (int(v) for v in input_size)
    steps = list(getattr(transform, "transforms", [transform]))
    resize = next((s for s in steps if isinstance(s, T.Resize)), None)
    crop = next((s for s in steps if isinstance(s, T.CenterCrop)), None)
    norm = next((s for s in steps if isinstance(s, T.Normalize)), None)
    shorter = resize_to = None
    interpolation = "bilinear"
    if resize is not None:
        interpolation = str(getattr(resize.interpolation, "value", resize.interpolation))
        if isinstance(resize.size, int) or len(resize.size) == 1:
            shorter = _pair(resize.size)[0]
        else:
            resize_to = _pair(resize.size)
    center = _pair(crop.size) if crop is not None else [height, width]
    mean = [float(v) for v in norm.mean] if norm is not None else [0.0] * channels
    std = [float(v) for v in norm.std] if norm is not None else [1.0] * channels
    mode = _mode_of(transform, channels)
    if shorter is not None:
        resize_text = f"resize the shorter side to {shorter} px ({interpolation})"
    elif resize_to is not None:
        resize_text = f"resize to {resize_to[0]} x {resize_to[1]} px ({interpolation})"
    else:
        resize_text = "no resize"
    rule = (f"convert to {mode}, {resize_text}, center-crop {center[0]} x {center[1]}, "
            f"scale pixels to [0, 1], subtract mean {mean}, divide by std {std}")
    return ImageInput(
        channels=channels, height=height, width=width, mode=mode, resize_shorter_side=shorter,
        resize_to=resize_to, interpolation=interpolation, center_crop=center, mean=mean, std=std,
        rule=rule, transform=" ".join(repr(transform).split()),
    )


def _loader_defaults(data_name: str) -> dict[str, Any]:
    """Keyword defaults of the run's dataset loader (``{}`` when it cannot be resolved)."""
    from deepmetric.data.registry import DATASETS

    try:
        fn = DATASETS.resolve(data_name)
        params = inspect.signature(fn).parameters.values()
    except (ConfigError, ImportError, TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def audio_frontend(config: Any, n_mels: int) -> AudioInput:
    """The log-mel front end a run's audio model was trained with: ``sample_rate`` and ``n_mels``
    from ``data.params``, else the dataset loader's defaults (FSDD 8 kHz, Speech Commands and
    CSV manifests 16 kHz); windows as :class:`~deepmetric.data.speech.SpeechDataset` (25 / 10 ms,
    per-utterance normalisation). A loader ``n_mels`` different from the model's is an error."""
    from deepmetric.data.speech import SpeechDataset

    values = {**_loader_defaults(config.data.name), **dict(config.data.params)}
    defaults = {p.name: p.default for p in inspect.signature(SpeechDataset).parameters.values()}
    data_mels = values.get("n_mels", n_mels)
    if int(data_mels) != int(n_mels):
        raise ConfigError(
            f"the run's data gives {data_mels} mel bands but its model takes {n_mels}; set data.params.n_mels "
            f"and model.params.n_mels to the same value"
        )
    rate = values.get("sample_rate")
    win, hop = float(defaults["win_ms"]), float(defaults["hop_ms"])
    rate_text = f"{int(rate)} Hz" if rate is not None else "the training sample rate (unknown)"
    rule = (f"mono waveform at {rate_text} -> {n_mels} log-mel bands, {win:g} ms windows every {hop:g} ms, "
            "per-utterance mean/variance normalisation; zero-pad the batch, lengths = valid frames")
    return AudioInput(
        sample_rate=None if rate is None else int(rate), n_mels=int(n_mels), win_ms=win, hop_ms=hop, n_fft=None,
        utterance_normalization=bool(defaults["normalize"]), min_frames=MIN_FRAMES, rule=rule,
    )


def tracklet_frontend(config: Any, model: Any) -> tuple[ImageInput, TrackletInput, Any]:
    """``(frame record, clip record, frame transform)`` of a tracklet run: frames resized to the
    ``data.params`` height x width (else the dataset loader's defaults, else 256 x 128), then the
    model's ``eval_transform()`` (:class:`~deepmetric.data.tracklets.FrameNormalize`: the
    backbone's mean and std, grey when it has one channel) -- the pipeline its evaluation ran."""
    from deepmetric.data.reid_datasets import tracklet_split_dataset
    from deepmetric.data.tracklets import frame_pipeline

    defaults = {p.name: p.default for p in inspect.signature(tracklet_split_dataset).parameters.values()}
    values = {**defaults, **_loader_defaults(config.data.name), **dict(config.data.params)}
    height, width = int(values["height"]), int(values["width"])
    normalize = model.eval_transform()
    transform = frame_pipeline(height, width, train=False, transform=normalize)
    mean, std = [float(v) for v in normalize.mean], [float(v) for v in normalize.std]
    channels = len(mean)
    mode = "L" if channels == 1 else "RGB"
    frame = ImageInput(
        channels=channels, height=height, width=width, mode=mode, resize_shorter_side=None,
        resize_to=[height, width], interpolation="bilinear", center_crop=[height, width], mean=mean, std=std,
        rule=(f"each frame: convert to RGB{' then L' if mode == 'L' else ''}, resize to {height} x {width} px "
              f"(bilinear), scale pixels to [0, 1], subtract mean {mean}, divide by std {std}"),
        transform=" ".join(repr(transform).split()),
    )
    clip = TrackletInput(rule=(
        "a clip is a list of >= 1 frames, each prepared as the image rule says; zero-pad a batch to its longest "
        "clip -> clips (B, T, C, H, W), mask (B, T) bool True on the real frames"
    ))
    return frame, clip, transform


class ImagePreprocessor:
    """``item -> (C, H, W)`` tensor with the model's evaluation transform (see the module docstring)."""

    kind = "image"

    def __init__(self, transform: Any, mode: str) -> None:
        self.transform = transform
        self.mode = mode

    def __call__(self, item: Any, index: int = 0) -> Tensor:
        return self.transform(as_image(item, self.mode, index))

    def check(self, item: Any, index: int) -> None:
        """Raise the one-line error of an item of the wrong type (cheap: nothing is decoded)."""
        import os

        from PIL import Image

        if not isinstance(item, (str, os.PathLike, Image.Image, np.ndarray, Tensor)):
            as_image(item, self.mode, index)

    @staticmethod
    def collate(tensors: Sequence[Tensor]) -> Tensor:
        return torch.stack(list(tensors))


class AudioPreprocessor:
    """``item -> (frames, n_mels)`` log-mel features (see the module docstring)."""

    kind = "audio_features"

    def __init__(self, frontend: AudioInput) -> None:
        self.frontend = frontend

    def features_of(self, waveform: Tensor) -> Tensor:
        from deepmetric.functional.audio import log_mel_spectrogram, normalize_utterance

        f = self.frontend
        if f.sample_rate is None:
            raise InputError(
                "the run's data loader declares no sample_rate, so waveforms cannot be turned into its features; "
                "pass log-mel features (frames x n_mels tensors) instead"
            )
        feats = log_mel_spectrogram(waveform, f.sample_rate, f.n_mels, f.win_ms, f.hop_ms)
        return normalize_utterance(feats) if f.utterance_normalization else feats

    def __call__(self, item: Any, index: int = 0) -> Tensor:
        if isinstance(item, (np.ndarray, Tensor)) and item.ndim == 2:
            feats = torch.as_tensor(np.asarray(item) if isinstance(item, np.ndarray) else item.detach().cpu())
            if feats.shape[1] != self.frontend.n_mels or feats.shape[0] < 1:
                raise InputError(
                    f"item {index} has shape {tuple(feats.shape)}; pass a 1-D waveform or features of shape "
                    f"(frames, {self.frontend.n_mels})"
                )
            return feats.float()
        return self.features_of(as_waveform(item, self.frontend.sample_rate, index))

    def check(self, item: Any, index: int) -> None:
        """Raise the one-line error of an item of the wrong type (cheap: nothing is decoded)."""
        import os

        if not isinstance(item, (str, os.PathLike, np.ndarray, Tensor)):
            as_waveform(item, self.frontend.sample_rate, index)

    @staticmethod
    def collate(features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        lengths = torch.tensor([f.shape[0] for f in features], dtype=torch.long)
        frames = max(MIN_FRAMES, int(lengths.max()))
        padded = torch.zeros(len(features), frames, features[0].shape[1], dtype=torch.float32)
        for row, f in enumerate(features):
            padded[row, : f.shape[0]] = f
        return padded, lengths


class TrackletPreprocessor:
    """``clip -> (n_frames, C, H, W)`` with the run's evaluation frame pipeline (see the module docstring)."""

    kind = "tracklet"

    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def __call__(self, item: Any, index: int = 0) -> Tensor:
        frames = as_clip(item, index)
        return torch.stack([self.transform(as_frame(frame, index, j)) for j, frame in enumerate(frames)])

    def check(self, item: Any, index: int) -> None:
        """Raise the one-line error of a clip of the wrong type, an empty clip or a frame of the
        wrong type (cheap: nothing is decoded)."""
        import os

        from PIL import Image

        for position, frame in enumerate(as_clip(item, index)):
            if not isinstance(frame, (str, os.PathLike, Image.Image, np.ndarray, Tensor)):
                as_frame(frame, index, position)

    @staticmethod
    def collate(clips: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        from deepmetric.data.tracklets import pad_tracklets

        (padded, mask), _ = pad_tracklets([(clip, 0) for clip in clips])
        return padded, mask
