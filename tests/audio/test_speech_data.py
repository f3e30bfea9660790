"""Speech registry loaders: 12-class Speech Commands labels, speaker-disjoint and transfer splits,
CSV manifests and wrong-layout messages, each checked against expectations built in the test."""

from __future__ import annotations

import inspect
import wave
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from deepmetric.data.speech import (
    CORE_WORDS,
    SpeechDataset,
    detect_speech_layout,
    fsdd_dataset,
    fsdd_utterances,
    parse_speech_commands_speaker,
    speech_commands_dataset,
    speech_commands_utterances,
    speech_csv_dataset,
)
from deepmetric.errors import ConfigError, DataError

RATE = 8000
FSDD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "fsdd"
SPLIT_PARAMS = ("test_speakers", "test_speaker_fraction", "split_seed", "target_speaker", "shots", "held_out",
                "max_shots", "role")


def write_wav(path: Path, hz: float = 440.0, seconds: float = 0.2, rate: int = RATE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(rate * seconds))) / rate
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((0.3 * np.sin(2 * np.pi * hz * t) * 32767).astype("<i2").tobytes())


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as handle:
        return np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


#: word -> {speaker: utterance count}; yes/no/up are core words, cat/dog become _unknown_
SC_SPEC = {
    "yes": {"aa11": 2, "bb22": 1, "cc33": 1, "dd44": 1},
    "no": {"aa11": 1, "bb22": 2, "cc33": 1},
    "up": {"bb22": 1, "cc33": 1, "dd44": 1},
    "cat": {"aa11": 1, "dd44": 2},
    "dog": {"cc33": 1},
}
NOISE = {"a_noise.wav": 3.5, "b_noise.wav": 2.2}  # 3 + 2 whole one-second segments


def make_speech_commands(root: Path, spec: dict = SC_SPEC, noise: dict = NOISE) -> Path:
    for w, (word, speakers) in enumerate(spec.items()):
        for speaker, count in speakers.items():
            for n in range(count):
                write_wav(root / word / f"{speaker}_nohash_{n}.wav", 300 + 100 * w + 10 * n)
    for name, seconds in noise.items():
        write_wav(root / "_background_noise_" / name, 97.0, seconds)
    return root


def make_fsdd(root: Path, counts: dict[str, int], words: tuple[str, ...] = ("0", "1", "2")) -> Path:
    for w, word in enumerate(words):
        for speaker, count in counts.items():
            for n in range(count):
                write_wav(root / f"{word}_{speaker}_{n}.wav", 250 + 200 * w + 5 * n)
    return root


def expected_sc_words(include_unknown: bool = True, words: tuple[str, ...] | None = None) -> Counter:
    chosen = words if words is not None else tuple(w for w in CORE_WORDS if w in SC_SPEC)
    counts: Counter = Counter()
    for word, speakers in SC_SPEC.items():
        for count in speakers.values():
            if word in chosen:
                counts[word] += count
            elif include_unknown:
                counts["_unknown_"] += count
    return counts


def all_noise_segments() -> list[tuple[str, float]]:
    out = []
    for name, seconds in sorted(NOISE.items()):
        for k in range(int(seconds)):
            out.append((name, float(k)))
    return out


# --------------------------------------------------------------------------------------------
# Speech Commands labels


def test_twelve_class_mapping_counts_unknown_and_silence(tmp_path):
    root = make_speech_commands(tmp_path / "sc")
    utts = speech_commands_utterances(root)
    expected = expected_sc_words()
    core_sizes = [sum(SC_SPEC[w].values()) for w in ("yes", "no", "up")]  # 5, 4, 3 -> mean 4
    n_silence = min(round(sum(core_sizes) / len(core_sizes)), len(all_noise_segments()))
    expected["_silence_"] = n_silence
    assert Counter(u.word for u in utts) == expected
    assert expected["_unknown_"] == 4 and n_silence == 4
    for u in utts:
        folder = u.path.parent.name
        if u.word == "_silence_":
            assert folder == "_background_noise_" and u.speaker == "_silence_" and u.duration == 1.0
        else:
            assert u.word == (folder if folder in CORE_WORDS else "_unknown_")
    # four of five segments, evenly spaced: indices 0, 1, 2, 3 of the file-ordered list
    segments = [(u.path.name, u.start) for u in utts if u.word == "_silence_"]
    assert segments == all_noise_segments()[:4]

    ds = speech_commands_dataset(root, "train", n_mels=16, sample_rate=RATE, test_speakers=["dd44"])
    assert ds.class_names == sorted(["yes", "no", "up", "_silence_", "_unknown_"])
    for i, u in enumerate(ds.utterances):
        assert ds.class_names[ds.labels[i]] == u.word
        if u.word == "_silence_":
            wave_ = ds.waveform(i).numpy()
            assert wave_.shape == (RATE,)
            start = int(u.start * RATE)
            np.testing.assert_allclose(wave_, read_wav(u.path)[start:start + RATE], atol=1e-4)
            assert ds.paths[i] == f"{u.path}#t={u.start:g},{u.start + 1:g}"
            feats, label = ds[i]
            assert feats.shape[1] == 16 and ds.class_names[label] == "_silence_"


