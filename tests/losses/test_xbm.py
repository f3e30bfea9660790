"""Cross-batch memory (XBM, Wang et al. CVPR 2020): value and gradient against explicit loops over
batch U memory, gradient to the batch only, FIFO order against a deque, exact state_dict
round trip, schedule, degenerate cases and the losses that cannot be wrapped."""

from __future__ import annotations

import itertools
import math
from collections import deque

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from deepmetric.errors import ConfigError
from deepmetric.losses import build_loss
from deepmetric.losses.contracts import loss_parts
from deepmetric.losses.xbm import CrossBatchMemory, rectangular_support

DT = torch.float64


def _batch(n: int, d: int, n_classes: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=DT)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return x, y


def _filled(loss: CrossBatchMemory, steps: int, n: int, d: int, n_classes: int, seed: int = 100) -> None:
    """Run ``steps`` training calls so the memory holds earlier batches."""
    for s in range(steps):
        x, y = _batch(n, d, n_classes, seed + s)
        loss(x, y)


def _candidates(x: Tensor, y: Tensor, loss: CrossBatchMemory) -> tuple[list[Tensor], list[int], list[bool]]:
    """Columns of the explicit loop: the batch rows (with gradient), then the memory rows
    (constants), with labels and an 'is a batch row' flag."""
    mem, mem_y = loss.memory_contents()
    rows = [x[i] for i in range(x.shape[0])] + [mem[j].clone() for j in range(mem.shape[0])]
    labels = y.tolist() + mem_y.tolist()
    return rows, labels, [True] * x.shape[0] + [False] * mem.shape[0]


def _dist(a: Tensor, b: Tensor) -> Tensor:
    return torch.sqrt(((a - b) ** 2).sum())


def _cos(a: Tensor, b: Tensor) -> Tensor:
    return (a @ b) / (a.norm() * b.norm())


def loop_contrastive(x: Tensor, y: Tensor, loss: CrossBatchMemory, neg_margin: float = 1.0) -> Tensor:
    cols, labels, _ = _candidates(x, y, loss)
    pos, neg = [], []
    for i in range(x.shape[0]):
        for j, c in enumerate(cols):
            if j == i:
                continue
            d = _dist(x[i], c)
            if labels[j] == int(y[i]):
                pos.append(d)
            else:
                neg.append(torch.relu(neg_margin - d))
    zero = x.sum() * 0
    return (torch.stack(pos).mean() if pos else zero) + (torch.stack(neg).mean() if neg else zero)


def loop_triplet_all(x: Tensor, y: Tensor, loss: CrossBatchMemory, margin: float) -> Tensor:
    cols, labels, _ = _candidates(x, y, loss)
    terms = []
    for a in range(x.shape[0]):
        for p, n in itertools.product(range(len(cols)), repeat=2):
            if p == a or labels[p] != int(y[a]) or labels[n] == int(y[a]):
                continue
            terms.append(torch.relu(_dist(x[a], cols[p]) - _dist(x[a], cols[n]) + margin))
    return torch.stack(terms).mean() if terms else x.sum() * 0


def loop_multi_similarity(
    x: Tensor, y: Tensor, loss: CrossBatchMemory, alpha: float, beta: float, base: float, eps: float
) -> Tensor:
    cols, labels, _ = _candidates(x, y, loss)
    total = x.sum() * 0
    for i in range(x.shape[0]):
        sims = [(j, _cos(x[i], c)) for j, c in enumerate(cols) if j != i]
        pos = [(j, s) for j, s in sims if labels[j] == int(y[i])]
        neg = [(j, s) for j, s in sims if labels[j] != int(y[i])]
        if not pos or not neg:
            continue
        min_pos = min(float(s.detach()) for _, s in pos)
        max_neg = max(float(s.detach()) for _, s in neg)
        kept_neg = [s for _, s in neg if float(s.detach()) + eps > min_pos]
        kept_pos = [s for _, s in pos if float(s.detach()) - eps < max_neg]
        if kept_pos:
            total = total + torch.log1p(sum(torch.exp(-alpha * (s - base)) for s in kept_pos)) / alpha
        if kept_neg:
            total = total + torch.log1p(sum(torch.exp(beta * (s - base)) for s in kept_neg)) / beta
    return total / x.shape[0]


