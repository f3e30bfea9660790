"""Tiny datasets in the official on-disk layout of every ``data.name`` loader.

Used by ``tests/test_every_recipe.py``: each generator writes a few classes x a few items in
exactly the layout its parser documents (index files, CSVs, ``.mat`` files, folder names,
file-name patterns) and returns a :class:`Layout`: the ``data.root`` to train on and the
overrides the layout itself needs (e.g. the second dataset of a cross-dataset recipe).

Images are 32 px (frames 32 x 16), drawn with numpy + PIL so that classes differ (a class colour
and a class bar, plus per-item noise); audio is 16-bit PCM WAV written with the standard
``wave`` module (a word-dependent tone, a speaker-dependent pitch shift, a little noise).

Sizes are the smallest that let every recipe's splits survive on tiny data: a validation split
by classes (>= 4 training classes) or by items after a fold / test split, two stratified folds,
P x K = 2 x 2 and triplet batches, the speaker-transfer pools; and every evaluated split (val,
test) holds >= 6 items with a class of >= 2 (leave-one-out retrieval needs a positive, k-NN
accuracy votes among 5 neighbours).

``GENERATORS`` maps every ``data.name`` of :data:`deepmetric.data.registry.DATASETS` to its
generator.
"""

from __future__ import annotations

import csv
import io
import wave
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["GENERATORS", "Layout", "draw_image", "write_wav"]

IMAGE_SIZE = 32


@dataclass
class Layout:
    """What a generator made: ``root`` for ``data.root`` and overrides the layout needs."""

    root: Path
    overrides: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# drawing


