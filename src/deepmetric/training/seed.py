"""Seeding, derived per-step seeds, RNG state capture/restore, and device resolution.

Reproducibility rests on two rules: every random number generator is seeded from the config's
``seed`` before the model is built, and every training step re-seeds torch, numpy and Python
from ``derive_seed(seed, "step", step)``, so step s draws the same random numbers whether the
run went straight through or was interrupted and resumed.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch

from deepmetric.errors import ConfigError

__all__ = ["derive_seed", "get_rng_state", "resolve_device", "seed_everything", "set_rng_state", "seed_step"]


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed that depends only on ``seed`` and ``keys`` (stable across processes and runs)."""
    text = ":".join(str(k) for k in (seed, *keys)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def seed_step(seed: int) -> None:
    """Seed torch (all devices), numpy's global RNG and Python's ``random`` with one value."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed every RNG and, if ``deterministic``, ask PyTorch for deterministic kernels (warn-only,
    so ops without a deterministic version still run).

    Deterministic mode does not fill every new tensor with NaN
    (``torch.utils.deterministic.fill_uninitialized_memory``, a debugging aid for kernels that read
    memory they never wrote): that fill writes every activation and gradient once more, about 7% of
    a CPU training step, and changes no result of a correct kernel."""
    seed_step(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
        torch.backends.cudnn.benchmark = False


def get_rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain Python values (loadable with ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` captured."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
         np_state["has_gauss"], np_state["cached"])
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_device(name: str) -> torch.device:
    """``'auto'`` -> the first CUDA GPU if present, else CPU; anything else is checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device '{name}' is not a valid torch device; use auto, cpu or cuda") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for CUDA but no GPU is available; set device=auto or cpu")
    return device