def loop_ranked_list(x: Tensor, y: Tensor, loss: CrossBatchMemory, alpha: float, margin: float, t_n: float, lam: float) -> Tensor:
    cols, labels, _ = _candidates(x, y, loss)
    total = x.sum() * 0
    for i in range(x.shape[0]):
        dists = [(j, _dist(x[i], c)) for j, c in enumerate(cols) if j != i]
        p_star = [d for j, d in dists if labels[j] == int(y[i]) and float(d.detach()) > alpha - margin]
        n_star = [d for j, d in dists if labels[j] != int(y[i]) and float(d.detach()) < alpha]
        if p_star:
            total = total + sum(d - (alpha - margin) for d in p_star) / len(p_star)  # t_p = 0
        if n_star:
            w = [math.exp(t_n * (alpha - float(d.detach()))) for d in n_star]
            total = total + lam * sum(wi * (alpha - d) for wi, d in zip(w, n_star)) / sum(w)
    return total / x.shape[0]


CASES = [
    ("contrastive", {"neg_margin": 2.0}, lambda x, y, l: loop_contrastive(x, y, l, neg_margin=2.0)),
    ("triplet", {"margin": 0.5, "mining": "all"}, lambda x, y, l: loop_triplet_all(x, y, l, 0.5)),
    (
        "multi_similarity",
        {"alpha": 2.0, "beta": 10.0, "base": 0.3, "epsilon": 0.1},
        lambda x, y, l: loop_multi_similarity(x, y, l, 2.0, 10.0, 0.3, 0.1),
    ),
    (
        "ranked_list",
        {"alpha": 4.0, "margin": 1.0, "t_n": 2.0, "lam": 0.5},
        lambda x, y, l: loop_ranked_list(x, y, l, 4.0, 1.0, 2.0, 0.5),
    ),
]


@pytest.mark.parametrize("name,params,loop", CASES, ids=[c[0] for c in CASES])
def test_value_and_gradient_match_explicit_loop(name, params, loop) -> None:
    loss = CrossBatchMemory(build_loss(name, **params), memory_size=10)
    _filled(loss, 3, 4, 3, 3)  # 12 enqueued into 10 slots: wrapped around
    assert int(loss.filled) == 10 and int(loss.pointer) == 2
    x, y = _batch(4, 3, 3, seed=7)
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    expected = loop(x2, y, loss)  # before the call: the call enqueues the batch
    mem_before = loss.memory.clone()
    value = loss(x1, y)
    assert value.item() == pytest.approx(expected.item(), rel=1e-10, abs=1e-12)
    value.backward()
    expected.backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-8, atol=1e-10)
    # gradient reaches the batch only: the memory is a detached, grad-free buffer
    assert not loss.memory.requires_grad and loss.memory.grad is None
    # after the step the batch is in the memory (slots 2..5)
    torch.testing.assert_close(loss.memory[2:6], x)
    torch.testing.assert_close(loss.memory[6:], mem_before[6:])


def test_memory_columns_carry_no_gradient() -> None:
    loss = CrossBatchMemory(build_loss("contrastive", neg_margin=2.0), memory_size=8)
    _filled(loss, 2, 4, 3, 2)
    x, y = _batch(4, 3, 2, seed=9)
    x.requires_grad_(True)
    matrix, pos, neg = loss.candidate_matrix(x, y)
    assert matrix.shape == (4, 12) and pos.shape == neg.shape == (4, 12)
    # the derivative of the memory block w.r.t. the batch rows: only through x
    grad = torch.autograd.grad(matrix[:, 4:].sum(), x)[0]
    mem = loss.memory_contents()[0]
    expected = ((x.detach().unsqueeze(1) - mem.unsqueeze(0)) / torch.cdist(x.detach(), mem).unsqueeze(2)).sum(1)
    torch.testing.assert_close(grad, expected)


def test_cosine_and_squared_metrics_rectangular() -> None:
    for metric in ("cosine", "squared_euclidean"):
        loss = CrossBatchMemory(build_loss("triplet", margin=0.2, metric=metric, mining="semihard"), 12)
        _filled(loss, 2, 4, 3, 2)
        x, y = _batch(4, 3, 2, seed=11)
        x.requires_grad_(True)
        value = loss(x, y)
        value.backward()
        assert math.isfinite(value.item()) and torch.isfinite(x.grad).all()


def test_empty_memory_is_the_plain_loss_and_start_step() -> None:
    base = build_loss("multi_similarity")
    loss = CrossBatchMemory(base, memory_size=16, start_step=2)
    for step in range(4):
        x, y = _batch(6, 5, 3, seed=step)
        plain = base(x, y)
        value = loss(x, y)
        if step < 2:  # the plain batch loss, memory untouched
            assert value.item() == plain.item() and int(loss.filled) == 0
        elif step == 2:  # memory empty: the N x N matrix, the plain loss exactly
            assert value.item() == plain.item() and int(loss.filled) == 6
        else:
            assert value.item() != pytest.approx(plain.item()) and int(loss.filled) == 12
    assert int(loss.steps_seen) == 4


