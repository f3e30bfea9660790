"""benchmarks/run_all.py (table capture, document assembly) and bench_accuracy_vs_pml's budget
building, on fake benchmark outputs: nothing heavy runs here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


run_all = _load("run_all")

STREAMED = """# Loss speed, setting line
torch X, threads 1

| loss | ms |
|---|---:|
| a | 1.0 |
| b | 2.0 |

## Table

| loss | ms |
|---|---:|
| a | 1.0 |
| b | 2.0 |
| floor | 0.5 |


## Targets

* MISS b
"""

TWO_TABLES = """| impl | s |
|---|---:|
| ours | 1 |

scaling:

| q | s |
|---:|---:|
| 10 | 2 |
"""


def test_streamed_rows_kept_once_and_headings_nested() -> None:
    out = run_all.clean_output(STREAMED)
    lines = out.splitlines()
    assert lines.count("| a | 1.0 |") == 1
    assert lines.count("| loss | ms |") == 1
    assert "| floor | 0.5 |" in lines
    assert "### Loss speed, setting line" in lines and "### Table" in lines and "### Targets" in lines
    assert not any(ln.startswith("# ") or ln.startswith("## ") for ln in lines)
    assert "\n\n\n" not in out
    assert run_all.tables_in(out) == ["| loss | ms |\n|---|---:|\n| a | 1.0 |\n| b | 2.0 |\n| floor | 0.5 |"]


def test_distinct_tables_both_kept() -> None:
    out = run_all.clean_output(TWO_TABLES)
    assert len(run_all.tables_in(out)) == 2
    assert "| ours | 1 |" in out and "| 10 | 2 |" in out


def _result(key: str, stdout: str, rc: int = 0, seconds: float = 3.0) -> object:
    section = next(s for s in run_all.SECTIONS if s.key == key)
    return run_all.Result(section, " ".join(section.command(True)), stdout, seconds, rc, "Traceback\nBoom" if rc else "")


def test_document_has_header_every_section_command_and_total() -> None:
    results = [_result("losses", STREAMED), _result("eval", TWO_TABLES, seconds=5.0), _result("index", "", rc=1)]
    header = run_all.machine_header(True, (8.0, 7.5, 7.0), (9.0, 8.0, 7.1), "1", {"torch": "9.9"}, "2026-01-01 00:00 UTC")
    doc = run_all.assemble(header, results, quick=True, total_seconds=125.0)
    assert doc.startswith("# Benchmarks\n")
    assert "2026-01-01 00:00 UTC" in doc and "torch 9.9" in doc and "8.0, 7.5, 7.0" in doc
    assert "QUICK" in doc
    positions = [doc.index(f"## {t}") for t in ("Loss speed", "Evaluation", "Large-scale search")]
    assert positions == sorted(positions)
    assert "`python benchmarks/bench_losses.py --threads 1 --clock process --quick`" in doc
    assert "`python benchmarks/bench_eval.py --quick`" in doc
    assert "exit code 1" in doc and "Boom" in doc
    assert "Total run time: 2.1 min (125 s); failed: index." in doc
    assert doc.count("| a | 1.0 |") == 1
    assert len(run_all.tables_in(doc)) == 3


def test_quick_flag_reaches_every_command() -> None:
    for section in run_all.SECTIONS:
        assert section.command(True)[-1] == "--quick"
        assert "--quick" not in section.command(False)
        assert (BENCH / section.script).is_file()


acc = _load("bench_accuracy_vs_pml")


@pytest.mark.parametrize("loss", ["contrastive", "triplet", "multi_similarity"])
@pytest.mark.parametrize("dataset", ["olivetti", "omniglot", "rsscn7"])
def test_both_libraries_get_the_same_budget(loss: str, dataset: str, tmp_path: Path) -> None:
    budget = acc.Budget(steps=37, p=6, k=3, image_size=48, lr=1e-3, seed=5)
    config, pml = acc.build_configs(loss, dataset, budget, data_dir=tmp_path)
    assert config.trainer.steps == pml["iterations"] == 37
    assert config.sampler.p * config.sampler.k == pml["batch_size"] == 18
    assert config.sampler.k == pml["m_per_class"] == 3
    assert config.data.image_size == pml["image_size"] == 48
    assert config.optimizer.lr == pml["lr"] == 1e-3
    assert config.seed == pml["seed"] == 5
    # constant learning rate in both: no warm-up or schedule only deepmetric would apply
    assert config.scheduler.name == "none" and config.scheduler.warmup_steps == 0
    # no checkpoint selection on the test split, no validation carved only from one side
    assert config.data.val_fraction == 0.0 and config.data.num_workers == 0
    assert config.loss.name == acc.LOSSES[loss]["ours"][0]
    assert str(tmp_path) in str(config.data.root)


def test_unknown_names_are_rejected(tmp_path: Path) -> None:
    budget = acc.Budget(10, 2, 2, 32, 1e-3, 0)
    with pytest.raises(ValueError, match="unknown loss"):
        acc.build_configs("arcface", "olivetti", budget, tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        acc.build_configs("triplet", "cub", budget, tmp_path)


def test_hand_written_file_is_carried_forward_once() -> None:
    hand = "# Benchmarks\n\n## Loss speed\n\n| loss | ms |\n|---|---:|\n| a | 9.0 |\n"
    kept = run_all.kept_previous(hand)
    assert "### Loss speed" in kept and "| a | 9.0 |" in kept and "# Benchmarks" not in kept
    doc = run_all.with_kept("# Benchmarks\n\nGenerated by `python benchmarks/run_all.py --quick`\n", kept)
    assert doc.count("| a | 9.0 |") == 1
    # regenerating from a generated file passes the same kept part on, not the generated body
    again = run_all.with_kept("# Benchmarks\n\nnew body\n", run_all.kept_previous(doc))
    assert again.count("| a | 9.0 |") == 1 and "new body" in again
    # a generated file without a kept part carries nothing forward
    assert run_all.kept_previous("# Benchmarks\n\nGenerated by `python benchmarks/run_all.py`\n") == ""


def test_accuracy_bench_times_fit_evaluations_through_the_run_hook() -> None:
    """run_deepmetric subtracts fit's evaluation time by wrapping ``_Run.evaluate(self, dataset,
    split)``; a rename or new signature there must fail here, not silently skew wall times."""
    import inspect

    fit_module = importlib.import_module("deepmetric.training.fit")
    params = list(inspect.signature(fit_module._Run.evaluate).parameters)
    assert params == ["self", "dataset", "split"]


@pytest.mark.parametrize("name", ["bench_accuracy_vs_pml", "bench_step"])
def test_batches_never_ask_for_more_classes_than_the_training_split_has(name: str) -> None:
    """Every dataset's P fits its training classes (RSSCN7: 7 scene classes, 3 held out)."""
    bench = acc if name == "bench_accuracy_vs_pml" else _load(name)
    data = BENCH.parent.parent / "shared" / "data"
    for dataset, spec in bench.DATASETS.items():
        if spec["name"] != "folder":
            continue  # Olivetti (40 people) and Omniglot (hundreds of characters) have plenty
        root = data / spec["root"]
        if not root.is_dir():
            pytest.skip(f"{root} not available")
        n_classes = sum(1 for d in root.iterdir() if d.is_dir())
        n_train = n_classes - round(n_classes * spec["params"]["test_fraction"])
        p = spec.get("pk", (8, 4))[0]
        assert p <= n_train, f"{dataset}: P = {p} but only {n_train} training classes"


