"""Loss speed: deepmetric vs pytorch-metric-learning (PML), forward + backward, same inputs.

For every loss, both libraries get the SAME L2-normalised embeddings (N x D, a leaf tensor, as
a model head would output) and the SAME labels (P classes x K samples). One timed step is
``loss(x, y).backward()`` including any mining; parameters (proxies, class weights) are copied
so both compute on identical tensors. The three timings of one repeat (ours, PML, floor) are
taken back to back, repeat after repeat, so slow drifts of a shared machine hit all three
alike. The table gives medians.

The floor is the least any cosine pair loss must do: ``F.normalize(x) @ F.normalize(x).T``,
summed, forward + backward.

Usage::

    python benchmarks/bench_losses.py            # full: (128,128), (512,512), (1024,512)
    python benchmarks/bench_losses.py --quick    # small sizes, few repeats
    python benchmarks/bench_losses.py --only multi_similarity proxy_anchor --threads 4

pytorch-metric-learning is needed only here (``pip install pytorch-metric-learning``); the
library never imports it.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepmetric.losses import build_loss, loss_class

Step = Callable[[], Tensor]


@dataclass
class Case:
    """One row family of the table: our loss and its PML counterpart."""

    label: str
    ours: str
    ours_kwargs: dict[str, Any] = field(default_factory=dict)
    pml: str = ""
    note: str = ""
    with_classes: bool = False  # the loss owns per-class parameters
    same_loss_as_pml: bool = True  # False: a different (documented) variant, not held to "as fast as PML"
    two_views: bool = False  # labels are item ids in the two-view layout [0..N/2-1, 0..N/2-1] (NT-Xent)


CASES: list[Case] = [
    Case("contrastive", "contrastive", {}, "ContrastiveLoss()",
         "non-squared hinges [d - 0]_+ and [1 - d]_+ in both"),
    Case("triplet (all)", "triplet", {"mining": "all", "margin": 0.2, "reduction": "mean_active"},
         "TripletMarginLoss(margin=0.2)",
         "every valid triplet; ours with reduction='mean_active' = PML's mean over non-zero triplets"),
    Case("triplet (semihard)", "triplet",
         {"mining": "semihard", "margin": 0.2, "reduction": "mean_active"},
         "TripletMarginLoss(0.2) + TripletMarginMiner(0.2, 'semihard')",
         "different mining: ours keeps FaceNet's nearest semi-hard negative per positive pair, "
         "PML every semi-hard triplet, so values differ"),
    Case("triplet (batch hard)", "triplet",
         {"mining": "batch_hard", "margin": 0.2, "reduction": "mean_active"},
         "TripletMarginLoss(0.2) + BatchHardMiner()", "hardest positive and negative per anchor"),
    Case("lifted structure", "lifted_structure", {}, "LiftedStructureLoss()",
         "Song et al. 2016 smooth form, per positive pair, in both (PML's "
         "GeneralizedLiftedStructureLoss is Hermans et al.'s per-anchor variant, another loss); "
         "PML builds a |pos pairs| x |neg pairs| matrix, so it is skipped where that exceeds "
         "--pml-memory-gb"),
    Case("n-pair (one pair per class)", "npair", {"l2_reg": 0.0, "pairs": "one_per_class"},
         "NPairsLoss()",
         "Sohn's own construction in both: the first two samples of each class form its pair, "
         "a P x P softmax over the other pairs' positives (l2_reg=0 here, as PML has no penalty)"),
    Case("n-pair (all pairs)", "npair", {"l2_reg": 0.0, "pairs": "all"}, "NPairsLoss()",
         "our P x K generalisation (the default): every positive pair against every negative, "
         "so it computes the whole N x N matrix where PML keeps one pair per class; a different "
         "loss, shown for its cost, not held to the as-fast-as-PML target",
         same_loss_as_pml=False),
    Case("angular", "angular", {"alpha_degrees": 40.0}, "AngularLoss(alpha=40)", ""),
    Case("multi-similarity", "multi_similarity", {}, "MultiSimilarityLoss() + MultiSimilarityMiner(0.1)",
         "the paper's pair mining in both"),
    Case("proxy anchor", "proxy_anchor", {}, "ProxyAnchorLoss()", "same proxies in both",
         with_classes=True),
    Case("normalized softmax", "normalized_softmax", {}, "NormalizedSoftmaxLoss()",
         "same class weights in both", with_classes=True),
    Case("arcface", "arcface", {}, "ArcFaceLoss(margin=28.648, scale=64)",
         "same class weights; PML takes the margin in degrees (0.5 rad = 28.648 deg), same "
         "theta + m > pi fallback; ours computes in float32 whatever the input dtype",
         with_classes=True),
    Case("cosface", "cosface", {}, "CosFaceLoss(margin=0.35, scale=64)", "same class weights",
         with_classes=True),
    Case("sub-center arcface", "subcenter_arcface", {},
         "SubCenterArcFaceLoss(margin=28.648, scale=64, sub_centers=3)",
         "same (C K) x D sub-center weights, class-major in both", with_classes=True),
    Case("circle", "circle", {}, "CircleLoss(m=0.25, gamma=256)",
         "PML averages over non-zero anchor losses, ours over anchors with a positive and a "
         "negative: equal unless an anchor's loss underflows to 0"),
    Case("supcon", "supcon", {}, "SupConLoss(temperature=0.1)", "L_out in both"),
    Case("nt-xent", "ntxent", {}, "NTXentLoss(temperature=0.5)",
         "two-view layout, labels = item ids [0..N/2-1, 0..N/2-1] in both (PML reads them as "
         "positives; ours only checks the layout); PML builds a |pos pairs| x |neg pairs| matrix, "
         "so it is skipped where that exceeds --pml-memory-gb", two_views=True),
    Case("proxyNCA++", "proxy_nca_pp", {}, "ProxyNCALoss(softmax_scale=9)",
         "same proxies; PML's ProxyNCA with normalised squared distances and scale 1/T = 9 is "
         "ProxyNCA++'s loss", with_classes=True),
]


def make_pml(case: Case, num_classes: int, dim: int) -> tuple[Callable[[Tensor, Tensor], Tensor], nn.Module]:
    """PML's counterpart of ``case`` as ``fn(x, y) -> loss`` plus the module holding its parameters."""
    from pytorch_metric_learning import losses, miners

    miner = None
    if case.ours == "contrastive":
        loss = losses.ContrastiveLoss()
    elif case.ours == "triplet":
        loss = losses.TripletMarginLoss(margin=0.2)
        if case.ours_kwargs["mining"] == "semihard":
            miner = miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
        elif case.ours_kwargs["mining"] == "batch_hard":
            miner = miners.BatchHardMiner()
    elif case.ours == "lifted_structure":
        loss = losses.LiftedStructureLoss()
    elif case.ours == "npair":
        loss = losses.NPairsLoss()
    elif case.ours == "angular":
        loss = losses.AngularLoss(alpha=40)
    elif case.ours == "multi_similarity":
        loss = losses.MultiSimilarityLoss()
        miner = miners.MultiSimilarityMiner(epsilon=0.1)
    elif case.ours == "proxy_anchor":
        loss = losses.ProxyAnchorLoss(num_classes, dim)
    elif case.ours == "normalized_softmax":
        loss = losses.NormalizedSoftmaxLoss(num_classes, dim)
    elif case.ours == "arcface":
        loss = losses.ArcFaceLoss(num_classes, dim, margin=math.degrees(0.5), scale=64)
    elif case.ours == "cosface":
        loss = losses.CosFaceLoss(num_classes, dim, margin=0.35, scale=64)
    elif case.ours == "subcenter_arcface":
        loss = losses.SubCenterArcFaceLoss(
            num_classes=num_classes, embedding_size=dim, margin=math.degrees(0.5), scale=64, sub_centers=3
        )
    elif case.ours == "circle":
        loss = losses.CircleLoss(m=0.25, gamma=256)
    elif case.ours == "supcon":
        loss = losses.SupConLoss(temperature=0.1)
    elif case.ours == "ntxent":
        loss = losses.NTXentLoss(temperature=0.5)
    elif case.ours == "proxy_nca_pp":
        loss = losses.ProxyNCALoss(num_classes, dim, softmax_scale=9)
    else:  # pragma: no cover - table and factory out of sync
        raise KeyError(case.ours)
    if miner is None:
        return loss, loss
    return (lambda x, y: loss(x, y, miner(x, y))), loss