def test_eval_mode_reads_memory_without_enqueueing() -> None:
    loss = CrossBatchMemory(build_loss("contrastive"), memory_size=16)
    _filled(loss, 2, 4, 3, 2)
    before = (loss.memory.clone(), int(loss.filled), int(loss.pointer), int(loss.steps_seen))
    loss.eval()
    x, y = _batch(4, 3, 2, seed=1)
    loss(x, y)
    torch.testing.assert_close(loss.memory, before[0])
    assert (int(loss.filled), int(loss.pointer), int(loss.steps_seen)) == before[1:]


def test_fifo_order_after_wrap_around_matches_deque() -> None:
    m = 7
    loss = CrossBatchMemory(build_loss("contrastive"), memory_size=m)
    queue: deque[tuple[tuple[float, ...], int]] = deque(maxlen=m)
    g = torch.Generator().manual_seed(0)
    for step, n in enumerate([3, 3, 5, 1, 7, 2, 4, 6]):
        x = torch.randn(n, 2, generator=g, dtype=DT)
        y = torch.arange(step * 10, step * 10 + n)
        loss(x, y)
        for row, label in zip(x.tolist(), y.tolist()):
            queue.append((tuple(row), label))
        mem, labels = loss.memory_in_age_order()
        assert [(tuple(r), int(l)) for r, l in zip(mem.tolist(), labels.tolist())] == list(queue)
        assert int(loss.filled) == len(queue)


def test_state_dict_round_trip_gives_identical_next_loss() -> None:
    a = CrossBatchMemory(build_loss("triplet", margin=0.3), memory_size=9)  # lazy buffer
    _filled(a, 4, 4, 3, 3)
    state = a.state_dict()
    assert set(state) >= {"memory", "memory_labels", "filled", "pointer", "steps_seen"}
    b = CrossBatchMemory(build_loss("triplet", margin=0.3), memory_size=9)
    b.load_state_dict(state)
    c = CrossBatchMemory(build_loss("triplet", margin=0.3), memory_size=9, embedding_dim=3)
    c.load_state_dict(state)
    for step in range(3):  # identical over several further steps, wrap-around included
        x, y = _batch(4, 3, 3, seed=50 + step)
        va, vb, vc = a(x, y), b(x, y), c(x, y)
        assert va.item() == vb.item() == vc.item()
    torch.testing.assert_close(a.memory, b.memory)
    with pytest.raises(ConfigError, match="memory_size"):
        CrossBatchMemory(build_loss("triplet"), memory_size=5).load_state_dict(state)


def test_one_class_and_degenerate_batches() -> None:
    loss = CrossBatchMemory(build_loss("contrastive"), memory_size=8)
    x = torch.randn(4, 3, dtype=DT, requires_grad=True)
    y = torch.zeros(4, dtype=torch.long)
    for _ in range(3):  # one class everywhere: no negative pair, finite value
        value = loss(x, y)
        assert math.isfinite(value.item())
    value.backward()
    assert torch.isfinite(x.grad).all()
    # batch all distinct labels, memory of other labels: no positive anywhere
    ms = CrossBatchMemory(build_loss("multi_similarity"), memory_size=8)
    ms(torch.randn(4, 3, dtype=DT), torch.arange(4))
    value = ms(torch.randn(4, 3, dtype=DT), torch.arange(10, 14))
    assert value.item() == 0.0


def test_memory_smaller_than_batch_is_one_line_config_error() -> None:
    loss = CrossBatchMemory(build_loss("contrastive"), memory_size=3)
    with pytest.raises(ConfigError, match=r"memory_size=3 is smaller than the batch \(4") as info:
        loss(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "name,params,needle",
    [
        ("lifted_structure", {}, "both members"),
        ("angular", {}, "positive's row"),
        ("osm_caa", {"num_classes": 3, "embedding_dim": 4}, "attention"),
        ("npair", {"pairs": "one_per_class"}, "one_per_class"),
        ("proxy_anchor", {"num_classes": 3, "embedding_dim": 4}, "not a pair loss"),
    ],
)
def test_unwrappable_losses_raise_one_line_config_error(name, params, needle) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        CrossBatchMemory(build_loss(name, **params), memory_size=16)
    assert "\n" not in str(info.value)


def test_supported_losses_and_contracts() -> None:
    for name in ("contrastive", "triplet", "multi_similarity", "npair", "ranked_list"):
        assert rectangular_support(build_loss(name)) is None, name
    base = build_loss("npair")
    loss = CrossBatchMemory(base, memory_size=8)
    assert loss_parts(loss) == [loss, base]
    for bad in ({"memory_size": 0}, {"memory_size": 4, "start_step": -1}, {"memory_size": 2.5}):
        with pytest.raises(ConfigError):
            CrossBatchMemory(build_loss("contrastive"), **bad)


