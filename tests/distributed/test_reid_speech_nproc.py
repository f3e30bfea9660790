"""Multi-process training of the task-specific models (``--nproc 2`` style: 2 CPU processes,
gloo) equals single-process training on the concatenated batches.

Each test is independent (its own data, config and workers). The single-process reference uses
a P x K sampler whose batch i is the global batches 2i and 2i+1 concatenated, i.e. exactly what
ranks 0 and 1 train on together at step i; :class:`~deepmetric.training.distributed.GatheredLoss`
gathers every named output, so the losses see the same global batch and the summed gradients
are the single-process gradients.

The data are deterministic per item (no random augmentation, clips of exactly their tracklet's
frames): the trainer seeds each item by its position in the rank's batch, which differs from its
position in the concatenated single-process batch, so random draws would differ by design.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from deepmetric.data.samplers import PKSampler
from deepmetric.training.checkpoint import load_checkpoint

needs_gloo = pytest.mark.skipif(not dist.is_available() or sys.platform == "win32", reason="torch.distributed unavailable")


class PairedSampler:
    """Single-process equivalent of two ranks: batch i = global batches 2i and 2i+1 concatenated."""

    def __init__(self, labels: Any, p: int, k: int, seed: int, small_class_policy: str) -> None:
        self.inner = PKSampler(labels, p=p, k=k, seed=seed, small_class_policy=small_class_policy, rank=0, world_size=2)

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):  # noqa: ANN204
        batches = self.inner.global_batches()
        for i in range(len(self.inner)):
            yield batches[2 * i] + batches[2 * i + 1]


def _logged_losses(run: Path) -> list[float]:
    return [float(line.split(",")[2]) for line in (run / "log.csv").read_text().splitlines()[1:]]


def _assert_same_training(one: Path, two: Path, steps: int) -> None:
    a = load_checkpoint(one / "checkpoints" / "last.pt")
    b = load_checkpoint(two / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == steps
    for part in ("model", "loss"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            torch.testing.assert_close(b[part][key], a[part][key], atol=1e-5, rtol=1e-5, msg=f"{part}.{key}")
    np.testing.assert_allclose(_logged_losses(two), _logged_losses(one), atol=1e-5, rtol=1e-5)


def _fit_worker(rank: int, world: int, init_file: str, run_dir: str, config: dict[str, Any]) -> None:
    import os

    from deepmetric.training import fit

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    fit(config, run_dir, progress=False, report=False)
    dist.destroy_process_group()


# --------------------------------------------------------------------------------------------
# re-ID: the tracklet model with frame + tracklet losses


def _tracklet_manifest(root: Path) -> Path:
    """10 people x 2 cameras x 2 sequences of exactly 2 PNG frames (a colour per person)."""
    rng = np.random.default_rng(0)
    rows = []
    for person in range(1, 11):
        base = np.array([(37 * person) % 256, (91 * person) % 256, (53 * person) % 256], dtype=float)
        for camera in (0, 1):
            for sequence in ("s1", "s2"):
                for f in range(2):
                    rel = f"p{person}/c{camera}_{sequence}_{f}.png"
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    pixels = np.clip(base + rng.normal(0, 12, (16, 8, 3)), 0, 255).astype(np.uint8)
                    Image.fromarray(pixels).save(root / rel)
                    rows.append({"path": rel, "person": person, "camera": camera, "sequence": sequence})
    manifest = root / "frames.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "person", "camera", "sequence"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def _reid_config(manifest: Path) -> dict[str, Any]:
    return {
        "device": "cpu",
        "data": {"name": "tracklet_csv", "root": str(manifest), "num_workers": 0, "val_fraction": 0.2,
                 "params": {"seq_len": 2, "height": 16, "width": 8, "hflip": 0.0, "pad": 0,
                            "test_fraction": 0.3, "split_seed": 0}},
        "sampler": {"p": 2, "k": 2},
        "model": {"name": "tracklet", "backbone": "test_efficientnet", "pretrained": False, "embedding_dim": 8,
                  "freeze_bn": True, "params": {"temporal": "attention"}},
        "loss": {"name": "osm_caa", "params": {"ce_weight": 1.0}, "heads": {"frame": 1.0, "tracklet": 0.5}},
        "optimizer": {"name": "sgd", "lr": 0.05, "backbone_lr_mult": 1.0},
        "scheduler": {"name": "none", "warmup_steps": 0},
        "trainer": {"steps": 3, "eval_every": 3, "checkpoint_every": 3, "log_every": 1},
        "eval": {"protocol": "reid", "k_values": [1], "baseline": False, "batch_size": 4},
    }


@needs_gloo
def test_reid_nproc2_equals_single_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deepmetric.data.registry import SAMPLERS
    from deepmetric.training import fit

    config = _reid_config(_tracklet_manifest(tmp_path / "data"))
    mp.start_processes(_fit_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "ddp"), config), nprocs=2,
                       start_method="spawn")
    monkeypatch.setitem(SAMPLERS, "pk", PairedSampler)
    single = fit(config, tmp_path / "single", progress=False, report=False)
    _assert_same_training(tmp_path / "single", tmp_path / "ddp", steps=3)
    assert {"cmc@1", "map"} <= set(single["test"])


# --------------------------------------------------------------------------------------------
# speech: audio_cnn on padded variable-length utterances (independent of the re-ID test above)
#
# Two things make a spoken-word batch special: every rank pads its own batch to its own longest
# utterance (pad_collate), so the ranks' padded lengths differ from each other and from the
# concatenated single-process batch; and audio_cnn's convolution blocks use BatchNorm, whose
# training-mode statistics are per process (as in torch DDP without SyncBatchNorm) and include
# the padded frames. Hence:
#
# * the whole fit is compared with an audio_cnn that has no BatchNorm: no convolution blocks
#   (``channels: []``) and a bidirectional GRU over packed sequences with masked mean pooling.
#   Equal weights after training prove that padding, collate, gathering and gradient summing
#   are exact for variable-length batches;
# * the convolutional audio_cnn (BatchNorm) is compared at the level of one loss + gradient,
#   with the network in evaluation mode (BatchNorm uses its running statistics, so the network
#   is a per-utterance function that ignores padding).
#
# The data loader drops SpecAugment: item augmentation is seeded by the item's position in its
# rank's batch, which differs from its position in the concatenated batch.

_SPEECH_RATE = 8000


def _speech_corpus(root: Path) -> Path:
    """FSDD-named tones: 4 words x 3 speakers x 3 utterances of 0.08-0.4 s (many lengths)."""
    import wave

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for word, hz in enumerate((300, 700, 1300, 2100)):
        for speaker, shift in (("ann", 1.0), ("bob", 1.1), ("cid", 0.92)):
            for i in range(3):
                t = np.arange(int(_SPEECH_RATE * rng.uniform(0.08, 0.4))) / _SPEECH_RATE
                x = 0.4 * np.sin(2 * np.pi * hz * shift * t) + 0.05 * rng.standard_normal(len(t))
                with wave.open(str(root / f"{word}_{speaker}_{i}.wav"), "wb") as handle:
                    handle.setnchannels(1)
                    handle.setsampwidth(2)
                    handle.setframerate(_SPEECH_RATE)
                    handle.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return root


def speech_without_augmentation(
    root: str, split: str = "train", transform: Any = None, test_speakers: list[str] | None = None, n_mels: int = 20
) -> Any:
    """``fsdd_dataset`` with the model's training transform (SpecAugment) dropped."""
    from deepmetric.data.speech import fsdd_dataset

    return fsdd_dataset(root, split, transform=None, test_speakers=test_speakers, n_mels=n_mels)