def test_silence_capped_by_noise_and_drop_options(tmp_path):
    root = make_speech_commands(tmp_path / "sc")
    capped = speech_commands_utterances(root, silence_fraction=3.0)  # wants 12, the noise gives 5
    assert sorted((u.path.name, u.start) for u in capped if u.word == "_silence_") == all_noise_segments()

    no_silence = speech_commands_utterances(root, include_silence=False)
    assert Counter(u.word for u in no_silence) == expected_sc_words()
    no_unknown = speech_commands_utterances(root, include_silence=False, include_unknown=False)
    assert Counter(u.word for u in no_unknown) == expected_sc_words(include_unknown=False)

    chosen = speech_commands_utterances(root, words=["yes", "cat"])
    expected = expected_sc_words(words=("yes", "cat"))
    expected["_silence_"] = round((5 + 3) / 2)
    assert Counter(u.word for u in chosen) == expected
    only = speech_commands_utterances(root, words=["yes", "cat"], include_unknown=False, include_silence=False)
    assert Counter(u.word for u in only) == Counter({"yes": 5, "cat": 3})

    ds = speech_commands_dataset(root, "test", words=["yes", "cat"], include_silence=False, sample_rate=RATE,
                                 test_speakers=["aa11"])
    assert ds.class_names == ["_unknown_", "cat", "yes"]

    with pytest.raises(DataError, match="zebra"):
        speech_commands_utterances(root, words=["zebra"])
    with pytest.raises(ConfigError, match="include_silence"):
        speech_commands_utterances(root, words=["_silence_"])
    make_speech_commands(tmp_path / "odd", spec={"cat": {"aa11": 1}, "dog": {"bb22": 1}}, noise={})
    with pytest.raises(DataError, match="core words"):
        speech_commands_utterances(tmp_path / "odd")
    # no _background_noise_ folder: no silence class at all
    assert {u.word for u in speech_commands_utterances(tmp_path / "odd", words=["cat"])} == {"cat", "_unknown_"}


def test_speaker_parsing(tmp_path):
    assert parse_speech_commands_speaker("0a7c2a8d_nohash_1.wav") == "0a7c2a8d"
    assert parse_speech_commands_speaker("ab_cd_nohash_0.wav") == "ab_cd"
    assert parse_speech_commands_speaker("plain_3.wav") == "plain"
    root = make_speech_commands(tmp_path / "sc")
    got = Counter((u.path.parent.name, u.speaker) for u in speech_commands_utterances(root, include_silence=False))
    expected = Counter({(word, spk): n for word, speakers in SC_SPEC.items() for spk, n in speakers.items()})
    assert got == expected


# --------------------------------------------------------------------------------------------
# speaker-disjoint splits


def assert_disjoint_cover(train: SpeechDataset, test: SpeechDataset, all_paths: list[str]) -> None:
    assert not set(train.speakers) & set(test.speakers)
    assert sorted(train.paths + test.paths) == sorted(all_paths)
    assert train.class_names == test.class_names


