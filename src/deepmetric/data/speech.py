"""Spoken-word datasets: three corpus layouts, their registry loaders and a log-mel dataset.

Layouts (:func:`detect_speech_layout` tells them apart; each loader checks its own and, pointed
at another, raises a one-line :class:`DataError` naming the ``data.name`` that fits):

* ``fsdd`` -- Free Spoken Digit Dataset: ``DIGIT_SPEAKER_INDEX.wav`` files (``7_jackson_32.wav``)
  directly in ``root`` or in ``root/recordings``.
* ``speech_commands`` -- Speech Commands: ``root/WORD/SPEAKER_nohash_N.wav`` (speaker = the part
  before ``_nohash_``; without ``_nohash_``, the part before the first ``_``), optionally
  ``root/_background_noise_/*.wav`` and the official ``validation_list.txt`` / ``testing_list.txt``.
  Other folders starting with ``_`` are ignored.
* ``speech_csv`` -- a CSV manifest with columns ``path,word,speaker`` (paths relative to the
  CSV's folder, or absolute) and optionally ``split`` (``train`` / ``test``). ``root`` is the CSV
  file, or a folder holding exactly one such CSV.

**Loader contract** (see :mod:`deepmetric.training.builders`): ``fsdd_dataset``,
``speech_commands_dataset`` and ``speech_csv_dataset`` are called as ``fn(root=..., split="train"
| "test", transform=..., **data.params)`` and return a :class:`SpeechDataset` whose items are
``(features (frames, n_mels), label)``, with ``.labels``, ``.class_names`` (the words, sorted; the
label of item i is ``class_names.index(word)``), ``.paths``, ``.speakers`` and ``collate_fn``
(:func:`pad_collate`). The label index is built from the whole corpus, so train and test share
it even when a word is absent from one side. They share the split parameters of
:class:`~deepmetric.data.speech_splits.SplitParams` (speaker-disjoint by default; the speaker
transfer protocol with ``target_speaker``; see :mod:`deepmetric.data.speech_splits`); the split
is seeded by ``split_seed`` only, never by the training seed.

**The 12-class Speech Commands task** (the default): the ten core words (:data:`CORE_WORDS`),
``_unknown_`` (every other word folder) and ``_silence_``: 1-second segments cut from the
background-noise files. There are ``round(silence_fraction x`` the mean utterance count of the
selected words present ``)`` of them, capped by the number of whole, non-overlapping segments
the noise files hold (each file cut from its start), chosen evenly spaced over that list (no
randomness). Their speaker is ``_silence_``, which a speaker-disjoint split keeps on the
training side unless ``test_speakers`` names it; the official lists never name them, so they
train. Their ``.paths`` entry is ``FILE#t=START,END`` (a media-fragment address). No
``_background_noise_`` folder (or noise files shorter than a segment) means no ``_silence_``
class. Classes are those present in the corpus: a core word without a folder has no label.

:class:`SpeechDataset` turns utterances into log-mel features ``(frames, n_mels)`` and labels;
its :func:`pad_collate` pads a batch to the longest utterance and returns the lengths, so the
embedding network can ignore the padding.
"""

from __future__ import annotations

import csv
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from deepmetric.data.audio_io import load_wav
from deepmetric.data.speech_splits import SILENCE_SPEAKER, SplitParams, split_indices
from deepmetric.errors import ConfigError, DataError
from deepmetric.functional.audio import log_mel_spectrogram, normalize_utterance, spec_augment

#: the ten command words of the standard 12-class Speech Commands task
CORE_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE = "_silence_"
UNKNOWN = "_unknown_"
NOISE_FOLDER = "_background_noise_"
MANIFEST_COLUMNS = ("path", "word", "speaker")


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
    """One recording: its file, the word spoken and who spoke it; ``start`` / ``duration``
    (seconds; ``None`` = to the end) select a segment of the file (``_silence_`` items)."""

    path: Path
    word: str
    speaker: str
    start: float = 0.0
    duration: float | None = None

    def location(self) -> str:
        """The file, with ``#t=START,END`` appended for a segment."""
        if self.duration is None and self.start == 0.0:
            return str(self.path)
        end = "" if self.duration is None else f"{self.start + self.duration:g}"
        return f"{self.path}#t={self.start:g},{end}"


