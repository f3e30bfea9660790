"""protocol.name=speaker_transfer on a synthetic tone corpus: the plan (sub-runs, groups, configs),
each sub-run's split checked item by item, clear errors, and the whole grid trained through
run_protocol, with the fine-tuned runs' starting point recomputed from the pre-trained weights."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepmetric.config import Config, load_config
from deepmetric.data.speech import fsdd_dataset
from deepmetric.errors import ConfigError, DataError
from deepmetric.training.builders import build_model
from deepmetric.training.checkpoint import load_checkpoint
from deepmetric.training.embed import embed
from deepmetric.training.protocols import PROTOCOLS, plan_protocol, run_protocol
from deepmetric.training.protocols.speaker_transfer import SOURCE_GROUP, SpeakerTransfer

REPO = Path(__file__).resolve().parents[2]
FSDD = REPO.parent / "shared" / "data" / "fsdd"
SPEAKERS = {"ann": 1.0, "bob": 1.15, "cid": 0.9}
WORDS = {"0": 300, "1": 900, "2": 2000}
PER_WORD = 8


def make_corpus(root: Path) -> Path:
    """FSDD-named tones: word w at its own pitch, each speaker shifting it; 8 utterances each."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for word, hz in WORDS.items():
        for speaker, shift in SPEAKERS.items():
            for i in range(PER_WORD):
                t = np.arange(int(8000 * rng.uniform(0.15, 0.3))) / 8000
                x = 0.4 * np.sin(2 * np.pi * hz * shift * t) + 0.05 * rng.standard_normal(len(t))
                with wave.open(str(root / f"{word}_{speaker}_{i}.wav"), "wb") as handle:
                    handle.setnchannels(1)
                    handle.setsampwidth(2)
                    handle.setframerate(8000)
                    handle.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("tones"))


def config(root: Path, **protocol: object) -> Config:
    return load_config({
        "seed": 0,
        "device": "cpu",
        "data": {"name": "fsdd", "root": str(root), "params": {"n_mels": 20}, "val_fraction": 0.2, "val_by": "items",
                 "num_workers": 0},
        "sampler": {"p": 3, "k": 2},
        "model": {"name": "audio_cnn", "embedding_dim": 8, "params": {"n_mels": 20, "channels": [4, 8]}},
        "loss": {"name": "triplet", "params": {"margin": 0.2}},
        "optimizer": {"lr": 0.004, "backbone_lr_mult": 1.0},
        "scheduler": {"name": "none", "warmup_steps": 0},
        "trainer": {"steps": 20, "eval_every": 10, "checkpoint_every": 10},
        "eval": {"protocol": "word_recognition", "split": "val", "select_metric": "word_accuracy", "k_values": [1]},
        "protocol": {"name": "speaker_transfer", "target_speakers": ["bob"], "shots": [1, 3], "held_out": 4,
                     "finetune_steps": 8, "finetune_lr_mult": 0.25, **protocol},
    })


def paths(root: Path, split: str, params: dict) -> set[str]:
    return set(fsdd_dataset(root, split, **params).paths)


def speaker_of(path: str) -> str:
    return Path(path).stem.split("_")[1]


def test_registered() -> None:
    assert PROTOCOLS.resolve("speaker_transfer") is SpeakerTransfer