def test_speaker_disjoint_splits_of_all_loaders(tmp_path):
    root = make_speech_commands(tmp_path / "sc")
    all_sc = [u.location() for u in speech_commands_utterances(root)]
    speakers = sorted({spk for s in SC_SPEC.values() for spk in s})  # aa11 bb22 cc33 dd44

    kw = dict(sample_rate=RATE, test_speaker_fraction=0.5)
    for seed in range(4):
        train = speech_commands_dataset(root, "train", split_seed=seed, **kw)
        test = speech_commands_dataset(root, "test", split_seed=seed, **kw)
        assert_disjoint_cover(train, test, all_sc)
        chosen = np.random.default_rng(seed).permutation(len(speakers))[:2]
        assert set(test.speakers) == {speakers[j] for j in chosen}
        assert "_silence_" in train.speakers and "_silence_" not in test.speakers
    explicit = speech_commands_dataset(root, "test", sample_rate=RATE, test_speakers=["bb22"])
    assert set(explicit.speakers) == {"bb22"}
    assert len(explicit) == sum(s.get("bb22", 0) for s in SC_SPEC.values())
    silence_test = speech_commands_dataset(root, "test", sample_rate=RATE, test_speakers=["_silence_", "aa11"])
    assert set(silence_test.speakers) == {"_silence_", "aa11"}
    default_test = speech_commands_dataset(root, "test", sample_rate=RATE)  # fraction 0.2 of 4 -> 1 speaker
    assert len(set(default_test.speakers)) == 1

    fsdd = make_fsdd(tmp_path / "fsdd", {"ann": 2, "bob": 2, "cid": 2, "dan": 2})
    all_fsdd = [str(p) for p in sorted(fsdd.glob("*.wav"))]
    train = fsdd_dataset(fsdd, "train", test_speakers=["ann", "dan"])
    test = fsdd_dataset(fsdd, "test", test_speakers=["ann", "dan"])
    assert_disjoint_cover(train, test, all_fsdd)
    assert set(test.speakers) == {"ann", "dan"} and train.class_names == ["0", "1", "2"]
    frac = [fsdd_dataset(fsdd, s, test_speaker_fraction=0.25, split_seed=3) for s in ("train", "test")]
    assert_disjoint_cover(*frac, all_fsdd)
    assert len(set(frac[1].speakers)) == 1
    with pytest.raises(ConfigError, match="both set"):
        fsdd_dataset(fsdd, "test", test_speakers=["ann"], test_speaker_fraction=0.5)
    with pytest.raises(DataError, match="every speaker"):
        fsdd_dataset(fsdd, "test", test_speakers=["ann", "bob", "cid", "dan"])
    with pytest.raises(DataError, match="theo"):  # the FSDD default test speakers are not in this tree
        fsdd_dataset(fsdd, "test")


def test_every_loader_takes_the_same_split_params():
    for fn in (fsdd_dataset, speech_commands_dataset, speech_csv_dataset):
        names = inspect.signature(fn).parameters
        assert {"root", "split", "transform"} <= set(names) and set(SPLIT_PARAMS) <= set(names)
        assert "seed" not in names  # the split follows split_seed, never the training seed


# --------------------------------------------------------------------------------------------
# speaker transfer


def transfer(root: Path, split: str, **params) -> SpeechDataset:
    return fsdd_dataset(root, split, target_speaker="cid", held_out=3, **params)


def by_word(ds: SpeechDataset) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path, label in zip(ds.paths, ds.labels):
        out.setdefault(ds.class_names[label], set()).add(path)
    return out


def test_transfer_split_nested_shots_fixed_held_out(tmp_path):
    root = make_fsdd(tmp_path / "fsdd", {"ann": 2, "bob": 2, "cid": 14})
    trains = {n: transfer(root, "train", role="target", shots=n) for n in (1, 5, 10)}
    tests = {n: transfer(root, "test", role="target", shots=n) for n in (1, 5, 10)}
    for n, ds in trains.items():
        assert set(ds.speakers) == {"cid"} and ds.class_names == ["0", "1", "2"]
        assert {w: len(p) for w, p in by_word(ds).items()} == {"0": n, "1": n, "2": n}
    assert set(trains[1].paths) < set(trains[5].paths) < set(trains[10].paths)
    held = set(tests[1].paths)
    assert set(tests[5].paths) == held == set(tests[10].paths)
    assert {w: len(p) for w, p in by_word(tests[1]).items()} == {"0": 3, "1": 3, "2": 3}
    assert set(tests[1].speakers) == {"cid"} and not held & set(trains[10].paths)

    source = transfer(root, "train", role="source")
    assert "cid" not in source.speakers
    others = [str(p) for p in sorted(root.glob("*.wav")) if "_cid_" not in p.name]
    assert sorted(source.paths) == others
    assert set(transfer(root, "test", role="source").paths) == held
    assert source.class_names == tests[1].class_names

    rest = fsdd_dataset(root, "test", target_speaker="cid", role="source")  # held_out=None: all 4 left per word
    assert {w: len(p) for w, p in by_word(rest).items()} == {"0": 4, "1": 4, "2": 4}
    assert held < set(rest.paths) and not set(rest.paths) & set(trains[10].paths)
    other_seed = transfer(root, "train", role="target", shots=10, split_seed=1)
    assert set(other_seed.paths) != set(trains[10].paths)


