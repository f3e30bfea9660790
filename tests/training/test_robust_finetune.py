"""Robust fine-tuning options of fit (``finetune.*``): LP-FT freezing, the EMA of the weights and
WiSE-FT interpolation, each checked against an explicit reference computed here from the weights
recorded at every step (no hard-coded results)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from deepmetric.errors import ConfigError
from deepmetric.training import builders, embed, fit, load_checkpoint, load_trained
from deepmetric.training.fit import _Run
import toy_training
from toy_training import DIM, AddNoise, toy_config, toy_dataset, toy_registries  # noqa: F401  (fixture)

Weights = dict[str, Tensor]


class BNNet(nn.Module):
    """A backbone with BatchNorm (statistics that training moves) and a linear head."""

    def __init__(self, embedding_dim: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(DIM, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(16, embedding_dim)
        self.embedding_dim = embedding_dim

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.normalize(self.head(self.backbone(x)), dim=1)

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        return self.head.parameters()

    def train_transform(self) -> AddNoise:
        return AddNoise()

    def eval_transform(self) -> None:
        return None


class FlatNet(nn.Module):
    """A model that does not declare a backbone (no HasBackbone)."""

    def __init__(self, embedding_dim: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(DIM, 16), nn.ReLU(), nn.Linear(16, embedding_dim))
        self.embedding_dim = embedding_dim

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.normalize(self.layers(x), dim=1)


def bn_model(embedding_dim: int = 8, dropout: float = 0.0) -> BNNet:
    return BNNet(embedding_dim, dropout)


def flat_model(embedding_dim: int = 8, dropout: float = 0.0) -> FlatNet:
    return FlatNet(embedding_dim, dropout)


@pytest.fixture(autouse=True)
def robust_models(toy_registries: None, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setitem(builders.MODEL_REGISTRY, "tiny_bn", bn_model)
    monkeypatch.setitem(builders.MODEL_REGISTRY, "tiny_flat", flat_model)


#: a BatchNorm backbone, a loss with parameters (proxies), AdamW with weight decay
BASE = ("model.name=tiny_bn", "loss.name=proxy_anchor", "optimizer.name=adamw", "optimizer.lr=0.01",
        "optimizer.weight_decay=0.5", "optimizer.backbone_lr_mult=1.0")


def _weights(state: dict[str, Any]) -> Weights:
    return {**{f"model.{k}": v for k, v in state["model"].items()},
            **{f"loss.{k}": v for k, v in state["loss"].items()}}


def _live(run: _Run) -> Weights:
    return {**{f"model.{k}": v.detach().clone() for k, v in run.model.state_dict().items()},
            **{f"loss.{k}": v.detach().clone() for k, v in run.loss.state_dict().items()}}


def _record_steps(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, Weights, set[str]]]:
    """(steps done, weights, names of the model parameters with optimizer state) before every step."""
    seen: list[tuple[int, Weights, set[str]]] = []
    original = _Run.train_step

    def recording(self: _Run, inputs: Any, labels: Tensor) -> Tensor:
        with_state = {name for name, p in self.model.named_parameters() if p in self.optimizer.state}
        seen.append((self.step, _live(self), with_state))
        return original(self, inputs, labels)

    monkeypatch.setattr(_Run, "train_step", recording)
    return seen


def _trajectory(seen: list[tuple[int, Weights, set[str]]], run: Path) -> list[Weights]:
    """Weights after 0, 1, ..., T optimizer steps."""
    assert [s for s, _, _ in seen] == list(range(len(seen)))
    return [w for _, w, _ in seen] + [_weights(load_checkpoint(run / "checkpoints" / "last.pt"))]


def _same(a: Weights, b: Weights) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _part(w: Weights, prefix: str) -> Weights:
    return {k: v for k, v in w.items() if k.startswith(prefix)}


# ------------------------------------------------------------------------------------------ LP-FT


def test_linear_probe_freezes_the_backbone_exactly_then_trains_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _record_steps(monkeypatch)
    fit(toy_config(*BASE, "finetune.linear_probe_steps=3", "trainer.steps=6"), tmp_path, progress=False, report=False)
    w = _trajectory(seen, tmp_path)
    backbone = [_part(x, "model.backbone.") for x in w]
    assert any("running_mean" in k for k in backbone[0]) and any("num_batches_tracked" in k for k in backbone[0])
    for t in (1, 2, 3):  # parameters AND BatchNorm statistics bitwise unchanged, despite AdamW weight decay
        assert _same(backbone[t], backbone[0]), t
    for t in (1, 2, 3):  # the head and the loss's proxies train meanwhile
        assert not torch.equal(w[t]["model.head.weight"], w[t - 1]["model.head.weight"])
        assert not torch.equal(w[t]["loss.proxies"], w[t - 1]["loss.proxies"])
    for t in (4, 5, 6):  # then everything trains, BatchNorm statistics included
        for key in ("model.backbone.0.weight", "model.backbone.1.weight", "model.backbone.1.running_mean"):
            assert not torch.equal(w[t][key], w[t - 1][key]), (t, key)
    # no optimizer state (AdamW moments) for the backbone while frozen; created at its first update
    for t in (1, 2, 3):
        assert seen[t][2] == {"head.weight", "head.bias"}, t
    assert seen[5][2] == {name for name, _ in BNNet().named_parameters()}


@pytest.mark.parametrize("interrupt_at", [2, 5])
def test_resume_across_the_linear_probe_boundary_is_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interrupt_at: int
) -> None:
    """2N steps straight == N steps + N resumed, with LP-FT switching at step 3, EMA and WiSE-FT on."""
    overrides = (*BASE, "finetune.linear_probe_steps=3", "finetune.ema_decay=0.8", "finetune.ema_start_step=1",
                 "finetune.wise_alphas=[0.0, 0.5, 1.0]", "trainer.steps=8", "trainer.eval_every=4")
    straight = fit(toy_config(*overrides), tmp_path / "straight", progress=False, report=False)

    original = _Run.train_step

    def interrupting(self: _Run, inputs: Any, labels: Tensor) -> Tensor:
        if self.step == interrupt_at:
            raise KeyboardInterrupt
        return original(self, inputs, labels)

    monkeypatch.setattr(_Run, "train_step", interrupting)
    with pytest.raises(KeyboardInterrupt):
        fit(toy_config(*overrides), tmp_path / "resumed", progress=False, report=False)
    monkeypatch.setattr(_Run, "train_step", original)
    resumed = fit(toy_config(*overrides), tmp_path / "resumed", resume=True, progress=False, report=False)

    for name in ("last", "best", "initial", "wise"):
        a = load_checkpoint(tmp_path / "straight" / "checkpoints" / f"{name}.pt")
        b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / f"{name}.pt")
        assert _same(_weights(a), _weights(b)), name
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert _same(a["ema"]["shadow"], b["ema"]["shadow"])
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for i, state in a["optimizer"]["state"].items():
        assert all(torch.equal(v, b["optimizer"]["state"][i][k]) for k, v in state.items())
    for key in ("evaluations", "best", "test", "test_step", "test_weights", "wise"):
        assert straight[key] == resumed[key], key


def test_linear_probe_needs_a_declared_trainable_backbone(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"FlatNet has no backbone_parameters\(\).*linear_probe_steps=0"):
        fit(toy_config("model.name=tiny_flat", "finetune.linear_probe_steps=2"), tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="backbone_lr_mult=0"):
        fit(toy_config("finetune.linear_probe_steps=2", "optimizer.backbone_lr_mult=0"), tmp_path / "b",
            progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------ EMA


def _explicit_ema(w: list[Weights], keys: list[str], decay: float, start: int, upto: int) -> Weights:
    """ema = copy of the weights after ``start`` steps, then ema = d * ema + (1 - d) * w per step."""
    ema = {k: w[start][k].double().clone() for k in keys}
    for t in range(start + 1, upto + 1):
        ema = {k: decay * ema[k] + (1 - decay) * w[t][k].double() for k in keys}
    return ema


def _script_selection(monkeypatch: pytest.MonkeyPatch, values: list[float]) -> None:
    """The i-th evaluation of the selection split reports recall@1 = values[i] (raw, then EMA)."""
    original = _Run.evaluate
    calls = iter(values)

    def scripted(self: _Run, dataset: Any, split: str) -> Any:
        metrics, inputs = original(self, dataset, split)
        if dataset is self.selection and split == "val":
            metrics = {**metrics, "recall@1": next(calls)}
        return metrics, inputs

    monkeypatch.setattr(_Run, "evaluate", scripted)


@pytest.mark.parametrize("checkpoint", ["best", "last"])
def test_ema_equals_an_explicit_average_and_wins_selection_when_it_scores_better(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkpoint: str
) -> None:
    decay, start = 0.7, 2
    seen = _record_steps(monkeypatch)
    # selection evaluations: step 0 raw; steps 2, 4, 6, 8 raw then EMA
    _script_selection(monkeypatch, [0.1, 0.2, 0.15, 0.25, 0.5, 0.4, 0.45, 0.3, 0.35])
    summary = fit(toy_config(*BASE, f"finetune.ema_decay={decay}", f"finetune.ema_start_step={start}",
                             "trainer.steps=8", "trainer.eval_every=2", f"eval.checkpoint={checkpoint}"),
                  tmp_path, progress=False, report=False)
    w = _trajectory(seen, tmp_path)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    shadow = last["ema"]["shadow"]
    loss_params = [f"loss.{k}" for k, _ in builders.build_loss_from_config(
        toy_config(*BASE).loss, 6, 8).named_parameters()]
    assert loss_params == ["loss.proxies"]
    expected_keys = [k for k in w[0] if k.startswith("model.") and w[0][k].is_floating_point()] + loss_params
    assert sorted(shadow) == sorted(expected_keys)  # integer buffers (num_batches_tracked) are not averaged
    reference = _explicit_ema(w, expected_keys, decay, start, 8)
    for k in expected_keys:
        assert torch.allclose(shadow[k].double(), reference[k], atol=1e-6, rtol=0), k

    # metrics.json: EMA metrics beside the raw ones once the average has started
    assert [("ema" in e) for e in summary["evaluations"]] == [False, True, True, True, True]
    assert [e["ema"]["recall@1"] for e in summary["evaluations"][1:]] == [0.15, 0.5, 0.45, 0.35]
    assert summary["best"] == {"step": 4, "metric": "recall@1", "value": 0.5, "weights": "ema"}
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    best_ema = _explicit_ema(w, expected_keys, decay, start, 4)
    for k in expected_keys:  # best.pt holds the averaged weights of step 4
        assert torch.allclose(_weights(best)[k].double(), best_ema[k], atol=1e-6, rtol=0), k
    tracked = "model.backbone.1.num_batches_tracked"  # integer buffers: the live ones of that step
    assert torch.equal(_weights(best)[tracked], w[4][tracked])

    # the test metrics come from the chosen weights: best -> step 4 EMA; last -> step 8 EMA (0.35 > 0.3)
    chosen_step, chosen = (4, best_ema) if checkpoint == "best" else (8, reference)
    assert summary["test_step"] == chosen_step and summary["test_weights"] == "ema"
    assert "test_last" in summary
    model = BNNet()
    model.load_state_dict({k.removeprefix("model."): (chosen[k].float() if k in chosen else w[chosen_step][k])
                           for k in w[0] if k.startswith("model.")})
    expected, _ = embed(model, toy_dataset("test"), batch_size=5)
    got = np.load(tmp_path / "test_embeddings.npz")["embeddings"]
    assert np.allclose(got, expected.numpy(), atol=1e-5)


# ------------------------------------------------------------------------------------------ WiSE-FT


def _initial_model_weights() -> Weights:
    """The step-0 weights, built independently: the seeded model of the toy config."""
    from deepmetric.training.seed import seed_everything

    seed_everything(3)
    return dict(builders.build_model(toy_config(*BASE)).state_dict())


def test_wise_ft_alpha_0_is_the_initial_model_1_the_finetuned_and_half_the_mean(tmp_path: Path) -> None:
    initial = _initial_model_weights()
    test = toy_dataset("test")
    runs = {}
    for alpha in (0.0, 0.5, 1.0):
        run = tmp_path / f"alpha_{alpha}"
        config = toy_config(*BASE, f"finetune.wise_alphas=[{alpha}]", "trainer.steps=6", "eval.checkpoint=last")
        runs[alpha] = fit(config, run, progress=False, report=False)
        saved = load_checkpoint(run / "checkpoints" / "initial.pt")["model"]
        assert _same(dict(saved), initial)  # checkpoints/initial.pt = the step-0 weights
    finetuned = load_checkpoint(tmp_path / "alpha_1.0" / "checkpoints" / "last.pt")["model"]
    assert runs[1.0]["test_step"] == 6 and not _same(dict(finetuned), initial)

    def embeddings_of(weights: Weights) -> np.ndarray:
        model = BNNet()
        model.load_state_dict(weights)
        return embed(model, test, batch_size=16)[0].numpy()  # eval.batch_size: the same arithmetic

    mean = {k: ((initial[k] + finetuned[k]) / 2 if v.is_floating_point() else finetuned[k])
            for k, v in finetuned.items()}
    references = {0.0: embeddings_of(initial), 0.5: embeddings_of(mean), 1.0: embeddings_of(dict(finetuned))}
    for alpha, summary in runs.items():
        run = tmp_path / f"alpha_{alpha}"
        assert summary["wise"]["alpha"] == alpha and [r["alpha"] for r in summary["wise"]["table"]] == [alpha]
        got = np.load(run / "test_embeddings.npz")["embeddings"]
        exact = alpha in (0.0, 1.0)
        assert np.array_equal(got, references[alpha]) if exact else np.allclose(got, references[alpha], atol=1e-6)
        wise = load_checkpoint(run / "checkpoints" / "wise.pt")
        assert wise["alpha"] == alpha
        for k, v in wise["model"].items():
            reference = mean[k] if alpha == 0.5 else (initial if alpha == 0.0 else finetuned)[k]
            if not v.is_floating_point():  # integer buffers come from the fine-tuned model
                assert torch.equal(v, finetuned[k]), k
            elif alpha in (0.0, 1.0):  # exactly the step-0 / the fine-tuned weights
                assert torch.equal(v, reference), k
            else:
                assert torch.allclose(v, reference, atol=1e-7, rtol=0), k


def test_wise_ft_table_is_chosen_on_the_selection_split(tmp_path: Path) -> None:
    summary = fit(toy_config(*BASE, "finetune.wise_alphas=[0, 0.5, 1]", "trainer.steps=6"), tmp_path,
                  progress=False, report=False)
    wise = summary["wise"]
    assert wise["split"] == "val" and wise["metric"] == "recall@1"
    table = {row["alpha"]: row["value"] for row in wise["table"]}
    assert list(table) == [0.0, 0.5, 1.0]
    # alpha 0 = the step-0 network and alpha 1 = the chosen checkpoint, both already evaluated on val
    assert table[0.0] == summary["evaluations"][0]["metrics"]["recall@1"]
    assert table[1.0] == summary["best"]["value"]
    best_value = max(table.values())
    assert wise["alpha"] == max(a for a, v in table.items() if v == best_value)  # ties: the larger alpha
    assert json.loads((tmp_path / "metrics.json").read_text())["wise"] == wise
    # checkpoints/wise.pt loads like best.pt and reproduces the test embeddings
    model, _, _ = load_trained(tmp_path, "wise")
    again, _ = embed(model, toy_dataset("test"), batch_size=16)
    assert np.allclose(again.numpy(), np.load(tmp_path / "test_embeddings.npz")["embeddings"], atol=1e-6)
    assert not any("optimistic" in w for w in summary["warnings"])
    # deployment takes the weights the test metrics came from: "best" of a WiSE-FT run is wise.pt
    from deepmetric.deploy.source import resolve_checkpoint
    from deepmetric.inference import resolve_model_source

    assert resolve_model_source(tmp_path) == (tmp_path, "wise")
    assert resolve_checkpoint(tmp_path) == (tmp_path, "wise")
    assert resolve_checkpoint(tmp_path, "last") == (tmp_path, "last")


def test_wise_ft_on_the_test_split_warns(tmp_path: Path) -> None:
    summary = fit(toy_config(*BASE, "finetune.wise_alphas=[0, 1]", "trainer.steps=2", "eval.split=test"), tmp_path,
                  progress=False, report=False)
    assert summary["wise"]["split"] == "test"
    assert any("chosen on the test split" in w and "optimistic" in w for w in summary["warnings"])


# ------------------------------------------------------------------------------------------ config


def test_defaults_are_off_and_leave_the_run_folder_as_before(tmp_path: Path) -> None:
    summary = fit(toy_config("trainer.steps=2", "trainer.eval_every=1"), tmp_path, progress=False, report=False)
    assert not {"test_weights", "wise"} & set(summary) and set(summary["best"]) == {"step", "metric", "value"}
    assert all("ema" not in e for e in summary["evaluations"])
    assert "ema" not in load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.pt", "last.pt"]


def test_finetune_keys_cannot_change_on_resume_and_are_validated(tmp_path: Path) -> None:
    fit(toy_config("trainer.steps=2"), tmp_path, progress=False, report=False)
    for override in ("finetune.ema_decay=0.9", "finetune.linear_probe_steps=1", "finetune.wise_alphas=[0, 1]"):
        with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
            fit(toy_config("trainer.steps=4", override), tmp_path, resume=True, progress=False, report=False)
    for bad in ("finetune.ema_decay=1.0", "finetune.wise_alphas=[0.5, 2]", "finetune.wise_alphas=[]",
                "finetune.linear_probe_steps=-1"):
        with pytest.raises(ConfigError, match=bad.split("=")[0].replace(".", r"\.")):
            toy_config(bad)


# ------------------------------------------------------------------------------------------ several processes


class _PairedSampler:
    """One process doing what two ranks do: batch i = the two ranks' batches of step i concatenated."""

    def __init__(self, labels: Any, p: int, k: int, seed: int, small_class_policy: str) -> None:
        from deepmetric.data.samplers import PKSampler

        self.inner = PKSampler(labels, p=p, k=k, seed=seed, small_class_policy=small_class_policy, rank=0, world_size=2)

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.inner.global_batches()
        for i in range(len(self.inner)):
            yield batches[2 * i] + batches[2 * i + 1]


