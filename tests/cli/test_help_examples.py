"""Every example in every ``--help`` text is executed (in this process, through ``main``).

Each example runs as written in a sandbox folder holding what its placeholders name: a trained
run ``runs/demo-X`` (the quick demo), image folders (``photos/``, ``gallery_folder/``,
``my_images/``, ``queries/``), images ``a.png b.png c.png query.png``, an embedded gallery
(``gallery.npz``, ``gallery.index``, ``gallery_shards/``) and query embeddings. The only changes:
``/data/...`` paths point into the sandbox, and trainings get a short budget (``trainer.steps`` /
``--steps``) appended. An example must exit 0, or -- when it names data that cannot exist here
(Stanford Online Products) or needs a gallery far larger than a test can hold (IVF-PQ trains on
~10^4 vectors) -- fail with ONE line that says so. Any other exception is a test failure.
``torchrun`` lines launch several processes or machines and are checked by the distributed tests.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from deepmetric.cli import build_parser, main
from deepmetric.data.omniglot import embedded_omniglot_zip

pytestmark = pytest.mark.slow

#: appended to training examples: a short budget on tiny images (the rest of the line as written)
FAST_TRAIN = ["trainer.steps=2", "trainer.eval_every=0", "trainer.checkpoint_every=0", "data.image_size=16",
              "data.params.test_fraction=0.5", "--no-progress"]
#: examples that cannot succeed on test-sized data, and the words their one-line error must hold
EXPECTED_ERRORS = {"Stanford_Online_Products": "Stanford_Online_Products", "--kind ivfpq": "--kind ivf"}


def help_examples() -> list[tuple[str, str]]:
    """(command, example line) from the top-level epilog and every subcommand's."""
    parser = build_parser()
    found: list[tuple[str, str]] = []

    def take(name: str, epilog: str | None) -> None:
        lines = (epilog or "").splitlines()
        i = 0
        while i < len(lines):
            line = lines[i].strip()
            while line.endswith("\\") and i + 1 < len(lines):  # a continued example
                i += 1
                line = line[:-1].strip() + " " + lines[i].strip()
            if line.startswith(("deepmetric ", "torchrun ")):
                found.append((name, line.split("  #")[0].strip()))
            i += 1

    take("deepmetric", parser.epilog)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                take(name, sub.epilog)
    return found


EXAMPLES = help_examples()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sandbox")
    run = root / "runs" / "demo-X"
    assert main(["demo", "--quick", "--out", str(run), "--no-progress", "--threads", "1"]) == 0
    with zipfile.ZipFile(embedded_omniglot_zip()) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".png"))
        chars = sorted({n.rsplit("/", 1)[0] for n in names})[:4]
        for folder in ("photos", "gallery_folder", "my_images", "queries", "data/photos"):
            for i, char in enumerate(chars):
                (root / folder / f"char{i}").mkdir(parents=True)
                for member in [n for n in names if n.startswith(char + "/")][:3]:
                    (root / folder / f"char{i}" / member.rsplit("/", 1)[1]).write_bytes(z.read(member))
    for name, source in zip(("a.png", "b.png", "c.png", "query.png"), sorted((root / "photos").rglob("*.png"))):
        shutil.copy(source, root / name)
    rng = np.random.default_rng(0)
    np.savez(root / "queries.npz", embeddings=rng.normal(size=(5, 64)).astype(np.float32),
             labels=np.array(list("aabbc")), paths=np.array([f"q{i}.png" for i in range(5)]))
    cwd = Path.cwd()
    os.chdir(root)
    try:  # the gallery the search and index examples name
        assert main(["embed", "runs/demo-X", "gallery_folder/", "-o", "gallery.npz", "--no-progress"]) == 0
        assert main(["embed", "runs/demo-X", "gallery_folder/", "-o", "gallery_shards", "--no-progress"]) == 0
        assert main(["index", "gallery.npz", "-o", "gallery.index"]) == 0
    finally:
        os.chdir(cwd)
    return root


def _args(line: str, sandbox: Path) -> list[str]:
    words = shlex.split(line.replace("/data/photos", str(sandbox / "data" / "photos")).replace("<name>", "demo_omniglot"))
    if words[1] == "train" and "Stanford_Online_Products" not in line:
        words += FAST_TRAIN
    if words[1] == "demo":  # one thread: the test runs beside others on a shared machine
        words += ["--steps", "2", "--no-progress", "--threads", "1"]
    if "--nproc" in words and words[1] == "embed" and "--resume" not in words:
        words[words.index("-o") + 1] = "gallery_shards_new"  # the sandbox's shard folder is taken
    if "--nproc" in words and words[1] == "embed" and "--resume" in words:
        words[words.index("-o") + 1] = "gallery_shards_new"  # resumes the folder the line above wrote
    return words[1:]


@pytest.mark.parametrize(("command", "line"), EXAMPLES, ids=[f"{c}: {e}" for c, e in EXAMPLES])
def test_help_example_runs(sandbox: Path, command: str, line: str, capsys: pytest.CaptureFixture[str],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    if line.startswith("torchrun"):
        pytest.skip("torchrun launches several processes or machines; tests/distributed runs that path")
    monkeypatch.chdir(sandbox)
    code = main(_args(line, sandbox))
    err = capsys.readouterr().err
    expected = next((words for key, words in EXPECTED_ERRORS.items() if key in line), None)
    if expected is not None:
        last = err.strip().splitlines()[-1]
        assert code == 1 and expected in last and "error" in last, err[-2000:]
        return
    assert code == 0, f"{line}\n{err[-3000:]}"


def test_every_command_has_examples() -> None:
    commands = {c for c, _ in EXAMPLES}
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) <= commands | {"deepmetric"}