def test_transfer_split_matches_an_explicit_reference_and_rejects_bad_params(tmp_path):
    root = make_fsdd(tmp_path / "fsdd", {"ann": 2, "cid": 14})
    data = SpeechDataset(fsdd_utterances(root))
    # reference: words in sorted order, each word's target items in corpus order permuted by ONE
    # generator; pool = the first 10, held-out test = the next 3
    rng = np.random.default_rng(7)
    pools, test_idx = {}, []
    for word in sorted(set(data.labels)):
        items = [i for i, (w, s) in enumerate(zip(data.labels, data.speakers)) if w == word and s == "cid"]
        order = rng.permutation(items).tolist()
        pools[word], test_idx = order[:10], test_idx + order[10:13]
    for n in (1, 5, 10):
        expected = {data.paths[i] for pool in pools.values() for i in pool[:n]}
        assert set(transfer(root, "train", role="target", shots=n, split_seed=7).paths) == expected
    assert set(transfer(root, "test", shots=1, split_seed=7).paths) == {data.paths[i] for i in test_idx}

    with pytest.raises(DataError, match="needs 17"):
        transfer(root, "test", role="source", max_shots=14)
    with pytest.raises(ConfigError, match="shots"):
        transfer(root, "train", role="target")
    with pytest.raises(ConfigError, match="shots must be"):
        transfer(root, "train", role="target", shots=11)
    with pytest.raises(ConfigError, match="role"):
        transfer(root, "train", role="teacher", shots=1)
    with pytest.raises(ConfigError, match="target_speaker"):
        fsdd_dataset(root, "train", target_speaker="cid", test_speakers=["ann"], shots=1)
    with pytest.raises(DataError, match="zoe"):
        fsdd_dataset(root, "train", target_speaker="zoe", shots=1)
    with pytest.raises(ConfigError, match="target_speaker is not"):
        fsdd_dataset(root, "train", test_speakers=["ann"], shots=1)


def test_transfer_split_on_speech_commands_skips_words_the_target_never_said(tmp_path):
    spec = {"yes": {"aa11": 4, "bb22": 1}, "no": {"aa11": 4}, "cat": {"bb22": 2}}
    root = make_speech_commands(tmp_path / "sc", spec=spec)
    kw = dict(sample_rate=RATE, target_speaker="aa11", max_shots=2, held_out=1)
    train = speech_commands_dataset(root, "train", role="target", shots=2, **kw)
    test = speech_commands_dataset(root, "test", role="target", shots=2, **kw)
    assert {w: len(p) for w, p in by_word(train).items()} == {"yes": 2, "no": 2}
    assert {w: len(p) for w, p in by_word(test).items()} == {"yes": 1, "no": 1}
    source = speech_commands_dataset(root, "train", role="source", **kw)
    assert set(source.speakers) == {"bb22", "_silence_"}
    assert train.class_names == source.class_names == ["_silence_", "_unknown_", "no", "yes"]


# --------------------------------------------------------------------------------------------
# CSV manifests and official lists


def make_manifest(tmp_path: Path, with_split: bool) -> tuple[Path, list[dict]]:
    rows = []
    for s, speaker in enumerate(["p1", "p2", "p3", "p4", "p5"]):
        for w, word in enumerate(["alpha", "beta"]):
            rel = f"audio/{speaker}/{word}.wav"
            write_wav(tmp_path / rel, 300 + 50 * s + 400 * w)
            rows.append({"path": rel, "word": word, "speaker": speaker, "split": "test" if s in (1, 3) else "train"})
    header = "path,word,speaker" + (",split" if with_split else "")
    lines = [header] + [",".join([r["path"], r["word"], r["speaker"]] + ([r["split"].upper()] if with_split else []))
                        for r in rows]
    manifest = tmp_path / ("split.csv" if with_split else "plain.csv")
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, rows


