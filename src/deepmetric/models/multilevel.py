r"""Multi-level embeddings: one pooled linear head per backbone stage, concatenated at test time.

Ranked List Loss (Wang et al., CVPR 2019, arXiv:1903.03238) trains three 512-d heads on
GoogLeNet's inception_3c, inception_4e and pool5 (strides 8, 16, 32), each with its own loss,
and retrieves with their concatenation (1536-d). :class:`MultiLevelEmbedder` does the same on
any timm backbone through ``timm.create_model(..., features_only=True, out_indices=...)``.

Stage names are 1-based over timm's feature pyramid: ``"stage1"`` is the first (finest)
feature map, ``"stage<k>"`` the k-th, and ``"final"`` the last one. On ``tf_efficientnet_lite0``
(five stages at strides 2, 4, 8, 16, 32) the default ``("stage3", "stage4", "final")`` are the
stride-8, 16 and 32 maps (40, 112 and 320 channels), the same strides as the paper's heads.

``forward`` returns named outputs in train and eval mode alike (the
:class:`~deepmetric.models.contracts.MultiOutputModel` contract): ``{head name: embedding}``
(each L2-normalised when ``normalize``), scored in training by
:class:`~deepmetric.losses.multi_output.MultiOutputLoss` (one loss per head, summed), plus
``"embedding"``: the concatenation of the heads, re-normalised to unit length when ``normalize``,
which evaluation, search and export use.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepmetric.errors import ConfigError, DataError, InputError, closest_match
from deepmetric.models.contracts import EMBEDDING

FINAL = "final"


def _stage_index(name: str, num_stages: int) -> int:
    """0-based feature index of a head name (``"stage<k>"`` 1-based, or ``"final"``)."""
    valid = [f"stage{k}" for k in range(1, num_stages + 1)] + [FINAL]
    if name == FINAL:
        return num_stages - 1
    if name.startswith("stage") and name[5:].isdigit() and 1 <= int(name[5:]) <= num_stages:
        return int(name[5:]) - 1
    hint = closest_match(name, valid)
    did = f" Did you mean '{hint}'?" if hint else ""
    raise ConfigError(f"unknown head '{name}' for a backbone with {num_stages} stages.{did} Valid: {', '.join(valid)}.")


class PooledHead(nn.Module):
    """Global average pooling of a stage's feature map, then a linear projection."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, feature_map: Tensor) -> Tensor:
        return self.linear(feature_map.flatten(2).mean(dim=-1))


def _load_weights(features: nn.Module, backbone: str, pretrained: bool | str | Path, in_chans: int) -> str:
    """Load pretrained weights into the ``features_only`` model via the full timm model.

    The full model gets the weights through :func:`deepmetric.models.weights.load_pretrained_backbone`
    (offline package, local cache or file); every tensor of the feature extractor is then copied
    from it by name, and a missing or misshapen one is an error.
    """
    if pretrained is False or pretrained is None:
        return "random"
    import timm

    from deepmetric.models.weights import load_pretrained_backbone

    full = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="", in_chans=in_chans)
    source = load_pretrained_backbone(full, backbone, pretrained)
    have = full.state_dict()
    want = features.state_dict()
    bad = [k for k, v in want.items() if k not in have or have[k].shape != v.shape]
    if bad:
        raise DataError(
            f"cannot transfer '{backbone}' weights to its feature extractor: {len(bad)} tensors differ "
            f"(e.g. {', '.join(bad[:3])}); use pretrained=False or the single-head create_embedder"
        )
    features.load_state_dict({k: have[k] for k in want}, strict=True)
    return source