def copy_parameters(case: Case, ours: nn.Module, pml: nn.Module) -> None:
    """Give PML's loss exactly our parameters (PML stores normalised-softmax weights as D x C)."""
    with torch.no_grad():
        if case.ours == "proxy_anchor":
            pml.proxies.copy_(ours.proxies)
        elif case.ours in ("normalized_softmax", "arcface", "cosface", "subcenter_arcface"):
            pml.W.copy_(ours.weight.T)
        elif case.ours == "proxy_nca_pp":
            pml.proxies.copy_(ours.proxies)


def pml_memory_bytes(case: Case, n: int, k: int) -> float:
    """Rough peak memory of PML's loss; its lifted structure builds |pos pairs| x |neg pairs|."""
    if case.ours == "lifted_structure":  # ~22-25 bytes per element measured at N = 128, 256
        return float(n * (k - 1)) * float(n * (n - k)) * 24
    if case.ours == "ntxent":  # N pos pairs x N (N - 2) neg pairs; ~18-20 bytes each at N = 128, 256
        return float(n) * float(n * (n - 2)) * 20
    return 0.0


def available_memory_gb() -> float:
    """Half the memory the OS reports available (Linux), else 4 GB."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20 / 2
    except OSError:
        pass
    return 4.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor, module: nn.Module | None) -> Step:
    def step() -> Tensor:
        x.grad = None
        if module is not None:
            module.zero_grad(set_to_none=True)
        loss = fn(x, y)
        loss.backward()
        return loss

    return step


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}
clock: Callable[[], float] = time.perf_counter


def timed(step: Step, device: torch.device) -> float:
    sync(device)
    start = clock()
    step()
    sync(device)
    return (clock() - start) * 1000.0


def benchmark(
    steps: dict[str, Step], repeats: int, warmup: int, cap_s: float, device: torch.device
) -> dict[str, list[float]]:
    """Interleaved timings (ms) of every step, at least one each; a slow step (whose repeats
    would overrun ``cap_s`` seconds) gets fewer repeats and a shorter warm-up."""
    cap_ms = cap_s * 1000.0
    estimate: dict[str, float] = {}
    for name, step in steps.items():
        for _ in range(max(warmup, 1)):
            estimate[name] = timed(step, device)
            if estimate[name] > cap_ms / 4:
                break
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            if times[name] and sum(times[name]) + estimate[name] > cap_ms:
                continue
            times[name].append(timed(step, device))
    return times


def fmt(v: float | None, digits: int = 2) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:.{digits}f}" if v < 100 else f"{v:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes (64,64),(256,128); 3 repeats")
    parser.add_argument("--sizes", default=None, help="e.g. '128x128,512x512,1024x512'")
    parser.add_argument("--k", type=int, default=4, help="samples per class (labels: P x K)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 11, quick 3)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cap", type=float, default=20.0, help="seconds per (loss, library, size)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", help="'cpu', 'cuda', 'cuda:1', ...")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="'process' (CPU time of this process) resists other load on a shared "
                             "machine; meaningful on CPU with --threads 1")
    parser.add_argument("--only", nargs="*", default=None, help="registry names to run")
    parser.add_argument("--pml-memory-gb", type=float, default=None,
                        help="skip a PML loss whose estimated peak memory exceeds this "
                             "(default: half the available memory)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()

    global clock
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type != "cpu" and args.clock != "wall":
        parser.error("--clock process measures CPU time; use --clock wall on an accelerator")
    clock = CLOCKS[args.clock]
    sizes_text = args.sizes or ("64x64,256x128" if args.quick else "128x128,512x512,1024x512")
    sizes = [tuple(int(v) for v in s.split("x")) for s in sizes_text.split(",")]
    repeats = args.repeats or (3 if args.quick else 11)
    if args.pml_memory_gb is None:
        args.pml_memory_gb = round(available_memory_gb(), 1)

    import pytorch_metric_learning

    print(
        f"# Loss speed (forward + backward), median ms over up to {repeats} interleaved repeats "
        f"after {args.warmup} warm-up\n"
        f"torch {torch.__version__}, pytorch-metric-learning {pytorch_metric_learning.__version__}, "
        f"device {device}, clock {args.clock}, "
        f"torch.set_num_threads({args.threads}) -> {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, labels P x K with K={args.k}, float32, "
        f"time cap {args.cap:g} s per (loss, library, size), PML memory cap {args.pml_memory_gb:g} GB\n"
    )
    cases = [c for c in CASES if args.only is None or c.ours in args.only]
    available: list[Case] = []
    for case in cases:
        try:
            loss_class(case.ours)
        except (ImportError, AttributeError) as err:
            print(f"note: skipped '{case.ours}' ({case.label}): not available yet ({err})")
            continue
        available.append(case)

    rows: list[dict[str, Any]] = []
    header = ("| loss | N x D | ours ms | PML ms | PML/ours | ours/floor | values agree | PML counterpart |\n"
              "|---|---|---:|---:|---:|---:|---|---|")
    lines = [header]
    for n, dim in sizes:
        g = torch.Generator().manual_seed(n * 7919 + dim)
        x0 = F.normalize(torch.randn(n, dim, generator=g), dim=1).to(device)
        num_classes = n // args.k
        y = torch.arange(num_classes).repeat_interleave(args.k)[:n]
        y = torch.cat([y, torch.arange(n - len(y))]).to(device)

        def floor_fn(a: Tensor, _: Tensor) -> Tensor:
            u = F.normalize(a, dim=1)
            return (u @ u.T).sum()

        floor_times: list[float] = []
        pk_labels = y
        for case in available:
            y = torch.arange(n // 2, device=device).repeat(2) if case.two_views else pk_labels
            torch.manual_seed(0)
            kwargs = dict(case.ours_kwargs)
            if case.with_classes:
                kwargs.update(num_classes=int(y.max()) + 1, embedding_dim=dim)
            ours = build_loss(case.ours, **kwargs).to(device)
            steps: dict[str, Step] = {
                "ours": make_step(ours, x0.clone().requires_grad_(True), y, ours),
                "floor": make_step(floor_fn, x0.clone().requires_grad_(True), y, None),
            }
            note = ""
            agree = "-"
            mem = pml_memory_bytes(case, n, args.k)
            if mem > args.pml_memory_gb * 2**30:
                note = f"PML skipped: needs ~{mem / 2**30:.0f} GB (> --pml-memory-gb {args.pml_memory_gb:g})"
            else:
                pml_fn, pml_module = make_pml(case, int(y.max()) + 1, dim)
                pml_module.to(device)
                copy_parameters(case, ours, pml_module)
                steps["pml"] = make_step(pml_fn, x0.clone().requires_grad_(True), y, pml_module)
                with torch.no_grad():
                    a, b = float(ours(x0, y)), float(pml_fn(x0, y))
                rel = abs(a - b) / max(abs(a), abs(b), 1e-12)
                agree = "yes" if rel < 1e-4 else f"no ({a:.4g} vs {b:.4g})"
            times = benchmark(steps, repeats, args.warmup, args.cap, device)
            few = [f"{k} {len(v)}" for k, v in times.items() if k != "floor" and len(v) < repeats]
            if few:
                note = "; ".join(filter(None, [note, "repeats (time cap): " + ", ".join(few)]))
            med = {k: statistics.median(v) for k, v in times.items()}
            floor_times += times["floor"]
            ratio = med["pml"] / med["ours"] if "pml" in med else None
            row = {
                "loss": case.label, "registry": case.ours, "n": n, "dim": dim,
                "ours_ms": med["ours"], "pml_ms": med.get("pml"), "floor_ms": med["floor"],
                "pml_over_ours": ratio, "ours_over_floor": med["ours"] / med["floor"],
                "values_agree": agree, "pml": case.pml, "note": note or case.note,
                "same_loss_as_pml": case.same_loss_as_pml,
                "repeats": {k: len(v) for k, v in times.items()},
            }
            rows.append(row)
            line = (f"| {case.label} | {n} x {dim} | {fmt(med['ours'])} | {fmt(med.get('pml'))} | "
                    f"{fmt(ratio)} | {fmt(row['ours_over_floor'])} | {agree} | {case.pml}"
                    f"{'; ' + note if note else ''} |")
            lines.append(line)
            print(line if len(lines) > 2 else header + "\n" + line, flush=True)
        if floor_times:
            floor_line = (f"| *floor* normalize + x x^T | {n} x {dim} | {fmt(statistics.median(floor_times))} "
                          f"| | | 1.00 | | |")
            lines.append(floor_line)
            print(floor_line, flush=True)

    print("\n## Table\n")
    print("\n".join(lines))
    notes = [f"* {c.label}: {c.note}" for c in available if c.note]
    if notes:
        print("\nNotes on the PML counterparts:\n" + "\n".join(notes))
    print("\n## Targets\n")
    for row in rows:
        slower = (row["same_loss_as_pml"] and row["pml_over_ours"] is not None
                  and row["pml_over_ours"] < 1.0)
        over_floor = (row["n"], row["dim"]) == (512, 512) and row["ours_over_floor"] > 2.0
        if slower or over_floor:
            why = []
            if slower:
                why.append(f"slower than PML ({row['ours_ms']:.2f} vs {row['pml_ms']:.2f} ms)")
            if over_floor:
                why.append(f"{row['ours_over_floor']:.2f}x the floor at 512 x 512")
            print(f"* MISS {row['loss']} at {row['n']} x {row['dim']}: " + "; ".join(why))
    print("* (every other row: at least as fast as PML, and <= 2x the floor at 512 x 512)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"threads": args.threads, "device": str(device), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