class _SpeechPairedSampler:
    """Single-process equivalent of two ranks: batch i = global batches 2i and 2i+1 concatenated."""

    def __init__(self, labels: Any, p: int, k: int, seed: int, small_class_policy: str) -> None:
        self.inner = PKSampler(labels, p=p, k=k, seed=seed, small_class_policy=small_class_policy, rank=0, world_size=2)

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):  # noqa: ANN204
        batches = self.inner.global_batches()
        for i in range(len(self.inner)):
            yield batches[2 * i] + batches[2 * i + 1]


def _speech_config(root: Path) -> dict[str, Any]:
    return {
        "device": "cpu",
        "data": {"name": "speech_plain", "root": str(root), "num_workers": 0, "val_fraction": 0.0,
                 "params": {"test_speakers": ["cid"], "n_mels": 20}},
        "sampler": {"p": 2, "k": 2},
        "model": {"name": "audio_cnn", "embedding_dim": 8,
                  "params": {"n_mels": 20, "channels": [], "recurrent": True, "rnn_hidden": 6}},
        "loss": {"name": "triplet", "params": {"margin": 0.3}},
        "optimizer": {"name": "sgd", "lr": 0.2, "backbone_lr_mult": 1.0},
        "scheduler": {"name": "none", "warmup_steps": 0},
        "trainer": {"steps": 4, "eval_every": 4, "checkpoint_every": 4, "log_every": 1},
        "eval": {"protocol": "word_recognition", "split": "test", "k_values": [1], "baseline": False, "batch_size": 5},
    }