def test_transfer_evidence_selects_on_validation_classes_and_splits_cars_by_class_order(tmp_path: Path) -> None:
    transfer = _load("evidence_transfer")
    for i in range(1, 5):  # a cars-like folder: classes 001..004, two images each
        folder = tmp_path / "cars" / f"{i:03d}.Car_{i}"
        folder.mkdir(parents=True)
        for j in range(2):
            (folder / f"{j}.jpg").write_bytes(b"")
    rows = (transfer.cars_manifest(tmp_path / "cars", tmp_path / "m.csv")).read_text().splitlines()
    assert rows[0] == "path,label,split" and len(rows) == 9
    split_of = {row.split(",")[1]: row.split(",")[2] for row in rows[1:]}
    assert all(split_of[name] == "train" for name in split_of)  # all 4 classes fall in 1..49
    config = transfer.config_for("olivetti", "osm_caa", "all", 1, 60, 64, 3e-4, tmp_path)
    # model selection never looks at the test split: held-out training classes, untrained network a candidate
    assert (config.eval.split, config.data.val_by, config.eval.checkpoint, config.eval.baseline) == (
        "val", "classes", "best", True)
    assert config.finetune.linear_probe_steps == 12 and config.finetune.ema_decay == 0.99
    assert config.finetune.wise_alphas == [0.0, 0.25, 0.5, 0.75, 1.0]
    plain = transfer.config_for("olivetti", "osm_caa", "plain", 1, 60, 64, 3e-4, tmp_path)
    assert plain.finetune.linear_probe_steps == 0 and plain.finetune.wise_alphas is None
    assert "ntxent" not in transfer.registry_losses() and "osm_caa" in transfer.registry_losses()
    triplets = transfer.config_for("rsscn7", "triplet_hybrid", "plain", 0, 60, 64, 3e-4, tmp_path).sampler
    assert triplets.name == "triplet" and triplets.triplets_per_batch == 10  # 4 x 8 = 32 images -> 10 triplets
    table = transfer.table([
        {"dataset": "d", "loss": "l", "variant": "plain", "recall@1": r, "map@r": m, "base_r1": 0.5,
         "base_map": 0.2, "wall": 1.0} for r, m in ((0.6, 0.3), (0.5, 0.25))])
    assert "| d | l | plain | 2 | 55.0 ± 7.1 | 27.5 ± 3.5 |" in table and "| yes |" in table
    worse = transfer.table([{"dataset": "d", "loss": "l", "variant": "plain", "recall@1": 0.49, "map@r": 0.3,
                             "base_r1": 0.5, "base_map": 0.2, "wall": 1.0}])
    assert "| no |" in worse  # one seed below the untrained Recall@1 is a failure of the target


