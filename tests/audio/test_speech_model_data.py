"""Speech loaders, padding-invariant utterance embeddings and word recognition."""

import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from deepmetric.data.speech import (
    SpeechDataset,
    csv_utterances,
    fsdd_utterances,
    pad_collate,
    parse_fsdd_name,
    speech_commands_utterances,
)
from deepmetric.errors import DataError
from deepmetric.evaluation.word_recognition import knn_predict, prototype_predict
from deepmetric.models.audio import UtteranceEmbedder

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def tone(path: Path, hz: float, seconds: float = 0.3, rate: int = 8000) -> None:
    t = np.arange(int(rate * seconds)) / rate
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((0.4 * np.sin(2 * np.pi * hz * t) * 32767).astype("<i2").tobytes())


def test_parse_fsdd_names():
    assert parse_fsdd_name("7_jackson_32.wav") == ("7", "jackson", 32)
    assert parse_fsdd_name("0_two_part_3.wav") == ("0", "two_part", 3)
    with pytest.raises(DataError, match="DIGIT_SPEAKER_INDEX"):
        parse_fsdd_name("hello.wav")


def test_layout_loaders(tmp_path):
    (tmp_path / "fsdd").mkdir()
    for name in ["1_ann_0.wav", "2_bob_1.wav"]:
        tone(tmp_path / "fsdd" / name, 500)
    utts = fsdd_utterances(tmp_path / "fsdd")
    assert [(u.word, u.speaker) for u in utts] == [("1", "ann"), ("2", "bob")]

    sc = tmp_path / "sc"
    for word, spk in [("yes", "abc123"), ("no", "ffee01"), ("_background_noise_", "x")]:
        (sc / word).mkdir(parents=True)
        tone(sc / word / f"{spk}_nohash_0.wav", 300)
    utts = speech_commands_utterances(sc)  # no other words, noise shorter than 1 s: no _unknown_/_silence_
    assert sorted((u.word, u.speaker) for u in utts) == [("no", "ffee01"), ("yes", "abc123")]

    (tmp_path / "m.csv").write_text("path,word,speaker\nfsdd/1_ann_0.wav,one,ann\n")
    utts = csv_utterances(tmp_path / "m.csv")
    assert utts[0].path == tmp_path / "fsdd" / "1_ann_0.wav" and utts[0].word == "one"
    (tmp_path / "bad.csv").write_text("file,word\nx.wav,one\n")
    with pytest.raises(DataError, match="speaker"):
        csv_utterances(tmp_path / "bad.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no FSDD recordings"):
        fsdd_utterances(tmp_path / "empty")


def test_corrupt_wav_error_names_file(tmp_path):
    (tmp_path / "3_x_0.wav").write_bytes(b"RIFF....WAVEnot audio at all")
    ds = SpeechDataset(fsdd_utterances(tmp_path))
    with pytest.raises(DataError, match="3_x_0.wav"):
        ds[0]


def test_dataset_and_collate(tmp_path):
    for i, (hz, sec) in enumerate([(400, 0.2), (900, 0.35), (400, 0.25)]):
        tone(tmp_path / f"{i % 2}_ann_{i}.wav", hz, sec)
    ds = SpeechDataset(fsdd_utterances(tmp_path), n_mels=20)
    (feats, lengths), labels = pad_collate([ds[i] for i in range(3)])
    assert feats.shape == (3, int(lengths.max()), 20)
    assert lengths.tolist() == [ds[i][0].shape[0] for i in range(3)]
    assert labels.tolist() == ds.labels
    for i in range(3):
        assert torch.equal(feats[i, : lengths[i]], ds[i][0]) and (feats[i, lengths[i]:] == 0).all()
    sub = ds.subset([2, 0])
    assert sub.labels == [ds.labels[2], ds.labels[0]] and torch.equal(sub[0][0], ds[2][0])


@pytest.mark.parametrize("recurrent,pooling", [(False, "mean"), (False, "attention"), (True, "mean")])
def test_padding_never_changes_the_embedding(recurrent, pooling):
    torch.manual_seed(0)
    model = UtteranceEmbedder(n_mels=16, channels=(4, 8), embedding_dim=8, recurrent=recurrent,
                              rnn_hidden=6, pooling=pooling).eval()
    short, long_ = torch.randn(13, 16), torch.randn(30, 16)
    (batch, lengths), _ = pad_collate([(short, 0), (long_, 1)])
    with torch.no_grad():
        together = model(batch, lengths)
        alone = model(short.unsqueeze(0), torch.tensor([13]))
        extra_pad = model(torch.cat([short, torch.zeros(20, 16)]).unsqueeze(0), torch.tensor([13]))
    assert torch.allclose(together[0], alone[0], atol=1e-5)
    assert torch.allclose(extra_pad[0], alone[0], atol=1e-5)
    assert torch.allclose(together.norm(dim=1), torch.ones(2), atol=1e-5)