def _cnn_batch(root: Path) -> tuple[list[Any], list[int]]:
    """12 training utterances (words 0-2 of ann and bob), the longest in the second half."""
    data = speech_without_augmentation(str(root), "train", test_speakers=["cid"])
    items = [data[i] for i in range(len(data)) if data.labels[i] < 3][:12]
    longest = max(range(len(items)), key=lambda i: items[i][0].shape[0])
    items.append(items.pop(longest))  # rank 1 pads longer than rank 0
    return items, [int(label) for _, label in items]


def _cnn_loss_and_grads(items: list[Any], rank: int | None) -> dict[str, Any]:
    """Triplet loss of the convolutional audio_cnn (eval mode) on ``items`` (all of them, or the
    half of ``rank`` gathered with the other rank's), and the summed model gradients."""
    from deepmetric.data.speech import pad_collate
    from deepmetric.losses import build_loss
    from deepmetric.models.audio import UtteranceEmbedder
    from deepmetric.training.distributed import GatheredLoss, sync_gradients

    torch.manual_seed(11)
    model = UtteranceEmbedder(n_mels=20, channels=(4, 8), embedding_dim=8, dropout=0.0).double().eval()
    part = items if rank is None else items[rank * len(items) // 2:(rank + 1) * len(items) // 2]
    (features, lengths), labels = pad_collate(part)
    loss_fn = build_loss("triplet", margin=0.3)
    value = (loss_fn if rank is None else GatheredLoss(loss_fn))(model(features.double(), lengths), labels)
    value.backward()
    sync_gradients(model.parameters())
    return {"loss": value.item(), "padded_frames": int(features.shape[1]),
            "grads": {n: p.grad.clone() for n, p in model.named_parameters()}}


def _speech_worker(rank: int, world: int, init_file: str, run_dir: str, config: dict[str, Any], out_file: str) -> None:
    import os
    import pickle

    from deepmetric.data.registry import DATASETS
    from deepmetric.training import fit

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    DATASETS["speech_plain"] = speech_without_augmentation
    fit(config, run_dir, progress=False, report=False)
    items, _ = _cnn_batch(Path(config["data"]["root"]))
    result = _cnn_loss_and_grads(items, rank)
    with open(f"{out_file}.{rank}", "wb") as handle:
        pickle.dump(result, handle)
    dist.destroy_process_group()


@needs_gloo
def test_speech_nproc2_equals_single_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    from deepmetric.data.registry import DATASETS, SAMPLERS
    from deepmetric.training import fit

    root = _speech_corpus(tmp_path / "data")
    config = _speech_config(root)
    mp.start_processes(_speech_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "ddp"), config,
                                             str(tmp_path / "cnn")), nprocs=2, start_method="spawn")
    monkeypatch.setitem(DATASETS, "speech_plain", speech_without_augmentation)
    monkeypatch.setitem(SAMPLERS, "pk", _SpeechPairedSampler)
    single = fit(config, tmp_path / "single", progress=False, report=False)

    # the whole training: same weights and logged losses after 4 steps of padded batches
    one = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")
    two = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    assert one["step"] == two["step"] == 4
    assert one["model"].keys() == two["model"].keys()
    for key in one["model"]:
        torch.testing.assert_close(two["model"][key], one["model"][key], atol=1e-5, rtol=1e-5, msg=key)
    logged = [[float(r.split(",")[2]) for r in (tmp_path / run / "log.csv").read_text().splitlines()[1:]]
              for run in ("single", "ddp")]
    assert len(logged[0]) == 4 and max(logged[0]) > 0  # the triplet loss was active
    np.testing.assert_allclose(logged[1], logged[0], atol=1e-5, rtol=1e-5)
    assert "word_accuracy" in single["test"]

    # the convolutional audio_cnn: one gathered loss and its summed gradients, ranks padded differently
    items, _ = _cnn_batch(root)
    reference = _cnn_loss_and_grads(items, None)
    ranks = [pickle.loads((tmp_path / f"cnn.{r}").read_bytes()) for r in range(2)]
    assert ranks[0]["padded_frames"] < ranks[1]["padded_frames"] == reference["padded_frames"]
    for got in ranks:
        assert got["loss"] == pytest.approx(reference["loss"], abs=1e-10)
        for name, grad in reference["grads"].items():
            torch.testing.assert_close(got["grads"][name], grad, atol=1e-9, rtol=1e-7, msg=name)
