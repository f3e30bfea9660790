"""Tiny real run folders for the deployment tests (export, embedding API), written without training.

:func:`make_run` resolves a config exactly as ``deepmetric train`` would (``load_config``), builds
the model and the loss with the trainer's builders, moves every weight and BatchNorm statistic
away from its initial value (so zero-initialised parts, like DeMAL's attention gates, really
compute something), and writes ``config.yaml`` plus ``checkpoints/best.pt`` with the keys
``fit`` writes (``step``, ``num_classes``, ``model``, ``loss``). ``load_trained`` therefore
rebuilds it like any trained run; one training step would only add minutes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from deepmetric.config import load_config, save_config
from deepmetric.models.contracts import trained_outputs
from deepmetric.training.builders import build_loss_from_config, build_model, embedding_dim_of
from deepmetric.training.checkpoint import save_checkpoint

IMAGE_SIZE = 32
NUM_CLASSES = 4

#: model sections of the shipped families, tiny (random weights, 32 px, 8-d embeddings)
FAMILIES: dict[str, dict[str, Any]] = {
    "efficientnet": {"name": "embedder", "backbone": "tf_efficientnet_lite0", "pretrained": False, "embedding_dim": 8},
    "resnet": {"name": "embedder", "backbone": "resnet18", "pretrained": False, "embedding_dim": 8},
    "demal": {"name": "demal", "backbone": "tf_efficientnet_lite0", "pretrained": False, "embedding_dim": 8},
    "multilevel": {"name": "multilevel", "backbone": "tf_efficientnet_lite0", "pretrained": False, "embedding_dim": 8,
                   "params": {"heads": ["stage4", "final"]}},
    "audio": {"name": "audio_cnn", "embedding_dim": 8, "params": {"n_mels": 40, "channels": [8, 16]}},
}


def _perturb(model: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            scale = float(p.abs().mean()) or 0.05
            p.add_(0.2 * scale * torch.randn(p.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))


def make_run(root: Path, family: str, seed: int = 0, model: dict[str, Any] | None = None) -> Path:
    """A run folder named ``run-<family>`` under ``root``: the model section of ``family`` (a key of
    :data:`FAMILIES`), or ``model`` (then trained on images without a ``data.image_size``)."""
    section = FAMILIES[family] if model is None else model
    audio = section["name"] == "audio_cnn"
    data = ({"name": "fsdd", "root": str(root / "fsdd"), "num_workers": 0} if audio
            else {"name": "folder", "root": str(root / "images"), "num_workers": 0,
                  "image_size": IMAGE_SIZE if model is None else None})
    config = load_config({"seed": seed, "data": data, "model": section, "loss": {"name": "multi_similarity"}})
    torch.manual_seed(seed)
    model = build_model(config)
    _perturb(model, seed)
    loss = build_loss_from_config(config.loss, NUM_CLASSES, embedding_dim_of(model), outputs=trained_outputs(model))
    run = root / f"run-{family}"
    save_config(config, run / "config.yaml")
    save_checkpoint({"step": 1, "num_classes": NUM_CLASSES, "model": model.state_dict(), "loss": loss.state_dict()},
                    run / "checkpoints" / "best.pt")
    return run


def write_images(folder: Path, n: int = 6, seed: int = 0) -> list[Path]:
    """``n`` PNG/JPEG files of different sizes and modes (RGB, grey, RGBA) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        h, w = 30 + 7 * i, 44 - 3 * i
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        if i % 3 == 1:
            image = image.convert("L")
        elif i % 3 == 2:
            image = image.convert("RGBA")
            image.putalpha(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)))
        path = folder / (f"{i}.jpg" if i % 3 == 0 else f"{i}.png")
        image.save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def run_factory(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - a factory
    """``run_factory(family) -> run folder``, each family built once per test module."""
    root = tmp_path_factory.mktemp("runs")
    made: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in made:
            made[family] = make_run(root, family)
        return made[family]

    return get


def run_exported(fmt: str, path: Path, inputs: tuple[Tensor, ...]) -> np.ndarray:
    """The output of an exported file run by its own runtime (onnxruntime, torch.export, TorchScript)."""
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0]
    module = torch.export.load(str(path)).module() if fmt == "export" else torch.jit.load(str(path))
    with torch.inference_mode():
        return module(*inputs).numpy()
