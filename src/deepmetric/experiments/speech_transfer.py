"""Spoken-word recognition by deep metric learning, with transfer to a new speaker.

Protocol of Takashima et al., Interspeech 2020 (METHODS.md section 6, reconstructed from the
abstract), on any corpus with word and speaker labels (FSDD by default):

* target-only: train on the target speaker's ``n`` utterances per word;
* transfer: pre-train on all other speakers, then fine-tune on the target's ``n`` per word;

each with a cross-entropy classifier (cosine softmax head, prediction by the head) or a metric
loss (triplet by default, prediction by the nearest word prototype built from the target's
``n`` utterances). Accuracy is measured on the target's held-out utterances, which never
overlap the ``n`` used for training. With n = 1 a word has one utterance, so metric batches
draw it twice (sampling with replacement) and SpecAugment makes the two views differ.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from deepmetric.data.samplers import PKSampler
from deepmetric.data.speech import SpecAugment, SpeechDataset, pad_collate
from deepmetric.errors import DataError
from deepmetric.evaluation.word_recognition import prototype_predict
from deepmetric.losses import build_loss
from deepmetric.models.audio import UtteranceEmbedder


@dataclass
class SpeechTrainSettings:
    """Budget and architecture of one speech training run."""

    steps: int = 300
    p: int = 10
    k: int = 4
    lr: float = 2e-3
    weight_decay: float = 1e-4
    channels: tuple[int, ...] = (16, 32, 64)
    embedding_dim: int = 64
    pooling: str = "mean"
    metric_loss: str = "triplet"
    metric_params: dict = field(default_factory=lambda: {"margin": 0.2, "mining": "semihard"})


def make_model(n_mels: int, settings: SpeechTrainSettings) -> UtteranceEmbedder:
    return UtteranceEmbedder(n_mels=n_mels, channels=settings.channels, embedding_dim=settings.embedding_dim,
                             pooling=settings.pooling)


def make_loss(kind: str, num_classes: int, settings: SpeechTrainSettings) -> nn.Module:
    """``"ce"`` -> cosine-softmax classifier loss; ``"metric"`` -> ``settings.metric_loss``."""
    if kind == "ce":
        return build_loss("normalized_softmax", num_classes=num_classes, embedding_dim=settings.embedding_dim)
    if kind == "metric":
        return build_loss(settings.metric_loss, **settings.metric_params)
    raise DataError(f"unknown training kind '{kind}'; use 'ce' or 'metric'")


def train(model: nn.Module, loss: nn.Module, data: SpeechDataset, steps: int, settings: SpeechTrainSettings,
          seed: int, lr: float | None = None) -> list[float]:
    """Run ``steps`` AdamW steps on P x K batches of ``data``; returns the loss per step."""
    torch.manual_seed(seed)
    n_words = len(set(data.labels))
    items = list(range(len(data)))
    if min(np.bincount(data.labels)[sorted(set(data.labels))]) < 2:
        items = items * 2  # one utterance per word: two augmented views of it form the positive pair
    sampler = PKSampler([data.labels[i] for i in items], p=min(settings.p, n_words), k=settings.k, seed=seed,
                        small_class_policy="replace", batches_per_epoch=steps)
    params = [p for p in list(model.parameters()) + list(loss.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr or settings.lr, weight_decay=settings.weight_decay)
    model.train()
    history = []
    for batch in sampler:
        (feats, lengths), labels = pad_collate([data[items[i]] for i in batch])
        value = loss(model(feats, lengths), labels)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        history.append(float(value.detach()))
    return history


@torch.no_grad()
def embed(model: nn.Module, data: SpeechDataset, batch_size: int = 128) -> tuple[Tensor, Tensor]:
    model.eval()
    out = []
    for start in range(0, len(data), batch_size):
        (feats, lengths), _ = pad_collate([data.__getitem__(i) for i in range(start, min(len(data), start + batch_size))])
        out.append(model(feats, lengths))
    return torch.cat(out), torch.tensor(data.labels)


def word_accuracy(model: nn.Module, loss: nn.Module, support: SpeechDataset, test: SpeechDataset, kind: str) -> float:
    """Accuracy on ``test``: by the classifier head (``ce``) or nearest prototype of ``support``."""
    test_emb, test_labels = embed(model, test)
    if kind == "ce":
        with torch.no_grad():
            pred = loss.logits(test_emb).argmax(dim=1)
    else:
        support_emb, support_labels = embed(model, support)
        pred = prototype_predict(support_emb, support_labels, test_emb)
    return float((pred == test_labels).float().mean())


def target_split(data: SpeechDataset, target: str, n_max: int, held_out: int, seed: int) -> tuple[dict[int, list[int]], list[int]]:
    """For every word of ``target``: a seeded pool of ``n_max`` training indices (the first n are
    used for a budget of n) and ``held_out`` disjoint test indices."""
    rng = np.random.default_rng(seed)
    pools: dict[int, list[int]] = {}
    test: list[int] = []
    for word in sorted(set(data.labels)):
        idx = [i for i, (w, s) in enumerate(zip(data.labels, data.speakers)) if w == word and s == target]
        if len(idx) < n_max + held_out:
            raise DataError(f"speaker '{target}' has {len(idx)} utterances of word {word}; need {n_max + held_out}")
        idx = rng.permutation(idx).tolist()
        pools[word], test = idx[:n_max], test + idx[n_max:n_max + held_out]
    return pools, test


def run_transfer(
    data: SpeechDataset,
    target: str,
    n_values: Sequence[int] = (1, 5, 10),
    seed: int = 0,
    held_out: int = 30,
    settings: SpeechTrainSettings | None = None,
    pretrain_steps: int = 300,
    finetune_steps: int = 100,
    finetune_lr_mult: float = 0.5,
) -> list[dict]:
    """All four settings x ``n_values`` for one target speaker; one dict per (setting, n)."""
    settings = settings or SpeechTrainSettings()
    n_words = len(data.class_names)
    pools, test_idx = target_split(data, target, max(n_values), held_out, seed)
    test = data.subset(test_idx, transform=None)
    source_idx = [i for i, s in enumerate(data.speakers) if s != target]
    pretrained = {}
    for kind in ("ce", "metric"):
        torch.manual_seed(seed)
        model, loss = make_model(data.n_mels, settings), make_loss(kind, n_words, settings)
        train(model, loss, data.subset(source_idx, transform=SpecAugment()), pretrain_steps, settings, seed)
        pretrained[kind] = (model, loss)
    rows = []
    for n in n_values:
        support_idx = [i for word in sorted(pools) for i in pools[word][:n]]
        support = data.subset(support_idx, transform=SpecAugment())
        for kind in ("ce", "metric"):
            torch.manual_seed(seed)
            model, loss = make_model(data.n_mels, settings), make_loss(kind, n_words, settings)
            train(model, loss, support, settings.steps, settings, seed)
            rows.append({"target": target, "n": n, "setting": f"{kind}, target only", "seed": seed,
                         "accuracy": word_accuracy(model, loss, support.subset(range(len(support)), transform=None), test, kind)})
            model, loss = (copy.deepcopy(m) for m in pretrained[kind])
            if kind == "metric":  # zero-shot on the new speaker: prototypes only, no fine-tuning
                rows.append({"target": target, "n": n, "setting": "metric, pre-trained, no fine-tuning", "seed": seed,
                             "accuracy": word_accuracy(model, loss, support.subset(range(len(support)), transform=None), test, kind)})
            train(model, loss, support, finetune_steps, settings, seed, lr=settings.lr * finetune_lr_mult)
            rows.append({"target": target, "n": n, "setting": f"{kind}, pre-train + fine-tune", "seed": seed,
                         "accuracy": word_accuracy(model, loss, support.subset(range(len(support)), transform=None), test, kind)})
    return rows


def run_speaker_independent(
    data: SpeechDataset, test_speakers: Sequence[str], seed: int = 0, settings: SpeechTrainSettings | None = None,
    steps: int = 300,
) -> list[dict]:
    """Train on every speaker not in ``test_speakers``; test on theirs. Metric models recognise by
    prototypes of the training speakers' embeddings (no test-speaker data at all)."""
    settings = settings or SpeechTrainSettings()
    train_idx = [i for i, s in enumerate(data.speakers) if s not in test_speakers]
    test_idx = [i for i, s in enumerate(data.speakers) if s in test_speakers]
    if not train_idx or not test_idx:
        raise DataError(f"speaker-independent split is empty: test speakers {list(test_speakers)}")
    train_set, test = data.subset(train_idx, transform=SpecAugment()), data.subset(test_idx, transform=None)
    rows = []
    for kind in ("ce", "metric"):
        torch.manual_seed(seed)
        model, loss = make_model(data.n_mels, settings), make_loss(kind, len(data.class_names), settings)
        train(model, loss, train_set, steps, settings, seed)
        acc = word_accuracy(model, loss, train_set.subset(range(len(train_set)), transform=None), test, kind)
        rows.append({"setting": kind, "test_speakers": ",".join(test_speakers), "seed": seed, "accuracy": acc})
    return rows
