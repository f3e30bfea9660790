"""Every recipe in ``recipes/`` trains end to end with ``deepmetric train`` on tiny data.

For each ``recipes/*.yaml`` (globbed at collection time, so a new recipe is tested as soon as
it exists) the test writes tiny data in the official on-disk layout of the recipe's
``data.name`` (generators in ``tests/recipe_layouts.py``), runs

    deepmetric train RECIPE trainer.steps=2 data.root=TINY ... --out RUN --no-progress

in a subprocess and checks the run folder: ``config.yaml``, ``metrics.json`` with test metrics
and ``report.html``; for a multi-run protocol (``protocol.name`` other than ``single``) also
``summary.json`` (one run per planned sub-run, mean +- std per group) and every sub-run's own
``metrics.json``.

A recipe whose ``data.name`` has no generator fails with a message saying where to add one.
The overrides (:func:`tiny_overrides`) only shrink the run -- steps, batch, image size, number
of sub-runs -- and never change which loader, model, loss, evaluation or run protocol the
recipe uses, so a recipe with stale keys fails here as it would for a user.

The trainings are independent subprocesses; ``DEEPMETRIC_RECIPE_WORKERS`` of them (default:
2, or 1 on a one-core machine) run at once, started when the first recipe test runs, and each
parametrised test checks its own.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from recipe_layouts import FRAME_HEIGHT, FRAME_WIDTH, GENERATORS, Layout

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
TEST_NAME = "test_recipe_trains_on_tiny_data"

#: seconds one `deepmetric train` subprocess may take before the test fails
TIMEOUT_S = 600
#: trainings run at once (each single-threaded)
WORKERS = int(os.environ.get("DEEPMETRIC_RECIPE_WORKERS", min(2, os.cpu_count() or 1)))


def _section(node: dict[str, Any], name: str) -> dict[str, Any]:
    value = node.get(name)
    return value if isinstance(value, dict) else {}


def _read_recipe(path: Path) -> dict[str, Any]:
    recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    assert isinstance(recipe, dict), f"{path.name} must hold a mapping of config sections"
    return recipe


def _data_name(recipe: dict[str, Any]) -> str:
    return str(_section(recipe, "data").get("name", "folder"))


def _missing_generator(path: Path, recipe: dict[str, Any]) -> str | None:
    name = _data_name(recipe)
    if name in GENERATORS:
        return None
    return (
        f"recipe {path.name} uses data.name={name}, which has no tiny-data generator: add one to GENERATORS in "
        f"tests/recipe_layouts.py that writes the official layout {name}'s loader parses"
    )


def _model_takes_image_size(recipe: dict[str, Any]) -> bool:
    """Whether the recipe's model builder (``model.name``, default embedder) takes ``image_size``."""
    from deepmetric.models.registry import MODELS

    try:
        builder = MODELS.resolve(str(_section(recipe, "model").get("name", "embedder")))
    except Exception:  # noqa: BLE001 - an unknown model is the training's error to report, not this helper's
        return False
    params = inspect.signature(builder).parameters.values()
    return any(p.name == "image_size" or p.kind is p.VAR_KEYWORD for p in params)