def _picture(cls: int, item: int, height: int = IMAGE_SIZE, width: int = IMAGE_SIZE) -> np.ndarray:
    """An RGB uint8 image: class colour, a class-placed bar (horizontal or vertical), item noise."""
    rng = np.random.default_rng(1000 * (cls + 7) + item)
    base = np.array([(cls * 67 + 30) % 256, (cls * 131 + 80) % 256, (cls * 29 + 160) % 256], dtype=np.int16)
    img = np.empty((height, width, 3), dtype=np.int16)
    img[:] = base
    if cls % 2:
        start = (cls * 5) % max(1, height - 6)
        img[start:start + 6, :] = 255 - base
    else:
        start = (cls * 3) % max(1, width - 4)
        img[:, start:start + 4] = 255 - base
    img += rng.integers(-20, 21, size=img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def draw_image(path: Path, cls: int, item: int, height: int = IMAGE_SIZE, width: int = IMAGE_SIZE) -> Path:
    """Write the picture of (``cls``, ``item``) to ``path``; the format follows the suffix
    (.jpg/.jpeg/.JPG, .png, .bmp, .tif)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_picture(cls, item, height, width)).save(path)
    return path


def write_wav(path: Path, word: int, speaker: int, item: int, rate: int, seconds: float) -> Path:
    """A 16-bit mono PCM WAV: a tone set by ``word`` (two harmonics), shifted by ``speaker``,
    with an item-dependent phase and a little noise."""
    n = int(round(rate * seconds))
    t = np.arange(n) / rate
    rng = np.random.default_rng(10_000 * word + 100 * speaker + item)
    f0 = (300.0 + 170.0 * word) * (1.0 + 0.04 * speaker)
    envelope = np.sin(np.pi * np.arange(n) / max(1, n - 1))
    signal = envelope * (0.5 * np.sin(2 * np.pi * f0 * t + item) + 0.25 * np.sin(2 * np.pi * 2.5 * f0 * t))
    signal = signal + 0.02 * rng.standard_normal(n)
    _write_pcm(path, signal, rate)
    return path


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _params(recipe: dict[str, Any]) -> dict[str, Any]:
    return dict(((recipe.get("data") or {}).get("params")) or {})


# --------------------------------------------------------------------------------------------
# the four retrieval benchmarks (deepmetric.data.benchmarks)


def cub200(base: Path, recipe: dict[str, Any]) -> Layout:
    """CUB-200-2011: ``images.txt`` (id path), ``image_class_labels.txt`` (id class),
    ``classes.txt`` (class name), ``images/NNN.Name/Name_K.jpg``; classes 1-100 train, 101-200
    test: 5 training classes (2 go to validation by classes), 4 test classes, 4 images each."""
    root = base / "CUB_200_2011"
    images, labels, classes = [], [], []
    image_id = 0
    for cls in [1, 2, 3, 4, 5, 101, 102, 103, 104]:
        folder = f"{cls:03d}.Bird_{cls}"
        classes.append(f"{cls} {folder}")
        for item in range(4):
            image_id += 1
            rel = f"{folder}/Bird_{cls}_{item + 1:04d}_{image_id}.jpg"
            draw_image(root / "images" / rel, cls, item)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {cls}")
    _write_lines(root / "images.txt", images)
    _write_lines(root / "image_class_labels.txt", labels)
    _write_lines(root / "classes.txt", classes)
    return Layout(root)


def cars196(base: Path, recipe: dict[str, Any]) -> Layout:
    """Cars196: ``cars_annos.mat`` (``annotations`` struct array with ``relative_im_path``,
    bbox, ``class``, ``test``; ``class_names`` cell array of 196) next to ``car_ims/NNNNNN.jpg``;
    classes 1-98 train, 99-196 test: 5 + 4 classes x 4 images."""
    from scipy.io import savemat

    root = base / "cars196"
    wanted = [1, 2, 3, 4, 5, 99, 100, 101, 102]
    rows = [(cls, item) for cls in wanted for item in range(4)]
    dtype = [("relative_im_path", object), ("bbox_x1", object), ("bbox_y1", object), ("bbox_x2", object),
             ("bbox_y2", object), ("class", object), ("test", object)]
    annotations = np.zeros((1, len(rows)), dtype=dtype)
    for i, (cls, item) in enumerate(rows):
        rel = f"car_ims/{i + 1:06d}.jpg"
        draw_image(root / rel, cls, item)
        annotations[0, i] = (rel, np.array([[1]], dtype=np.uint8), np.array([[1]], dtype=np.uint8),
                             np.array([[30]], dtype=np.uint8), np.array([[30]], dtype=np.uint8),
                             np.array([[cls]], dtype=np.uint8), np.array([[item % 2]], dtype=np.uint8))
    class_names = np.empty((1, 196), dtype=object)
    for c in range(196):
        class_names[0, c] = f"Make Model {c + 1} 2012"
    savemat(root / "cars_annos.mat", {"annotations": annotations, "class_names": class_names})
    return Layout(root)


def sop(base: Path, recipe: dict[str, Any]) -> Layout:
    """Stanford Online Products: ``Ebay_train.txt`` / ``Ebay_test.txt`` (header, then
    ``image_id class_id super_class_id path``) and ``<super>_final/<class>_<n>.JPG``;
    5 training classes (1-5), 4 test classes (11319-11322), 4 images each."""
    root = base / "Stanford_Online_Products"
    supers = ["bicycle", "cabinet", "chair"]
    header = "image_id class_id super_class_id path"
    image_id = 0
    for name, wanted in (("Ebay_train.txt", [1, 2, 3, 4, 5]), ("Ebay_test.txt", [11319, 11320, 11321, 11322])):
        lines = [header]
        for cls in wanted:
            super_id = cls % len(supers)
            for item in range(4):
                image_id += 1
                rel = f"{supers[super_id]}_final/{111085122000 + cls}_{item}.JPG"
                draw_image(root / rel, cls % 97, item)
                lines.append(f"{image_id} {cls} {super_id + 1} {rel}")
        _write_lines(root / name, lines)
    return Layout(root)


def inshop(base: Path, recipe: dict[str, Any]) -> Layout:
    """In-Shop Clothes: ``Eval/list_eval_partition.txt`` (count line, header line, then
    ``image_name item_id evaluation_status``) with images under ``img/``; 5 training items,
    4 test items with 2 query + 2 gallery photos each."""
    root = base / "inshop"
    rows = []
    for n, cls in enumerate([1, 2, 3, 4, 5, 6, 7, 8, 9]):
        item_id = f"id_{cls:08d}"
        for k in range(4):
            rel = f"img/WOMEN/Dresses/{item_id}/{k + 1:02d}_{k + 1}_front.jpg"
            draw_image(root / rel, cls, k)
            status = "train" if n < 5 else ("query" if k < 2 else "gallery")
            rows.append(f"{rel} {item_id} {status}")
    header = "image_name item_id evaluation_status"
    _write_lines(root / "Eval" / "list_eval_partition.txt", [str(len(rows)), header, *rows])
    return Layout(root)


# --------------------------------------------------------------------------------------------
# folders, manifests, Omniglot, Olivetti, Brazilian Coffee Scenes


_FOLDER_SUFFIXES = (".jpg", ".png", ".tif")


def folder(base: Path, recipe: dict[str, Any]) -> Layout:
    """Folder per class, ``root/<class>/<image>``: 5 classes of 20, 8, 8, 6 and 6 images
    (suffixes .jpg, .png and .tif by class), so an item split (test_fraction 0.2) and a
    validation split of it (0.1) both hold a class with 2+ items, and a class split works too."""
    root = base / "scenes"
    for cls, count in enumerate((20, 8, 8, 6, 6)):
        for item in range(count):
            draw_image(root / f"class_{cls}" / f"img_{item:03d}{_FOLDER_SUFFIXES[cls % 3]}", cls, item)
    return Layout(root)


def scene_folder(base: Path, recipe: dict[str, Any]) -> Layout:
    """``scene_folder`` reads the same folder-per-class layout as ``folder``."""
    return folder(base, recipe)


def manifest_csv(base: Path, recipe: dict[str, Any]) -> Layout:
    """CSV manifest: ``path,label,split`` (paths relative to the CSV); 5 training labels and
    4 test labels, 5 images each."""
    root = base / "manifest"
    rows = []
    for cls in range(9):
        for item in range(5):
            rel = f"images/{cls}_{item}.png"
            draw_image(root / rel, cls, item)
            rows.append({"path": rel, "label": f"label_{cls}", "split": "train" if cls < 5 else "test"})
    root.mkdir(parents=True, exist_ok=True)
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return Layout(root / "manifest.csv")


def omniglot(base: Path, recipe: dict[str, Any]) -> Layout:
    """An Omniglot zip: ``images_background_small1/<alphabet>/characterNN/<NNNN_XX>.png`` (1-bit
    drawings); 3 alphabets x 4 characters x 4 drawings."""
    base.mkdir(parents=True, exist_ok=True)
    path = base / "images_background_small1.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for a, alphabet in enumerate(["Alpha_(Test)", "Beta", "Gamma"]):
            for c in range(4):
                cls = 4 * a + c
                for drawer in range(4):
                    grey = _picture(cls, drawer).mean(axis=2) > 127
                    buffer = io.BytesIO()
                    Image.fromarray(grey).convert("1").save(buffer, format="PNG")
                    drawing = f"{cls + 1:04d}_{drawer + 1:02d}.png"
                    name = f"images_background_small1/{alphabet}/character{c + 1:02d}/{drawing}"
                    archive.writestr(name, buffer.getvalue())
    return Layout(path)


def olivetti(base: Path, recipe: dict[str, Any]) -> Layout:
    """Olivetti ``.npz``: ``images`` uint8 (N, 64, 64) and ``labels`` (N,); 8 people x 5 photos."""
    base.mkdir(parents=True, exist_ok=True)
    labels = np.repeat(np.arange(8), 5)
    images = np.stack([_picture(int(p), i % 5, 64, 64).mean(axis=2).astype(np.uint8) for i, p in enumerate(labels)])
    path = base / "olivetti.npz"
    np.savez(path, images=images, labels=labels)
    return Layout(path)


def brazilian_coffee(base: Path, recipe: dict[str, Any]) -> Layout:
    """Brazilian Coffee Scenes: ``foldK.txt`` (``<class>.<image name>`` per line) and ``foldK/``
    with ``<image name>.jpg`` for K = 1..5; 7 coffee + 7 noncoffee tiles per fold (28 per class
    in the four training folds, so a 0.1 validation split holds 3 of each: 6 items, as k-NN
    accuracy over 5 neighbours needs)."""
    root = base / "brazilian_coffee_scenes"
    for fold in range(1, 6):
        lines = []
        for cls, name in enumerate(("noncoffee", "coffee")):
            for item in range(7):
                image = f"{fold}.{cls}.{item}.{100 + item}.{200 + fold}"
                draw_image(root / f"fold{fold}" / f"{image}.jpg", cls, 10 * fold + item)
                lines.append(f"{name}.{image}")
        _write_lines(root / f"fold{fold}.txt", lines)
    return Layout(root)


# --------------------------------------------------------------------------------------------
# dermoscopy (deepmetric.data.skin_lesions)

#: PH2 images per clinical diagnosis (common nevus, atypical nevus, melanoma): every split the
#: recipes use (test_fraction 0.2, or 2 stratified folds, then a 0.2 validation split by items)
#: leaves 6+ items (k-NN accuracy votes among 5 neighbours) and a class with 2+ on each side
PH2_COUNTS = (30, 20, 12)
#: the PH2 copy that is only a test split (cross-dataset recipes)
PH2_TEST_COUNTS = (6, 4, 4)


def ph2_release(root: Path) -> Path:
    """The original PH2 release: ``PH2Dataset/PH2_dataset.txt`` (``|| IMDnnn || histology ||
    clinical diagnosis || ...`` rows) and ``PH2Dataset/PH2 Dataset images/IMDnnn/
    IMDnnn_Dermoscopic_Image/IMDnnn.bmp``."""
    folder = root / "PH2Dataset"
    lines = ["|| Name || Histological Diagnosis || Clinical Diagnosis || Asymmetry || Pigment Network ||",
             "||------||------------------------||--------------------||-----------||-----------------||"]
    number = 2
    for diagnosis, count in enumerate(PH2_COUNTS):
        for item in range(count):
            number += 1
            name = f"IMD{number:03d}"
            image = folder / "PH2 Dataset images" / name / f"{name}_Dermoscopic_Image" / f"{name}.bmp"
            draw_image(image, diagnosis, item)
            histology = "Melanoma" if diagnosis == 2 else ""
            lines.append(f"|| {name} || {histology:^22} || {diagnosis:^18} || {item % 3:^9} || {'AT'[item % 2]:^15} ||")
    _write_lines(folder / "PH2_dataset.txt", lines)
    return root


def ph2_project(root: Path, counts: Sequence[int] = PH2_COUNTS) -> Path:
    """This project's PH2 layout: ``labels.csv`` (``image,diagnosis``) and ``images/``."""
    rows = []
    for d, diagnosis in enumerate(("common_nevus", "atypical_nevus", "melanoma")):
        for item in range(counts[d]):
            name = f"IMD{100 * (d + 1) + item:03d}.png"
            draw_image(root / "images" / name, d, item)
            rows.append({"image": name, "diagnosis": diagnosis})
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "diagnosis"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def ph2(base: Path, recipe: dict[str, Any]) -> Layout:
    """PH2 in the original release layout (see :func:`ph2_release`); :data:`PH2_COUNTS` images."""
    return Layout(ph2_release(base / "PH2"))


def _test_ph2(base: Path, recipe: dict[str, Any]) -> list[str]:
    """``data.params.test_ph2_root`` of a cross-dataset recipe -> a generated PH2 (this
    project's layout, so both PH2 parsers are exercised)."""
    if "test_ph2_root" not in _params(recipe):
        return []
    root = base / "ph2_project"
    root.mkdir(parents=True, exist_ok=True)
    return [f"data.params.test_ph2_root={ph2_project(root, PH2_TEST_COUNTS)}"]


def isic2016(base: Path, recipe: dict[str, Any]) -> Layout:
    """ISIC 2016 part 3: ``ISBI2016_ISIC_Part3_{Training,Test}_GroundTruth.csv`` (no header;
    ``ISIC_nnnnnnn,benign|malignant`` for training, ``...,0.0|1.0`` for test) and the image
    folders ``ISBI2016_ISIC_Part3_{Training,Test}_Data/ISIC_nnnnnnn.jpg``; training 20 benign +
    8 malignant (2 folds, then a 0.2 validation split, keep 2+ benign on each side), test 3 + 3."""
    root = base / "isic2016"
    image_id = 0
    for part, counts, names in (("Training", (20, 8), ("benign", "malignant")), ("Test", (3, 3), ("0.0", "1.0"))):
        lines = []
        for cls in range(2):
            for item in range(counts[cls]):
                name = f"ISIC_{image_id:07d}"
                image_id += 1
                draw_image(root / f"ISBI2016_ISIC_Part3_{part}_Data" / f"{name}.jpg", cls, item + 10 * (part == "Test"))
                lines.append(f"{name},{names[cls]}")
        _write_lines(root / f"ISBI2016_ISIC_Part3_{part}_GroundTruth.csv", lines)
    return Layout(root, _test_ph2(base, recipe))


def isic2017(base: Path, recipe: dict[str, Any]) -> Layout:
    """ISIC 2017 part 3: ``ISIC-2017_{Training,Test_v2}_Part3_GroundTruth.csv`` (header
    ``image_id,melanoma,seborrheic_keratosis``; nevus = both 0) and
    ``ISIC-2017_{Training,Test_v2}_Data/ISIC_nnnnnnn.jpg``; training 20 nevus, 8 seborrheic
    keratosis, 8 melanoma; test 3 of each."""
    root = base / "isic2017"
    image_id = 0
    flags = {0: ("0.0", "0.0"), 1: ("0.0", "1.0"), 2: ("1.0", "0.0")}  # nevus, seborrheic keratosis, melanoma
    for part, counts in (("Training", (20, 8, 8)), ("Test_v2", (3, 3, 3))):
        lines = ["image_id,melanoma,seborrheic_keratosis"]
        for cls in range(3):
            for item in range(counts[cls]):
                name = f"ISIC_{image_id:07d}"
                image_id += 1
                draw_image(root / f"ISIC-2017_{part}_Data" / f"{name}.jpg", cls, item + 10 * (part != "Training"))
                lines.append(f"{name},{flags[cls][0]},{flags[cls][1]}")
        _write_lines(root / f"ISIC-2017_{part}_Part3_GroundTruth.csv", lines)
    return Layout(root, _test_ph2(base, recipe))


# --------------------------------------------------------------------------------------------
# speech (deepmetric.data.speech)

#: utterances of every (speaker, word): 4 training speakers give 16 per word, so a 0.1 validation
#: split by items holds 2; a transfer target has 1 shot + 2 held-out utterances to spare
UTTERANCES = 4


def _named_speakers(recipe: dict[str, Any]) -> list[str]:
    """Speakers the recipe names (test speakers, the transfer targets)."""
    params = _params(recipe)
    names = list(params.get("test_speakers") or [])
    if params.get("target_speaker"):
        names.append(str(params["target_speaker"]))
    names += [str(s) for s in ((recipe.get("protocol") or {}).get("target_speakers") or [])]
    return list(dict.fromkeys(str(n) for n in names))


def _write_pcm(path: Path, samples: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes())


def fsdd(base: Path, recipe: dict[str, Any]) -> Layout:
    """Free Spoken Digit Dataset: ``recordings/DIGIT_SPEAKER_INDEX.wav`` (8 kHz); digits 0-2 by
    the six FSDD speakers (george, jackson, lucas, nicolas, theo, yweweler) and any the recipe
    names, :data:`UTTERANCES` each."""
    root = base / "fsdd"
    fsdd_speakers = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
    speakers = list(dict.fromkeys([*fsdd_speakers, *_named_speakers(recipe)]))
    for s, speaker in enumerate(speakers):
        for digit in range(3):
            for index in range(UTTERANCES):
                write_wav(root / "recordings" / f"{digit}_{speaker}_{index}.wav", digit, s, index, 8000, 0.3)
    (root / "README.md").write_text("Free Spoken Digit Dataset (generated)\n")
    return Layout(root)


def speech_commands(base: Path, recipe: dict[str, Any]) -> Layout:
    """Speech Commands: ``WORD/SPEAKER_nohash_N.wav`` (16 kHz), ``_background_noise_/*.wav``
    (3 s each: 6 one-second ``_silence_`` segments), ``testing_list.txt`` and
    ``validation_list.txt`` (``WORD/FILE`` paths, one speaker each); core words yes, no, up
    (:data:`UTTERANCES` per speaker) and the other words bed, cat (one each: ``_unknown_``);
    6 speakers plus any the recipe names."""
    root = base / "speech_commands"
    speakers = ["0a7c2a8d", "1b4c9b89", "2aca1e72", "3bfd30e6", "4c6944d6", "5e3dde6b", *_named_speakers(recipe)]
    speakers = list(dict.fromkeys(speakers))
    testing, validation = [], []
    for w, word in enumerate(["yes", "no", "up", "bed", "cat"]):
        for s, speaker in enumerate(speakers):
            for n in range(UTTERANCES if w < 3 else 1):
                rel = f"{word}/{speaker}_nohash_{n}.wav"
                write_wav(root / rel, w, s, n, 16000, 0.5)
                (testing if s == 0 else validation if s == 1 else []).append(rel)
    rng = np.random.default_rng(0)
    for name in ("white_noise", "pink_noise"):
        _write_pcm(root / "_background_noise_" / f"{name}.wav", 0.1 * rng.standard_normal(16000 * 3), 16000)
    (root / "_background_noise_" / "README.md").write_text("background noise\n")
    _write_lines(root / "testing_list.txt", testing)
    _write_lines(root / "validation_list.txt", validation)
    (root / "LICENSE").write_text("CC-BY-4.0\n")
    return Layout(root)


def speech_csv(base: Path, recipe: dict[str, Any]) -> Layout:
    """A speech manifest: ``manifest.csv`` with ``path,word,speaker`` (paths relative to it) and
    16 kHz WAVs; 3 words by 5 speakers plus any the recipe names, :data:`UTTERANCES` each."""
    root = base / "speech_csv"
    speakers = list(dict.fromkeys(["anna", "bert", "carl", "dora", "emil", *_named_speakers(recipe)]))
    rows = []
    for s, speaker in enumerate(speakers):
        for w, word in enumerate(("alpha", "bravo", "charlie")):
            for n in range(UTTERANCES):
                rel = f"clips/{speaker}/{word}_{n}.wav"
                write_wav(root / rel, w, s, n, 16000, 0.4)
                rows.append({"path": rel, "word": word, "speaker": speaker})
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "word", "speaker"])
        writer.writeheader()
        writer.writerows(rows)
    return Layout(root / "manifest.csv")