class MultiLevelEmbedder(nn.Module):
    """Backbone feature pyramid -> one pooled linear head per chosen stage.

    Args:
        backbone: timm model name supporting ``features_only`` (most CNNs).
        pretrained: ``False`` (random), ``"offline"``, ``True`` or a weights path, as in
            :func:`deepmetric.models.create_embedder`.
        heads: stage names (``"stage<k>"``, 1-based, or ``"final"`` = last stage), distinct stages.
        embedding_dim: size of every head, or one size per head.
        normalize: L2-normalise each head's output (train) and the concatenation (eval).
        in_chans: input channels.
        image_size: square input side; ``None`` uses the backbone's pretrained config.
        freeze_bn: keep BatchNorm running statistics fixed in train mode.

    Attributes:
        head_dims: ``{head name: embedding size}``; ``embedding_dim`` is their sum (eval output).
    """

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        pretrained: bool | str | Path = "offline",
        heads: Sequence[str] = ("stage3", "stage4", FINAL),
        embedding_dim: int | Sequence[int] = 128,
        normalize: bool = True,
        in_chans: int = 3,
        image_size: int | None = None,
        freeze_bn: bool = False,
    ) -> None:
        super().__init__()
        import timm

        heads = [heads] if isinstance(heads, str) else list(heads)
        if not heads:
            raise ConfigError("heads must name at least one stage, e.g. ('stage3', 'stage4', 'final')")
        if len(set(heads)) != len(heads):
            raise ConfigError(f"heads must be distinct, got {heads}")
        if not timm.is_model(backbone):
            hint = closest_match(backbone, timm.list_models())
            did = f" Did you mean '{hint}'?" if hint else ""
            raise ConfigError(f"unknown backbone '{backbone}'.{did}")
        dims = [int(embedding_dim)] * len(heads) if isinstance(embedding_dim, int) else [int(d) for d in embedding_dim]
        if len(dims) != len(heads) or min(dims) < 1:
            raise ConfigError(
                f"embedding_dim must be a positive int or one positive int per head ({len(heads)}), got {embedding_dim}"
            )
        self.backbone = timm.create_model(backbone, pretrained=False, features_only=True, in_chans=in_chans)
        num_stages = len(self.backbone.feature_info)
        indices = [_stage_index(h, num_stages) for h in heads]
        if len(set(indices)) != len(indices):
            raise ConfigError(
                f"heads {heads} name the same stage twice ('final' is stage{num_stages} on '{backbone}'); "
                "pick distinct stages"
            )
        channels = self.backbone.feature_info.channels()
        self.weights_source = _load_weights(self.backbone, backbone, pretrained, in_chans)
        self.head_names = heads
        self._feature_slot = dict(zip(heads, indices))
        self.heads = nn.ModuleDict({h: PooledHead(channels[i], d) for h, i, d in zip(heads, indices, dims)})
        self.head_dims: dict[str, int] = dict(zip(heads, dims))
        self.output_dims: dict[str, int] = self.head_dims  # the MultiOutputModel contract
        self.embedding_dim = sum(dims)
        self.normalize = bool(normalize)
        self.backbone_name = backbone
        self.freeze_bn = bool(freeze_bn)
        cfg = timm.data.resolve_data_config({}, model=self.backbone)
        _, h, w = cfg["input_size"]
        if image_size is not None:
            h = w = int(image_size)
        self.input_size = (in_chans, h, w)
        reps = lambda v: tuple(float(v[i % len(v)]) for i in range(in_chans))  # noqa: E731
        self.mean, self.std = reps(cfg["mean"]), reps(cfg["std"])
        interpolation = cfg.get("interpolation", "bicubic")
        self.interpolation = interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bicubic"
        self.crop_pct = float(cfg.get("crop_pct", 0.875))
        self.train(self.training)

    # ------------------------------------------------------------------ forward
    def forward_heads(self, images: Tensor) -> dict[str, Tensor]:
        """``{head name: (B, head_dims[name]) embedding}``, each unit-norm when ``normalize``."""
        maps = self.backbone(images)
        out = {}
        for name in self.head_names:
            emb = self.heads[name](maps[self._feature_slot[name]])
            out[name] = F.normalize(emb, dim=1) if self.normalize else emb
        return out

    def embed(self, images: Tensor) -> Tensor:
        """The concatenated heads ``(B, embedding_dim)``, re-normalised when ``normalize``."""
        cat = torch.cat(list(self.forward_heads(images).values()), dim=1)
        return F.normalize(cat, dim=1) if self.normalize else cat

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """``{head: embedding, ..., "embedding": the re-normalised concatenation}``."""
        heads = self.forward_heads(images)
        cat = torch.cat(list(heads.values()), dim=1)
        return {**heads, EMBEDDING: F.normalize(cat, dim=1) if self.normalize else cat}

    # ------------------------------------------------------------------ train mode, params
    def train(self, mode: bool = True) -> MultiLevelEmbedder:
        """Like ``nn.Module.train``; BatchNorm layers stay in eval mode when ``freeze_bn``."""
        super().train(mode)
        if mode and self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the (pretrained) backbone, for a smaller learning rate."""
        return self.backbone.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the per-stage heads."""
        return self.heads.parameters()

    # ------------------------------------------------------------------ transforms
    def train_transform(self, scale: tuple[float, float] = (0.16, 1.0), hflip: float = 0.5):  # noqa: ANN201
        """Training augmentation for this backbone's input format (see ``Embedder``)."""
        from deepmetric.data.transforms import build_train_transform

        return build_train_transform(self.input_size, self.mean, self.std, self.interpolation, scale, hflip)

    def eval_transform(self):  # noqa: ANN201
        """Resize + center crop + normalise for this backbone's input format."""
        from deepmetric.data.transforms import build_eval_transform

        return build_eval_transform(self.input_size, self.mean, self.std, self.interpolation, self.crop_pct)

    def extra_repr(self) -> str:
        return (
            f"backbone={self.backbone_name!r}, weights={self.weights_source!r}, heads={self.head_dims}, "
            f"normalize={self.normalize}, freeze_bn={self.freeze_bn}"
        )
