"""What a deployed model expects and computes: the pydantic records behind ``<file>.json``.

* :class:`ModelCard` describes a trained model as :func:`deepmetric.load` sees it: the input kind
  (``image``, ``audio_features`` or ``tracklet``), how raw items become that input
  (:class:`ImageInput`: channels, size, resize and crop rule, interpolation, mean and std -- for
  the tracklet model, of each frame; :class:`AudioInput`: sample rate and log-mel front end;
  :class:`TrackletInput`: how clips of frames are batched), the embedding size, whether
  embeddings are unit-norm, the run's ``model.name``, the deepmetric version and the checkpoint
  the weights came from.
* :class:`ExportManifest` adds what an exported file needs: its format, the names, shapes and
  dtypes of its inputs and outputs (``"batch"`` / ``"frames"`` name dynamic axes), the batch rule,
  and the check that was run (the exported program against PyTorch at another batch size and, for
  audio and clips, another frame count; for clips also that padded frames are ignored).

The manifest is written beside the exported file as ``<file>.json`` (``model.onnx`` ->
``model.onnx.json``) and read back with :meth:`ExportManifest.read`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "AudioInput",
    "CheckpointRef",
    "ExportManifest",
    "ImageInput",
    "InputKind",
    "ModelCard",
    "TensorSpec",
    "TrackletInput",
    "Verification",
    "manifest_path",
]

InputKind = Literal["image", "audio_features", "tracklet"]
ExportFormat = Literal["onnx", "export", "torchscript"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), frozen=True)


class ImageInput(_Record):
    """How an image becomes the model's ``(channels, height, width)`` input.

    ``rule`` says it in words; the fields say it for code: convert to ``mode``, resize (the shorter
    side to ``resize_shorter_side``, or to exactly ``resize_to`` = [height, width]) with
    ``interpolation``, center-crop to ``[height, width]``, scale pixels to [0, 1] (x ``pixel_scale``),
    subtract ``mean`` and divide by ``std`` per channel.
    """

    channels: int
    height: int
    width: int
    mode: str
    resize_shorter_side: int | None
    resize_to: list[int] | None
    interpolation: str
    center_crop: list[int]
    pixel_scale: float = 1.0 / 255.0
    mean: list[float]
    std: list[float]
    rule: str
    transform: str


class AudioInput(_Record):
    """How a mono waveform becomes ``(frames, n_mels)`` log-mel features (see
    :func:`deepmetric.functional.audio.log_mel_spectrogram`): ``win_ms`` / ``hop_ms`` windows,
    ``n_fft`` the next power of two of the window, centred frames (1 + samples // hop), natural log
    of the mel power + 1e-6, then per-utterance mean/variance normalisation when
    ``utterance_normalization``. A batch is zero-padded to its longest utterance (at least
    ``min_frames``) and ``lengths`` gives each utterance's valid frames."""

    sample_rate: int | None
    n_mels: int
    win_ms: float
    hop_ms: float
    n_fft: int | None
    utterance_normalization: bool
    min_frames: int
    rule: str


class TrackletInput(_Record):
    """How clips become the tracklet model's ``(clips (B, T, C, H, W), mask (B, T) bool)`` input:
    a clip is a sequence of at least ``min_frames`` frames, each decoded to RGB (a plain
    conversion, as the tracklet datasets read frames) and prepared by the card's ``image`` record
    (resize to exactly its height x width, scale, normalise); a batch is zero-padded to its
    longest clip and ``mask`` is True on the real frames. Padded frames do not change an
    embedding."""

    min_frames: int = 1
    mask_dtype: str = "bool"
    rule: str


class CheckpointRef(_Record):
    """The weights: run folder, checkpoint name (``best`` / ``last``), file, training step, SHA-256."""

    run: str
    which: str
    path: str
    step: int | None
    sha256: str


class ModelCard(_Record):
    """A trained model as a deployment sees it (see the module docstring)."""

    input_kind: InputKind
    image: ImageInput | None = None
    audio: AudioInput | None = None
    tracklet: TrackletInput | None = None
    embedding_dim: int
    normalize: bool
    model_name: str
    backbone: str | None = None
    deepmetric_version: str
    checkpoint: CheckpointRef


class TensorSpec(_Record):
    """One input or output of an exported graph; string dimensions are dynamic (named)."""

    name: str
    shape: list[int | str]
    dtype: str


class Verification(_Record):
    """The check run after exporting: the exported program against PyTorch's forward."""

    export_batch: int
    checked_batches: list[int]
    checked_frames: list[int] | None = None
    #: clips: whether padded clips were checked against their real frames embedded alone
    padding_checked: bool | None = None
    max_abs_diff: float
    tolerance: float


class ExportManifest(ModelCard):
    """``<file>.json`` beside an exported model (see the module docstring)."""

    format: ExportFormat
    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    batch: Literal["dynamic"] | int
    opset: int | None = None
    torch_version: str
    verification: Verification

    def write(self, path: str | Path) -> Path:
        """Write the manifest as indented JSON to ``path``; returns ``path``."""
        path = Path(path)
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: str | Path) -> ExportManifest:
        """Read a manifest written by :meth:`write`."""
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))


def manifest_path(exported: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``: where the manifest of an exported file lives."""
    exported = Path(exported)
    return exported.with_name(exported.name + ".json")