class _CleanNet(toy_training.TinyNet):
    """Without BatchNorm (its statistics are per process) nor augmentation (item seeds depend on
    the position in a process's batch), so two processes can equal one."""

    def train_transform(self) -> None:  # type: ignore[override]
        return None


def clean_model(embedding_dim: int = 8, dropout: float = 0.0) -> _CleanNet:
    return _CleanNet(embedding_dim, dropout)


def _nproc_config() -> Any:
    return toy_config(*BASE, "model.name=tiny_clean", "optimizer.name=sgd", "finetune.linear_probe_steps=2",
                      "finetune.ema_decay=0.8", "finetune.wise_alphas=[0, 1]", "trainer.steps=5",
                      "trainer.eval_every=5", "scheduler.name=none", "model.dropout=0.0", "sampler.p=2",
                      "data.val_by=items", "data.val_fraction=0.3")


def _nproc_worker(rank: int, world: int, init_file: str, run_dir: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    builders.DATASET_REGISTRY["toy"] = toy_dataset
    builders.MODEL_REGISTRY["tiny_clean"] = clean_model
    torch.set_num_threads(1)
    fit(_nproc_config(), run_dir, progress=False, report=False)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_train_the_same_robust_run_as_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LP-FT, EMA and WiSE-FT under --nproc 2 (gloo, CPU) equal one process on the concatenated batches."""
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available():
        pytest.skip("torch.distributed unavailable")
    mp.start_processes(_nproc_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "ddp")), nprocs=2,
                       start_method="spawn")
    from deepmetric.data.registry import SAMPLERS

    monkeypatch.setitem(SAMPLERS, "pk", _PairedSampler)
    monkeypatch.setitem(builders.MODEL_REGISTRY, "tiny_clean", clean_model)
    one = fit(_nproc_config(), tmp_path / "single", progress=False, report=False)
    two = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    for name in ("last", "initial", "wise"):
        a = load_checkpoint(tmp_path / "single" / "checkpoints" / f"{name}.pt")
        b = load_checkpoint(tmp_path / "ddp" / "checkpoints" / f"{name}.pt")
        for key, value in _weights(a).items():
            torch.testing.assert_close(_weights(b)[key], value, atol=1e-5, rtol=1e-5, msg=f"{name}.pt {key}")
    a = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")["ema"]["shadow"]
    b = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")["ema"]["shadow"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-5)
    assert [r["alpha"] for r in one["wise"]["table"]] == [r["alpha"] for r in two["wise"]["table"]] == [0.0, 1.0]
    assert [e["step"] for e in one["evaluations"]] == [e["step"] for e in two["evaluations"]] == [0, 5]


def test_the_report_shows_the_ema_and_wise_tables_of_metrics_json(tmp_path: Path) -> None:
    import re

    from deepmetric.evaluation.report import write_report

    summary = fit(toy_config(*BASE, "finetune.ema_decay=0.5", "finetune.ema_start_step=1",
                             "finetune.wise_alphas=[0, 0.5, 1]", "trainer.steps=6", "trainer.eval_every=2"),
                  tmp_path, progress=False, report=False)
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "Robust fine-tuning" in page
    section = page[page.index("Robust fine-tuning"):]
    ema_rows = re.findall(r"<tr><td>(\d+)</td><td>([-\d.]+)</td><td>([-\d.]+)</td><td>(\w+)</td></tr>", section)
    with_ema = [e for e in summary["evaluations"] if e.get("ema")]
    assert [int(r[0]) for r in ema_rows] == [e["step"] for e in with_ema] and with_ema
    for (_, raw, avg, _), e in zip(ema_rows, with_ema):
        assert float(raw) == pytest.approx(e["metrics"]["recall@1"], abs=5e-5)
        assert float(avg) == pytest.approx(e["ema"]["recall@1"], abs=5e-5)
    alphas = re.findall(r"<tr><td>([\d.]+)</td><td>([-\d.]+)</td><td>(yes)?</td></tr>", section)
    assert [float(a) for a, _, _ in alphas] == [0.0, 0.5, 1.0]
    assert [float(a) for a, _, chosen in alphas if chosen] == [summary["wise"]["alpha"]]
    plain = tmp_path / "plain"
    fit(toy_config(*BASE, "trainer.steps=2"), plain, progress=False, report=False)
    assert "Robust fine-tuning" not in write_report(plain).read_text(encoding="utf-8")