def tiny_overrides(recipe: dict[str, Any], layout: Layout) -> list[str]:
    """``key=value`` overrides that make ``recipe`` train in seconds on the generated data."""
    data, sampler, trainer = _section(recipe, "data"), _section(recipe, "sampler"), _section(recipe, "trainer")
    params, protocol = _section(data, "params"), _section(recipe, "protocol")
    overrides = [
        "trainer.steps=2",  # two optimizer steps: training, checkpointing and best-checkpoint selection all run
        "trainer.eval_every=1",  # evaluate after every step, so best.pt is chosen among several evaluations
        "trainer.checkpoint_every=1",  # write last.pt after every step
        f"data.root={layout.root}",  # the generated tiny data, in the layout of the recipe's data.name
        "data.num_workers=0",  # no data-loading worker processes on a 2-core machine
        "eval.batch_size=8",  # small evaluation batches
        "eval.k_values=[1,2]",  # the tiny val/test splits hold fewer items than the recipes' largest K (up to 100)
    ]
    if "epochs" in trainer:
        overrides.append("trainer.epochs=null")  # trainer.steps replaces the recipe's epochs
    if sampler.get("name") == "triplet":
        overrides.append("sampler.triplets_per_batch=2")  # 6 images per triplet batch
    else:
        overrides += ["sampler.p=2", "sampler.k=2"]  # 2 classes x 2 items: every tiny training split has >= 2 classes
    if _model_takes_image_size(recipe):
        overrides.append("data.image_size=32")  # 32 px images through the real offline EfficientNet-Lite0
    if "height" in params and "width" in params:
        # re-ID frames are drawn at 32 x 16 px; the recipes' 256 x 128 would only upsample them
        overrides += [f"data.params.height={FRAME_HEIGHT}", f"data.params.width={FRAME_WIDTH}"]
    if "seq_len" in params:
        overrides.append("data.params.seq_len=4")  # 4 frames per training clip (and per test chunk) instead of 8
    name = protocol.get("name", "single")
    if name == "kfold":
        overrides.append("protocol.folds=2")  # two folds instead of five
    elif name == "repeated_splits":
        overrides.append("protocol.repeats=2")  # two random splits instead of five or ten
    elif name == "speaker_transfer":
        targets = [str(t) for t in (protocol.get("target_speakers") or [])][:1]
        if targets:
            overrides.append(f"protocol.target_speakers=[{targets[0]}]")  # one target speaker instead of several
        overrides += [
            "protocol.shots=[1]",  # one utterance per word of the target (one target-only and one fine-tuning run)
            "protocol.held_out=2",  # two held-out test utterances per word of the target (retrieval needs 2 per word)
            "protocol.finetune_steps=2",  # two steps per fine-tuning run
        ]
    return overrides + layout.overrides


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    return env


@dataclass
class Training:
    """One recipe's subprocess: its command, exit status, output and run folder."""

    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    run: Path
    seconds: float