# --------------------------------------------------------------------------------------------
# layouts


def _wavs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".wav")


def _is_fsdd_name(name: str) -> bool:
    parts = Path(name).stem.split("_")
    return len(parts) >= 3 and parts[-1].isdigit() and "nohash" not in parts


def _manifest_columns(path: Path) -> set[str]:
    try:
        with path.open(newline="") as handle:
            return set(next(csv.reader(handle), []))
    except (OSError, UnicodeDecodeError):
        return set()


@dataclass
class LayoutSurvey:
    """What a dataset root holds, as far as the speech layouts are concerned."""

    root: Path
    is_file: bool = False
    fsdd_folder: Path | None = None  # root, or root/recordings, when it holds .wav files
    flat_wavs: int = 0  # .wav files in fsdd_folder
    fsdd_named: int = 0  # of which named DIGIT_SPEAKER_INDEX.wav
    word_folders: dict[str, int] = field(default_factory=dict)  # folder -> .wav count
    manifests: list[Path] = field(default_factory=list)  # CSVs with path,word,speaker columns

    def fits(self, layout: str) -> bool:
        if layout == "fsdd":
            return self.fsdd_named > 0
        if layout == "speech_commands":
            return bool(self.word_folders)
        return len(self.manifests) == 1

    def found(self) -> tuple[str, str]:
        """``(what was found, how to use it)`` for an error message."""
        if self.is_file:
            if self.manifests:
                return f"{self.root.name} is a CSV manifest (path,word,speaker)", "set data.name=speech_csv"
            return f"{self.root} is a file, not a dataset folder", "point data.root at the dataset folder"
        if len(self.manifests) > 1:
            names = ", ".join(p.name for p in self.manifests)
            return (f"found {len(self.manifests)} CSV manifests ({names})",
                    "set data.name=speech_csv and data.root to one of them")
        if self.word_folders:
            n_wavs = sum(self.word_folders.values())
            return (f"found {len(self.word_folders)} word folders with {n_wavs} .wav files (a Speech Commands layout)",
                    "set data.name=speech_commands")
        if self.fsdd_named:
            return (f"found {self.fsdd_named} .wav files named DIGIT_SPEAKER_INDEX.wav in {self.fsdd_folder} "
                    "(a Free Spoken Digit layout)", "set data.name=fsdd")
        if self.manifests:
            return f"found the CSV manifest {self.manifests[0].name} (path,word,speaker)", "set data.name=speech_csv"
        if self.flat_wavs:
            return (f"found {self.flat_wavs} .wav files in {self.fsdd_folder}, none named DIGIT_SPEAKER_INDEX.wav, "
                    "and no word folders", "list them in a CSV manifest (path,word,speaker) and set data.name=speech_csv")
        return f"found no .wav files in {self.root} or its subfolders", "point data.root at the dataset folder"


