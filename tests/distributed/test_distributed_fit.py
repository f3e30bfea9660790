"""A 2-process fit (gloo, CPU) reaches the same weights as one process on the concatenated batches."""

import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from deepmetric.data.samplers import PKSampler
from deepmetric.training import builders
from deepmetric.training.checkpoint import load_checkpoint


class ToyData(torch.utils.data.Dataset):
    def __init__(self, split: str) -> None:
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        self.labels = torch.arange(6).repeat_interleave(6).tolist()
        centers = torch.randn(6, 8, generator=g)
        self.x = centers[torch.tensor(self.labels)] + 0.5 * torch.randn(36, 8, generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.x[i], self.labels[i]


def toy_dataset(split: str) -> ToyData:
    return ToyData(split)


class ToyModel(nn.Module):
    def __init__(self, embedding_dim: int = 4) -> None:
        super().__init__()
        self.layer = nn.Linear(8, embedding_dim)
        self.embedding_dim = embedding_dim

    def forward(self, x):
        return nn.functional.normalize(self.layer(x), dim=1)


class PairedSampler:
    """Single-process equivalent of two ranks: batch i = global batches 2i and 2i+1 concatenated."""

    def __init__(self, labels, p, k, seed, small_class_policy):
        self.inner = PKSampler(labels, p=p, k=k, seed=seed, small_class_policy=small_class_policy, rank=0, world_size=2)

    def set_epoch(self, epoch):
        self.inner.set_epoch(epoch)

    def __len__(self):
        return len(self.inner)

    def __iter__(self):
        batches = self.inner.global_batches()
        for i in range(len(self.inner)):
            yield batches[2 * i] + batches[2 * i + 1]


def config(loss):
    return {
        "data": {"name": "toy", "val_fraction": 0.0, "num_workers": 0},
        "sampler": {"p": 3, "k": 2},
        "model": {"name": "toy", "embedding_dim": 4},
        "loss": loss,
        "optimizer": {"name": "sgd", "lr": 0.1, "backbone_lr_mult": 1.0},
        "scheduler": {"name": "none", "warmup_steps": 0},
        "trainer": {"steps": 5, "eval_every": 5, "checkpoint_every": 5},
        "eval": {"split": "test", "baseline": False, "k_values": [1]},
    }


def register():
    builders.DATASET_REGISTRY["toy"] = toy_dataset
    builders.MODEL_REGISTRY["toy"] = ToyModel


def worker(rank, world, init_file, run_dir, loss):
    import os

    from deepmetric.training import fit

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    register()
    torch.set_num_threads(1)
    fit(config(loss), run_dir, progress=False)
    dist.destroy_process_group()


LOSSES = [{"name": "contrastive"}, {"name": "osm_caa"}]


@pytest.mark.skipif(not dist.is_available() or sys.platform == "win32", reason="torch.distributed unavailable")
@pytest.mark.parametrize("loss", LOSSES, ids=[loss["name"] for loss in LOSSES])
def test_two_process_fit_equals_single_process(tmp_path, loss, monkeypatch):
    from deepmetric.training import fit

    mp.start_processes(worker, args=(2, str(tmp_path / "init"), str(tmp_path / "ddp"), loss), nprocs=2,
                       start_method="spawn")
    from deepmetric.data.registry import DATASETS, SAMPLERS
    from deepmetric.models.registry import MODELS

    monkeypatch.setitem(DATASETS, "toy", toy_dataset)  # registered for this test only
    monkeypatch.setitem(MODELS, "toy", ToyModel)
    monkeypatch.setitem(SAMPLERS, "pk", PairedSampler)
    fit(config(loss), tmp_path / "single", progress=False)
    two = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    one = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")
    assert two["step"] == one["step"] == 5
    for key in one["model"]:
        torch.testing.assert_close(two["model"][key], one["model"][key], atol=1e-5, rtol=1e-5)
    for key in one["loss"]:
        torch.testing.assert_close(two["loss"][key], one["loss"][key], atol=1e-5, rtol=1e-5)
