"""Spoken-word datasets: utterance lists from three layouts and a feature-computing dataset.

Layouts:

* Free Spoken Digit Dataset: ``DIGIT_SPEAKER_INDEX.wav`` files (e.g. ``7_jackson_32.wav``).
* Speech Commands: ``root/WORD/SPEAKER_nohash_N.wav`` (folders starting with ``_`` are skipped).
* CSV manifest: columns ``path,word,speaker`` (paths relative to the CSV's folder).

:class:`SpeechDataset` turns utterances into log-mel features ``(frames, n_mels)`` and labels;
its :func:`pad_collate` pads a batch to the longest utterance and returns the lengths, so the
embedding network can ignore the padding.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from deepmetric.data.audio_io import load_wav
from deepmetric.errors import DataError
from deepmetric.functional.audio import log_mel_spectrogram, normalize_utterance, spec_augment


class SpecAugment:
    """Callable feature transform: :func:`deepmetric.functional.audio.spec_augment` with fixed
    mask counts and widths, drawing from torch's global generator (seeded by the trainer)."""

    def __init__(self, time_masks: int = 2, time_width: int = 10, freq_masks: int = 2, freq_width: int = 8) -> None:
        self.time_masks, self.time_width = time_masks, time_width
        self.freq_masks, self.freq_width = freq_masks, freq_width

    def __call__(self, features: Tensor) -> Tensor:
        return spec_augment(features, self.time_masks, self.time_width, self.freq_masks, self.freq_width)

    def __repr__(self) -> str:
        return (f"SpecAugment(time_masks={self.time_masks}, time_width={self.time_width}, "
                f"freq_masks={self.freq_masks}, freq_width={self.freq_width})")


@dataclass(frozen=True)
class Utterance:
    """One recording: its file, the word spoken and who spoke it."""

    path: Path
    word: str
    speaker: str


def parse_fsdd_name(name: str) -> tuple[str, str, int]:
    """``'7_jackson_32.wav' -> ('7', 'jackson', 32)``; the speaker may itself contain '_'."""
    parts = Path(name).stem.split("_")
    if len(parts) < 3 or not parts[-1].isdigit():
        raise DataError(
            f"file name '{name}' does not follow the FSDD pattern DIGIT_SPEAKER_INDEX.wav; "
            "rename it or use a CSV manifest (path,word,speaker)"
        )
    return parts[0], "_".join(parts[1:-1]), int(parts[-1])


def _require_files(files: list[Path], root: Path, what: str) -> list[Path]:
    if not files:
        raise DataError(f"no {what} found under {root}; check the path (expected .wav files)")
    return files


def fsdd_utterances(root: str | Path) -> list[Utterance]:
    """All utterances of a Free Spoken Digit Dataset folder (``root`` or ``root/recordings``)."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"dataset folder not found: {root}")
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    files = _require_files(sorted(folder.glob("*.wav")), folder, "FSDD recordings")
    out = []
    for f in files:
        word, speaker, _ = parse_fsdd_name(f.name)
        out.append(Utterance(f, word, speaker))
    return out


def speech_commands_utterances(root: str | Path, words: Sequence[str] | None = None) -> list[Utterance]:
    """Utterances of a Speech Commands tree ``root/WORD/SPEAKER_nohash_N.wav``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    out = []
    for word_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        if words is not None and word_dir.name not in words:
            continue
        for f in sorted(word_dir.glob("*.wav")):
            speaker = f.stem.split("_nohash_")[0] if "_nohash_" in f.stem else f.stem.split("_")[0]
            out.append(Utterance(f, word_dir.name, speaker))
    return _require_files(out, root, "Speech Commands recordings")