def survey_speech_root(root: str | Path) -> LayoutSurvey:
    """Look (one folder level deep) at what ``root`` holds; see :class:`LayoutSurvey`."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"dataset folder not found: {root}; check data.root")
    if root.is_file():
        fits_csv = set(MANIFEST_COLUMNS) <= _manifest_columns(root)
        return LayoutSurvey(root, is_file=True, manifests=[root] if fits_csv else [])
    survey = LayoutSurvey(root)
    recordings = root / "recordings"
    for folder in (root, recordings):
        wavs = _wavs(folder) if folder.is_dir() else []
        if wavs:
            survey.fsdd_folder, survey.flat_wavs = folder, len(wavs)
            survey.fsdd_named = sum(_is_fsdd_name(p.name) for p in wavs)
            break
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        if sub == recordings and survey.fsdd_folder == recordings:
            continue
        count = len(_wavs(sub))
        if count:
            survey.word_folders[sub.name] = count
    survey.manifests = [p for p in sorted(root.glob("*.csv")) if set(MANIFEST_COLUMNS) <= _manifest_columns(p)]
    return survey


def detect_speech_layout(root: str | Path) -> str | None:
    """``"fsdd"``, ``"speech_commands"``, ``"speech_csv"`` or ``None`` (none recognised; a
    missing ``root`` too). Word folders win over flat files, which win over a manifest."""
    root = Path(root)
    if not root.exists():
        return None
    survey = survey_speech_root(root)
    if survey.is_file:
        return "speech_csv" if survey.manifests else None
    for layout in ("speech_commands", "fsdd", "speech_csv"):
        if survey.fits(layout):
            return layout
    return None


_EXPECTED = {
    "fsdd": "no FSDD recordings in {root} (expected DIGIT_SPEAKER_INDEX.wav files there or in recordings/)",
    "speech_commands": "no Speech Commands recordings in {root} (expected WORD/SPEAKER_nohash_N.wav files under it)",
    "speech_csv": "no speech manifest at {root} (expected a CSV file with columns path,word,speaker)",
}


def require_speech_layout(root: str | Path, layout: str) -> LayoutSurvey:
    """The survey of ``root`` if it holds ``layout``; else a one-line :class:`DataError` saying
    what it holds and which ``data.name`` fits."""
    survey = survey_speech_root(root)
    if survey.fits(layout):
        return survey
    found, fix = survey.found()
    raise DataError(f"{_EXPECTED[layout].format(root=survey.root)}: {found}; {fix}")


# --------------------------------------------------------------------------------------------
# utterance lists


def parse_fsdd_name(name: str) -> tuple[str, str, int]:
    """``'7_jackson_32.wav' -> ('7', 'jackson', 32)``; the speaker may itself contain '_'."""
    parts = Path(name).stem.split("_")
    if len(parts) < 3 or not parts[-1].isdigit():
        raise DataError(
            f"file name '{name}' does not follow the FSDD pattern DIGIT_SPEAKER_INDEX.wav; "
            "rename it or use a CSV manifest (path,word,speaker)"
        )
    return parts[0], "_".join(parts[1:-1]), int(parts[-1])


def parse_speech_commands_speaker(name: str) -> str:
    """``'0a7c2a8d_nohash_1.wav' -> '0a7c2a8d'``; without ``_nohash_``, the part before the first ``_``."""
    stem = Path(name).stem
    return stem.split("_nohash_")[0] if "_nohash_" in stem else stem.split("_")[0]


def fsdd_utterances(root: str | Path) -> list[Utterance]:
    """All utterances of a Free Spoken Digit Dataset folder (``root`` or ``root/recordings``)."""
    folder = require_speech_layout(root, "fsdd").fsdd_folder
    assert folder is not None
    out = []
    for f in _wavs(folder):
        word, speaker, _ = parse_fsdd_name(f.name)
        out.append(Utterance(f, word, speaker))
    return out


def audio_duration(path: Path) -> float:
    """Length of an audio file in seconds, from its header."""
    try:
        try:
            import soundfile

            info = soundfile.info(str(path))
            return info.frames / float(info.samplerate)
        except ImportError:
            with wave.open(str(path), "rb") as handle:
                return handle.getnframes() / float(handle.getframerate())
    except Exception as exc:  # noqa: BLE001 - every decoder failure means the same to the user
        raise DataError(f"cannot read the length of {path} ({type(exc).__name__}: {exc}); re-copy or remove it") from exc


def noise_segments(noise_files: Sequence[Path], seconds: float = 1.0) -> list[tuple[Path, float]]:
    """Every whole, non-overlapping ``seconds``-long segment of the files, as ``(file, start)``,
    in file order; each file is cut from its start and its remainder dropped."""
    out: list[tuple[Path, float]] = []
    for path in noise_files:
        count = int(audio_duration(path) / seconds + 1e-9)
        out += [(path, k * seconds) for k in range(count)]
    return out


def silence_utterances(root: Path, count: int, seconds: float = 1.0) -> list[Utterance]:
    """``min(count, available)`` ``_silence_`` segments of ``root/_background_noise_``, evenly
    spaced over :func:`noise_segments` (deterministic); none without that folder."""
    folder = root / NOISE_FOLDER
    segments = noise_segments(_wavs(folder), seconds) if folder.is_dir() else []
    count = min(count, len(segments))
    picked = [segments[(k * len(segments)) // count] for k in range(count)] if count > 0 else []
    return [Utterance(path, SILENCE, SILENCE_SPEAKER, start, seconds) for path, start in picked]


def _select_words(found: Sequence[str], words: Sequence[str] | None, root: Path) -> list[str]:
    if words is None:
        chosen = [w for w in CORE_WORDS if w in found]
        if not chosen:
            raise DataError(
                f"none of the ten core words ({', '.join(CORE_WORDS)}) has a folder in {root}; "
                "set data.params.words to the words to recognise"
            )
        return chosen
    if isinstance(words, str):
        raise ConfigError(f"words must be a list of words, got the string '{words}'")
    special = [w for w in words if w.startswith("_")]
    if special:
        raise ConfigError(f"words {special} are not spoken words; use include_silence / include_unknown instead")
    missing = [w for w in words if w not in found]
    if missing:
        raise DataError(f"word(s) {missing} have no folder in {root}; folders are {', '.join(found)}")
    return list(words)


def speech_commands_utterances(
    root: str | Path,
    words: Sequence[str] | None = None,
    include_silence: bool = True,
    include_unknown: bool = True,
    silence_fraction: float = 1.0,
    silence_seconds: float = 1.0,
) -> list[Utterance]:
    """Utterances of a Speech Commands tree ``root/WORD/SPEAKER_nohash_N.wav``, labelled for the
    12-class task: the selected ``words`` (default: the core words present), ``_unknown_`` (every
    other word folder; dropped with ``include_unknown=False``) and ``_silence_`` (noise segments,
    see the module docstring; dropped with ``include_silence=False``). Word items come in folder
    then file order, silence items last."""
    if silence_fraction < 0 or silence_seconds <= 0:
        raise ConfigError(f"need silence_fraction >= 0 and silence_seconds > 0, got {silence_fraction}, {silence_seconds}")
    survey = require_speech_layout(root, "speech_commands")
    root = survey.root
    chosen = set(_select_words(list(survey.word_folders), words, root))
    out: list[Utterance] = []
    for folder in survey.word_folders:
        if folder not in chosen and not include_unknown:
            continue
        word = folder if folder in chosen else UNKNOWN
        out += [Utterance(f, word, parse_speech_commands_speaker(f.name)) for f in _wavs(root / folder)]
    if include_silence:
        per_word = sum(survey.word_folders[w] for w in chosen) / len(chosen)
        out += silence_utterances(root, round(silence_fraction * per_word), silence_seconds)
    return out


def official_sides(root: Path, utterances: Sequence[Utterance]) -> list[str | None]:
    """Side of each utterance under Speech Commands' official lists: ``"test"`` if listed in
    ``testing_list.txt``, ``None`` (dropped: the trainer carves its own validation split) if in
    ``validation_list.txt``, else ``"train"``; ``_silence_`` segments train."""
    testing = root / "testing_list.txt"
    if not testing.is_file():
        raise DataError(f"split_by=official needs {testing} (shipped with Speech Commands); set split_by=speaker")
    validation = root / "validation_list.txt"
    listed = {line.strip(): "test" for line in testing.read_text().splitlines() if line.strip()}
    if validation.is_file():
        listed.update({line.strip(): None for line in validation.read_text().splitlines() if line.strip()})
    sides: list[str | None] = []
    for u in utterances:
        key = u.path.relative_to(root).as_posix()
        sides.append("train" if u.word == SILENCE else listed.get(key, "train"))
    return sides


def resolve_manifest(root: str | Path) -> Path:
    """``root`` if it is a file, else the one path,word,speaker CSV in folder ``root``."""
    root = Path(root)
    if root.is_file():
        return root
    return require_speech_layout(root, "speech_csv").manifests[0]


def read_speech_manifest(manifest: str | Path) -> tuple[list[Utterance], list[str] | None]:
    """Utterances of a ``path,word,speaker`` CSV and, if it has a ``split`` column, each row's
    side (``train`` / ``test``, case-insensitive; anything else is an error naming the row)."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise DataError(f"manifest not found: {manifest}; check data.root")
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        missing = set(MANIFEST_COLUMNS) - columns
        if missing:
            raise DataError(
                f"manifest {manifest} lacks column(s) {sorted(missing)}; the header must contain path,word,speaker"
            )
        rows = list(reader)
    if not rows:
        raise DataError(f"manifest {manifest} lists no utterances; add rows path,word,speaker")
    utterances, sides = [], []
    for number, row in enumerate(rows, start=2):
        if not all((row[c] or "").strip() for c in MANIFEST_COLUMNS):
            raise DataError(f"manifest {manifest} line {number} has an empty path, word or speaker; fill it or remove the row")
        utterances.append(Utterance(manifest.parent / row["path"].strip(), row["word"].strip(), row["speaker"].strip()))
        if "split" in columns:
            side = (row["split"] or "").strip().lower()
            if side not in ("train", "test"):
                raise DataError(f"manifest {manifest} line {number} has split '{row['split']}'; use train or test")
            sides.append(side)
    return utterances, (sides if "split" in columns else None)


