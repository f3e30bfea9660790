"""Two gloo processes on CPU give the single-process loss and gradients of the whole batch."""

import pickle
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from deepmetric.losses import build_loss

LOSSES = [
    ("contrastive", {}),
    ("triplet", {"margin": 0.2}),
    ("multi_similarity", {}),
    ("ranked_list", {}),
    ("osm_caa", {"num_classes": 4, "embedding_dim": 6}),
]


def batch():
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(16, 6, generator=g, dtype=torch.float64), dim=1)
    labels = torch.arange(4).repeat_interleave(4)[torch.randperm(16, generator=g)]
    return emb, labels


def make_loss(name, params):
    torch.manual_seed(123)
    return build_loss(name, **params).double()


def worker(rank, world, init_file, out_file):
    from deepmetric.training.distributed import GatheredLoss, sync_gradients

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    emb, labels = batch()
    results = {}
    for name, params in LOSSES:
        loss_fn = make_loss(name, params)
        part = emb[rank * 8:(rank + 1) * 8].clone().requires_grad_(True)
        value = GatheredLoss(loss_fn)(part, labels[rank * 8:(rank + 1) * 8])
        value.backward()
        sync_gradients([], list(loss_fn.parameters()))
        results[name] = (value.item(), part.grad.clone(), [p.grad.clone() for p in loss_fn.parameters()])
    # a linear "model" whose gradient is summed over ranks
    torch.manual_seed(7)
    model = torch.nn.Linear(6, 6).double()
    x = batch()[0][rank * 8:(rank + 1) * 8]
    GatheredLoss(make_loss("contrastive", {}))(model(x), labels[rank * 8:(rank + 1) * 8]).backward()
    sync_gradients(model.parameters())
    results["model_grad"] = model.weight.grad.clone()
    with open(f"{out_file}.{rank}", "wb") as handle:
        pickle.dump(results, handle)
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or sys.platform == "win32", reason="torch.distributed unavailable")
def test_two_processes_match_single_process(tmp_path):
    init_file, out_file = tmp_path / "init", tmp_path / "out"
    mp.start_processes(worker, args=(2, str(init_file), str(out_file)), nprocs=2, start_method="spawn")
    ranks = [pickle.loads((tmp_path / f"out.{r}").read_bytes()) for r in range(2)]
    emb, labels = batch()
    for name, params in LOSSES:
        loss_fn = make_loss(name, params)
        full = emb.clone().requires_grad_(True)
        value = loss_fn(full, labels)
        value.backward()
        for r in range(2):
            got_value, got_grad, got_param_grads = ranks[r][name]
            assert got_value == pytest.approx(value.item(), abs=1e-10), name
            torch.testing.assert_close(got_grad, full.grad[r * 8:(r + 1) * 8], atol=1e-6, rtol=0)
            for got, ref in zip(got_param_grads, loss_fn.parameters()):
                torch.testing.assert_close(got, ref.grad, atol=1e-6, rtol=0)
    torch.manual_seed(7)
    model = torch.nn.Linear(6, 6).double()
    make_loss("contrastive", {})(model(emb), labels).backward()
    for r in range(2):
        torch.testing.assert_close(ranks[r]["model_grad"], model.weight.grad, atol=1e-6, rtol=0)
