"""The TDNN utterance embedder (``audio_tdnn``), statistics pooling and residual ``audio_cnn`` blocks:
padding invariance (each utterance embedded alone, unpadded, is the reference), shapes, the
registry, export with a dynamic frame axis, and a short real training on FSDD."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deepmetric.config import load_config, save_config
from deepmetric.models.audio import UtteranceEmbedder, masked_mean_std
from deepmetric.models.audio_tdnn import TDNNEmbedder
from deepmetric.training.builders import build_model

FSDD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "fsdd"


def _randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics, so eval-mode BatchNorm maps a zero frame to a non-zero one
    (padding would leak if a layer were not re-masked)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=gen))


MODELS = {
    "tdnn_stats_residual": lambda: TDNNEmbedder(n_mels=16, channels=(12, 12, 12, 20), kernel_sizes=(5, 3, 3, 1),
                                                dilations=(1, 2, 3, 1), embedding_dim=8, pooling="stats"),
    "tdnn_mean_plain": lambda: TDNNEmbedder(n_mels=16, channels=(12, 12), kernel_sizes=(3, 3), dilations=(1, 4),
                                            embedding_dim=8, pooling="mean", residual=False),
    "tdnn_attention": lambda: TDNNEmbedder(n_mels=16, channels=(12, 12), kernel_sizes=(3, 3), dilations=(2, 2),
                                           embedding_dim=8, pooling="attention"),
    "cnn_residual_stats": lambda: UtteranceEmbedder(n_mels=16, channels=(4, 8), embedding_dim=8, residual=True,
                                                    pooling="stats"),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_padded_batch_equals_each_utterance_embedded_alone(name: str) -> None:
    torch.manual_seed(0)
    model = MODELS[name]()
    _randomise_batchnorm(model)
    model.eval()
    lengths = [30, 13, 1, 7, 22]
    items = [torch.randn(n, 16) for n in lengths]
    batch = torch.zeros(len(items), max(lengths) + 5, 16)  # 5 frames more than the longest
    for row, item in enumerate(items):
        batch[row, : len(item)] = item
        batch[row, len(item):] = 100.0 * torch.randn(batch.shape[1] - len(item), 16)  # garbage, not zeros
    with torch.no_grad():
        together = model(batch, torch.tensor(lengths))
        alone = torch.cat([model(item.unsqueeze(0), torch.tensor([len(item)])) for item in items])
    assert together.shape == (5, 8)
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(together.norm(dim=1), torch.ones(5), atol=1e-5)
    with torch.no_grad():  # no lengths: every frame is valid
        assert torch.allclose(model(items[0].unsqueeze(0)), alone[:1], atol=1e-5)


def test_masked_mean_std_against_numpy() -> None:
    gen = np.random.default_rng(0)
    frames = gen.normal(size=(3, 9, 4)).astype(np.float32)
    lengths = [9, 4, 1]
    mask = torch.arange(9)[None, :] < torch.tensor(lengths)[:, None]
    got = masked_mean_std(torch.from_numpy(frames), mask, eps=0.0).numpy()
    for row, n in enumerate(lengths):
        valid = frames[row, :n].astype(np.float64)
        np.testing.assert_allclose(got[row, :4], valid.mean(axis=0), atol=1e-5)
        np.testing.assert_allclose(got[row, 4:], valid.std(axis=0), atol=1e-5)  # population std (ddof 0)


def test_shapes_options_and_errors() -> None:
    model = TDNNEmbedder(n_mels=20, channels=(16, 16, 32), kernel_sizes=(5, 3, 1), dilations=(1, 2, 1),
                         embedding_dim=10, normalize=False).eval()
    assert model.head.in_features == 64  # stats pooling of 32 channels
    out = model(torch.randn(4, 17, 20), torch.tensor([17, 3, 9, 1]))
    assert out.shape == (4, 10) and model.embedding_dim == 10 and model.n_mels == 20
    assert not torch.allclose(out.norm(dim=1), torch.ones(4))  # normalize=False
    assert [layer.residual for layer in model.layers] == [False, True, False]  # only equal widths
    assert TDNNEmbedder(pooling="avg").pooling == "mean"
    with pytest.raises(ValueError, match="same length"):
        TDNNEmbedder(channels=(8, 8), kernel_sizes=(3,), dilations=(1, 1))
    with pytest.raises(ValueError, match="odd"):
        TDNNEmbedder(channels=(8,), kernel_sizes=(4,), dilations=(1,))
    with pytest.raises(ValueError, match="pooling"):
        TDNNEmbedder(pooling="max")
    with pytest.raises(ValueError, match="expected features"):
        model(torch.randn(2, 5, 40))
    # the training transform is the audio model's SpecAugment
    assert type(model.train_transform()).__name__ == "SpecAugment" and model.eval_transform() is None


def _tdnn_config(root: Path, **extra: object) -> dict:
    return {
        "seed": 0,
        "data": {"name": "fsdd", "root": str(root), "num_workers": 0},
        "model": {"name": "audio_tdnn", "embedding_dim": 8, "pooling": "stats", "dropout": 0.1,
                  "params": {"n_mels": 40, "channels": [8, 8, 16], "kernel_sizes": [5, 3, 1],
                             "dilations": [1, 2, 1]}},
        "loss": {"name": "cosface", "params": {"scale": 16.0, "margin": 0.2}},
        **extra,
    }


def test_registry_builds_it_and_deployment_sees_an_audio_model(tmp_path: Path) -> None:
    from deepmetric.deploy.graph import input_kind_of

    model = build_model(load_config(_tdnn_config(tmp_path)))
    assert isinstance(model, TDNNEmbedder) and model.pooling == "stats" and model.embedding_dim == 8
    assert input_kind_of(model) == "audio_features"


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
def test_export_reproduces_pytorch_with_another_frame_count(tmp_path: Path, suffix: str) -> None:
    from deepmetric.deploy import export_run
    from deepmetric.models.contracts import trained_outputs
    from deepmetric.training import load_trained
    from deepmetric.training.builders import build_loss_from_config
    from deepmetric.training.checkpoint import save_checkpoint

    if suffix == ".onnx":
        ort = pytest.importorskip("onnxruntime")
    config = load_config(_tdnn_config(tmp_path / "fsdd"))
    torch.manual_seed(0)
    model = build_model(config)
    _randomise_batchnorm(model)
    run = tmp_path / "run"
    save_config(config, run / "config.yaml")
    loss = build_loss_from_config(config.loss, 4, model.embedding_dim, outputs=trained_outputs(model))
    save_checkpoint({"step": 1, "num_classes": 4, "model": model.state_dict(), "loss": loss.state_dict()},
                    run / "checkpoints" / "best.pt")
    out = tmp_path / f"model{suffix}"
    export_run(run, out)
    lengths = torch.tensor([40, 33, 2, 27])  # neither the export's 23 frames nor its check's 31
    features = torch.randn(4, 40, 40)
    for row, n in enumerate(lengths.tolist()):
        features[row, n:] = 0.0
    reference, _, _ = load_trained(run, "best")
    with torch.inference_mode():
        want = reference(features, lengths).numpy()
    if suffix == ".onnx":
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = session.run(None, {"features": features.numpy(), "lengths": lengths.numpy()})[0]
    else:
        with torch.inference_mode():
            got = torch.export.load(str(out)).module()(features, lengths).numpy()
    assert got.shape == (4, 8) and np.abs(got - want).max() <= 1e-4


@pytest.mark.skipif(not FSDD.is_dir(), reason="../shared/data/fsdd not available")
def test_short_fsdd_training_lowers_the_loss(tmp_path: Path) -> None:
    from deepmetric.training import fit

    torch.set_num_threads(1)
    config = load_config(_tdnn_config(
        FSDD,
        data={"name": "fsdd", "root": str(FSDD), "num_workers": 0, "val_fraction": 0.0,
              "params": {"test_speakers": ["theo", "yweweler", "george", "lucas"]}},  # train on 2 speakers (fast)
        sampler={"p": 10, "k": 4},
        optimizer={"name": "adamw", "lr": 0.002},
        scheduler={"name": "none", "warmup_steps": 0},
        trainer={"steps": 40, "eval_every": 0, "log_every": 5, "checkpoint_every": 0},
        eval={"protocol": "word_recognition", "split": "test", "checkpoint": "last", "baseline": False,
              "k_values": [1]},
    ))
    result = fit(config, tmp_path / "run", progress=False)
    with (tmp_path / "run" / "log.csv").open() as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert len(losses) == 8
    assert np.mean(losses[-2:]) < 0.85 * np.mean(losses[:2])  # measured: about 0.7
    # 2 training speakers, 4 unseen test speakers: measured 0.28; chance is 0.1
    assert result["test"]["word_accuracy/prototype"] > 0.2