def csv_utterances(manifest: str | Path) -> list[Utterance]:
    """Utterances listed in a CSV with columns ``path,word,speaker`` (a ``split`` column is ignored)."""
    return read_speech_manifest(resolve_manifest(manifest))[0]


# --------------------------------------------------------------------------------------------
# dataset


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
    ``word_to_index`` fixes the label mapping (share it between the splits of one experiment);
    ``class_names`` are the words in label order.
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
        self.paths = [u.location() for u in self.utterances]
        self._cache: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return len(self.utterances)

    def waveform(self, index: int) -> Tensor:
        """Mono waveform of utterance ``index`` at ``sample_rate`` (its segment, for a segment)."""
        u = self.utterances[index]
        wave_, rate = load_wav(u.path, self.sample_rate)
        first = int(round(u.start * rate))
        last = len(wave_) if u.duration is None else first + int(round(u.duration * rate))
        if first >= len(wave_) or last > len(wave_) + 1:
            raise DataError(f"segment {u.location()} lies outside the file ({len(wave_) / rate:.2f} s); re-list the data")
        return wave_[first:last]

    def features(self, index: int) -> Tensor:
        """Cached log-mel features ``(frames, n_mels)`` of utterance ``index`` (no augmentation)."""
        if index not in self._cache:
            feats = log_mel_spectrogram(self.waveform(index), self.sample_rate, self.n_mels, self.win_ms, self.hop_ms)
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