def test_npair_regulariser_on_batch_only() -> None:
    base = build_loss("npair", l2_reg=0.5)
    loss = CrossBatchMemory(base, memory_size=8)
    _filled(loss, 1, 4, 3, 2)
    x, y = _batch(4, 3, 2, seed=3)
    matrix, pos, neg = loss.candidate_matrix(x, y)
    expected = base.matrix_loss(matrix, pos, neg) + 0.5 * x.pow(2).sum(1).mean()
    assert loss(x, y).item() == pytest.approx(expected.item(), rel=1e-12)


def test_float32_embeddings_with_closed_form_distances() -> None:
    loss = CrossBatchMemory(build_loss("contrastive"), memory_size=32, embedding_dim=8)
    for step in range(3):
        x = F.normalize(torch.randn(8, 8), dim=1).requires_grad_(True)
        value = loss(x, torch.arange(8) % 3)
        value.backward()
        assert torch.isfinite(x.grad).all() and math.isfinite(value.item())
    assert loss.memory.dtype == torch.float32 and int(loss.filled) == 24


# --------------------------------------------------------------------------- config and trainer

TOY_DIR = __import__("pathlib").Path(__file__).resolve().parents[1] / "training"


def _loss_config_with_memory(**values):  # type: ignore[no-untyped-def]
    """A LossConfig carrying the proposed keys loss.memory_size / loss.memory_start_step."""
    from deepmetric.config import LossConfig

    class MemoryLossConfig(LossConfig):
        memory_size: int = 0
        memory_start_step: int = 0

    return MemoryLossConfig(**values)


def test_builder_wraps_with_memory_when_the_keys_are_set() -> None:
    from deepmetric.losses.classification import Hybrid
    from deepmetric.training.builders import build_loss_from_config

    plain = build_loss_from_config(_loss_config_with_memory(name="triplet"), 4, 8)
    assert not isinstance(plain, CrossBatchMemory)
    loss = build_loss_from_config(
        _loss_config_with_memory(name="triplet", memory_size=64, memory_start_step=5, ce_weight=0.5), 4, 8
    )
    assert isinstance(loss, Hybrid) and isinstance(loss.metric_loss, CrossBatchMemory)
    assert loss.metric_loss.memory.shape == (64, 8) and loss.metric_loss.start_step == 5
    with pytest.raises(ConfigError, match="synthesis"):
        build_loss_from_config(
            _loss_config_with_memory(name="triplet", memory_size=64, synthesis="symmetrical"), 4, 8
        )
    with pytest.raises(ConfigError, match="LiftedStructureLoss"):
        build_loss_from_config(_loss_config_with_memory(name="lifted_structure", memory_size=64), 4, 8)


def test_trainer_resume_with_memory_is_exact(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fit() 8 steps straight == 4 steps, interrupted, resumed for 4 more: same weights AND memory."""
    monkeypatch.syspath_prepend(str(TOY_DIR))
    from toy_training import toy_config, toy_dataset, tiny_model  # type: ignore[import-not-found]

    import importlib

    from deepmetric.training import builders, fit, load_checkpoint

    fit_module = importlib.import_module("deepmetric.training.fit")  # the attribute is the function

    monkeypatch.setitem(builders.DATASET_REGISTRY, "toy", toy_dataset)
    monkeypatch.setitem(builders.MODEL_REGISTRY, "tiny", tiny_model)
    original = builders.build_loss_from_config

    def with_memory(config, num_classes, embedding_dim, outputs=None, **kwargs):  # type: ignore[no-untyped-def]
        return CrossBatchMemory(original(config, num_classes, embedding_dim, outputs, **kwargs), 20, start_step=2,
                                embedding_dim=embedding_dim)

    monkeypatch.setattr(fit_module, "build_loss_from_config", with_memory)
    config = toy_config("trainer.steps=8", "trainer.checkpoint_every=4", "trainer.eval_every=8")
    fit(config, tmp_path / "straight", progress=False)

    calls = {"n": 0}
    step = fit_module._Run.train_step

    def stop_at_4(self, inputs, labels):  # type: ignore[no-untyped-def]
        if self.step == 4:
            raise KeyboardInterrupt
        calls["n"] += 1
        return step(self, inputs, labels)

    monkeypatch.setattr(fit_module._Run, "train_step", stop_at_4)
    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(fit_module._Run, "train_step", step)
    fit(config, tmp_path / "resumed", resume=True, progress=False)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert calls["n"] == 4 and a["step"] == b["step"] == 8
    assert int(a["loss"]["filled"]) == 20 and int(a["loss"]["steps_seen"]) == 8
    for part in ("model", "loss"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
