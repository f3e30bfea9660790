"""``deepmetric.load(RUN) -> Embedder``: embeddings of every accepted item type equal the model's
own evaluation pipeline, whatever the batch size or the loading path.

References, written out here rather than taken from the deploy package: images through
``deepmetric.data.image_io.load_image`` + ``model.eval_transform()`` + a one-image-at-a-time
forward of the model rebuilt by ``load_trained``; audio through
``deepmetric.data.speech.fsdd_dataset`` (its cached log-mel features and ``pad_collate``).
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import functional as TF

import deepmetric
from deepmetric.data.image_io import load_image
from deepmetric.data.speech import fsdd_dataset, pad_collate
from deepmetric.deploy import Embedder, ModelCard
from deepmetric.errors import DataError, InputError
from deepmetric.models.contracts import embedding_of
from deepmetric.training import load_trained

from deploy_runs import run_factory, write_images  # noqa: F401  (fixture)

ATOL = 1e-5  # different batch sizes may pick different convolution kernels


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_images(tmp_path_factory.mktemp("images"), n=7)


def _manual(run: Path, files: list[Path]) -> np.ndarray:
    model, _, _ = load_trained(run, "best")
    transform = model.eval_transform()
    rows = []
    with torch.inference_mode():
        for path in files:
            x = transform(load_image(path, "RGB"))[None]
            rows.append(embedding_of(model, model(x))[0].numpy())
    return np.stack(rows)


def test_load_gives_an_nn_module_that_embeds_like_the_model(run_factory: Any, images: list[Path]) -> None:
    run = run_factory("efficientnet")
    embedder = deepmetric.load(run, device="cpu")
    assert isinstance(embedder, Embedder) and isinstance(embedder, nn.Module) and not embedder.training
    assert isinstance(embedder.card, ModelCard) and embedder.card.checkpoint.which == "best"
    want = _manual(run, images)
    by_path = embedder.embed(images)
    by_str = embedder.embed([str(p) for p in images])
    by_pil = embedder.embed([Image.open(p) for p in images])
    assert by_path.dtype == np.float32 and by_path.shape == (len(images), 8)
    assert np.abs(by_path - want).max() <= ATOL
    assert np.array_equal(by_path, by_str) and np.array_equal(by_path, by_pil)
    with torch.inference_mode():  # calling the module on a preprocessed batch
        direct = embedder(embedder.preprocess(images)).numpy()
    assert np.abs(direct - by_path).max() <= ATOL


def test_numpy_arrays_and_tensors_embed_like_their_image(run_factory: Any, images: list[Path]) -> None:
    embedder = deepmetric.load(run_factory("efficientnet"), device="cpu")
    want = embedder.embed(images)
    pil = [load_image(p, "RGB") for p in images]
    arrays = [np.array(im) for im in pil]
    uint8 = [torch.from_numpy(a).permute(2, 0, 1) for a in arrays]
    floats = [TF.to_tensor(im) for im in pil]  # floats in [0, 1], C x H x W
    for items in (arrays, uint8, floats):
        assert np.array_equal(embedder.embed(items), want)
    grey = load_image(images[1], "L")  # an H x W array of a grey image equals its file
    assert np.array_equal(embedder.embed([np.asarray(grey)]), embedder.embed([grey]))


def test_batch_size_and_worker_processes_do_not_change_results(run_factory: Any, images: list[Path]) -> None:
    embedder = deepmetric.load(run_factory("multilevel"), device="cpu")  # named outputs: "embedding" only
    want = embedder.embed(images, batch_size=64)
    assert want.shape == (len(images), 16)
    for batch_size in (1, 3):
        assert np.abs(embedder.embed(images, batch_size=batch_size) - want).max() <= ATOL
    decoded = embedder.embed(images, batch_size=2, num_workers=1)  # decoding in a worker process
    assert np.abs(decoded - want).max() <= ATOL
    assert embedder.embed([]).shape == (0, 16)


def test_wrong_items_are_one_line_errors_naming_the_type(run_factory: Any, images: list[Path]) -> None:
    embedder = deepmetric.load(run_factory("efficientnet"), device="cpu")
    with pytest.raises(InputError, match=r"^item 1 is a builtins\.int; an image model embeds PIL images") as info:
        embedder.embed([images[0], 3])
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="pass a list of items, not one str"):
        embedder.embed(str(images[0]))
    with pytest.raises(InputError, match=r"item 0 is a builtins\.dict"):
        embedder.preprocess([{"path": images[0]}])
    with pytest.raises(InputError, match="numpy array of dtype float64; pass uint8 pixels"):
        embedder.embed([np.zeros((8, 8, 3))])
    with pytest.raises(InputError, match=r"tensor of shape \(2, 5, 8, 8\)"):
        embedder.embed([torch.zeros(2, 5, 8, 8)])
    missing = images[0].with_name("missing.png")
    with pytest.raises(DataError, match="does not exist"):  # a bad file, raised from a worker intact
        embedder.embed([*images] * 3 + [missing], batch_size=2, num_workers=1)
    with pytest.raises(DataError, match="missing.png does not exist"):  # ... or from the first batch
        embedder.embed([missing, *images], batch_size=2, num_workers=1)


def test_progress_bar_only_for_long_lists(run_factory: Any, images: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    embedder = deepmetric.load(run_factory("efficientnet"), device="cpu")
    embedder.embed(images, batch_size=4)  # 7 items, 2 batches: no bar
    assert "embedding" not in capsys.readouterr().err
    embedder.embed(images, batch_size=1, num_workers=0)  # 7 batches: a bar
    assert "embedding" in capsys.readouterr().err
    embedder.embed(images, batch_size=1, num_workers=0, progress=False)
    assert "embedding" not in capsys.readouterr().err


def test_load_errors(run_factory: Any, tmp_path: Path) -> None:
    run = run_factory("efficientnet")
    with pytest.raises(DataError, match=r"no checkpoints/last\.pt \(it has: best\); pass which='best'"):
        deepmetric.load(run, which="last")
    with pytest.raises(DataError, match="not found"):
        deepmetric.load(tmp_path / "nowhere")
    checkpoint = deepmetric.load(run / "checkpoints" / "best.pt", device="cpu")  # a checkpoint file works too
    assert checkpoint.card.checkpoint.which == "best"


# ------------------------------------------------------------------------------------ audio


def _write_fsdd(root: Path) -> list[Path]:
    """Six 8 kHz 16-bit WAV files named like the Free Spoken Digit Dataset (DIGIT_SPEAKER_INDEX)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (digit, speaker) in enumerate([(0, "ann"), (1, "ann"), (2, "ann"), (0, "bob"), (1, "bob"), (2, "bob")]):
        n = 1200 + 700 * i
        t = np.arange(n) / 8000.0
        signal = 0.3 * np.sin(2 * np.pi * (200 + 150 * digit) * t) + 0.05 * rng.normal(size=n)
        path = root / f"{digit}_{speaker}_{i}.wav"
        with wave.open(str(path), "wb") as handle:
            handle.setnchannels(1)
            handle.setsampwidth(2)
            handle.setframerate(8000)
            handle.writeframes((np.clip(signal, -1, 1) * 32767).astype("<i2").tobytes())
        paths.append(path)
    return paths