# --------------------------------------------------------------------------------------------
# registry loaders


def split_dataset(
    utterances: Sequence[Utterance],
    split: str,
    params: SplitParams,
    transform: Callable[[Tensor], Tensor] | None,
    n_mels: int,
    sample_rate: int,
    sides: Sequence[str | None] | None = None,
    default_test_speakers: Sequence[str] | None = None,
) -> SpeechDataset:
    """Side ``split`` of ``utterances`` (see :func:`~deepmetric.data.speech_splits.split_indices`),
    labelled by the sorted words of the whole corpus."""
    words, speakers = [u.word for u in utterances], [u.speaker for u in utterances]
    chosen = split_indices(words, speakers, split, params, sides, default_test_speakers)
    if not chosen:
        raise DataError(f"the '{split}' side of the speech split is empty; check the split parameters")
    index = {w: i for i, w in enumerate(sorted(set(words)))}
    return SpeechDataset([utterances[i] for i in chosen], sample_rate=sample_rate, n_mels=n_mels,
                         transform=transform, word_to_index=index)


def fsdd_dataset(
    root: str | Path,
    split: str = "train",
    transform: Callable[[Tensor], Tensor] | None = None,
    test_speakers: Sequence[str] | None = None,
    n_mels: int = 40,
    sample_rate: int = 8000,
    test_speaker_fraction: float | None = None,
    split_seed: int = 0,
    target_speaker: str | None = None,
    shots: int | None = None,
    held_out: int | None = None,
    max_shots: int = 10,
    role: str = "target",
) -> SpeechDataset:
    """Free Spoken Digit Dataset for the trainer's registry (``data.name=fsdd``); words 0-9.

    Speaker-independent by default: ``split="test"`` holds ``test_speakers`` (None: theo and
    yweweler, unless ``test_speaker_fraction`` is set), ``"train"`` every other speaker. The
    split parameters are those of :class:`~deepmetric.data.speech_splits.SplitParams`.
    """
    params = SplitParams(test_speakers=test_speakers, test_speaker_fraction=test_speaker_fraction, split_seed=split_seed,
                         target_speaker=target_speaker, shots=shots, held_out=held_out, max_shots=max_shots, role=role)
    return split_dataset(fsdd_utterances(root), split, params, transform, n_mels, sample_rate,
                         default_test_speakers=("theo", "yweweler"))