def test_csv_without_split_column_is_speaker_disjoint(tmp_path):
    manifest, rows = make_manifest(tmp_path, with_split=False)
    all_paths = [str(tmp_path / r["path"]) for r in rows]
    train, test = (speech_csv_dataset(manifest, s, sample_rate=RATE) for s in ("train", "test"))
    assert_disjoint_cover(train, test, all_paths)
    assert len(set(test.speakers)) == 1 and train.class_names == ["alpha", "beta"]  # round(0.2 x 5) = 1
    chosen = speech_csv_dataset(manifest, "test", sample_rate=RATE, test_speakers=["p2", "p5"])
    assert sorted(chosen.paths) == sorted(str(tmp_path / r["path"]) for r in rows if r["speaker"] in ("p2", "p5"))
    by_folder = speech_csv_dataset(tmp_path, "test", sample_rate=RATE, test_speakers=["p2"])  # the folder holds one CSV
    assert set(by_folder.speakers) == {"p2"}


def test_csv_split_column_decides_the_split(tmp_path):
    manifest, rows = make_manifest(tmp_path, with_split=True)
    for side in ("train", "test"):
        ds = speech_csv_dataset(manifest, side, sample_rate=RATE)
        assert sorted(ds.paths) == sorted(str(tmp_path / r["path"]) for r in rows if r["split"] == side)
    with pytest.raises(ConfigError, match="split column"):
        speech_csv_dataset(manifest, "test", test_speakers=["p1"])
    # the transfer protocol defines its own sides, whatever the column says
    lines = ["path,word,speaker,split"]
    for word in ("alpha", "beta"):
        for n in range(3):
            write_wav(tmp_path / f"tt/{word}{n}.wav", 500 + 30 * n)
            lines.append(f"tt/{word}{n}.wav,{word},tt,train")
    lines += [f"{r['path']},{r['word']},{r['speaker']},{r['split']}" for r in rows]
    (tmp_path / "transfer.csv").write_text("\n".join(lines) + "\n")
    kw = dict(sample_rate=RATE, target_speaker="tt", max_shots=2, held_out=1)
    target_test = speech_csv_dataset(tmp_path / "transfer.csv", "test", role="target", shots=1, **kw)
    assert set(target_test.speakers) == {"tt"} and len(target_test) == 2
    source = speech_csv_dataset(tmp_path / "transfer.csv", "train", role="source", **kw)
    assert len(source) == len(rows) and "tt" not in source.speakers
    with pytest.raises(DataError, match="needs 4"):  # tt says each word 3 times: 3 shots + 1 held-out is too many
        speech_csv_dataset(tmp_path / "transfer.csv", "test", role="source", **{**kw, "max_shots": 3})
    bad = tmp_path / "bad.csv"
    bad.write_text("path,word,speaker,split\naudio/p1/alpha.wav,alpha,p1,validation\n")
    with pytest.raises(DataError, match="line 2 has split 'validation'"):
        speech_csv_dataset(bad, "train")


def test_official_lists(tmp_path):
    root = make_speech_commands(tmp_path / "sc")
    (root / "testing_list.txt").write_text("yes/aa11_nohash_0.wav\ncat/dd44_nohash_1.wav\n")
    (root / "validation_list.txt").write_text("no/bb22_nohash_0.wav\n")
    test = speech_commands_dataset(root, "test", sample_rate=RATE, split_by="official")
    train = speech_commands_dataset(root, "train", sample_rate=RATE, split_by="official")
    assert sorted(test.paths) == sorted(str(root / p) for p in ("yes/aa11_nohash_0.wav", "cat/dd44_nohash_1.wav"))
    everything = [u.location() for u in speech_commands_utterances(root)]
    assert sorted(train.paths) == sorted(p for p in everything if p not in test.paths
                                         and p != str(root / "no/bb22_nohash_0.wav"))
    assert train.speakers.count("_silence_") == 4
    with pytest.raises(ConfigError, match="split column or the official lists"):
        speech_commands_dataset(root, "test", split_by="official", test_speaker_fraction=0.5)
    (root / "testing_list.txt").unlink()
    with pytest.raises(DataError, match="split_by=speaker"):
        speech_commands_dataset(root, "test", split_by="official")