def test_plan_order_groups_and_configs(corpus: Path, tmp_path: Path) -> None:
    cfg = config(corpus, target_speakers=["bob", "ann"])
    plan = plan_protocol(cfg, tmp_path)
    expected = []
    for t in ("bob", "ann"):
        expected += [f"pretrain_{t}", f"target_only_{t}_n1", f"finetune_{t}_n1", f"target_only_{t}_n3", f"finetune_{t}_n3"]
    assert [s.name for s in plan] == expected
    for sub in plan:
        setting, n = sub.params["setting"], sub.params["shots"]
        assert sub.params["target"] in ("bob", "ann")
        assert sub.group == (SOURCE_GROUP if setting == "source_only" else f"{setting}, n={n}")
        c, p = sub.config, sub.config.data.params
        assert p["target_speaker"] == sub.params["target"] and p["held_out"] == 4 and p["max_shots"] == 3
        assert p["split_seed"] == cfg.seed  # protocol.split_seed null: the run seed
        if setting == "source_only":
            assert p["role"] == "source" and "shots" not in p
            assert (c.data.val_fraction, c.eval.split, c.eval.checkpoint) == (0.2, "val", "best")  # the recipe's
            assert c.trainer == cfg.trainer and c.optimizer == cfg.optimizer and c.model.init_from is None
            continue
        assert p["role"] == "target" and p["shots"] == n
        # no validation split: nothing is selected, the last step's weights are tested
        assert (c.data.val_fraction, c.eval.split, c.eval.checkpoint) == (0.0, "test", "last")
        assert c.trainer.eval_every == 0 and c.trainer.early_stopping_patience is None
        if setting == "target_only":
            assert c.model.init_from is None and c.trainer.steps == 20 and c.optimizer.lr == pytest.approx(0.004)
        else:
            pretrain = tmp_path.resolve() / f"pretrain_{sub.params['target']}" / "checkpoints" / "best.pt"
            assert c.model.init_from == str(pretrain)
            assert c.trainer.steps == 8 and c.optimizer.lr == pytest.approx(0.001)
    only = plan_protocol(config(corpus, settings=["target_only"]), tmp_path)
    assert [s.name for s in only] == ["target_only_bob_n1", "target_only_bob_n3"]
    last = plan_protocol(load_config(config(corpus), ["eval.checkpoint=last", "protocol.finetune_steps=null"]), tmp_path)
    fine = [s for s in last if s.name.startswith("finetune")]
    assert all(s.config.model.init_from.endswith("last.pt") and s.config.trainer.steps == 20 for s in fine)


def test_plan_splits_item_by_item(corpus: Path, tmp_path: Path) -> None:
    cfg = config(corpus, target_speakers=["bob", "cid"], shots=[1, 2, 3], split_seed=5)
    everything = {str(p) for p in corpus.glob("*.wav")}
    for target in ("bob", "cid"):
        subs = [s for s in plan_protocol(cfg, tmp_path) if s.params["target"] == target]
        tests = [paths(corpus, "test", s.config.data.params) for s in subs]
        held = tests[0]
        assert all(t == held for t in tests)  # one held-out set for every sub-run of the target
        assert {speaker_of(p) for p in held} == {target} and len(held) == 4 * len(WORDS)
        trains = {s.name: paths(corpus, "train", s.config.data.params) for s in subs}
        source = trains[f"pretrain_{target}"]
        assert source == {p for p in everything if speaker_of(p) != target}  # every other speaker, no target
        previous: set[str] = set()
        for n in (1, 2, 3):
            shots = trains[f"target_only_{target}_n{n}"]
            assert shots == trains[f"finetune_{target}_n{n}"]
            assert {speaker_of(p) for p in shots} == {target}
            words = [Path(p).stem.split("_")[0] for p in shots]
            assert sorted(words) == sorted(list(WORDS) * n)  # n utterances of every word
            assert previous < shots and not shots & held  # nested, never tested
            previous = shots


def test_plan_errors(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="target_speakers is empty.*ann, bob, cid"):
        plan_protocol(config(corpus, target_speakers=[]), tmp_path)
    with pytest.raises(ConfigError, match=r"\['zoe'\] are not in the corpus; speakers are ann, bob, cid"):
        plan_protocol(config(corpus, target_speakers=["zoe"]), tmp_path)
    with pytest.raises(ConfigError, match="data.params sets test_speakers"):
        plan_protocol(load_config(config(corpus), ["data.params.test_speakers=[ann]"]), tmp_path)
    with pytest.raises(ConfigError, match="held-out test utterances.*eval.checkpoint=last"):
        plan_protocol(load_config(config(corpus), ["data.val_fraction=0", "eval.split=test"]), tmp_path)
    with pytest.raises(ConfigError, match="lacks"):
        plan_protocol(load_config(config(corpus), ["data.name=folder", "data.params={}"]), tmp_path)
    with pytest.raises(DataError, match="needs 9"):  # 8 utterances per word: pool 5 + 4 held out is too many
        paths(corpus, "test", plan_protocol(config(corpus, shots=[5]), tmp_path)[0].config.data.params)


