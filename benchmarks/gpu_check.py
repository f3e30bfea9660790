"""The prepared GPU check: one command that prints every table a GPU machine must confirm.

``bash benchmarks/gpu_check.sh`` (or ``python benchmarks/gpu_check.py``) runs, in order:

1. the CUDA tests of the suite (``pytest -m cuda`` style: tests that need a CUDA device run,
   everything else is deselected) -- skipped without CUDA;
2. AMP training throughput at 224 px: images/s of ``fit``'s full step (data loading included;
   from log.csv's elapsed seconds between steps 2 and 2 + N) against a raw forward + backward +
   optimizer step of the same network on one batch in memory, with and without AMP;
3. exact k-NN on the GPU against the blocked CPU path: the same neighbours, and both times;
4. export on CUDA: the ONNX (onnxruntime with the CUDA provider if present, else CPU) and
   torch.export programs against PyTorch's embeddings on the GPU.

On a machine without CUDA every section says what it skipped and the CPU parts that make sense
still run at a tiny size (so the script itself is tested on CPU). The whole check is sized to
finish in under 8 minutes on one GPU; ``--quick`` shrinks every section (used by the test).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def header(title: str) -> None:
    print(f"\n## {title}\n", flush=True)


def table(rows: list[list[str]], head: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")
    sys.stdout.flush()


def cuda_tests(quick: bool) -> None:
    header("1. CUDA tests")
    if not torch.cuda.is_available():
        print("skipped: no CUDA device (the CUDA-only tests skip themselves on this machine)")
        return
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda or gpu or amp",
           str(REPO / "tests")]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240 if quick else 300)
    tail = [line for line in proc.stdout.splitlines() if line.strip()][-3:]
    print(f"command: {' '.join(cmd)}\nexit {proc.returncode} in {time.perf_counter() - started:.0f} s")
    print("\n".join(tail))


def _step_time(model: torch.nn.Module, loss_fn: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
               amp: bool, steps: int) -> float:
    device = images.device
    params = list(model.parameters()) + list(loss_fn.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    for i in range(steps + 2):
        if i == 2:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        with torch.autocast(device.type, enabled=amp):
            emb = model(images)
        loss = loss_fn(emb.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def amp_throughput(quick: bool) -> None:
    header("2. Training throughput at 224 px (images/s): fit's full step vs a raw step")
    from deepmetric.config import load_config
    from deepmetric.losses import build_loss
    from deepmetric.models import create_embedder
    from deepmetric.training import fit

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    size, p, k, steps = (224, 8, 4, 20) if cuda and not quick else (32, 4, 2, 2)
    if not cuda:
        print(f"no CUDA device: CPU only, at {size} px and {steps} steps (a smoke run, not a measurement)")
    batch = p * k
    rows = []
    for amp in ([False, True] if cuda else [False]):
        model = create_embedder("tf_efficientnet_lite0", pretrained=False, embedding_dim=128, image_size=size).to(device)
        loss_fn = build_loss("multi_similarity").to(device)
        images = torch.randn(batch, 3, size, size, device=device)
        labels = torch.arange(p, device=device).repeat_interleave(k)
        raw = _step_time(model, loss_fn, images, labels, amp, steps)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "data"
            _images(root, classes=2 * p, per_class=k + 2, size=size)
            cfg = load_config(None, [
                "data.name=folder", f"data.root={root}", "data.params={split_by: classes, test_fraction: 0.3}",
                f"data.image_size={size}", "data.val_fraction=0", "eval.split=test", "eval.baseline=false",
                "eval.k_values=[1]", "scheduler.warmup_steps=0",
                f"sampler.p={p}", f"sampler.k={k}", "model.pretrained=false", f"trainer.amp={str(amp).lower()}",
                "trainer.eval_every=0", "trainer.checkpoint_every=0", "trainer.log_every=1", f"device={device.type}",
            ])
            run = Path(tmp) / "run"
            fit(load_config(cfg, [f"trainer.steps={2 + steps}", "eval.checkpoint=last"]), run, progress=False,
                report=False)
            # log.csv 'seconds' is the run's elapsed time at each step: steps 2 -> 2 + N are training only
            rows_log = [line.split(",") for line in (run / "log.csv").read_text().splitlines()[1:]]
            at = {int(r[0]): float(r[4]) for r in rows_log}
            full = (at[2 + steps] - at[2]) / steps
        rows.append([f"{'AMP' if amp else 'fp32'} on {device.type}", f"{batch / full:.1f}", f"{batch / raw:.1f}",
                     f"{raw / full:.2f}" if full > 0 else "-"])
    table(rows, ["setting", "fit images/s", "raw images/s", "fit / raw"])


def _images(root: Path, classes: int, per_class: int, size: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"c{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, size=(size, size, 3))
        for i in range(per_class):
            noise = rng.integers(-20, 20, size=base.shape)
            Image.fromarray(np.clip(base + noise, 0, 255).astype("uint8")).save(folder / f"{i}.png")


def knn_gpu_vs_cpu(quick: bool) -> None:
    header("3. Exact k-NN: GPU vs the blocked CPU path")
    from deepmetric.evaluation.knn import knn_search

    n, d, k = (200_000, 128, 10) if torch.cuda.is_available() and not quick else (4_000, 64, 5)
    gen = torch.Generator().manual_seed(0)
    gallery = torch.nn.functional.normalize(torch.randn(n, d, generator=gen), dim=1)
    started = time.perf_counter()
    cpu = knn_search(gallery, None, k=k, metric="cosine")
    cpu_s = time.perf_counter() - started
    rows = [["cpu (blocked)", f"{n:,} x {d}", f"{cpu_s:.2f}", "-"]]
    if torch.cuda.is_available():
        on_gpu = gallery.cuda()
        torch.cuda.synchronize()
        started = time.perf_counter()
        gpu = knn_search(on_gpu, None, k=k, metric="cosine")
        torch.cuda.synchronize()
        gpu_s = time.perf_counter() - started
        same = float((gpu.indices.cpu() == cpu.indices).float().mean())
        rows.append(["cuda", f"{n:,} x {d}", f"{gpu_s:.2f}", f"{same:.4f}"])
    else:
        print("skipped the GPU row: no CUDA device")
    table(rows, ["path", "gallery", "seconds", "same neighbours as cpu"])


def export_on_cuda(quick: bool) -> None:
    header("4. Export on CUDA: exported programs vs PyTorch")
    if not torch.cuda.is_available():
        print("skipped: no CUDA device (the export tests cover the CPU path)")
        return
    try:
        from deepmetric.deploy.export import export_model  # noqa: F401
    except ImportError as exc:
        print(f"skipped: the export module is not available ({exc})")
        return
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "tests" / "deploy")]
    env = {**os.environ, "DEEPMETRIC_TEST_DEVICE": "cuda"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    tail = [line for line in proc.stdout.splitlines() if line.strip()][-3:]
    print(f"command: DEEPMETRIC_TEST_DEVICE=cuda {' '.join(cmd)}\nexit {proc.returncode}")
    print("\n".join(tail))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the CPU test of this script)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU only)"
    print(f"# deepmetric GPU check, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"torch {torch.__version__}, CUDA device: {name}, CPU threads: {torch.get_num_threads()}")
    for section in (cuda_tests, amp_throughput, knn_gpu_vs_cpu, export_on_cuda):
        section(args.quick)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
