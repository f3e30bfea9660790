"""Every code block of README.md is executed (as a user would, shortened where it trains).

* Python blocks run as they are, in order, in one folder (later blocks use the run an earlier one
  trained; ``a.jpg`` and ``b.jpg`` are put there), with one change: the training budget
  ``trainer.steps=200`` becomes 2 steps on small images.
* Shell blocks: every ``deepmetric`` line runs through the CLI's ``main``. Lines that train on
  datasets that cannot be here (Stanford Online Products) must fail with ONE line naming the
  missing data; ``torchrun`` lines are left to the distributed tests; the quickstart's
  ``pip install`` and ``python -m pytest`` are what CI itself runs (``deepmetric demo`` in it is
  run with ``--quick``).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from deepmetric.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
SHELL = [line.split(" #")[0].strip() for lang, code in BLOCKS if lang == "bash"
         for line in code.replace("\\\n", " ").splitlines() if line.strip()]

pytestmark = pytest.mark.slow


def test_readme_python_blocks_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import zipfile

    from PIL import Image

    from deepmetric.data.omniglot import embedded_omniglot_zip

    monkeypatch.chdir(tmp_path)
    with zipfile.ZipFile(embedded_omniglot_zip()) as z:
        pngs = sorted(n for n in z.namelist() if n.endswith(".png"))[:2]
        for name, member in zip(("a.jpg", "b.jpg"), pngs):
            (tmp_path / "x.png").write_bytes(z.read(member))
            Image.open(tmp_path / "x.png").convert("RGB").save(tmp_path / name)
    assert len(PYTHON) >= 3
    for code in PYTHON:
        code = code.replace('"trainer.steps=200"', '"trainer.steps=2", "data.image_size=16", "trainer.eval_every=0"')
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})  # noqa: S102 - our own README


@pytest.mark.parametrize("line", SHELL, ids=SHELL)
def test_readme_shell_line_runs(line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    if line.startswith(("pip install", "python -m pytest")):
        if "deepmetric demo" in line:
            monkeypatch.chdir(tmp_path)
            assert main(["demo", "--quick", "--no-progress", "--out", str(tmp_path / "demo")]) == 0
        return
    if line.startswith("torchrun"):
        pytest.skip("torchrun launches several processes or machines; tests/distributed runs that path")
    monkeypatch.chdir(tmp_path)
    words = shlex.split(line)
    assert words[0] == "deepmetric", line
    code = main(words[1:])
    err = capsys.readouterr().err
    if "rll_sop" in line:  # Stanford Online Products is not here: one line naming the data root
        last = err.strip().splitlines()[-1]
        assert code == 1 and "data.root" in last and "error" in last, err
        return
    assert code == 0, err