@pytest.mark.skipif(not FSDD.is_dir(), reason=f"FSDD not found at {FSDD}")
def test_fsdd_recipe_plans_its_grid(tmp_path: Path) -> None:
    cfg = load_config(REPO / "recipes" / "speech_fsdd_transfer.yaml", [f"data.root={FSDD}"])
    plan = plan_protocol(cfg, tmp_path)
    assert len(plan) == len(cfg.protocol.target_speakers) * (1 + 2 * len(cfg.protocol.shots))
    assert {s.group for s in plan} == {SOURCE_GROUP} | {f"{g}, n={n}" for g in ("target_only", "pretrain_finetune")
                                                        for n in cfg.protocol.shots}


def explicit_accuracy(support: torch.Tensor, support_labels: list[int], queries: torch.Tensor,
                      labels: list[int]) -> float:
    """Nearest word prototype (mean of unit embeddings, re-normalised), by loops."""
    correct = 0
    for q, y in zip(queries, labels):
        best, best_sim = None, -2.0
        for word in sorted(set(support_labels)):
            rows = [F.normalize(support[i], dim=0) for i in range(len(support_labels)) if support_labels[i] == word]
            sim = float(F.normalize(q, dim=0) @ F.normalize(torch.stack(rows).mean(0), dim=0))
            if sim > best_sim:
                best, best_sim = word, sim
        correct += best == y
    return correct / len(labels)


def test_grid_trains_and_finetuning_starts_from_the_pretrained_run(corpus: Path, tmp_path: Path) -> None:
    cfg = load_config(config(corpus, shots=[2, 3]), ["loss.name=normalized_softmax", "loss.params={}"])
    summary = run_protocol(cfg, tmp_path / "run", progress=False, report=False)
    plan = plan_protocol(cfg, tmp_path / "run")
    assert [r["name"] for r in summary["runs"]] == [s.name for s in plan]
    assert list(summary["groups"]) == [SOURCE_GROUP, "target_only, n=2", "pretrain_finetune, n=2",
                                       "target_only, n=3", "pretrain_finetune, n=3"]
    for stats in summary["groups"].values():
        assert stats["word_accuracy"]["n"] == 1 and 0.0 <= stats["word_accuracy"]["mean"] <= 1.0
        assert stats["word_accuracy"]["mean"] == stats["word_accuracy/softmax"]["mean"]  # a pure classifier loss
    pretrained = load_checkpoint(tmp_path / "run" / "pretrain_bob" / "checkpoints" / "best.pt")
    for sub in (s for s in plan if s.name.startswith("finetune")):
        # step 0 of fine-tuning = the pre-trained weights and classifier, on the target's data
        model = build_model(sub.config)
        model.load_state_dict(pretrained["model"])
        params = sub.config.data.params
        support, support_labels = embed(model, fsdd_dataset(corpus, "train", **params))
        test, test_labels = embed(model, fsdd_dataset(corpus, "test", **params))
        metrics = json.loads((tmp_path / "run" / sub.name / "metrics.json").read_text())
        start = metrics["evaluations"][0]["metrics"]
        assert metrics["evaluations"][0]["step"] == 0
        expected = explicit_accuracy(support, support_labels.tolist(), test, test_labels.tolist())
        assert start["word_accuracy/prototype"] == pytest.approx(expected)
        weight = F.normalize(pretrained["loss"]["weight"], dim=1)
        softmax = [int(torch.argmax(weight @ F.normalize(q, dim=0))) for q in test]  # words 0..2 = remapped labels
        assert start["word_accuracy/softmax"] == pytest.approx(np.mean(np.asarray(softmax) == test_labels.numpy()))
        assert metrics["test_step"] == metrics["steps"] == 8  # the last step, nothing selected
        with np.load(tmp_path / "run" / sub.name / "test_predictions.npz") as npz:
            assert list(npz["class_names"]) == list(WORDS)
    # pure tones are easy: the embedding is clearly above chance (1/3) after 20 + 8 steps (the
    # cosine-softmax head of this tiny budget is not yet)
    best = max(summary["groups"][f"pretrain_finetune, n={n}"]["word_accuracy/prototype"]["mean"] for n in (2, 3))
    assert best > 0.6


def test_one_utterance_per_word_trains_on_augmented_views(corpus: Path, tmp_path: Path) -> None:
    cfg = config(corpus, shots=[1], settings=["target_only"])
    summary = run_protocol(cfg, tmp_path / "run", progress=False, report=False)
    accuracy = summary["groups"]["target_only, n=1"]["word_accuracy"]
    assert accuracy["n"] == 1 and 0.0 <= accuracy["mean"] <= 1.0
