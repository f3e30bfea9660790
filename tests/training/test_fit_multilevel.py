"""The trainer drives a multi-level (multi-head) embedder: one loss per head, concatenated at test."""

import numpy as np
import torch
from PIL import Image

from deepmetric.config import load_config
from deepmetric.losses.multi_output import MultiHeadLoss
from deepmetric.training import fit
from deepmetric.training.builders import build_loss_from_config, build_model
from deepmetric.training.checkpoint import load_checkpoint
from deepmetric.training.seed import seed_everything


def test_fit_trains_every_head_and_tests_the_concatenation(tmp_path):
    rng = np.random.default_rng(0)
    for c in range(4):
        (tmp_path / "data" / f"class{c}").mkdir(parents=True)
        for i in range(6):
            img = np.clip(rng.normal(60 * c, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / "data" / f"class{c}" / f"{i}.png")
    config = load_config({
        "data": {"name": "folder", "root": str(tmp_path / "data"), "params": {"split_by": "items", "test_fraction": 0.5},
                 "val_fraction": 0.0, "image_size": 32, "num_workers": 0},
        "sampler": {"p": 2, "k": 2},
        "model": {"name": "multilevel", "backbone": "tf_efficientnet_lite0", "pretrained": False, "embedding_dim": 8,
                  "params": {"heads": ["stage4", "final"]}},
        "loss": {"name": "ranked_list"},
        "trainer": {"steps": 2, "eval_every": 2},
        "eval": {"split": "test", "baseline": False, "k_values": [1]},
    })
    model = build_model(config)
    loss = build_loss_from_config(config.loss, 4, model.embedding_dim, outputs=model.output_dims)
    assert isinstance(loss, MultiHeadLoss)
    result = fit(config, tmp_path / "run", progress=False)
    assert 0.0 <= result["test"]["recall@1"] <= 1.0
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    seed_everything(config.seed, config.deterministic)  # fit builds the model right after seeding
    start = build_model(config).state_dict()
    for head in ("stage4", "final"):
        keys = [k for k in state["model"] if k.startswith("heads.") and head in k]
        assert keys and any(not torch.equal(state["model"][k], start[k]) for k in keys), head
    embeddings = np.load(tmp_path / "run" / "test_embeddings.npz")["embeddings"]
    assert embeddings.shape[1] == 16 and np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