def csv_utterances(manifest: str | Path) -> list[Utterance]:
    """Utterances listed in a CSV with columns ``path,word,speaker``."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise DataError(f"manifest not found: {manifest}")
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "word", "speaker"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(
                f"manifest {manifest} lacks column(s) {sorted(missing)}; "
                "the header must contain path,word,speaker"
            )
        rows = [Utterance(manifest.parent / r["path"], r["word"], r["speaker"]) for r in reader]
    if not rows:
        raise DataError(f"manifest {manifest} lists no utterances")
    return rows


def pad_collate(batch: Sequence[tuple[Tensor, int]]) -> tuple[tuple[Tensor, Tensor], Tensor]:
    """Pad ``(frames_i, dims)`` features to the longest in the batch with zeros.

    Returns ``((features (B, T_max, dims), lengths (B,)), labels (B,))``.
    """
    lengths = torch.tensor([f.shape[0] for f, _ in batch], dtype=torch.long)
    dims = batch[0][0].shape[1]
    padded = torch.zeros(len(batch), int(lengths.max()), dims, dtype=batch[0][0].dtype)
    for row, (features, _) in enumerate(batch):
        padded[row, : features.shape[0]] = features
    labels = torch.tensor([int(label) for _, label in batch], dtype=torch.long)
    return (padded, lengths), labels


class SpeechDataset(Dataset):
    """Log-mel features of utterances, labelled by word.

    Features are computed once per utterance and cached in memory (FSDD: ~3,000 x 50 x 40
    floats). ``transform`` (e.g. :class:`SpecAugment`) is applied to the features at each draw.
    ``word_to_index`` fixes the label mapping (share it between the splits of one experiment).
    """

    collate_fn = staticmethod(pad_collate)

    def __init__(
        self,
        utterances: Sequence[Utterance],
        sample_rate: int = 8000,
        n_mels: int = 40,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        normalize: bool = True,
        transform: Callable[[Tensor], Tensor] | None = None,
        word_to_index: dict[str, int] | None = None,
    ) -> None:
        if len(utterances) == 0:
            raise DataError("the speech split is empty; check the speaker/word selection")
        self.utterances = list(utterances)
        self.sample_rate, self.n_mels, self.win_ms, self.hop_ms = sample_rate, n_mels, win_ms, hop_ms
        self.normalize, self.transform = normalize, transform
        words = sorted({u.word for u in self.utterances})
        self.word_to_index = dict(word_to_index) if word_to_index else {w: i for i, w in enumerate(words)}
        unknown = [w for w in words if w not in self.word_to_index]
        if unknown:
            raise DataError(f"words {unknown[:5]} are missing from the shared word index")
        self.class_names = sorted(self.word_to_index, key=self.word_to_index.get)
        self.labels = [self.word_to_index[u.word] for u in self.utterances]
        self.speakers = [u.speaker for u in self.utterances]
        self.paths = [str(u.path) for u in self.utterances]
        self._cache: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return len(self.utterances)

    def features(self, index: int) -> Tensor:
        """Cached log-mel features ``(frames, n_mels)`` of utterance ``index`` (no augmentation)."""
        if index not in self._cache:
            wave, rate = load_wav(self.utterances[index].path, self.sample_rate)
            feats = log_mel_spectrogram(wave, rate, self.n_mels, self.win_ms, self.hop_ms)
            self._cache[index] = normalize_utterance(feats) if self.normalize else feats
        return self._cache[index]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        feats = self.features(index)
        if self.transform is not None:
            feats = self.transform(feats)
        return feats, self.labels[index]

    def subset(self, indices: Sequence[int], transform: Callable[[Tensor], Tensor] | None | str = "same") -> "SpeechDataset":
        """A dataset over ``indices`` sharing this one's word index and features; ``transform``
        replaces this one's unless left as ``"same"``."""
        sub = SpeechDataset.__new__(SpeechDataset)
        sub.__dict__.update(self.__dict__)
        sub.utterances = [self.utterances[i] for i in indices]
        sub.labels = [self.labels[i] for i in indices]
        sub.speakers = [self.speakers[i] for i in indices]
        sub.paths = [self.paths[i] for i in indices]
        sub._cache = {new: self.features(old) for new, old in enumerate(indices)}
        sub.transform = self.transform if transform == "same" else transform
        if len(sub) == 0:
            raise DataError("the speech split is empty; check the speaker/word selection")
        return sub


def fsdd_dataset(
    root: str | Path,
    split: str = "train",
    transform: Callable[[Tensor], Tensor] | None = None,
    test_speakers: Sequence[str] = ("theo", "yweweler"),
    n_mels: int = 40,
    sample_rate: int = 8000,
) -> SpeechDataset:
    """Speaker-independent FSDD split for the trainer's dataset registry: ``split="test"`` holds
    ``test_speakers``, ``"train"`` every other speaker; words are labelled 0-9 in both."""
    utterances = fsdd_utterances(root)
    speakers = {u.speaker for u in utterances}
    unknown = sorted(set(test_speakers) - speakers)
    if unknown:
        raise DataError(f"test speaker(s) {unknown} not in the corpus; speakers are {sorted(speakers)}")
    if split not in ("train", "test"):
        raise DataError(f"unknown split '{split}'; use 'train' or 'test'")
    chosen = [u for u in utterances if (u.speaker in test_speakers) == (split == "test")]
    index = {w: i for i, w in enumerate(sorted({u.word for u in utterances}))}
    return SpeechDataset(chosen, sample_rate=sample_rate, n_mels=n_mels, transform=transform, word_to_index=index)