def speech_commands_dataset(
    root: str | Path,
    split: str = "train",
    transform: Callable[[Tensor], Tensor] | None = None,
    words: Sequence[str] | None = None,
    include_silence: bool = True,
    include_unknown: bool = True,
    n_mels: int = 40,
    sample_rate: int = 16000,
    silence_fraction: float = 1.0,
    silence_seconds: float = 1.0,
    split_by: str = "speaker",
    test_speakers: Sequence[str] | None = None,
    test_speaker_fraction: float | None = None,
    split_seed: int = 0,
    target_speaker: str | None = None,
    shots: int | None = None,
    held_out: int | None = None,
    max_shots: int = 10,
    role: str = "target",
) -> SpeechDataset:
    """Speech Commands for the trainer's registry (``data.name=speech_commands``).

    Labels: the 12-class task by default (see :func:`speech_commands_utterances`). Split:
    ``split_by="speaker"`` (default) is speaker-disjoint, ``test_speaker_fraction`` 0.2 unless
    ``test_speakers`` or the fraction is set; ``split_by="official"`` follows
    ``testing_list.txt`` (test) and ``validation_list.txt`` (dropped), see :func:`official_sides`.
    ``target_speaker`` switches to the speaker transfer split whatever ``split_by`` says.
    """
    if split_by not in ("speaker", "official"):
        raise ConfigError(f"unknown split_by '{split_by}'; use 'speaker' or 'official'")
    params = SplitParams(test_speakers=test_speakers, test_speaker_fraction=test_speaker_fraction, split_seed=split_seed,
                         target_speaker=target_speaker, shots=shots, held_out=held_out, max_shots=max_shots, role=role)
    utterances = speech_commands_utterances(root, words, include_silence, include_unknown, silence_fraction, silence_seconds)
    sides = None
    if split_by == "official" and target_speaker is None:
        sides = official_sides(survey_speech_root(root).root, utterances)
    return split_dataset(utterances, split, params, transform, n_mels, sample_rate, sides=sides)


def speech_csv_dataset(
    root: str | Path,
    split: str = "train",
    transform: Callable[[Tensor], Tensor] | None = None,
    n_mels: int = 40,
    sample_rate: int = 16000,
    test_speakers: Sequence[str] | None = None,
    test_speaker_fraction: float | None = None,
    split_seed: int = 0,
    target_speaker: str | None = None,
    shots: int | None = None,
    held_out: int | None = None,
    max_shots: int = 10,
    role: str = "target",
) -> SpeechDataset:
    """A ``path,word,speaker`` CSV manifest for the trainer's registry (``data.name=speech_csv``).

    ``root`` is the CSV (or a folder holding exactly one). A ``split`` column, if present, decides
    the sides (then setting ``test_speakers`` / ``test_speaker_fraction`` is an error); otherwise
    the split is speaker-disjoint, ``test_speaker_fraction`` 0.2 unless set. ``target_speaker``
    switches to the speaker transfer split, ignoring a ``split`` column.
    """
    params = SplitParams(test_speakers=test_speakers, test_speaker_fraction=test_speaker_fraction, split_seed=split_seed,
                         target_speaker=target_speaker, shots=shots, held_out=held_out, max_shots=max_shots, role=role)
    utterances, sides = read_speech_manifest(resolve_manifest(root))
    return split_dataset(utterances, split, params, transform, n_mels, sample_rate,
                         sides=sides if target_speaker is None else None)