def test_default_sweep_scores_candidates_on_validation_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = _load("sweep_defaults")
    import deepmetric.training

    seen = []

    def fake_fit(config, run_dir, **_):  # noqa: ANN001, ANN202
        seen.append(config)
        return {"best": {"value": 0.7, "step": 20}, "evaluations": [{"metrics": {"map@r": 0.5}}],
                "test": {"map@r": 0.99, "recall@1": 0.99}}

    monkeypatch.setattr(deepmetric.training, "fit", fake_fit)
    row = sweep.run_candidate("olivetti", "osm_caa", {"ce_weight": 0.1, "finetune": {"linear_probe_fraction": 0.2}},
                              0, 50, 64, 3e-4, tmp_path)
    assert row["val_map"] == 0.7 and row["val_untrained"] == 0.5 and 0.99 not in row.values()
    config = seen[0]
    assert config.eval.split == "val" and config.data.val_by == "classes"
    assert config.loss.params == {"ce_weight": 0.1} and config.finetune.linear_probe_steps == 10
    assert all(candidates[0] == {} for candidates in sweep.GRIDS.values())  # the current defaults compete
    # a candidate replaces the defaults only when it beats them by more than the noise margin
    defaults, small, large = {}, {"scale": 16.0}, {"scale": 32.0}
    assert sweep.choose([(0.60, defaults, None), (0.615, small, None)], 0.02) is defaults
    assert sweep.choose([(0.60, defaults, None), (0.615, small, None), (0.63, large, None)], 0.02) is large
    assert sweep.choose([(0.60, defaults, None), (0.59, small, None)], 0.0) is defaults