def test_audio_waveforms_embed_like_the_speech_dataset(run_factory: Any, tmp_path: Path) -> None:
    _write_fsdd(tmp_path / "fsdd")
    dataset = fsdd_dataset(tmp_path / "fsdd", split="train", test_speakers=["bob"])  # ann's three files
    files = [Path(p) for p in dataset.paths]
    waveforms = [dataset.waveform(i) for i in range(len(dataset))]
    (features, lengths), _ = pad_collate([dataset[i] for i in range(len(dataset))])
    embedder = deepmetric.load(run_factory("audio"), device="cpu")
    assert embedder.input_kind == "audio_features" and embedder.card.audio.sample_rate == 8000
    got_features, got_lengths = embedder.preprocess(waveforms)
    assert torch.equal(got_lengths, lengths) and torch.allclose(got_features, features, atol=1e-6)
    model, _, _ = load_trained(run_factory("audio"), "best")
    with torch.inference_mode():
        want = np.stack([model(dataset[i][0][None], lengths[i : i + 1])[0].numpy() for i in range(len(dataset))])
    by_wave = embedder.embed(waveforms)
    assert np.abs(by_wave - want).max() <= ATOL
    assert np.abs(embedder.embed(files) - by_wave).max() <= 1e-6  # wav files read and resampled alike
    assert np.abs(embedder.embed([w.numpy() for w in waveforms], batch_size=1) - by_wave).max() <= ATOL
    assert np.abs(embedder.embed([dataset[i][0] for i in range(3)]) - by_wave).max() <= ATOL  # features as items
    with torch.inference_mode():
        assert np.abs(embedder(features, lengths).numpy() - by_wave).max() <= ATOL
    with pytest.raises(InputError, match=r"item 0 is a PIL\.Image\.Image; an audio model embeds audio file paths"):
        embedder.embed([Image.new("RGB", (4, 4))])
    with pytest.raises(InputError, match=r"shape \(2, 100\); pass a 1-D waveform or features of shape \(frames, 40\)"):
        embedder.embed([torch.zeros(2, 100)])