# --------------------------------------------------------------------------------------------
# layouts


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_detect_layout_and_wrong_layout_messages(tmp_path):
    sc = make_speech_commands(tmp_path / "sc", noise={})
    n_wavs = sum(n for speakers in SC_SPEC.values() for n in speakers.values())
    flat = make_fsdd(tmp_path / "flat", {"ann": 1, "bob": 1})
    nested = make_fsdd(tmp_path / "nested" / "recordings", {"ann": 1}).parent
    manifest, _ = make_manifest(tmp_path / "csv", with_split=False)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("nothing here")

    assert detect_speech_layout(sc) == "speech_commands"
    assert detect_speech_layout(flat) == "fsdd" and detect_speech_layout(nested) == "fsdd"
    assert detect_speech_layout(manifest) == "speech_csv" and detect_speech_layout(manifest.parent) == "speech_csv"
    assert detect_speech_layout(tmp_path / "empty") is None and detect_speech_layout(tmp_path / "missing") is None
    assert len(fsdd_utterances(nested)) == 3

    msg = one_line_error(fsdd_dataset, sc, "train")
    assert f"found 5 word folders with {n_wavs} .wav files (a Speech Commands layout); set data.name=speech_commands" in msg
    msg = one_line_error(speech_commands_dataset, flat, "train")
    assert "found 6 .wav files named DIGIT_SPEAKER_INDEX.wav" in msg and msg.endswith("set data.name=fsdd")
    for fn in (fsdd_dataset, speech_commands_dataset, speech_csv_dataset):
        msg = one_line_error(fn, tmp_path / "empty", "train")
        assert "found no .wav files" in msg
    msg = one_line_error(fsdd_dataset, manifest, "train")
    assert "is a CSV manifest" in msg and msg.endswith("set data.name=speech_csv")
    msg = one_line_error(speech_commands_dataset, manifest.parent / "audio" / "p1", "train")
    assert "none named DIGIT_SPEAKER_INDEX.wav" in msg and "data.name=speech_csv" in msg
    msg = one_line_error(speech_csv_dataset, sc, "train")
    assert msg.endswith("set data.name=speech_commands")
    msg = one_line_error(fsdd_dataset, tmp_path / "missing", "train")
    assert "not found" in msg
    (manifest.parent / "copy.csv").write_text(manifest.read_text())
    msg = one_line_error(speech_csv_dataset, manifest.parent, "train")
    assert "found 2 CSV manifests (copy.csv, plain.csv)" in msg and "data.root to one of them" in msg


# --------------------------------------------------------------------------------------------
# the real corpus


def test_real_fsdd_default_and_transfer_splits():
    if not FSDD.is_dir():
        pytest.skip(f"the Free Spoken Digit Dataset is not at {FSDD}")
    assert detect_speech_layout(FSDD) == "fsdd"
    train, test = fsdd_dataset(FSDD, "train"), fsdd_dataset(FSDD, "test")
    assert set(test.speakers) == {"theo", "yweweler"} and len(test) == 1000 and len(train) == 2000
    assert train.class_names == test.class_names == [str(d) for d in range(10)]
    assert not set(train.speakers) & set(test.speakers)
    kw = dict(target_speaker="jackson", held_out=30)
    five = fsdd_dataset(FSDD, "train", role="target", shots=5, **kw)
    held = fsdd_dataset(FSDD, "test", role="target", shots=5, **kw)
    source = fsdd_dataset(FSDD, "train", role="source", **kw)
    assert len(five) == 50 and len(held) == 300 and len(source) == 2500
    assert not set(five.paths) & set(held.paths) and "jackson" not in source.speakers
    feats, label = five[0]
    assert feats.shape[1] == 40 and five.class_names[label] == Path(five.paths[0]).name.split("_")[0]


def test_speech_commands_trains_through_the_loader_contract(tmp_path):
    from deepmetric.config import load_config
    from deepmetric.training import fit

    root = make_speech_commands(tmp_path / "sc")
    config = load_config({
        "data": {"name": "deepmetric.data.speech:speech_commands_dataset", "root": str(root),
                 "params": {"test_speakers": ["aa11", "dd44"], "n_mels": 16, "sample_rate": RATE},
                 "val_fraction": 0.0, "num_workers": 0},
        "sampler": {"p": 2, "k": 2, "small_class_policy": "drop"},
        "model": {"name": "audio_cnn", "embedding_dim": 8, "params": {"n_mels": 16, "channels": [4]}},
        "loss": {"name": "triplet"},
        "trainer": {"steps": 2, "eval_every": 2},
        "eval": {"split": "test", "k_values": [1], "baseline": False},
    })
    result = fit(config, tmp_path / "run", progress=False)
    assert 0.0 <= result["test"]["recall@1"] <= 1.0