# --------------------------------------------------------------------------------------------
# re-identification (deepmetric.data.tracklets, deepmetric.data.market1501)

FRAME_HEIGHT, FRAME_WIDTH = 32, 16


def _frame(path: Path, person: int, camera: int, index: int) -> None:
    draw_image(path, person % 97, 100 * camera + index, FRAME_HEIGHT, FRAME_WIDTH)


def mars(base: Path, recipe: dict[str, Any]) -> Layout:
    """MARS: ``bbox_{train,test}/PPPP/PPPPCcTttttFfff.jpg`` and ``info/`` with
    ``{train,test}_name.txt``, ``tracks_{train,test}_info.mat`` (rows ``[start, end, person,
    camera]``, 1-based into the name lists) and ``query_IDX.mat`` (1-based test-track rows).
    Training: 6 people with 3 tracklets of 4 frames (cameras 1, 2, 1), so the validation
    identities (at least 2) hold the 6 tracklets k-NN accuracy over 5 neighbours needs; test:
    4 people with a camera-1 query and a camera-2 gallery tracklet, plus a junk (-1) and a
    distractor (0) gallery tracklet."""
    from scipy.io import savemat

    root = base / "MARS"

    def build(part: str, tracks: list[tuple[int, int, int]]) -> np.ndarray:
        names, info = [], []
        for track, (person, camera, n_frames) in enumerate(tracks, start=1):
            folder = "00-1" if person == -1 else f"{person:04d}"
            start = len(names) + 1
            for f in range(n_frames):
                name = f"{folder}C{camera}T{track:04d}F{f + 1:03d}.jpg"
                _frame(root / f"bbox_{part}" / folder / name, max(person, 0), camera, f)
                names.append(name)
            info.append([start, len(names), person, camera])
        _write_lines(root / "info" / f"{part}_name.txt", names)
        matrix = np.array(info, dtype=np.float64)
        savemat(root / "info" / f"tracks_{part}_info.mat", {f"track_{part}_info": matrix})
        return matrix

    build("train", [(p, c, 4) for p in (1, 3, 5, 7, 9, 11) for c in (1, 2, 1)])
    test_tracks = [(p, c, 5) for p in (2, 4, 6, 8) for c in (1, 2)] + [(-1, 3, 2), (0, 4, 3)]
    build("test", test_tracks)
    query = [i + 1 for i, (person, camera, _) in enumerate(test_tracks) if person > 0 and camera == 1]
    savemat(root / "info" / "query_IDX.mat", {"query_IDX": np.array([query], dtype=np.float64)})
    return Layout(root)