def train_recipe(recipe_path: Path, folder: Path) -> Training:
    """Generate the recipe's tiny data under ``folder`` and train it there in a subprocess."""
    recipe = _read_recipe(recipe_path)
    layout = GENERATORS[_data_name(recipe)](folder / "data", recipe)
    run = folder / "run"
    command = [sys.executable, "-m", "deepmetric.cli", "train", str(recipe_path), *tiny_overrides(recipe, layout),
               "--out", str(run), "--no-progress"]
    start = time.monotonic()
    try:
        proc = subprocess.run(command, cwd=folder, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        out = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return Training(command, -1, "", out + f"\n(timed out after {TIMEOUT_S} s)", run, time.monotonic() - start)
    return Training(command, proc.returncode, proc.stdout, proc.stderr, run, time.monotonic() - start)


@pytest.fixture(scope="module")
def trainings(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Recipe path -> Future of its :class:`Training`, for every selected recipe test; the
    trainings start together (``WORKERS`` at a time) when the first recipe test asks."""
    selected = [item.callspec.params["recipe_path"] for item in request.session.items
                if getattr(item, "originalname", None) == TEST_NAME and hasattr(item, "callspec")]
    pool = ThreadPoolExecutor(max_workers=max(1, WORKERS))
    futures: dict[Path, Future[Training]] = {}
    for path in selected:
        if _missing_generator(path, _read_recipe(path)) is None:
            futures[path] = pool.submit(train_recipe, path, tmp_path_factory.mktemp(path.stem))
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _check_single(folder: Path) -> None:
    from deepmetric.run_files import read_metrics

    for name in ("config.yaml", "metrics.json", "report.html"):
        assert (folder / name).is_file(), f"{folder} has no {name}"
    metrics = read_metrics(folder)
    assert metrics.test, f"{folder / 'metrics.json'} has no test metrics"


def _check_protocol(run: Path, config: Any) -> None:
    from deepmetric.run_files import read_metrics, read_summary
    from deepmetric.training.protocols import plan_protocol

    for name in ("config.yaml", "summary.json", "report.html"):
        assert (run / name).is_file(), f"the protocol folder {run} has no {name}"
    plan = plan_protocol(config, run)
    assert len(plan) >= 2, f"protocol {config.protocol.name} planned only {len(plan)} sub-run(s)"
    summary = read_summary(run)
    assert summary.protocol == config.protocol.name
    assert [r.name for r in summary.runs] == [s.name for s in plan], "summary.json must list every planned sub-run"
    for sub in plan:
        assert (run / sub.name / "metrics.json").is_file(), f"sub-run {sub.name} has no metrics.json"
        assert read_metrics(run / sub.name).test, f"sub-run {sub.name} has no test metrics"
    members: dict[str, int] = {}
    for r in summary.runs:
        members[r.group or "all"] = members.get(r.group or "all", 0) + 1
    assert set(summary.groups) == set(members), (
        f"summary groups {sorted(summary.groups)} != run groups {sorted(members)}"
    )
    for group, stats in summary.groups.items():
        full = [m for m, s in stats.items() if s.n == members[group] and s.mean is not None and s.std is not None]
        assert full, f"group '{group}' of summary.json has no metric with mean +- std over its {members[group]} run(s)"


def test_every_recipe_and_loader_has_a_generator() -> None:
    """Fast guard: every recipe's ``data.name`` and every registered loader has a generator."""
    from deepmetric.data.registry import DATASETS

    assert RECIPES, f"no recipes found in {REPO / 'recipes'}"
    problems = [p for p in (_missing_generator(path, _read_recipe(path)) for path in RECIPES) if p]
    problems += [f"data.name={name} is registered but has no generator in tests/recipe_layouts.py"
                 for name in DATASETS
                 if name not in GENERATORS and str(DATASETS[name]).startswith("deepmetric.")]  # shipped loaders
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generated_layout_parses(name: str, tmp_path: Path) -> None:
    """Each generator's layout loads with its registered loader (train and test split, with
    default parameters): the generators write what the parsers document."""
    from deepmetric.data.registry import DATASETS

    loader = DATASETS.resolve(name)
    layout = GENERATORS[name](tmp_path, {})
    accepted = inspect.signature(loader).parameters
    for split in ("train", "test"):
        kwargs = {"root": str(layout.root), "split": split}
        dataset = loader(**{k: v for k, v in kwargs.items() if k in accepted})
        labels = list(dataset.labels)
        assert len(labels) >= 4 and len(set(labels)) >= 2, (
            f"{name} {split}: {len(labels)} items, {len(set(labels))} classes"
        )


@pytest.mark.slow
@pytest.mark.parametrize("recipe_path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_trains_on_tiny_data(recipe_path: Path, trainings: dict[Path, Future[Training]]) -> None:
    missing = _missing_generator(recipe_path, _read_recipe(recipe_path))
    if missing:
        pytest.fail(missing)
    result = trainings[recipe_path].result()
    assert result.returncode == 0, (
        f"`deepmetric train {recipe_path.name}` exited with {result.returncode} after {result.seconds:.0f} s:\n"
        f"{_tail(result.stderr)}\ncommand: {' '.join(result.command)}"
    )
    assert "Traceback" not in result.stderr, _tail(result.stderr, 40)
    run = result.run
    assert (run / "config.yaml").is_file(), f"{run} has no config.yaml"
    resolved = _read_recipe(run / "config.yaml")  # the resolved config the run saved
    if _section(resolved, "protocol").get("name", "single") == "single":
        _check_single(run)
    else:
        from deepmetric.config import load_config

        _check_protocol(run, load_config(run / "config.yaml"))