def test_mean_pooling_embedding_ignores_frame_order_only_through_the_cnn():
    # a CNN with kernel 3 in time sees neighbours, so reversing time changes the embedding,
    # while the masked mean itself is order invariant:
    from deepmetric.models.audio import masked_mean

    frames = torch.randn(2, 7, 5)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    ref = torch.stack([frames[0].mean(0), frames[1, :4].mean(0)])
    assert torch.allclose(masked_mean(frames, mask), ref, atol=1e-6)
    assert torch.allclose(masked_mean(frames.flip(1), mask.flip(1)), ref, atol=1e-6)


def test_prototype_and_knn_against_loops():
    torch.manual_seed(1)
    support = torch.randn(30, 6)
    labels = torch.randint(0, 4, (30,))
    queries = torch.randn(10, 6)
    sn = support / support.norm(dim=1, keepdim=True)
    qn = queries / queries.norm(dim=1, keepdim=True)
    proto_pred = prototype_predict(support, labels, queries)
    knn_pred = knn_predict(support, labels, queries, k=5)
    for q in range(10):
        best, best_sim = None, -2.0
        for c in labels.unique().tolist():
            m = sn[labels == c].mean(0)
            sim = float(qn[q] @ (m / m.norm()))
            if sim > best_sim:
                best, best_sim = c, sim
        assert proto_pred[q] == best
        order = sorted(range(30), key=lambda j: -float(qn[q] @ sn[j]))[:5]
        counts = {}
        for rank, j in enumerate(order):
            counts.setdefault(int(labels[j]), []).append(rank)
        top = max(counts.items(), key=lambda kv: (len(kv[1]), -min(kv[1])))[0]
        assert knn_pred[q] == top


@pytest.mark.skipif(not (SHARED / "fsdd").is_dir(), reason="../shared/data/fsdd not available")
def test_fsdd_real_layout():
    utts = fsdd_utterances(SHARED / "fsdd")
    assert len(utts) == 3000
    assert {u.speaker for u in utts} == {"george", "jackson", "lucas", "nicolas", "theo", "yweweler"}
    assert {u.word for u in utts} == {str(d) for d in range(10)}
    ds = SpeechDataset(utts[:4])
    feats, label = ds[0]
    assert feats.shape[1] == 40 and torch.isfinite(feats).all() and label == 0


def test_fsdd_registry_loader_splits_by_speaker_and_trains(tmp_path):
    from deepmetric.config import load_config
    from deepmetric.data.speech import SpecAugment, fsdd_dataset
    from deepmetric.training import fit

    for word, hz in [("0", 300), ("1", 1500)]:
        for spk in ["ann", "bob", "cid"]:
            for i in range(4):
                tone(tmp_path / f"{word}_{spk}_{i}.wav", hz * (1 + 0.02 * i), 0.2)
    test = fsdd_dataset(tmp_path, "test", test_speakers=["cid"], n_mels=16)
    train = fsdd_dataset(tmp_path, "train", transform=SpecAugment(1, 3, 1, 2), test_speakers=["cid"], n_mels=16)
    assert set(test.speakers) == {"cid"} and set(train.speakers) == {"ann", "bob"}
    assert test.class_names == train.class_names == ["0", "1"]
    with pytest.raises(DataError, match="zoe"):
        fsdd_dataset(tmp_path, "test", test_speakers=["zoe"])
    config = load_config({
        "data": {"name": "fsdd", "root": str(tmp_path), "params": {"test_speakers": ["cid"], "n_mels": 16},
                 "val_fraction": 0.0, "num_workers": 0},
        "sampler": {"p": 2, "k": 2},
        "model": {"name": "audio_cnn", "embedding_dim": 8, "params": {"n_mels": 16, "channels": [4]}},
        "loss": {"name": "triplet"},
        "trainer": {"steps": 3, "eval_every": 3},
        "eval": {"split": "test", "k_values": [1], "baseline": False},
    })
    result = fit(config, tmp_path / "run", progress=False)
    assert 0.0 <= result["test"]["recall@1"] <= 1.0