#: people of the two-camera re-ID layouts: half test, and of the 13 training people
#: round(0.2 x 13) = 3 validation identities, i.e. 6 tracklets (k-NN accuracy needs 6)
TWO_CAMERA_PEOPLE = 26


def prid2011(base: Path, recipe: dict[str, Any]) -> Layout:
    """PRID2011 multi-shot: ``prid_2011/multi_shot/cam_a|cam_b/person_NNNN/NNNN.png``;
    :data:`TWO_CAMERA_PEOPLE` people seen by both cameras with ``max(min_frames, 4)`` frames each
    (the recipe's ``min_frames`` filter keeps them all)."""
    root = base / "prid2011"
    n_frames = max(int(_params(recipe).get("min_frames") or 0), 4)
    for camera, cam in enumerate(("cam_a", "cam_b")):
        for person in range(1, TWO_CAMERA_PEOPLE + 1):
            for f in range(n_frames):
                frame = root / "prid_2011" / "multi_shot" / cam / f"person_{person:04d}" / f"{f + 1:04d}.png"
                _frame(frame, person, camera, f)
    return Layout(root)


def ilidsvid(base: Path, recipe: dict[str, Any]) -> Layout:
    """iLIDS-VID: ``i-LIDS-VID/sequences/cam1|cam2/personNNN/camK_personNNN_FFFFF.png``;
    :data:`TWO_CAMERA_PEOPLE` people (ids with gaps, as in the release) x 2 cameras x 5 frames."""
    root = base / "iLIDS-VID"
    for camera, cam in enumerate(("cam1", "cam2")):
        for person in [p + p // 7 for p in range(1, TWO_CAMERA_PEOPLE + 1)]:
            for f in range(5):
                name = f"{cam}_person{person:03d}_{100 * f:05d}.png"
                _frame(root / "i-LIDS-VID" / "sequences" / cam / f"person{person:03d}" / name, person, camera, f)
    return Layout(root)


def market1501(base: Path, recipe: dict[str, Any]) -> Layout:
    """Market-1501: ``bounding_box_train/``, ``bounding_box_test/`` and ``query/`` with
    ``PPPP_cCsS_FFFFFF_BB.jpg`` crops; 6 training people x 4 crops over 2 cameras, 4 test people
    (one query on camera 1, two gallery crops on camera 2), junk (-1) and distractor (0) crops."""
    root = base / "Market-1501-v15.09.15"

    def crop(folder: str, person: int, camera: int, index: int) -> None:
        pid = "-1" if person == -1 else f"{person:04d}"
        name = f"{pid}_c{camera}s1_{1000 * index + 51:06d}_0{index % 3 + 1}.jpg"
        _frame(root / folder / name, max(person, 0), camera, index)

    for person in (2, 7, 10, 11, 12, 20):
        for index in range(4):
            crop("bounding_box_train", person, 1 + index % 2, index)
    for person in (1, 3, 5, 9):
        crop("query", person, 1, 0)
        for index in range(2):
            crop("bounding_box_test", person, 2, index + 1)
    crop("bounding_box_test", -1, 3, 0)
    crop("bounding_box_test", 0, 4, 0)
    return Layout(root)


def tracklet_csv(base: Path, recipe: dict[str, Any]) -> Layout:
    """A tracklet manifest: ``tracklets.csv`` with one row per frame, ``path,person,camera,sequence``
    (paths relative to the CSV); 8 people x 2 cameras x 5 frames."""
    root = base / "tracklets"
    rows = []
    for person in range(1, 9):
        for camera in (0, 1):
            for f in range(5):
                rel = f"frames/p{person:03d}/c{camera}_{f:03d}.jpg"
                _frame(root / rel, person, camera, f)
                rows.append({"path": rel, "person": person, "camera": camera, "sequence": f"p{person}c{camera}"})
    with (root / "tracklets.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "person", "camera", "sequence"])
        writer.writeheader()
        writer.writerows(rows)
    return Layout(root / "tracklets.csv")


#: ``data.name`` -> generator(base folder, raw recipe dict) -> :class:`Layout`
GENERATORS: dict[str, Callable[[Path, dict[str, Any]], Layout]] = {
    "folder": folder,
    "csv": manifest_csv,
    "omniglot": omniglot,
    "olivetti": olivetti,
    "cub200": cub200,
    "cars196": cars196,
    "sop": sop,
    "inshop": inshop,
    "brazilian_coffee": brazilian_coffee,
    "scene_folder": scene_folder,
    "ph2": ph2,
    "isic2016": isic2016,
    "isic2017": isic2017,
    "fsdd": fsdd,
    "speech_commands": speech_commands,
    "speech_csv": speech_csv,
    "mars": mars,
    "prid2011": prid2011,
    "ilidsvid": ilidsvid,
    "market1501": market1501,
    "tracklet_csv": tracklet_csv,
}
